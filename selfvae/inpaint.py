"""Inpainting with a trained :class:`~selfvae.model.SelfVAE`: fill the missing pixels of an image
consistently with the known ones, through the hierarchy of levels.

Masks follow ``cv2.inpaint``: ``missing`` is True (a mask file: nonzero) where a pixel is to be
filled. Images are uint8 ``(B, C, H, W)`` in 0..255 at x's spec, masks bool ``(B, 1, H, W)``.

The algorithm: pseudo-Gibbs imputation through the hierarchy
--------------------------------------------------------------
Rezende et al. (2014, §5.2 and appendix F) impute missing data with a VAE by alternating
``z ~ q(z | x)`` and ``x_missing ~ p(x_missing | z)`` with the observed part clamped; under mild
conditions on the encoder this Markov chain approaches ``p(x_missing | x_observed)``. Here every
level has its own latent and its own likelihood, so one *sweep* of :func:`inpaint` runs that
alternation down the hierarchy (eq. 21 top to bottom), with the known entries of every level
clamped (:func:`level_masks` says which entries of y_k the missing pixels reach):

1. ``[x, y_1, ..., y_K] = make_levels(current fill)``;
2. the top level: ``y_K^ = y_K`` of the current fill (default), or with ``from_u`` redrawn,
   ``u ~ q(u | y_K)``, ``y_K^ ~ p(y_K | u)``; known entries set to the true ones;
3. for k = K..1: ``z_k ~ q(z_k | y_{k-1})`` (from the current fill: it carries what the known
   pixels at level k-1 say) and ``y_{k-1}^ ~ p(y_{k-1} | y_k^, z_k)``, conditioned on the *new*
   ``y_k^`` so that the coarse structure decided above is passed down and the finer levels only
   add detail to it; known entries clamped;
4. the new fill is ``y_0^`` (x with its known pixels exact).

Why the top level is not redrawn from u by default: the known pixels reach the current fill's
``y_K`` directly, through the transforms (an entry of ``y_K`` next to the hole is mostly known
pixels), but reach ``p(y_K | u)`` only as far as ``q(u | y_K)`` carries information. For a model
whose u carries little (the default 1000-step checkpoint), ``from_u`` regenerates the top level
of the hole from the prior, whatever surrounds it: on 64 of that checkpoint's test images, 10
sweeps fill the centre square at 26.0 dB PSNR from the current y_K and at 20.4 dB from u
(``experiments/inpaint_benchmark.py``).
``from_u=True`` is the full chain for a model whose u does carry y_K; with K = 0 (the plain VAE,
where the top level is x itself) it is the only move and is always taken.

Why this rather than MCMC over the latents (Metropolis-within-Gibbs, Mattei & Frellsen 2018,
asymptotically exact): that needs ``p(x_known | latents)`` and an accept/reject step over 2K + 1
groups of latents and levels whose acceptance rate collapses with the dimension and with a loose
posterior, and it gives no way to clamp the intermediate levels. The sweep uses only the
conditionals the model was trained to give (it is conditional generation from y_K, paper §3.3,
with clamps), costs one encoder and one decoder pass per level, and the known pixels constrain
every level, not only x.

Decoding: every sweep but the last draws its latents and levels, which is what lets the chain
move away from its initial fill. The last sweep, with ``decode="mode"`` (the default), takes the
posterior means of the latents and the most likely value of each level: the most likely
completion given the chain's last state, cleaner and closer in PSNR (a draw adds the
likelihood's pixel noise, which PSNR charges); ``decode="sample"`` returns the chain's last draw
(texture, diversity). With ``iterations=1`` the result is that single mode-decoded descent from
the initial fill.

The chain starts from an initial fill of the hole (``init``): ``telea`` (``cv2.inpaint``) or
``mean`` (each image's mean known colour). It sets the top level of the first sweep and the
first posteriors; every sweep redraws every missing entry below the top level. A chain that
draws at a model's full temperature drifts from a smooth start towards the model's own
(noisier) completions, which costs PSNR when the model is weak: on the default checkpoint one
sweep (28.9 dB on the centre square, Telea 29.05) beats ten (26.0); the benchmark reports both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from PIL import Image

from transforms.imageio import center_crop_resize, read_image

from .evaluation import evaluating
from .model import SelfVAE
from .modes import DECODES, choose_latent, decode_level

#: Sweeps of :func:`inpaint` unless told otherwise.
DEFAULT_ITERATIONS = 10
#: Grey shown in place of the missing pixels in grids.
HOLE_VALUE = 128
INITS = ("telea", "mean")


@dataclass
class InpaintResult:
    """What :func:`inpaint` returns.

    images: uint8 ``(B, C, H, W)``, the input with its missing pixels filled; known pixels exact.
    levels: the last sweep's ``[x, y_1, ..., y_K]`` (uint8, each at its level's spec), the known
        entries of each equal to those of the input's levels.
    sweeps: x after each sweep (uint8 ``(B, C, H, W)`` each; the last is ``images``).
    masks: :func:`level_masks` of the input, bool ``(B, C_k, H_k, W_k)`` per level.
    """

    images: torch.Tensor
    levels: List[torch.Tensor]
    sweeps: List[torch.Tensor] = field(default_factory=list)
    masks: List[torch.Tensor] = field(default_factory=list)


# --------------------------------------------------------------------------- masks
def as_missing(missing: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A mask for the images x (uint8 ``(B, C, H, W)``) as bool ``(B, 1, H, W)``.

    missing: True / nonzero = to fill; ``(H, W)``, ``(B or 1, H, W)`` or ``(B or 1, 1, H, W)``
    (a mask without a batch dimension, or with one of size 1, applies to every image).
    """
    B, _, H, W = x.shape
    m = missing.to(device=x.device) != 0
    if m.dim() == 2:
        m = m[None]
    if m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[2:] != (H, W) or m.shape[0] not in (1, B):
        raise ValueError(f"a mask of shape {tuple(missing.shape)} does not fit images of shape {tuple(x.shape)}; "
                         f"expected (H, W), (B, H, W) or (B, 1, H, W) with H, W = {H}, {W}")
    return m.expand(B, 1, H, W).contiguous()


