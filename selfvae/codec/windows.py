"""Lossless coding of whole images in overlapping windows (prior-mean latents; format version 4,
flag bit 4).

The model sees one tile of S x S pixels at a time (S = 32 for the shipped model). Coded tile by
tile, a pixel near a tile's edge is predicted without the pixels across the edge, which the
model has never been shown: on the corpus's held-out photographs, the pixels of a tile's central
half cost 2.3 % (x) to 2.8 % (y1) fewer bits than the tile's average (``experiments/codec_windows.py``). Here every
level below the top is coded with the windows of S x S pixels at a stride of S/2 -- four
shifted tilings of the image, the *slots* ``(a, b)`` with offsets ``(a S/2, b S/2)`` -- and
each pixel is coded under the window in whose central half it lies (a pixel within S/4 of the
image's edge: under the window at the edge). Every pixel then has at least S/4 pixels of
context on each side, except at the image's own edges.

It works because the code is level by level and phase by phase over the whole image: when
level ``y_{k-1}`` is coded, all of ``y_k`` is known, and when its phase ``s`` is coded, all of
its phases before ``s``; every window's prediction for its pixels of phase ``s`` uses only
those. The latents are fixed at their prior means, computed per window from the window's levels
above (:func:`selfvae.codec.bitsback.prior_means`, so the file needs no seed); the top level
``y_K`` has no context to gain (its likelihood ``p(y_K | u)`` sees no pixels) and is coded tile
by tile as in the tile code.

**Two rules** (the file's flag bit 5 says which): ``owner`` codes each pixel under the window owning
it; ``mixture`` (format version 5) under the mixture of every window covering it, weighted by
``exp(MIX_BETA * d)`` with ``d`` the pixel's distance in x pixels to that window's edge (the nearer
of the two axes, capped at S/2), normalised over the windows covering it -- the four windows'
mixtures of ``M`` components make one of ``4 M`` components (:func:`mixed`), still exactly
normalised. Chosen on training photographs with ``experiments/codec_windows.py`` (beta 0.2), it
takes another ~1 % off held-out photographs; the coder then evaluates four times the components
(about three times the owner rule's time), and keeps each slot's parameters of a level
(four times the memory, hence :data:`MIX_MAX_PIXELS`).

The padding is free: an image is padded to whole tiles (by repetition, as in :mod:`.tiling`), but
below the top only its own pixels are coded; each phase's padding is its last row and column
repeated (:func:`fill`, i.e. the level's last row and column of the same parity), which the
decoder sets as soon as the phase is decoded, before any window reads it (:func:`padded_levels`).
Tile by tile, the padding cost about as much per value as the pixels themselves (2.6 % of the bits
of the corpus's training photographs whose sides are not multiples of 32).

What the windows need of the model: transforms that keep one 2x2 phase of their input
(``subsample``: a window's levels are then the crops of the image's levels) and a tile side
with ``S/4`` a multiple of ``2**K`` (the windows' phases and latent grids line up with the
image's). :func:`unsupported` says why a model does not qualify. Each level's decoder runs on
four times the tiles' pixels; the entropy coding, most of the time, is unchanged. Memory: the
mixture parameters of one level of one image (``P`` floats per pixel, ``P = 100`` for the
shipped model: 0.3 GB for x of a 1024 x 768 photograph), hence :data:`MAX_PIXELS`.

Integer values ``(1, C, H, W)`` per image level; the images are padded to multiples of S as
in :mod:`.tiling`, and need sides of more than ``2^(K-1)`` pixels (:func:`fits`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..distributions import DiscretizedLogisticMixture
from ..model import SelfVAE
from ..nets import to_unit
from ..phases import ORDER, PhasedMixture, assemble, phase_of
from . import bitsback
from .ans import Stack, integer_table
from .container import CodecError

#: images of more pixels (after padding) are coded tile by tile: the windows keep a whole level's
#: mixture parameters in memory
MAX_PIXELS = 1 << 22
#: the mixture rule keeps every slot's parameters of a level: images of more pixels (padded) use the owner rule
MIX_MAX_PIXELS = 1 << 21
#: pixels of one channel coded under one probability table computation (memory ~ 256 x 8 bytes each)
BAND_PIXELS = 8192
#: how a pixel's distribution is made from the windows covering it (flag bit 5 of the file)
RULES = ("owner", "mixture")
#: the mixture rule's slope: a window's weight is ``exp(MIX_BETA * d)``, ``d`` the pixel's distance in x
#: pixels to the window's edge, capped at S/2 (part of the format: files depend on it)
MIX_BETA = 0.2
#: a window that does not cover a pixel: its log-weight (exp of it is 0 in float64, and no inf enters the sums)
_ABSENT = -1.0e4


def unsupported(model: SelfVAE) -> Optional[str]:
    """Why the model cannot code in windows, or None when it can."""
    S, K = model.specs[0].height, model.levels
    if K == 0:
        return "the plain VAE (K = 0) has no levels below the top"
    if model.specs[0].width != S:
        return f"its images are not square ({S}x{model.specs[0].width})"
    if any(t.kept_phase is None for t in model.chain.transforms):
        return (f"its transforms ({model.config.transform}) are not pixel subsamplings: a window's levels would "
                f"not be the crops of the image's levels")
    if (S // 4) % (2 ** K):
        return f"its tile side {S} is not a multiple of 4 * 2^K = {4 * 2 ** K}"
    if not all(decoder.given_first for decoder in model.p_y):
        return "its levels are not coded in 2x2 phases whose first is the level above (phases=4 with subsample)"
    return None


def max_pixels(rule: str) -> int:
    """The most pixels (padded) of an image coded in windows under ``rule``."""
    return MIX_MAX_PIXELS if rule == "mixture" else MAX_PIXELS


def fits(model: SelfVAE, shapes: List[Tuple[int, int]], rule: str = "owner") -> bool:
    """Whether images of these ``(height, width)`` suit the windows: at most :func:`max_pixels` (padded),
    and both sides more than ``2^(K-1)`` pixels (every phase of every coded level holds pixels of the
    image, which its padding repeats)."""
    S, K = model.specs[0].height, model.levels
    return all(-(-h // S) * -(-w // S) * S * S <= max_pixels(rule) and min(h, w) > 2 ** (K - 1)
               for h, w in shapes)


# --------------------------------------------------------------------------- geometry
def owners(n: int, tile: int) -> torch.Tensor:
    """For each x coordinate ``0..n-1`` (``n`` a multiple of ``tile``): the slot shift (0 or 1) of the
    window in whose central half it lies; within ``tile/4`` of either end, 0 (the edge window)."""
    stride, margin = tile // 2, tile // 4
    r = torch.arange(n)
    own = torch.div(r - margin, stride, rounding_mode="floor") % 2
    own[(r < margin) | (r >= n - margin)] = 0
    return own


def edge_distance(n: int, level: int, offset: int, tile: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each coordinate ``0..n-1`` of level ``level`` (``n`` a multiple of the level's window side):
    whether a window of the tiling that starts ``offset`` x pixels in covers it, and its distance in x
    pixels to that window's nearer edge (the window's own pixels at its edge: 0)."""
    s = 2 ** level
    t, start = tile // s, offset // s
    r = torch.arange(n)
    covered = (r >= start) & (r < start + (n - start) // t * t)
    q = (r - start) % t
    return covered, torch.minimum(q, t - 1 - q) * s


def mixture_log_weights(height: int, width: int, level: int, tile: int) -> torch.Tensor:
    """The mixture rule's log-weights of the four slots (:data:`SLOTS`) at every pixel of level ``level``
    of a padded image ``height x width``: ``(4, height / 2^level, width / 2^level)``, each pixel's
    weights over the windows covering it summing to one (:data:`_ABSENT` for a window that does not)."""
    s = 2 ** level
    out = []
    for a, b in SLOTS:
        cy, dy = edge_distance(height // s, level, a * tile // 2, tile)
        cx, dx = edge_distance(width // s, level, b * tile // 2, tile)
        d = torch.minimum(dy[:, None], dx[None, :]).clamp(max=tile // 2).double()
        out.append(torch.where(cy[:, None] & cx[None, :], MIX_BETA * d, torch.full_like(d, _ABSENT)))
    logw = torch.stack(out)
    logw = logw - torch.logsumexp(logw, 0, keepdim=True)  # slot (0, 0) covers every pixel of a padded image
    return torch.where(torch.stack(out) > _ABSENT, logw, torch.full_like(logw, _ABSENT)).float()


def mixed(slot_params: List[torch.Tensor], log_weights: torch.Tensor, template: PhasedMixture
          ) -> DiscretizedLogisticMixture:
    """The mixture of the windows' mixtures at each pixel: ``slot_params`` per slot ``(P, h, w)`` (a
    window's parameters of ``M`` components; anything finite where the slot does not cover), weighted by
    ``log_weights`` ``(4, h, w)`` -> one mixture of ``4 M`` components ``(1, 4P, h, w)``, whose component
    ``w M + m`` is component ``m`` of slot ``w`` with log-weight ``log pi_{w,m} + log alpha_w``."""
    C, M = template.channels, template.components
    Kc = C * (C - 1) // 2
    logits, means, scales, coeffs = [], [], [], []
    for params, logw in zip(slot_params, log_weights):
        h, w = params.shape[-2:]
        lg, mu, sc, co = params.split([M, C * M, C * M, Kc * M], dim=0)
        logits.append(torch.log_softmax(lg, dim=0) + logw)
        means.append(mu.reshape(C, M, h, w))
        scales.append(sc.reshape(C, M, h, w))
        coeffs.append(co.reshape(Kc, M, h, w))
    n = len(slot_params)
    params = torch.cat([torch.cat(logits), torch.cat(means, 1).reshape(C * n * M, h, w),
                        torch.cat(scales, 1).reshape(C * n * M, h, w), torch.cat(coeffs, 1).reshape(Kc * n * M, h, w)])
    return DiscretizedLogisticMixture(params[None], channels=C, num_values=template.num_values, components=n * M,
                                      min_log_scale=template.min_log_scale)


def windows_of(level: torch.Tensor, shift: Tuple[int, int], size: int, stride: int) -> torch.Tensor:
    """The windows of slot ``shift`` of a level ``(1, X, H, W)``: side ``size``, offsets ``shift * stride``
    then multiples of ``size``, row-major -> ``(n, X, size, size)``."""
    _, X, H, W = level.shape
    oy, ox = shift[0] * stride, shift[1] * stride
    nh, nw = (H - oy) // size, (W - ox) // size
    crop = level[0, :, oy:oy + nh * size, ox:ox + nw * size]
    return crop.reshape(X, nh, size, nw, size).permute(1, 3, 0, 2, 4).reshape(nh * nw, X, size, size)


def _paste(target: torch.Tensor, windows: torch.Tensor, shift: Tuple[int, int], stride: int,
           mask: Optional[torch.Tensor]) -> None:
    """Write the windows ``(n, X, t, t)`` of slot ``shift`` into ``target`` ``(X, H, W)`` where ``mask``
    ``(H, W)`` (the pixels the slot owns) is set; ``mask=None``: wherever the windows lie."""
    X, H, W = target.shape
    t = windows.shape[-1]
    oy, ox = shift[0] * stride, shift[1] * stride
    nh, nw = (H - oy) // t, (W - ox) // t
    if nh * nw == 0:
        return
    whole = windows.reshape(nh, nw, X, t, t).permute(2, 0, 3, 1, 4).reshape(X, nh * t, nw * t)
    region = target[:, oy:oy + nh * t, ox:ox + nw * t]
    region.copy_(whole if mask is None else torch.where(mask[oy:oy + nh * t, ox:ox + nw * t], whole, region))


SLOTS = ((0, 0), (0, 1), (1, 0), (1, 1))


def levels_of(model: SelfVAE, x: torch.Tensor) -> List[torch.Tensor]:
    """``[x, y_1, ..., y_K]`` of a whole padded image ``(1, C, H, W)``: each transform keeps one 2x2
    phase of the level below (:func:`unsupported`), so the levels of a tile are the tile's crops of these."""
    levels = [x]
    for t in model.chain.transforms:
        levels.append(phase_of(levels[-1], t.kept_phase))
    return levels


def padded_levels(model: SelfVAE, x: torch.Tensor, height: int, width: int) -> List[torch.Tensor]:
    """The levels a windows file codes for an image of ``height x width`` padded to ``x`` ``(1, C, H, W)``
    (by repetition, :mod:`.tiling`): ``y_K`` as the tile code has it; below it, each level's first phase
    is the level above and its other phases are the image's own pixels with the padding of
    :func:`fill`, which the decoder rebuilds and the stream never holds."""
    levels = levels_of(model, x)
    K = model.levels
    out: List[Optional[torch.Tensor]] = [None] * K + [levels[K]]
    for level in range(K - 1, -1, -1):
        parts = [phase_of(levels[level], i) for i in range(4)]
        parts[ORDER[0]] = out[level + 1]
        for i in ORDER[1:]:
            dy, dx = divmod(i, 2)
            parts[i] = fill(parts[i], real_extent(height, level, dy), real_extent(width, level, dx))
        out[level] = assemble(parts)
    return out


# --------------------------------------------------------------------------- one image
class _Image:
    """One padded image being coded: its levels (full size, ``(1, C, H_k, W_k)`` integer, None while
    unknown) and, per slot, per batch of windows, the prior-mean latents ``{k: z_k}`` (``K + 1``: u)."""

    def __init__(self, model: SelfVAE, height: int, width: int, gray: bool, chunk: int,
                 real: Optional[Tuple[int, int]] = None, rule: str = "owner"):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.model, self.height, self.width, self.gray, self.chunk = model, height, width, gray, chunk
        self.real = real or (height, width)
        self.tile = model.specs[0].height
        self.rule = rule
        K = model.levels
        self.levels: List[Optional[torch.Tensor]] = [None] * (K + 1)
        self.latents: Dict[Tuple[int, int], List[Dict[int, torch.Tensor]]] = {}
        own_y, own_x = owners(height, self.tile), owners(width, self.tile)
        # the slot owning each pixel of a level's phase grid (constant on each 2x2 block of the level)
        self.masks: Dict[int, Dict[Tuple[int, int], torch.Tensor]] = {}
        for level in range(K):
            step = 2 ** (level + 1)
            oy, ox = own_y[::step], own_x[::step]
            self.masks[level] = {s: (oy == s[0])[:, None] & (ox == s[1])[None, :] for s in SLOTS}

    def log_weights(self, level: int, index: int) -> torch.Tensor:
        """The mixture rule's log-weights ``(4, H/2, W/2)`` of the slots on phase ``index`` of level ``level``."""
        dy, dx = divmod(index, 2)
        return mixture_log_weights(self.height, self.width, level, self.tile)[:, dy::2, dx::2]

    def real_phase(self, level: int, index: int) -> Tuple[int, int]:
        """Rows and columns of phase ``index`` of level ``level`` that hold the image's own pixels."""
        dy, dx = divmod(index, 2)
        return real_extent(self.real[0], level, dy), real_extent(self.real[1], level, dx)

    def windows(self, k: int, slot: Tuple[int, int]) -> List[torch.Tensor]:
        """Level ``k``'s windows of a slot, in batches of ``chunk``."""
        scale = 2 ** k
        w = windows_of(self.levels[k], slot, self.tile // scale, self.tile // 2 // scale)
        return list(torch.split(w, self.chunk)) if len(w) else []  # a slot without windows (a narrow image)

    def known(self, k: int) -> None:
        """Level ``k`` is now known: the latents ``z_k`` of every window, from ``y_k`` and the latent above."""
        m = self.model
        K = m.levels
        for slot in SLOTS:
            batches = self.windows(k, slot)
            if k == K:
                self.latents[slot] = [{K + 1: bitsback.top_latent(m, len(b))} for b in batches]
            for lat, y in zip(self.latents[slot], batches):
                lat[k] = bitsback.prior_z(m, k, y, lat[k + 1]).mean

    def level_params(self, level: int):
        """The decoder's mixture parameters of level ``level`` (coded given ``y_{level+1}``), per phase index
        ``(P, H/2, W/2)``: owner rule, each pixel's from the window owning it (a list of four); mixture
        rule, per slot (a dict ``slot -> list of four``, zeros where the slot has no window). And per
        slot, per batch, the decoder's mean offset for the refiner. ``(maps, offsets, template)``, where
        ``template`` is one batch's likelihood (for the constants of its mixture)."""
        m, k = self.model, level + 1
        H, W = self.levels[k].shape[-2] * 2, self.levels[k].shape[-1] * 2
        scale = 2 ** level
        stride = self.tile // 2 // scale // 2  # at the phase grid
        maps: Dict[Tuple[int, int], List[torch.Tensor]] = {}
        offsets: Dict[Tuple[int, int], List[Optional[torch.Tensor]]] = {}
        template = None
        for slot in SLOTS:
            offsets[slot] = []
            parts: List[List[torch.Tensor]] = [[] for _ in range(4)]
            for y, lat in zip(self.windows(k, slot), self.latents[slot]):
                dist = bitsback.likelihood(m, k, y, lat[k])
                if not isinstance(dist, PhasedMixture):
                    raise CodecError("windows code phased likelihoods only")
                template = dist
                offsets[slot].append(dist.offset)
                for i in range(4):
                    parts[i].append(phase_of(dist.params, i))
            target = slot if self.rule == "mixture" else None
            if target not in maps:
                P = template.params.shape[1]
                maps[target] = [torch.zeros(P, H // 2, W // 2, dtype=template.params.dtype) for _ in range(4)]
            if parts[0]:
                for i in range(4):
                    _paste(maps[target][i], torch.cat(parts[i]), slot, stride,
                           None if self.rule == "mixture" else self.masks[level][slot])
        return (maps if self.rule == "mixture" else maps[None]), offsets, template

    def phase_params(self, level: int, step: int, maps, offsets, template: PhasedMixture) -> "PhaseCode":
        """Phase ``ORDER[step]``'s distribution given the level's earlier phases (in ``self.levels[level]``):
        the decoder's parameters plus the refiner's correction, window by window, under the image's rule."""
        index = ORDER[step]
        mixture = self.rule == "mixture"
        if step == 0:
            if mixture:
                return PhaseCode(template, [maps[slot][index] for slot in SLOTS], self.log_weights(level, index))
            return PhaseCode(template, maps[index])
        scale = 2 ** level
        size, stride = self.tile // scale, self.tile // 2 // scale
        n = template.num_values
        per_slot = []
        corrections = None if mixture else torch.zeros_like(maps[index])
        for slot in SLOTS:
            level_windows = torch.split(windows_of(self.levels[level], slot, size, stride), self.chunk)
            level_windows = level_windows if offsets[slot] else []
            out = []
            for values, offset in zip(level_windows, offsets[slot]):
                known = [to_unit(phase_of(values, i), n).to(template.params.dtype) for i in ORDER[:step]]
                out.append(template.refiner(step, known, offset))
            if mixture:
                correction = torch.zeros_like(maps[slot][index])
                if out:
                    _paste(correction, torch.cat(out), slot, stride // 2, None)
                per_slot.append(maps[slot][index] + correction)
            elif out:
                _paste(corrections, torch.cat(out), slot, stride // 2, self.masks[level][slot])
        if mixture:
            return PhaseCode(template, per_slot, self.log_weights(level, index))
        return PhaseCode(template, maps[index] + corrections)


class PhaseCode:
    """One phase's distribution over a whole image, as the coder reads it band by band: a mixture's
    parameters ``(P, h, w)`` (owner rule), or each slot's ``(P, h, w)`` and their log-weights
    ``(4, h, w)`` (mixture rule, :func:`mixed`)."""

    def __init__(self, template: PhasedMixture, params, log_weights: Optional[torch.Tensor] = None):
        self.template, self.params, self.log_weights = template, params, log_weights

    def mixture(self, r0: int, r1: int, cols: int) -> DiscretizedLogisticMixture:
        """The mixture of rows ``r0:r1`` and columns ``:cols``."""
        if self.log_weights is None:
            return _mixture(self.params[:, r0:r1, :cols], self.template)
        return mixed([p[:, r0:r1, :cols] for p in self.params], self.log_weights[:, r0:r1, :cols], self.template)


def _mixture(params: torch.Tensor, template: PhasedMixture) -> DiscretizedLogisticMixture:
    return DiscretizedLogisticMixture(params[None], channels=template.channels, num_values=template.num_values,
                                      components=template.components, min_log_scale=template.min_log_scale)


def _bands(height: int, width: int) -> List[Tuple[int, int]]:
    rows = max(1, BAND_PIXELS // width)
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def _tables(mixture: DiscretizedLogisticMixture, values: torch.Tensor, c: int) -> np.ndarray:
    return integer_table(mixture.channel_pmf(c, values[:, :c] if c else None, summed=True))


def real_extent(size: int, level: int, phase_offset: int) -> int:
    """How many rows (or columns) of a phase grid hold pixels of the image itself: those of level
    ``level`` (of an image ``size`` pixels high) at offset ``phase_offset`` (0 or 1) within its 2x2 blocks."""
    return (-(-size // 2 ** level) - phase_offset + 1) // 2


def fill(values: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A phase ``(1, C, h, w)`` whose first ``rows x cols`` are the image's own pixels, its padding set to
    their last row and column repeated (the same-parity rows and columns of the level): what windows
    files put where the image ends, never coded."""
    values = values.clone()
    values[:, :, rows:] = values[:, :, rows - 1:rows]
    values[:, :, :, cols:] = values[:, :, :, cols - 1:cols]
    return values


def _push_phase(stack: Stack, code: PhaseCode, values: torch.Tensor, gray: bool, rows: int, cols: int) -> None:
    """Push one phase's values ``(1, C, h, w)``, its first ``rows x cols`` (the image's own pixels) only,
    band by band (last band first), channel by channel."""
    C = 1 if gray else values.shape[1]
    values = values[:, :, :rows, :cols]
    for r0, r1 in reversed(_bands(rows, cols)):
        mixture, band = code.mixture(r0, r1, cols), values[:, :, r0:r1]
        for c in reversed(range(C)):
            stack.push_values(band[:, c], _tables(mixture, band, c))


def _pop_phase(stack: Stack, code: PhaseCode, shape, gray: bool, rows: int, cols: int, floor: int) -> torch.Tensor:
    """Pop what :func:`_push_phase` pushed; the padding beyond ``rows x cols`` by :func:`fill`."""
    C, h, w = shape
    values = torch.zeros(1, C, h, w, dtype=torch.long)
    real = values[:, :, :rows, :cols]
    for r0, r1 in _bands(rows, cols):
        _check(stack, floor)
        mixture, band = code.mixture(r0, r1, cols), real[:, :, r0:r1]
        for c in range(1 if gray else C):
            band[:, c] = torch.from_numpy(stack.pop_values(_tables(mixture, band, c)).astype(np.int64)).reshape(
                1, r1 - r0, cols)
        if gray:
            band[:, 1:] = band[:, :1]
    return fill(values, rows, cols).to(torch.uint8)


def _phases_of(level: torch.Tensor) -> List[torch.Tensor]:
    return [phase_of(level, i) for i in range(4)]




# --------------------------------------------------------------------------- whole files
@dataclass
class Plan:
    """What the coder needs to know of a file's images: padded and real sizes, gray flags, the top
    level's tile batches (sizes) and the masks of gray tiles per batch."""

    sizes: List[Tuple[int, int]]
    real: List[Tuple[int, int]]
    gray: List[bool]
    top_sizes: List[int]
    top_gray: Optional[List[torch.Tensor]]
    rule: str = "owner"


def plan(model: SelfVAE, shapes: List[Tuple[int, int, int]], chunk: int, gray_tiles: torch.Tensor,
         gray_code: bool, rule: str = "owner") -> Plan:
    """``shapes``: per image ``(channels, height, width)`` as given; ``gray_tiles``: bool per tile of every
    image (from a gray image); ``gray_code``: gray images send one channel (the file's gray flag);
    ``rule``: :data:`RULES`."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    S = model.specs[0].height
    sizes = [(-(-h // S) * S, -(-w // S) * S) for _, h, w in shapes]
    gray = [gray_code and c == 1 and model.specs[0].channels > 1 for c, _, _ in shapes]
    top_sizes = bitsback.chunk_sizes(len(gray_tiles), chunk, 0, bits_back=False)
    top_gray = list(torch.split(gray_tiles, top_sizes)) if gray_code else None
    return Plan(sizes, [(h, w) for _, h, w in shapes], gray, top_sizes, top_gray, rule)


def full(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Tiles ``(rows * cols, C, t, t)`` of one padded image, row-major -> ``(1, C, rows * t, cols * t)``."""
    n, C, t, _ = tiles.shape
    return tiles.reshape(rows, cols, C, t, t).permute(2, 0, 3, 1, 4).reshape(1, C, rows * t, cols * t)


def to_tiles(level: torch.Tensor, t: int) -> torch.Tensor:
    """``(1, C, H, W)`` -> its ``t x t`` tiles, row-major ``(n, C, t, t)`` (the tile code's order)."""
    return windows_of(level, (0, 0), t, t)


@torch.no_grad()
def encode(model: SelfVAE, images: List[torch.Tensor], p: Plan,
           chunk: int) -> Tuple[np.ndarray, Dict[int, int], List[List[torch.Tensor]]]:
    """Code the images padded by repetition (uint8 ``(1, C, H, W)`` each). Returns the stream's words, the
    words a decoder reads to reach each level (previews) and the levels coded (:func:`padded_levels`)."""
    K, S = model.levels, model.specs[0].height
    coded = []
    for x, gray, (h, w) in zip(images, p.gray, p.real):
        image = _Image(model, x.shape[-2], x.shape[-1], gray, chunk, (h, w), p.rule)
        image.levels = padded_levels(model, x, h, w)
        for k in range(K, 0, -1):
            image.known(k)
        coded.append(image)
    stack = Stack()
    start: Dict[int, int] = {}
    for level in range(K):  # x first: the decoder meets it last
        start[level] = len(stack.trace) - 1
        for image in coded:
            maps, offsets, template = image.level_params(level)
            phases = _phases_of(image.levels[level])
            for step in reversed(range(template.first_step, 4)):
                code = image.phase_params(level, step, maps, offsets, template)
                _push_phase(stack, code, phases[ORDER[step]], image.gray, *image.real_phase(level, ORDER[step]))
    start[K] = len(stack.trace) - 1
    top = torch.cat([to_tiles(image.levels[K], S // 2 ** K) for image in coded])
    u_tiles = torch.split(top, p.top_sizes)
    for c, y in enumerate(u_tiles):
        bitsback.push_level(stack, model.p_top(None, bitsback.top_latent(model, len(y))), y,
                            p.top_gray[c] if p.top_gray else None)
    # a decoder has level l once it has read what the stages l..K pushed: down to their lowest point
    final, trace = stack.size, np.asarray(stack.trace)
    return stack.words(), {k: int(final - trace[start[k]:].min()) for k in range(K + 1)}, \
        [image.levels for image in coded]


@torch.no_grad()
def decode(model: SelfVAE, words: np.ndarray, p: Plan, chunk: int, preview: List[int],
           up_to: int = 0) -> List[List[Optional[torch.Tensor]]]:
    """Decode down to level ``up_to``: per image its full levels ``(1, C, H_k, W_k)`` (None below ``up_to``).
    ``preview``: the header's words a decoder reads to reach each level. The decoder only pops, so it
    holds exactly ``len(words) - preview[k]`` words when level k is done and never fewer before:
    checked as it goes, so a header that announces more than the stream holds fails early.
    Raises :class:`CodecError` when the stream does not hold the images its plan announces."""
    K, S = model.levels, model.specs[0].height
    stack = Stack(words.astype(np.uint32))
    floors = [len(words) - preview[k] for k in range(K + 1)]
    tops = []
    for c in reversed(range(len(p.top_sizes))):
        _check(stack, floors[K])
        tops.append(bitsback.pop_level(stack, model.p_top(None, bitsback.top_latent(model, p.top_sizes[c])),
                                       p.top_gray[c] if p.top_gray else None))
    _check(stack, floors[K], exact=True)
    top = torch.cat(list(reversed(tops)))
    images, start, t = [], 0, S // 2 ** K
    for (h, w), gray, real in zip(p.sizes, p.gray, p.real):
        image = _Image(model, h, w, gray, chunk, real, p.rule)
        n = (h // S) * (w // S)
        image.levels[K] = full(top[start:start + n], h // S, w // S)
        start += n
        images.append(image)
    for level in range(K - 1, up_to - 1, -1):
        for image in reversed(images):
            image.known(level + 1)
            maps, offsets, template = image.level_params(level)
            H, W = image.levels[level + 1].shape[-2] * 2, image.levels[level + 1].shape[-1] * 2
            C = image.levels[level + 1].shape[1]
            empty = torch.zeros(1, C, H // 2, W // 2, dtype=torch.uint8)
            phases = [empty] * 4
            if template.first_step:
                phases[ORDER[0]] = image.levels[level + 1]
            for step in range(template.first_step, 4):
                image.levels[level] = assemble(phases)  # the phases so far (the refiner reads only those)
                _check(stack, floors[level])
                code = image.phase_params(level, step, maps, offsets, template)
                phases = list(phases)
                phases[ORDER[step]] = _pop_phase(stack, code, (C, H // 2, W // 2), image.gray,
                                                 *image.real_phase(level, ORDER[step]), floors[level])
            image.levels[level] = assemble(phases)
        _check(stack, floors[level], exact=True)
    return [image.levels for image in images]


def _check(stack: Stack, floor: int, exact: bool = False) -> None:
    """The decoder is above the level's floor (``exact``: at it, the level done); else the header
    announces more (or other) than the stream holds."""
    if stack.size < floor or exact and stack.size != floor or not exact and floor <= 0 and stack.empty:
        raise CodecError("corrupt data: the stream does not hold the images its header announces")
