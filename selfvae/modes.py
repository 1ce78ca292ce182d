"""Generation and reconstruction with a trained :class:`~selfvae.model.SelfVAE` (paper §3.3,
Fig. 5, generalised to K levels), and what each mode must send a receiver.

"Infer" takes a latent from a posterior; "sample" takes it from a prior or conditional.
What a mode infers or receives is what a receiver must be sent:

================================  ===========================================  ======================
mode                              path                                          sent
================================  ===========================================  ======================
:func:`generate`                  u ~ p(u) -> y_K -> z_K -> ... -> x              nothing
:func:`cond_generate` (level k)   y_k* given; the latent above it inferred;       y_k
                                  z_k, y_{k-1}, ..., x sampled
:func:`cond_reconstruct` (k)      y_k* given; z_1..z_k ~ q(z_j | y_{j-1}*)        y_k, z_1..z_k
:func:`reconstruct1`              u ~ q(u | y_K*), then sampled down to x          u
:func:`reconstruct2`              u and every z inferred; y's decoded             u, z_1..z_K
================================  ===========================================  ======================

Images enter as uint8 ``(B, C, H, W)`` in 0..255 at x's spec (``y_k`` at level k's spec)
and leave the same way. ``decode="mode"`` takes each level's most likely value,
``"sample"`` draws it; ``latents="mean"`` takes a posterior's mean, ``"sample"`` draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import torch

from .distributions import DiagonalGaussian, DiscretizedLogisticMixture
from .phases import PhasedMixture
from .model import Inference, SelfVAE, Terms

Likelihood = Union[DiscretizedLogisticMixture, PhasedMixture]
#: how a level is decoded from its likelihood (:func:`decode_level`)
DECODES = ("mode", "mean", "sample")

Levels = List[Optional[torch.Tensor]]


@dataclass
class ModeResult:
    """What a generation or reconstruction mode returns.

    images: uint8 ``(B, C, H, W)``, the shape of x, values 0..255.
    levels: the produced ``[x, y_1, ..., y_K]`` (uint8, each at its level's spec).
    sent: name -> number of dimensions a receiver must be sent (``{}`` for generation).
    sent_bits: name -> ``(B,)`` bits under the model for each sent variable: the variable's
        ELBO term (KL for latents, the ELBO of the levels at and above it for a ``y``).
    """

    images: torch.Tensor
    levels: List[torch.Tensor]
    sent: Dict[str, int] = field(default_factory=dict)
    sent_bits: Dict[str, torch.Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- the generative path
def decode_level(dist: Likelihood, decode: str, temperature: float, generator: Optional[torch.Generator],
                 known: Optional[torch.Tensor] = None, missing: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A level from its likelihood: the most likely value (``mode``), the rounded expected value
    (``mean``) or a draw (``sample``). With ``known`` (the level) and ``missing`` (bool,
    broadcastable), only the missing entries are decoded; a phased likelihood
    (:mod:`selfvae.phases`) then conditions its later phases on the known pixels."""
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODES)}, got '{decode}'")
    if isinstance(dist, PhasedMixture) and known is not None:
        missing = missing.expand_as(known)
        if decode == "sample":
            return dist.sample(temperature=temperature, generator=generator, known=known, missing=missing)
        return getattr(dist, decode)(known=known, missing=missing)
    value = dist.sample(temperature=temperature, generator=generator) if decode == "sample" else getattr(dist, decode)()
    return value if known is None else torch.where(missing, value, known)


def choose_latent(dist: DiagonalGaussian, how: str, temperature: float,
                  generator: Optional[torch.Generator]) -> torch.Tensor:
    """A latent from a Gaussian: its mean (``mean``) or a draw (``sample``)."""
    if how == "mean":
        return dist.mean
    if how == "sample":
        return dist.sample(temperature=temperature, generator=generator)
    raise ValueError(f"latent choice must be 'mean' or 'sample', got '{how}'")


