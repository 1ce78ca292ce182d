"""selfVAE as an image codec: :func:`encode` images to the bytes of a ``.svae`` file and
:func:`decode` them back.

* **Lossless** (default): every image is cut into the model's tiles and coded by ANS through
  the whole hierarchy (:mod:`.bitsback`); decoding gives the exact pixels. A decoder meets
  ``y_K`` first and ``x`` last: ``up_to_level=k`` stops at ``y_k`` (previews). The latents are
  coded by bits-back, or fixed at their prior means (``latents``; by default the shorter:
  bits-back pays only where the latents carry information, and costs initial bits). With
  prior-mean latents and a model whose transforms subsample (the shipped ``photo``), every level
  below the top is coded in overlapping windows over the whole image (:mod:`.windows`): each pixel
  under the mixture of the windows covering it (or the window in whose central half it lies,
  ``window_rule="owner"``), so that it sees its neighbours across the tiles' edges (``windows``;
  3-4 % shorter on photographs).
  When the model would spend more bits than the pixels' own bytes (an image far from what it
  was trained on), the file stores the pixels instead (mode ``stored``): never larger than raw.
* **Lossy** (``level=k``): ``y_k`` is sent losslessly, optionally with ``z_k..z_1``
  (``with_z``), and x is reconstructed from it (:mod:`.lossy`).

Images enter as uint8 numpy arrays ``(C, H, W)`` with C = 1 (gray) or 3 (RGB), any size
(or a uint8 tensor ``(B, C, H, W)``), and come back the same way. Every probability is
computed on the CPU, in the same batches on both sides; the file records a fingerprint of
the model and a checksum of the decoded pixels, so decoding with another model or on
arithmetic that disagrees is an error, never silently wrong pixels. The file format is in
:mod:`.container`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..model import SelfVAE
from . import bitsback, container, lossy, tiling, windows as windows_code
from .ans import PRECISION, Stack
from .container import CodecError, Header, ImageEntry, model_fingerprint, tiles_checksum

__all__ = ["encode", "decode", "Decoded", "CodecError", "DEFAULT_CHUNK", "DEFAULT_LATENT_BITS", "DEFAULT_Z_STEP",
           "LATENTS"]

DEFAULT_CHUNK = 32  # tiles coded in one batch
DEFAULT_LATENT_BITS = 6  # latents on a grid of step 2^-6 within +-8 (1,025 symbols)
DEFAULT_Z_STEP = -1  # lossy z's rounded to a grid of step 2^-1
#: how :func:`encode` codes the latents: ``auto`` (the shorter file), or one of the format's two
LATENTS = ("auto",) + container.LATENTS
#: ``auto`` also tries bits-back when the one-sample ELBO is at least this fraction below the
#: prior-mean code (bits-back files pay initial bits on top of the ELBO)
BITS_BACK_MARGIN = 0.01
Images = Union[torch.Tensor, Sequence[np.ndarray]]


@dataclass
class Decoded:
    """What :func:`decode` returns: ``images`` (uint8 ``(C, H, W)`` arrays, in file order) of level
    ``level`` (0: the images themselves; k > 0: the previews ``y_k``, whose values run over
    ``0..num_values-1``), their ``names`` and the file's ``header``."""

    images: List[np.ndarray]
    names: List[str]
    level: int
    num_values: int
    header: Header


def _cpu_model(model: SelfVAE) -> SelfVAE:
    """The model on the CPU in eval mode (a copy if it lives elsewhere): the codec's arithmetic."""
    if model.config.z_flow:
        raise CodecError(f"the codec codes latents under diagonal-Gaussian conditional priors; this model's priors "
                         f"are conditional flows (z_flow={model.config.z_flow}), which it does not code yet")
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    return model.eval()


