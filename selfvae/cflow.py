"""Conditional normalizing flows for the conditional priors ``p(z_k | y_k, h_k)`` (``--set z_flow=N``).

With ``z_flow = N > 0`` the prior of every ``z_k`` is the model's diagonal Gaussian pushed
through N affine couplings whose networks also see a *context*: the features of ``y_k`` and
``h_k`` that the Gaussian's head reads (:class:`selfvae.model.ConditionalPrior`)::

    w ~ N(mean(c), std(c)^2),   z = f_N( ... f_1(w; c) ... ; c)
    log p(z | c) = log N(f^{-1}(z; c); mean(c), std(c)^2) + log |det d f^{-1}(z; c) / dz|

A coupling keeps one half of the channels ``z_a`` and maps the other
``z_b -> z_b * exp(s) + t`` with ``(t, s) = net([z_a, c])``; the split alternates between
the two channel halves (normflows' ``Split``/``Merge`` with ``channel`` / ``channel_inv``),
so every coordinate is transformed in every pair of couplings, and the 3x3 convolutions of
the nets mix space. normflows' own ``AffineCoupling`` calls its network on ``z_a`` alone, with
no context argument, so the coupling itself is written here. Like the RealNVP prior on u
(:mod:`selfvae.prior`) the last conv of each net starts at zero: a new flow is the identity
and a ``z_flow`` model starts as exactly the model without it; log-scales are soft-clamped
to ``(-c, c)`` by ``c tanh(s / c)``; the flow runs in its parameters' dtype (float32) with
autocast disabled.

The posteriors ``q(z_k | y_{k-1})`` stay diagonal Gaussians.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import normflows as nf
import torch
from torch import nn

from .distributions import DiagonalGaussian, _no_autocast

__all__ = ["ConditionalFlow", "FlowGaussian"]


class _CouplingNet(nn.Module):
    """``[z_a, context]`` -> interleaved (shift, log-scale) of ``z_b``: 3x3 convs with ELU, the last
    one zero-initialised."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, clamp: float):
        super().__init__()
        last = nn.Conv2d(hidden, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.ELU(), last)
        self.clamp = float(clamp)

    def forward(self, z_a: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.net(torch.cat([z_a, context], dim=1))
        shift, log_scale = out[:, 0::2], out[:, 1::2]
        return shift, self.clamp * torch.tanh(log_scale / self.clamp)


class _ConditionalCoupling(nn.Module):
    def __init__(self, channels: int, context_channels: int, hidden: int, mode: str, clamp: float):
        super().__init__()
        self.split, self.merge = nf.flows.Split(mode), nf.flows.Merge(mode)
        kept = (channels + 1) // 2 if mode == "channel" else channels // 2
        self.net = _CouplingNet(kept + context_channels, channels - kept, hidden, clamp)

    def forward(self, w: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        (z_a, z_b), _ = self.split(w)
        shift, log_scale = self.net(z_a, context)
        z, _ = self.merge([z_a, z_b * torch.exp(log_scale) + shift])
        return z, log_scale.flatten(1).sum(1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        (z_a, z_b), _ = self.split(z)
        shift, log_scale = self.net(z_a, context)
        w, _ = self.merge([z_a, (z_b - shift) * torch.exp(-log_scale)])
        return w, -log_scale.flatten(1).sum(1)


class ConditionalFlow(nn.Module):
    """N conditional affine couplings over a ``(C, H, W)`` latent, context ``(B, context_channels, H, W)``.

    :meth:`forward` maps base -> latent and :meth:`inverse` latent -> base; both return the mapped
    tensor and the log-determinant of *that* map, ``(B,)`` (normflows' convention).
    """

    def __init__(self, shape: Tuple[int, int, int], context_channels: int, couplings: int, hidden: int,
                 clamp: float = 2.0):
        super().__init__()
        channels = shape[0]
        if channels < 2:
            raise ValueError(f"a conditional flow splits channels: the latent needs >= 2, got {shape}")
        self.shape = tuple(shape)
        self.couplings = nn.ModuleList(
            _ConditionalCoupling(channels, context_channels, hidden, "channel" if i % 2 == 0 else "channel_inv", clamp)
            for i in range(couplings))

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, w: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        with _no_autocast(w.device):
            w, context = w.to(self._dtype()), context.to(self._dtype())
            log_det = torch.zeros(w.shape[0], device=w.device, dtype=w.dtype)
            for coupling in self.couplings:
                w, ld = coupling(w, context)
                log_det = log_det + ld
            return w, log_det

    def inverse(self, z: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        with _no_autocast(z.device):
            z, context = z.to(self._dtype()), context.to(self._dtype())
            log_det = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
            for coupling in reversed(self.couplings):
                z, ld = coupling.inverse(z, context)
                log_det = log_det + ld
            return z, log_det


class FlowGaussian:
    """``p(z | c)``: a diagonal Gaussian ``base`` pushed through ``flow(., context)``.

    Offers what the model and the modes use of a :class:`DiagonalGaussian`: :meth:`log_prob`,
    :meth:`sample` (temperature scales the base noise), :attr:`mean` (the base mean pushed
    through the flow: the value at temperature 0, not the flow's expectation) and :attr:`shape`.
    It has no ``std``: a code that quantises ``z`` under this prior must work in the base space.
    """

    def __init__(self, base: DiagonalGaussian, flow: ConditionalFlow, context: torch.Tensor):
        self.base, self.flow, self.context = base, flow, context
        self._mean: Optional[torch.Tensor] = None

    @property
    def shape(self) -> torch.Size:
        return self.base.shape

    @property
    def mean(self) -> torch.Tensor:
        if self._mean is None:
            self._mean = self.flow(self.base.mean, self.context)[0]
        return self._mean

    def sample(self, noise: Optional[torch.Tensor] = None, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        w = self.base.sample(noise=noise, temperature=temperature, generator=generator)
        return self.flow(w, self.context)[0]

    def grid_bits(self, z: torch.Tensor, step: float) -> torch.Tensor:
        """Bits to send ``z`` on the grid of ``step``: the cell's mass taken as density x cell volume
        (``step`` small against the density's scale), summed: float64 ``(B,)``."""
        return -self.log_prob(z).double() / math.log(2.0) - z[0].numel() * math.log2(step)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z | c)`` summed over all non-batch dims: ``(B, C, H, W)`` -> ``(B,)`` nats."""
        if z.shape != self.base.shape:
            raise ValueError(f"z must have shape {tuple(self.base.shape)}, got {tuple(z.shape)}")
        w, log_det = self.flow.inverse(z, self.context)
        return self.base.log_prob(w) + log_det