@torch.no_grad()
def level_masks(model: SelfVAE, missing: torch.Tensor, x: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """Which entries of each level depend on the missing pixels.

    missing: bool ``(B, 1, H, W)`` or ``(B, H, W)`` (True = to fill). x: uint8 ``(B, C, H, W)``, the
    image whose known pixels are held (default: mid-grey 128); the transforms that are not
    locally linear (``sketch``, the clamping in ``downscale``) depend on them.

    Returns ``[m_0, m_1, ..., m_K]``, bool ``(B, C_k, H_k, W_k)`` at each level's spec (``m_0`` is
    ``missing`` repeated over the channels). For any deterministic chain, one transform at a time:
    the unknown entries of ``y_{k-1}`` are set to 0, to the top value and to two random fills, and
    an entry of ``y_k = d_k(y_{k-1})`` is unknown where any two of the results disagree. Probing
    each transform at its own input (not x) keeps a weak dependence from fading to nothing over
    several levels. An entry could still agree by coincidence although it depends on the hole (a
    value clamped at 0 for every fill, a sum that cancels); such an entry is clamped to a value no
    fill changed, so nothing of the hole leaks in, and the sweeps of :func:`inpaint` redraw its
    neighbours every time. For ``downscale`` (bicubic, 4 taps per axis, the smallest 2-d weight
    9/1024 moves an entry by 2 levels between fills 0 and 255) this is "any of the 4x4 source
    entries under the kernel unknown": a max-pool with kernel 4, stride 2, padding 1, level after
    level.
    """
    if x is None:
        spec, device = model.specs[0], next(model.parameters()).device
        x = torch.full((missing.shape[0],) + spec.shape, HOLE_VALUE, dtype=torch.uint8, device=device)
    masks = [as_missing(missing, x).expand_as(x)]
    levels = model.make_levels(x)
    g = torch.Generator().manual_seed(0)  # the probes do not consume the caller's generator
    for k, transform in enumerate(model.chain.transforms, start=1):
        below, level = model.specs[k - 1], levels[k - 1]
        top = below.num_values - 1
        fills = [torch.zeros(level.shape, dtype=torch.uint8), torch.full(level.shape, top, dtype=torch.uint8)]
        fills += [torch.randint(0, top + 1, level.shape, generator=g, dtype=torch.uint8) for _ in range(2)]
        probes = [transform(torch.where(masks[k - 1], fill.to(x.device), level), below) for fill in fills]
        masks.append(torch.stack([p != probes[0] for p in probes[1:]]).any(0))
    return masks


def read_mask(path: str, size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """A mask file -> bool ``(1, size, size)``, True where the file is nonzero (``cv2.inpaint``'s
    convention; read with :func:`transforms.imageio.read_image` as gray, so alpha is composited on
    white and a transparent pixel counts as missing).

    A file at another size is fitted to the crop and resize :func:`selfvae.sample.read_inputs`
    gives the images (the largest centred square, Lanczos): a pixel of the resized image is
    missing when any missing pixel has a nonzero weight in it (found by resizing, in floating
    point, the hole filled with random positive values and zeros elsewhere). So the mask stays
    binary and no resized pixel that hole content leaks into is taken as known; a
    nearest-neighbour resize could drop a thin stroke whose pixels still reach the resized
    image, which would then be clamped as known. Returns the mask and the file's
    ``(height, width)``. Raises ``ImageReadError`` naming the file.
    """
    hole = read_image(path, channels=1) != 0  # (1, h, w)
    file_size = (hole.shape[1], hole.shape[2])
    if file_size == (size, size):
        return torch.from_numpy(hole), file_size
    crop = center_crop_resize(hole.astype(np.uint8), min(file_size))[0] != 0  # the images' crop, not resized
    rng = np.random.default_rng(0)
    probe = np.where(crop, rng.uniform(1.0, 2.0, crop.shape), 0.0).astype(np.float32)
    resized = np.asarray(Image.fromarray(probe).resize((size, size), Image.Resampling.LANCZOS))
    return torch.from_numpy(resized != 0)[None], file_size


def standard_masks(height: int, width: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The fixed masks of the benchmark, bool ``(1, height, width)`` (True = to fill):

    ``centre``: the centred square (rectangle) of half the side; ``strokes``: four random
    brush strokes from ``seed``, each a polyline of 3 segments (``cv2.line``) a tenth of the side
    thick, each segment an eighth to a quarter of the side long in a random direction (about a
    quarter of a 32x32 image in all, a fifth of a large one); ``half``: the right half.
    """
    centre = np.zeros((height, width), dtype=np.uint8)
    centre[height // 4:height // 4 + height // 2, width // 4:width // 4 + width // 2] = 1
    strokes = np.zeros((height, width), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    side = min(height, width)
    for _ in range(4):
        point = rng.uniform(0, [width, height])
        for _ in range(3):
            angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(side / 8, side / 4)
            end = np.clip(point + length * np.array([np.cos(angle), np.sin(angle)]), 0, [width - 1, height - 1])
            cv2.line(strokes, tuple(int(v) for v in point.round()), tuple(int(v) for v in end.round()), 1,
                     max(1, round(side / 10)))
            point = end
    half = np.zeros((height, width), dtype=np.uint8)
    half[:, width // 2:] = 1
    return {name: torch.from_numpy(m != 0)[None] for name, m in
            (("centre", centre), ("strokes", strokes), ("half", half))}


# --------------------------------------------------------------------------- baselines and pictures
def classical_inpaint(x: torch.Tensor, missing: torch.Tensor, method: str = "telea",
                      radius: int = 3) -> torch.Tensor:
    """``cv2.inpaint`` of each image: ``telea`` (Telea 2004) or ``ns`` (Navier-Stokes), ``radius``
    pixels. x: uint8 ``(B, C, H, W)`` with C = 1 or 3; missing: see :func:`as_missing`.
    Returns uint8 ``(B, C, H, W)`` with the known pixels exact."""
    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"method must be one of {sorted(flags)}, got '{method}'")
    m = as_missing(missing, x)
    out = []
    for image, hole in zip(x.cpu().numpy(), m.cpu().numpy()):
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        filled = cv2.inpaint(hwc, hole[0].astype(np.uint8), radius, flags[method]).reshape(hwc.shape)
        out.append(filled.transpose(2, 0, 1))
    filled = torch.from_numpy(np.stack(out)).to(x.device)
    return torch.where(m, filled, x)


def mean_fill(x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """The missing pixels set to each image's mean known colour (128 where nothing is known):
    uint8 ``(B, C, H, W)``."""
    m = as_missing(missing, x)
    known = (~m).to(torch.float64)
    count = known.sum((2, 3))
    mean = (x.to(torch.float64) * known).sum((2, 3)) / count.clamp_min(1)
    mean = torch.where(count > 0, mean, torch.full_like(mean, HOLE_VALUE)).round().to(torch.uint8)
    return torch.where(m, mean[:, :, None, None].expand_as(x), x)


def show_hole(x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """x with the missing pixels grey (what the model is given): uint8 ``(B, C, H, W)``."""
    m = as_missing(missing, x)
    return torch.where(m, torch.full_like(x, HOLE_VALUE), x)


def mask_image(missing: torch.Tensor) -> torch.Tensor:
    """A mask as a picture, white = to fill: uint8 ``(B, 1, H, W)`` in {0, 255}."""
    m = missing if missing.dim() == 4 else missing[:, None]
    return (m != 0).to(torch.uint8) * 255


# --------------------------------------------------------------------------- the chain
def sweep(model: SelfVAE, current: torch.Tensor, known: List[torch.Tensor], masks: List[torch.Tensor],
          latents: str, decode: str, temperature: float, generator: Optional[torch.Generator],
          from_u: bool = False) -> List[torch.Tensor]:
    """One pass down the hierarchy (steps 1-4 of the module docstring).

    current: uint8 ``(B, C, H, W)``, the current fill; known: the input's levels (only their
    unmasked entries are used); masks: :func:`level_masks`. ``latents`` (``mean``/``sample``) says
    how u and the z's are taken from their posteriors (at temperature 1), ``decode``
    (``mode``/``sample``) how each level is decoded (a draw at ``temperature``); ``from_u``
    redraws the top level from u (always for K = 0). Returns the new ``[x, y_1, ..., y_K]`` with
    the known entries clamped.
    """
    K = model.levels
    observed = model.make_levels(current)
    new: List[torch.Tensor] = list(observed)
    if from_u or K == 0:
        u = choose_latent(model.q_u(observed[K]), latents, 1.0, generator)
        new[K] = decode_level(model.p_top(None, u), decode, temperature, generator, known=known[K], missing=masks[K])
    new[K] = torch.where(masks[K], new[K], known[K])
    for k in range(K, 0, -1):
        z = choose_latent(model.q_z[k - 1](observed[k - 1]), latents, 1.0, generator)
        likelihood = model.p_y[k - 1](model.p_y[k - 1].condition(new[k]), z)
        new[k - 1] = decode_level(likelihood, decode, temperature, generator, known=known[k - 1], missing=masks[k - 1])
    return new


@torch.no_grad()
def inpaint(model: SelfVAE, x: torch.Tensor, missing: torch.Tensor, iterations: int = DEFAULT_ITERATIONS,
            decode: str = "mode", temperature: float = 1.0, generator: Optional[torch.Generator] = None,
            init: str = "telea", from_u: bool = False) -> InpaintResult:
    """Fill the missing pixels of x by ``iterations`` sweeps of pseudo-Gibbs imputation through the
    hierarchy (module docstring).

    x: uint8 ``(B, C, H, W)`` at the model's spec, 0..255; what it holds at the missing pixels is
    never read. missing: True = to fill, see :func:`as_missing`. decode: how the last sweep
    decodes (``mode``: posterior means and most likely values; ``sample``: a draw like the other
    sweeps). temperature: of the levels' draws. generator: every random draw comes from it, so
    the same seed gives the same result on the same device. init: ``telea`` or ``mean``.
    from_u: redraw the top level from ``u ~ q(u | y_K)`` in every sweep (see the module docstring).

    Returns an :class:`InpaintResult` whose images equal x exactly at the known pixels; images
    without a missing pixel come back unchanged. The model is put in eval mode for the call.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if decode not in DECODES:
        raise ValueError(f"decode must be 'mode', 'mean' or 'sample', got '{decode}'")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got '{init}'")
    m = as_missing(missing, x)
    blank = show_hole(x, m)  # nothing of what x holds in the hole is used from here on
    masks = level_masks(model, m, blank)
    known = model.make_levels(blank)
    if not m.any():
        return InpaintResult(images=x.clone(), levels=[level.clone() for level in known], masks=masks)
    current = classical_inpaint(blank, m) if init == "telea" else mean_fill(blank, m)
    sweeps = []
    with evaluating(model):
        for i in range(iterations):
            last = i == iterations - 1
            latents = "mean" if last and decode == "mode" else "sample"
            levels = sweep(model, current, known, masks, latents, decode if last else "sample", temperature,
                           generator, from_u)
            current = levels[0]
            sweeps.append(current)
    return InpaintResult(images=current, levels=levels, sweeps=sweeps, masks=masks)