def _as_list(images: Images) -> List[np.ndarray]:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise CodecError(f"images must be a (B, C, H, W) tensor or a list of (C, H, W) arrays, got shape "
                             f"{tuple(images.shape)}")
        images = [im.cpu().numpy() for im in images]
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3) or 0 in image.shape:
            raise CodecError(f"image {i} must be a uint8 (C, H, W) array with C = 1 or 3, got {image.dtype} "
                             f"{image.shape}")
        if image.shape[1] > container.MAX_SIDE or image.shape[2] > container.MAX_SIDE:
            raise CodecError(f"image {i} is {image.shape[2]}x{image.shape[1]}; the format allows sides up to "
                             f"{container.MAX_SIDE}")
        out.append(np.ascontiguousarray(image))
    if not out:
        raise CodecError("no images to encode")
    return out


def _tiles(model: SelfVAE, images: List[np.ndarray]) -> torch.Tensor:
    spec = model.specs[0]
    return torch.cat([tiling.to_tiles(im, spec.height, spec.channels) for im in images])


def _gray_tiles(model: SelfVAE, shapes: Sequence[Tuple[int, int, int]]) -> torch.Tensor:
    """bool per tile: it comes from a gray image (``shapes``: channels, height, width per image)."""
    tile = model.specs[0].height
    counts = tiling.tile_counts([(h, w) for _, h, w in shapes], tile)
    return torch.cat([torch.full((n,), c == 1 and model.specs[0].channels > 1) for (c, _, _), n in zip(shapes, counts)])


