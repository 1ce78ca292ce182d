"""The top prior ``p(u)`` (paper eq. 12): a RealNVP flow on a standard-normal base.

Built from normflows' :class:`~normflows.flows.AffineCouplingBlock` (split -> affine
coupling -> merge). normflows' convention, kept here: ``flow.forward`` maps base ->
data and returns ``(z, log|det dz_out/dz_in|)``; ``flow.inverse`` maps data -> base and
returns the log-determinant of *that* map. So

    log p(u) = log N(v; 0, I) + log|det dv/du|,   (v, log_det) = inverse(u).

Choices and pitfalls (why the flow is built the way it is):

* No ``ActNorm``: it initialises its parameters from the first batch it sees (and
  normflows' version does so on whichever of forward/inverse runs first), which makes
  the prior depend on whatever batch -- or sample call -- came first.
* No ``GlowBlock`` / ``Invertible1x1Conv(use_lu=True)``: it calls the deprecated
  ``Tensor.lu``. Mixing comes from alternating the split: checkerboard / channel and
  their ``_inv`` variants, so every coordinate is transformed in every pair of layers.
* Scale map: normflows 1.7.3 offers ``exp``, ``sigmoid`` and ``sigmoid_inv`` (no
  ``exp_clamp``). ``sigmoid`` computes ``sigmoid(s + 2)``, which is not 1 at ``s = 0``,
  so a zero-initialised net would not start at the identity. We use ``exp`` on a soft-
  clamped log-scale ``c * tanh(s / c)`` (applied inside the param map), which is exactly
  the identity at zero init and bounds every layer's scale to ``(e^-c, e^c)``.
* We do not use ``normflows.NormalizingFlow.sample``/``log_prob``: they draw from the
  global RNG through their own base distribution. :meth:`RealNVPPrior.sample` takes
  explicit ``noise`` or a ``generator`` so sampling is reproducible.
* The flow always runs with autocast disabled and in the parameters' dtype (float32
  normally), so under ``torch.autocast(bfloat16)`` ``log_prob`` is still float32.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import normflows as nf
import torch
import torch.nn.functional as F
from torch import nn

from .distributions import _no_autocast, _random

__all__ = ["RealNVPPrior"]


class CouplingNet(nn.Module):
    """Param map of one affine coupling: ``z1`` ``(B, c_in, H, W')`` -> ``(B, 2 c_out, H, W')``.

    3x3 convs with ELU, last conv zero-initialised (the coupling starts as the identity).
    The output is interleaved the way normflows' ``AffineCoupling`` reads it:
    channel ``2i`` is the shift, ``2i+1`` the log-scale of ``z2``'s channel ``i``; the
    log-scale is soft-clamped to ``(-clamp, clamp)`` by ``clamp * tanh(s / clamp)``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, hidden_layers: int, clamp: float):
        super().__init__()
        layers = []
        c = in_channels
        for _ in range(hidden_layers):
            layers += [nn.Conv2d(c, hidden_channels, 3, padding=1), nn.ELU()]
            c = hidden_channels
        last = nn.Conv2d(c, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.clamp = float(clamp)

    def forward(self, z1: torch.Tensor) -> torch.Tensor:
        out = self.net(z1)
        shift, log_scale = out[:, 0::2], out[:, 1::2]
        log_scale = self.clamp * torch.tanh(log_scale / self.clamp)
        return torch.stack([shift, log_scale], dim=2).flatten(1, 2)


class _Split(nf.flows.Split):
    """normflows' ``Split(mode)`` of a ``(B, C, H, W)`` tensor of a known ``(C, H, W)``, its checkerboard
    modes as a fixed gather: the same entries in the same order as normflows' (which builds the
    checkerboard in Python and selects with ``nonzero`` on every call: a host sync, and a graph break
    under ``torch.compile``). Channel modes are normflows' own. ``tests/test_prior.py`` checks both
    directions against normflows entry for entry."""

    def __init__(self, mode: str, shape: Sequence[int]):
        super().__init__(mode)
        if "checkerboard" in mode:
            C, H, W = shape
            # normflows' checkerboard is (c + h + w) % 2 over (C, H, W); "checkerboard" puts its ones in z1
            odd = (torch.arange(C).view(-1, 1, 1) + torch.arange(H).view(1, -1, 1) + torch.arange(W)) % 2 == 1
            first = odd if mode == "checkerboard" else ~odd
            w = torch.arange(W).expand(C, H, W)
            # per row (c, h) the W/2 positions of z1's and of z2's entries, ascending
            self.register_buffer("index1", w[first].view(C, H, W // 2), persistent=False)
            self.register_buffer("index2", w[~first].view(C, H, W // 2), persistent=False)

    def _split(self, z: torch.Tensor):
        if "checkerboard" not in self.mode:
            return super().forward(z)
        size = (z.shape[0],) + tuple(self.index1.shape)
        return [z.gather(-1, self.index1.expand(size)), z.gather(-1, self.index2.expand(size))], 0

    def _merge(self, z):
        if "checkerboard" not in self.mode:
            return super().inverse(z)
        z1, z2 = z
        out = z1.new_empty(z1.shape[:-1] + (2 * z1.shape[-1],))
        out.scatter_(-1, self.index1.expand(z1.shape), z1)
        out.scatter_(-1, self.index2.expand(z2.shape), z2)
        return out, 0

    def forward(self, z):
        return self._split(z)

    def inverse(self, z):
        return self._merge(z)


class _Merge(_Split):
    """normflows' ``Merge(mode)`` (``Split`` with the directions swapped), as :class:`_Split`."""

    def forward(self, z):
        return self._merge(z)

    def inverse(self, z):
        return self._split(z)


def _coupling(mode: str, shape: Sequence[int], hidden: int, layers: int, clamp: float) -> nn.Module:
    block = nf.flows.AffineCouplingBlock(CouplingNet(*_split_channels(mode, shape), hidden, layers, clamp),
                                         scale=True, scale_map="exp", split_mode=mode)
    # split and merge hold no parameters: replacing them leaves the state dict as it was
    block.flows[0], block.flows[2] = _Split(mode, shape), _Merge(mode, shape)
    return block


def _split_modes(shape: Sequence[int], count: int, preference: Sequence[str]) -> list:
    """``count`` split modes cycling through ``preference``, skipping those a ``(C, H, W)`` latent
    cannot take (channel modes need ``C >= 2``, checkerboard modes an even ``W``)."""
    C, _, W = shape
    modes = [m for m in preference
             if (m.startswith("channel") and C >= 2) or (m.startswith("checkerboard") and W % 2 == 0)]
    if not modes:
        raise ValueError(f"cannot split a latent of shape {tuple(shape)}: need C >= 2 or an even width")
    return [modes[i % len(modes)] for i in range(count)]


def _split_channels(mode: str, shape: Sequence[int]) -> tuple[int, int]:
    """Channels of ``(z1, z2)`` after normflows' ``Split(mode)`` of a ``(C, H, W)`` tensor."""
    C = shape[0]
    if mode == "channel":  # z1, z2 = z.chunk(2): z1 gets the larger half
        return (C + 1) // 2, C // 2
    if mode == "channel_inv":  # z2, z1 = z.chunk(2)
        return C // 2, (C + 1) // 2
    return C, C  # checkerboard: both halves (B, C, H, W/2)


class RealNVPPrior(nn.Module):
    """p(u): RealNVP (affine coupling) flow on a standard-normal base over a ``(C, H, W)`` latent.

    Args:
        shape: ``(C, H, W)`` of ``u``.
        num_couplings: number of affine coupling blocks. Split modes cycle through
            ``checkerboard, channel, checkerboard_inv, channel_inv`` (channel modes need
            ``C >= 2``, checkerboard modes need an even ``W``; unusable ones are skipped).
        hidden_channels: width of each coupling's conv net.
        coupling_layers: hidden (3x3 conv + ELU) layers per coupling net, before the
            zero-initialised output conv.
        scale_clamp: keyword-only; bound ``c`` of each coupling's log-scale ``c tanh(s/c)``.
        squeezed_couplings: keyword-only; further couplings at half the resolution, as in
            RealNVP's multi-scale architecture: between base and data the latent is squeezed
            (``(C, H, W) -> (4C, H/2, W/2)``, a permutation: log-det 0), these couplings act, and
            it is unsqueezed again before the ``num_couplings`` at full resolution. Their nets are
            ``2 * hidden_channels`` wide: at a quarter of the positions that is the same work per
            coupling for four times the parameters. Needs even ``H`` and ``W``.

    Order from data to base (:meth:`inverse`): full-resolution couplings, squeeze, squeezed
    couplings, unsqueeze; the base is ``N(0, I)`` over ``(C, H, W)`` either way.
    At initialisation the flow is the identity, so ``p(u)`` starts as ``N(0, I)``.
    Calling the module is :meth:`log_prob`.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        num_couplings: int = 8,
        hidden_channels: int = 64,
        coupling_layers: int = 2,
        *,
        scale_clamp: float = 2.0,
        squeezed_couplings: int = 0,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
        if num_couplings < 1 or coupling_layers < 1 or hidden_channels < 1:
            raise ValueError("num_couplings, hidden_channels and coupling_layers must be >= 1")
        if squeezed_couplings < 0:
            raise ValueError(f"squeezed_couplings must be >= 0, got {squeezed_couplings}")
        C, H, W = shape
        self.shape = shape
        self.split_modes = _split_modes(shape, num_couplings, ("checkerboard", "channel", "checkerboard_inv",
                                                               "channel_inv"))
        self.flows = nn.ModuleList(
            _coupling(mode, shape, hidden_channels, coupling_layers, scale_clamp) for mode in self.split_modes
        )
        # the squeezed scale (base side): couplings on (4C, H/2, W/2), channel splits first
        squeezed = (4 * C, H // 2, W // 2)
        self.squeezed_modes: list = []
        if squeezed_couplings:
            if H % 2 or W % 2:
                raise ValueError(f"squeezed couplings need an even height and width, got shape {shape}")
            self.squeezed_modes = _split_modes(squeezed, squeezed_couplings, ("channel", "checkerboard",
                                                                              "channel_inv", "checkerboard_inv"))
        self.squeezed_flows = nn.ModuleList(
            _coupling(mode, squeezed, 2 * hidden_channels, coupling_layers, scale_clamp)
            for mode in self.squeezed_modes
        )

    @property
    def dims(self) -> int:
        """Number of dimensions of ``u``: ``C * H * W``."""
        return math.prod(self.shape)

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def _check(self, t: torch.Tensor, name: str) -> torch.Tensor:
        if t.dim() != 4 or tuple(t.shape[1:]) != self.shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.shape))}), got {tuple(t.shape)}")
        p = self._param()
        return t.to(device=p.device, dtype=p.dtype)

    def base_log_prob(self, v: torch.Tensor) -> torch.Tensor:
        """``log N(v; 0, I)`` summed over ``(C, H, W)``: ``(B, C, H, W)`` -> ``(B,)``."""
        return -0.5 * (v.reshape(v.shape[0], -1) ** 2).sum(1) - 0.5 * self.dims * math.log(2 * math.pi)

    def forward_flow(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: ``v`` ``(B, C, H, W)`` -> ``(u, log|det du/dv|)`` with ``u`` like ``v``, log-det ``(B,)``."""
        v = self._check(v, "v")
        with _no_autocast(v.device):
            log_det = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
            if len(self.squeezed_flows):
                v = F.pixel_unshuffle(v, 2)
                for flow in self.squeezed_flows:
                    v, ld = flow(v)
                    log_det = log_det + ld
                v = F.pixel_shuffle(v, 2)
            for flow in self.flows:
                v, ld = flow(v)
                log_det = log_det + ld
            return v, log_det

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base: ``u`` ``(B, C, H, W)`` -> ``(v, log|det dv/du|)``, log-det ``(B,)``."""
        u = self._check(u, "u")
        with _no_autocast(u.device):
            log_det = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
            for flow in reversed(self.flows):
                u, ld = flow.inverse(u)
                log_det = log_det + ld
            if len(self.squeezed_flows):
                u = F.pixel_unshuffle(u, 2)
                for flow in reversed(self.squeezed_flows):
                    u, ld = flow.inverse(u)
                    log_det = log_det + ld
                u = F.pixel_shuffle(u, 2)
            return u, log_det

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """``log p(u)`` in nats: float ``(B, C, H, W)`` -> ``(B,)`` in the parameters' dtype (float32)."""
        v, log_det = self.inverse(u)
        with _no_autocast(v.device):
            return self.base_log_prob(v) + log_det

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.log_prob(u)

    def sample(
        self,
        num: Optional[int] = None,
        temperature: float = 1.0,
        noise: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        device=None,
    ) -> torch.Tensor:
        """Draw ``u = f(v)`` with base noise ``v ~ N(0, temperature^2 I)``.

        Either pass ``noise`` ``(B, C, H, W)`` (standard normal; it is scaled by
        ``temperature``) or ``num`` (draws from ``generator`` if given, else the global
        RNG). Differentiable w.r.t. the flow's parameters; wrap in ``torch.no_grad()``
        when only values are needed.

        Returns:
            float ``(B, C, H, W)`` on ``device`` (default: the parameters' device).
        """
        p = self._param()
        device = torch.device(device) if device is not None else p.device
        if noise is not None:
            if num is not None and num != noise.shape[0]:
                raise ValueError(f"num={num} disagrees with noise batch {noise.shape[0]}")
            v = self._check(noise, "noise")
        else:
            if num is None:
                raise ValueError("give num or noise")
            v = _random("normal", (int(num), *self.shape), generator=generator, device=p.device, dtype=p.dtype)
        u, _ = self.forward_flow(temperature * v)
        return u.to(device)