def descend(model: SelfVAE, levels: Levels, parent: Optional[torch.Tensor], start: int,
            fixed_z: Optional[Dict[int, torch.Tensor]], decode: str, temperature: float,
            generator: Optional[torch.Generator], z_bits: Optional[Dict[str, torch.Tensor]] = None,
            z_step: float = 0.5) -> List[torch.Tensor]:
    """Fill ``levels[start-1] .. levels[0]`` going down from the known ``levels[start]``.

    ``parent`` is ``h_start`` (u if start == K, else z_{start+1}). z_k is taken from ``fixed_z``
    when given there (inferred), else sampled from ``p(z_k | y_k, h_k)``. With ``z_bits`` (a dict to
    fill), every given ``z_k`` is charged what sending it costs a receiver that has only what it has
    decoded: ``-log2`` of the mass of its grid cell (step ``z_step``) under ``p(z_k | y_k^, h_k)`` with
    the *reconstructed* ``y_k^`` (see :func:`grid_bits`).
    """
    for k in range(start, 0, -1):
        y_k = levels[k]
        if fixed_z is not None and k in fixed_z:
            z = fixed_z[k]
            if z_bits is not None:
                z_bits[f"z{k}"] = grid_bits(model.p_z[k - 1](model.p_z[k - 1].condition(y_k), parent), z, z_step)
        else:
            prior = model.p_z[k - 1](model.p_z[k - 1].condition(y_k), parent)
            z = prior.sample(temperature=temperature, generator=generator)
        dist = model.p_y[k - 1](model.p_y[k - 1].condition(y_k), z)
        levels[k - 1] = decode_level(dist, decode, temperature, generator)
        parent = z
    return levels  # type: ignore[return-value]


def from_u(model: SelfVAE, u: torch.Tensor, decode: str, temperature: float,
           generator: Optional[torch.Generator], fixed_z: Optional[Dict[int, torch.Tensor]] = None,
           z_bits: Optional[Dict[str, torch.Tensor]] = None, z_step: float = 0.5) -> List[torch.Tensor]:
    """``y_K ~ p(y_K | u)`` and down to x; returns ``[x, y_1, ..., y_K]``."""
    K = model.levels
    levels: Levels = [None] * (K + 1)
    levels[K] = decode_level(model.p_top(None, u), decode, temperature, generator)
    return descend(model, levels, u, K, fixed_z, decode, temperature, generator, z_bits, z_step)


def quantise(z: torch.Tensor, step: float) -> torch.Tensor:
    """A latent rounded to the grid of ``step`` (what a code sends)."""
    return torch.round(z / step) * step


def grid_bits(prior, z: torch.Tensor, step: float) -> torch.Tensor:
    """Bits per example to send a latent on the grid of ``step`` under ``prior`` (a
    :class:`~selfvae.distributions.DiagonalGaussian` or :class:`~selfvae.cflow.FlowGaussian`):
    ``-log2`` of the prior's mass of each grid cell, summed: ``(B,)`` (see their ``grid_bits``)."""
    return prior.grid_bits(z, step)


# --------------------------------------------------------------------------- what is sent
def latent_dims(model: SelfVAE, name: str) -> int:
    """Dimensions of a sent variable: ``u``, ``z{k}`` or ``y{k}``."""
    if name == "u":
        return math.prod(model.u_shape)
    if name.startswith("z"):
        return math.prod(model.z_shapes[int(name[1:]) - 1])
    return model.specs[int(name[1:])].dims