@torch.no_grad()
def encode(model: SelfVAE, images: Images, names: Optional[Sequence[str]] = None, *, level: Optional[int] = None,
           with_z: bool = False, chunk: int = DEFAULT_CHUNK, latent_bits: int = DEFAULT_LATENT_BITS,
           z_step_exponent: int = DEFAULT_Z_STEP, store_fallback: bool = True, decode: str = "mean",
           latents: str = "auto", windows: Optional[bool] = None, window_rule: str = "auto") -> bytes:
    """Compress ``images`` with ``model``: lossless when ``level`` is None, else the lossy operating
    point that sends ``y_level`` (and ``z_level..z_1`` with ``with_z``), whose receiver reconstructs
    the levels below ``y_level`` as their rounded expected values (``decode="mean"``) or most likely
    values (``"mode"``). Returns the file's bytes.

    ``latents``: ``"bits-back"`` codes the latents by bits-back (the file costs about the negative
    ELBO plus the initial bits its first pops take), ``"prior-mean"`` fixes them at their prior
    means (the file costs the levels' likelihood under those latents, with nothing else: the
    shorter code when the latents carry little); ``"auto"`` writes the prior-mean code, and also
    the bits-back one when a seeded one-sample ELBO of the coded levels is at least
    :data:`BITS_BACK_MARGIN` below it, keeping the shorter.
    ``windows``: code a lossless prior-mean file's levels below ``y_K`` in overlapping windows over each
    whole image (:mod:`.windows`) rather than tile by tile; None (the default) does where the model
    allows it (:func:`.windows.unsupported`) and the images are at most :data:`.windows.MAX_PIXELS`;
    True where it cannot is an error. ``window_rule``: how a pixel's distribution is made from the windows
    covering it (:data:`.windows.RULES`): ``"mixture"`` (the mixture of all of them; images of at most
    :data:`.windows.MIX_MAX_PIXELS`), ``"owner"`` (the window owning it: ~3x faster, ~1 % longer), or
    ``"auto"`` (the default): the mixture where every image fits it, else the owner rule.
    A lossless file whose code would be longer than the pixels themselves stores the pixels, unless
    ``store_fallback`` is False (to measure the model's own code)."""
    model = _cpu_model(model)
    images = _as_list(images)
    names = list(names) if names is not None else [""] * len(images)
    if len(names) != len(images):
        raise CodecError(f"{len(names)} names for {len(images)} images")
    if any(len(name.encode("utf-8")) > container.MAX_NAME for name in names):
        raise CodecError(f"image names are limited to {container.MAX_NAME} bytes of UTF-8")
    K = model.levels
    if level is not None and not 1 <= level <= K:
        raise CodecError(f"lossy level must be in 1..{K} for this {K}-level model, got {level}"
                         if K else "the plain VAE (K = 0) has no lossy operating points: it only codes losslessly")
    if decode not in container.DECODES:
        raise CodecError(f"decode must be one of {container.DECODES}, got {decode!r}")
    if latents not in LATENTS:
        raise CodecError(f"latents must be one of {LATENTS}, got {latents!r}")
    if not 1 <= chunk <= 4096 or not 2 <= latent_bits <= 16 or not -8 <= z_step_exponent <= 8:
        raise CodecError(f"chunk {chunk}, latent_bits {latent_bits} or z step 2^{z_step_exponent} out of range")
    if window_rule not in ("auto",) + windows_code.RULES:
        raise CodecError(f"window_rule must be one of {('auto',) + windows_code.RULES}, got {window_rule!r}")
    rule = _window_rule(model, images, window_rule)
    use_windows = _windows_wanted(model, images, windows, level, latents, rule)
    tiles = _tiles(model, images)
    delta, lowest = 2.0 ** -latent_bits, level or 0
    gray_tiles = _gray_tiles(model, [im.shape for im in images])
    if use_windows:
        candidates = [_code_windows(model, images, tiles, gray_tiles, chunk, rule)]
    else:
        candidates = [_code(model, tiles, gray_tiles, chunk, lowest, delta,
                            "prior-mean" if latents == "auto" else latents)]
    if latents == "auto" and _bits_back_may_pay(model, tiles, chunk, lowest, 32 * len(candidates[0][3].words)):
        candidates.append(_code(model, tiles, gray_tiles, chunk, lowest, delta, "bits-back"))
    method, levels, gray, coded = min(candidates, key=lambda c: len(c[3].words))
    extra = np.zeros(0, np.uint32)
    level_sums = [bytes(8)] * (K + 1)
    for k in range(lowest, K + 1):
        level_sums[k] = tiles_checksum(torch.cat([lv[k] for lv in levels]))
    if level is not None:
        z_step = 2.0 ** z_step_exponent
        results = [lossy.encode_chunk(model, lv, parent, level, with_z, z_step, decode) for lv, parent in
                   zip(levels, coded.parents)]
        if with_z:
            stack = Stack()
            lossy.push_z(stack, [sent for _, sent in results], z_step)
            extra = stack.words()
        level_sums[0] = tiles_checksum(torch.cat([x for x, _ in results]))
    entries = [ImageEntry(im.shape[0], im.shape[1], im.shape[2], name) for im, name in zip(images, names)]
    fingerprint = model_fingerprint(model)
    raw = _raw_words(images)
    if store_fallback and level is None and len(coded.words) > len(raw):  # more than the pixels' own bytes
        header = Header("stored", 0, False, fingerprint, latent_bits, z_step_exponent, model.specs[0].height, chunk,
                        0, 0, [len(raw)] * (K + 1), level_sums, entries)
        return container.write(header, raw, extra)
    header = Header("lossless" if level is None else "lossy", level or 0, with_z, fingerprint,
                    latent_bits, z_step_exponent, model.specs[0].height, chunk, coded.seed_words, coded.kept,
                    [coded.preview_words.get(k, 0) for k in range(K + 1)], level_sums, entries, gray is not None,
                    decode if level is not None else "mode", method, method == "prior-mean" and use_windows,
                    method == "prior-mean" and use_windows and rule == "mixture")
    return container.write(header, coded.words, extra)


def _window_rule(model: SelfVAE, images: List[np.ndarray], rule: str) -> str:
    """:func:`encode`'s ``window_rule`` made definite: ``auto`` is the mixture where the images fit it."""
    if rule != "auto":
        return rule
    return "mixture" if windows_code.fits(model, [im.shape[1:] for im in images], "mixture") else "owner"


def _windows_wanted(model: SelfVAE, images: List[np.ndarray], windows: Optional[bool], level: Optional[int],
                    latents: str, rule: str = "owner") -> bool:
    """Whether the prior-mean code of these images goes in windows (:func:`encode`'s ``windows``)."""
    if windows is False:
        return False
    if level is not None or latents == "bits-back":
        if windows:
            raise CodecError("windows code lossless files with prior-mean latents only (no --level, latents "
                             "prior-mean or auto)")
        return False
    reason = windows_code.unsupported(model)
    fits = windows_code.fits(model, [im.shape[1:] for im in images], rule)
    if windows and (reason or not fits):
        raise CodecError(f"this model cannot code in windows: {reason}" if reason else
                         f"images of more than {windows_code.max_pixels(rule)} pixels (padded) cannot be coded in "
                         f"windows under the {rule} rule")
    # images of one tile gain nothing from windows (one window, the tile itself): tile by tile, in batches
    tile = model.specs[0].height
    return bool(windows) or (reason is None and fits and any(max(im.shape[1:]) > tile for im in images))


def _code_windows(model: SelfVAE, images: List[np.ndarray], tiles: torch.Tensor, gray_tiles: torch.Tensor, chunk: int,
                  rule: str):
    """The prior-mean code in windows: ``(method, levels, gray masks, Encoded)`` as :func:`_code` (the
    levels as one batch of tiles, for the checksums; the same gray rule as the tile code)."""
    levels = [bitsback.levels_from(model, t, 0) for t in bitsback.chunks_of(tiles, chunk, 0, False)]
    gray = bitsback.gray_masks(levels, list(torch.split(gray_tiles, [len(lv[0]) for lv in levels])), 0)
    plan = windows_code.plan(model, [im.shape for im in images], chunk, gray_tiles, gray is not None, rule)
    S, start, padded = model.specs[0].height, 0, []
    for h, w in plan.sizes:
        n = (h // S) * (w // S)
        padded.append(windows_code.full(tiles[start:start + n], h // S, w // S))
        start += n
    words, preview, coded = windows_code.encode(model, padded, plan, chunk)
    # the checksums are of the levels the windows code (their padding is theirs), as one batch of tiles
    tiled = [torch.cat([windows_code.to_tiles(lv[k], S // 2 ** k) for lv in coded]) for k in range(model.levels + 1)]
    return "prior-mean", [tiled], gray, bitsback.Encoded(words, 0, 0, preview, [])


def _code(model: SelfVAE, tiles: torch.Tensor, gray_tiles: torch.Tensor, chunk: int, lowest: int, delta: float,
          method: str):
    """One code of the tiles' level ``lowest``: ``(method, levels per chunk, gray masks, Encoded)``."""
    bits_back = method == "bits-back"
    levels = [bitsback.levels_from(model, t, 0) for t in bitsback.chunks_of(tiles, chunk, lowest, bits_back)]
    gray = bitsback.gray_masks(levels, list(torch.split(gray_tiles, [len(lv[0]) for lv in levels])), lowest)
    return method, levels, gray, bitsback.encode(model, levels, lowest, delta, gray, bits_back)


def _bits_back_may_pay(model: SelfVAE, tiles: torch.Tensor, chunk: int, lowest: int, prior_mean_bits: int) -> bool:
    """Whether the one-sample ELBO of level ``lowest`` of the tiles (posterior draws from a generator
    seeded 0, so a file does not depend on the run) is at least :data:`BITS_BACK_MARGIN` below the
    prior-mean code's ``prior_mean_bits``."""
    generator = torch.Generator().manual_seed(0)
    elbo = 0.0
    for t in torch.split(tiles, chunk):
        y = bitsback.levels_from(model, t, 0)[lowest]
        elbo += float(sum(model.terms_from(model.infer(y, lowest), generator=generator).values()).sum())
    return -elbo / math.log(2.0) < (1.0 - BITS_BACK_MARGIN) * prior_mean_bits


def _raw_words(images: List[np.ndarray]) -> np.ndarray:
    """Every image's uint8 pixels, in order, padded with zeros to whole little-endian 32-bit words."""
    flat = np.concatenate([im.reshape(-1) for im in images])
    flat = np.concatenate([flat, np.zeros(-len(flat) % 4, np.uint8)])
    return flat.view("<u4").astype(np.uint32)


def _stored_images(header: Header, words: np.ndarray) -> List[np.ndarray]:
    sizes = [e.channels * e.height * e.width for e in header.images]
    if len(words) != -(-sum(sizes) // 4):
        raise CodecError(f"corrupt data: a stored file of {sum(sizes)} pixel values holds {4 * len(words)} bytes")
    flat = words.astype("<u4").view(np.uint8)
    out, start = [], 0
    for entry, size in zip(header.images, sizes):
        out.append(flat[start:start + size].reshape(entry.channels, entry.height, entry.width).copy())
        start += size
    return out


def _untile(model: SelfVAE, tiles: torch.Tensor, shapes, level: int = 0) -> List[np.ndarray]:
    """Level-``level`` tiles of every image, in order -> the images (x's size scaled to the level's
    tile); level 0 comes back in each image's own channel count."""
    out, start = [], 0
    tile = model.specs[0].height
    for channels, h, w in shapes:
        n = tiling.tile_counts([(h, w)], tile)[0]
        image = tiling.from_tiles(tiles[start:start + n], h, w, tile)
        out.append(tiling.to_original_channels(image, channels) if level == 0 else image)
        start += n
    return out


@torch.no_grad()
def decode(model: SelfVAE, data: bytes, up_to_level: int = 0) -> Decoded:
    """Decompress a file's bytes with ``model`` (the one it was made with). ``up_to_level=k`` decodes
    only ``y_K..y_k`` and returns the ``y_k`` previews; 0 gives the images. Raises
    :class:`CodecError` naming any problem with the file."""
    header, words, extra = container.read(data)
    model = _cpu_model(model)
    fingerprint = model_fingerprint(model)
    if header.fingerprint != fingerprint:
        raise CodecError(f"the file was made with another model (fingerprint {header.fingerprint.hex()[:16]}); "
                         f"this model's is {fingerprint.hex()[:16]}")
    K, tile = model.levels, model.specs[0].height
    if len(header.preview_words) != K + 1 or header.tile != tile:
        raise CodecError(f"corrupt header: {len(header.preview_words)} levels of {header.tile}-pixel tiles for a "
                         f"{K}-level model of {tile}-pixel images")
    if not 0 <= up_to_level <= K:
        raise CodecError(f"--up-to-level must be in 0..{K} for this {K}-level model, got {up_to_level}")
    if header.mode == "stored":
        return _decode_stored(model, header, words, up_to_level)
    counts = tiling.tile_counts([(e.height, e.width) for e in header.images], tile)
    total = sum(counts)
    bits_back = header.latents == "bits-back"
    if total > _most_tiles(model, header.level, len(words) + len(extra), bits_back):
        raise CodecError(f"corrupt header: {total} tiles announced for a stream of {4 * len(words)} bytes")
    sizes = bitsback.chunk_sizes(total, header.chunk, header.level, bits_back)
    lowest = header.level
    stop = max(up_to_level, lowest) if header.mode == "lossy" and up_to_level else up_to_level
    shapes = [(e.channels, e.height, e.width) for e in header.images]
    if header.windows:
        return _decode_windows(model, header, words, stop, shapes)
    gray = list(torch.split(_gray_tiles(model, shapes), sizes)) if header.gray else None
    chunks, parents = bitsback.decode(model, words, header.seed_words, header.kept_seed_words, sizes, lowest,
                                      2.0 ** -header.latent_bits, up_to=max(stop, lowest), gray=gray,
                                      bits_back=bits_back)
    if stop > 0:
        previews = torch.cat([c[stop] for c in chunks])
        _verify(tiles_checksum(previews) == header.level_checksums[stop], f"level {stop}")
        return Decoded(_untile(model, previews, shapes, stop), [e.name for e in header.images], stop,
                       model.specs[stop].num_values, header)
    if header.mode == "lossless":
        x = torch.cat([c[0] for c in chunks])
    else:
        stack = Stack(extra)
        z_step = 2.0 ** header.z_step_exponent
        x = torch.cat([lossy.decode_chunk(model, stack, c[lowest], p, lowest, header.with_z, z_step, header.decode)
                       for c, p in zip(chunks, parents)])
        _verify(stack.size == 0, "the z stream (it holds more data than the images need)")
    _verify(tiles_checksum(x) == header.level_checksums[0], "the decoded images")
    return Decoded(_untile(model, x, shapes), [e.name for e in header.images], 0, 256, header)


def _decode_windows(model: SelfVAE, header: Header, words: np.ndarray, stop: int, shapes) -> Decoded:
    """A file coded in windows (:mod:`.windows`), down to level ``stop``."""
    reason = windows_code.unsupported(model)
    if reason:
        raise CodecError(f"corrupt header: a file coded in windows for a model that cannot code them ({reason})")
    rule = "mixture" if header.window_mixture else "owner"
    if not windows_code.fits(model, [s[1:] for s in shapes], rule):
        raise CodecError(f"corrupt header: images of more than {windows_code.max_pixels(rule)} pixels in a file "
                         f"coded in windows under the {rule} rule")
    plan = windows_code.plan(model, shapes, header.chunk, _gray_tiles(model, shapes), header.gray, rule)
    levels = windows_code.decode(model, words, plan, header.chunk, header.preview_words, up_to=stop)
    tile = model.specs[0].height
    level = torch.cat([windows_code.to_tiles(lv[stop], tile // 2 ** stop) for lv in levels])
    names = [e.name for e in header.images]
    if stop > 0:
        _verify(tiles_checksum(level) == header.level_checksums[stop], f"level {stop}")
        return Decoded(_untile(model, level, shapes, stop), names, stop, model.specs[stop].num_values, header)
    _verify(tiles_checksum(level) == header.level_checksums[0], "the decoded images")
    return Decoded(_untile(model, level, shapes), names, 0, 256, header)


def _most_tiles(model: SelfVAE, lowest: int, words: int, bits_back: bool) -> float:
    """The most tiles a stream of ``words`` can hold (a header announcing more is corrupt). A bits-back
    tile pops and pushes latents (64 per word is generous); a prior-mean tile only codes the values of
    level ``lowest``, each of which costs at least ``-log2(1 - (n - 1) / 2^PRECISION)`` bits (the coder's
    smallest step down from certainty), and at least 3/4 of one channel's values are coded."""
    if bits_back:
        return 64.0 * (words + 1)
    spec = model.specs[lowest]
    per_value = -math.log2(1.0 - (spec.num_values - 1) / 2.0 ** PRECISION)
    return 32.0 * (words + 1) / (per_value * max(1, spec.height * spec.width * 3 // 4))


def _decode_stored(model: SelfVAE, header: Header, words: np.ndarray, up_to_level: int) -> Decoded:
    """A stored file: the pixels themselves; a preview ``y_k`` is computed from them by the chain."""
    images = _stored_images(header, words)
    names = [e.name for e in header.images]
    level = model.make_levels(_tiles(model, images))[up_to_level] if up_to_level else _tiles(model, images)
    _verify(tiles_checksum(level) == header.level_checksums[up_to_level],
            "the decoded images" if up_to_level == 0 else f"level {up_to_level}")
    if up_to_level == 0:
        return Decoded(images, names, 0, 256, header)
    shapes = [(e.channels, e.height, e.width) for e in header.images]
    return Decoded(_untile(model, level, shapes, up_to_level), names, up_to_level,
                   model.specs[up_to_level].num_values, header)


def _verify(ok: bool, what: str) -> None:
    if not ok:
        raise CodecError(f"decoding failed the checksum of {what}: the file is damaged, or this machine's "
                         f"arithmetic differs from the encoder's")