def sent_bits(model: SelfVAE, terms: Terms, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Bits of each sent variable under the model, from the ELBO terms (see :class:`ModeResult`)."""
    K, out = model.levels, {}
    for name in names:
        if name.startswith("y"):
            k = int(name[1:])
            above = [f"y{j}" for j in range(k, K + 1)] + [f"z{j}" for j in range(k + 1, K + 1)] + ["u"]
            out[name] = -sum(terms[n] for n in above) / math.log(2.0)
        else:
            out[name] = -terms[name] / math.log(2.0)
    return out


def _result(model: SelfVAE, levels: List[torch.Tensor], inference: Inference, names: Sequence[str],
            generator: Optional[torch.Generator], samples: int = 8,
            receiver_bits: Optional[Dict[str, torch.Tensor]] = None) -> ModeResult:
    """A :class:`ModeResult` with the bits of the sent variables, from the mode's own inference
    (``receiver_bits`` replace the ELBO's charge for the variables they name)."""
    bits = {}
    if names:
        # The ELBO terms averaged over a few posterior samples (a single-sample KL is noisy).
        runs = [model.terms_from(inference, generator=generator) for _ in range(samples)]
        terms = {name: torch.stack([r[name] for r in runs]).mean(0) for name in runs[0]}
        bits = sent_bits(model, terms, names)
        bits.update({name: value.to(bits[name].dtype) for name, value in (receiver_bits or {}).items()})
    return ModeResult(images=levels[0], levels=levels, sent={n: latent_dims(model, n) for n in names},
                      sent_bits=bits)


def check_level_index(model: SelfVAE, level: int) -> None:
    if not 1 <= level <= model.levels:
        raise ValueError(f"level must be in 1..{model.levels} for this {model.levels}-level model, got {level}")


# --------------------------------------------------------------------------- the modes
@torch.no_grad()
def generate(model: SelfVAE, num: int, temperature: float = 1.0, decode: str = "sample",
             generator: Optional[torch.Generator] = None) -> ModeResult:
    """u ~ p(u) -> y_K ~ p(y_K | u) -> z_K ~ p(z_K | u, y_K) -> ... -> x ~ p(x | y_1, z_1). Sends nothing."""
    device = next(model.parameters()).device
    u = model.p_u.sample(num, temperature=temperature, generator=generator, device=device)
    levels = from_u(model, u, decode, temperature, generator)
    return ModeResult(images=levels[0], levels=levels)


@torch.no_grad()
def cond_generate(model: SelfVAE, y: torch.Tensor, level: int, temperature: float = 1.0, decode: str = "sample",
                  latents: str = "sample", generator: Optional[torch.Generator] = None) -> ModeResult:
    """Conditional generation from a given ``y_k*`` (uint8 at level ``k``'s spec); with a downscale
    chain this is super-resolution by 2^k. The latent above level k is inferred
    (``u ~ q(u | y_K)`` for k = K, else ``z_{k+1} ~ q(z_{k+1} | y_k*)``), the ones below are sampled.
    Sends ``y_k``."""
    check_level_index(model, level)
    inference = model.infer(y, level)  # the levels above k are functions of y_k*
    posterior = inference.q_u if level == model.levels else inference.q_z[level]
    parent = choose_latent(posterior, latents, temperature, generator)
    levels = descend(model, list(inference.levels), parent, level, None, decode, temperature, generator)
    return _result(model, levels, inference, [f"y{level}"], generator)


@torch.no_grad()
def cond_reconstruct(model: SelfVAE, x: torch.Tensor, level: int, decode: str = "mode", latents: str = "mean",
                     generator: Optional[torch.Generator] = None, z_step: Optional[float] = None) -> ModeResult:
    """Conditional reconstruction of x* from ``y_k* = d(x*)`` and ``z_1..z_k ~ q(z_j | y_{j-1}*)``:
    ``y_{j-1} ~ p(y_{j-1} | y_j, z_j)`` for j = k..1. Sends ``y_k, z_1..z_k``.

    With ``z_step`` the z's are rounded to that grid and charged under the priors a receiver can
    form, ``p(z_j | y_j^, z_{j+1})`` with its reconstructed ``y_j^`` (the top one conditioned on the
    posterior mean of the latent above level k), as ``python -m selfvae.compress --level k
    --with-z`` codes them; without it, each z is charged its ELBO term (the true levels)."""
    check_level_index(model, level)
    inference = model.infer(x)
    levels: Levels = [None] * level + inference.levels[level:]
    fixed = {j: choose_latent(inference.q_z[j - 1], latents, 1.0, generator) for j in range(1, level + 1)}
    z_bits = None
    parent = None
    if z_step is not None:
        fixed = {j: quantise(z, z_step) for j, z in fixed.items()}
        z_bits = {}
        parent = inference.q_u.mean if level == model.levels else inference.q_z[level].mean
    filled = descend(model, levels, parent, level, fixed, decode, 1.0, generator, z_bits, z_step or 0.5)
    return _result(model, filled, inference, [f"y{level}"] + [f"z{j}" for j in range(1, level + 1)], generator,
                   receiver_bits=z_bits)


@torch.no_grad()
def reconstruct1(model: SelfVAE, x: torch.Tensor, decode: str = "mode", latents: str = "mean",
                 temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> ModeResult:
    """u ~ q(u | y_K*), then the generative path down to x (z's sampled). Sends ``u``."""
    inference = model.infer(x)
    u = choose_latent(inference.q_u, latents, 1.0, generator)
    return _result(model, from_u(model, u, decode, temperature, generator), inference, ["u"], generator)


@torch.no_grad()
def reconstruct2(model: SelfVAE, x: torch.Tensor, decode: str = "mode", latents: str = "mean",
                 generator: Optional[torch.Generator] = None, z_step: Optional[float] = None) -> ModeResult:
    """u ~ q(u | y_K*) -> y_K ~ p(y_K | u); every z_k ~ q(z_k | y_{k-1}*) -> y_{k-1} ~ p(y_{k-1} | y_k, z_k).
    Sends ``u, z_1..z_K``. With ``z_step``, as :func:`cond_reconstruct`: the latents rounded to the
    grid and each z charged under ``p(z_k | y_k^, z_{k+1}^)`` with the reconstructed ``y_k^``."""
    K, inference = model.levels, model.infer(x)
    u = choose_latent(inference.q_u, latents, 1.0, generator)
    fixed = {k: choose_latent(inference.q_z[k - 1], latents, 1.0, generator) for k in range(1, K + 1)}
    z_bits = None
    if z_step is not None:
        u, fixed, z_bits = quantise(u, z_step), {k: quantise(z, z_step) for k, z in fixed.items()}, {}
        # u's flow prior has no cell masses in closed form: density times cell volume
        z_bits["u"] = -(model.p_u.log_prob(u).double() / math.log(2.0)) - math.prod(model.u_shape) * math.log2(z_step)
    levels = from_u(model, u, decode, 1.0, generator, fixed_z=fixed, z_bits=z_bits, z_step=z_step or 0.5)
    return _result(model, levels, inference, model.latent_names(), generator,
                   receiver_bits=z_bits)


# --------------------------------------------------------------------------- through u
@torch.no_grad()
def encode_u(model: SelfVAE, x: torch.Tensor) -> torch.Tensor:
    """Posterior mean of u for a uint8 batch x: float ``(B, *u_shape)``."""
    return model.q_u(model.make_levels(x)[-1]).mean


@torch.no_grad()
def interpolate(model: SelfVAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8, method: str = "linear",
                decode: str = "mode", temperature: float = 1.0,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Decode points between the posterior means of u for x_a and x_b (``linear`` or ``spherical``).
    Returns uint8 ``(steps, B, C, H, W)``; the z's below u are sampled at ``temperature``
    (0 takes the conditional priors' means)."""
    if method not in ("linear", "spherical"):
        raise ValueError(f"interpolation method must be 'linear' or 'spherical', got '{method}'")
    u_a, u_b = encode_u(model, x_a), encode_u(model, x_b)
    out = []
    for t in torch.linspace(0.0, 1.0, steps).tolist():
        u = slerp(u_a, u_b, t) if method == "spherical" else (1 - t) * u_a + t * u_b
        out.append(from_u(model, u, decode, temperature, generator)[0])
    return torch.stack(out)


@torch.no_grad()
def resample_z(model: SelfVAE, x: torch.Tensor, num: int = 8, decode: str = "mode", temperature: float = 1.0,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keep u at its posterior mean for x and draw the z's (and y's below u) ``num`` times
    (paper Fig. 6). Returns uint8 ``(num, B, C, H, W)``."""
    u = encode_u(model, x)
    return torch.stack([from_u(model, u, decode, temperature, generator)[0] for _ in range(num)])


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per example (flattened), falling back to linear for parallel vectors."""
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    linear = so.abs() < 1e-6
    wa = torch.where(linear, torch.full_like(so, 1 - t), torch.sin((1 - t) * omega) / so.where(~linear, 1.0))
    wb = torch.where(linear, torch.full_like(so, t), torch.sin(t * omega) / so.where(~linear, 1.0))
    return (wa[:, None] * fa + wb[:, None] * fb).view_as(a)
