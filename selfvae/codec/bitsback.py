"""Lossless bits-back coding (BB-ANS, Bit-Swap order) of the observed levels ``y_L..y_K`` of a
batch of tiles, through the whole hierarchy.

Model: ``p(u) p(y_K|u) prod_{k=K..L+1} p(z_k|y_k,h_k) p(y_{k-1}|y_k,z_k)`` (``h_K = u``,
``h_k = z_{k+1}``), posterior ``q(u|y_K) prod_k q(z_k|y_{k-1})``; ``L = 0`` codes x, ``L = k``
codes ``y_k`` alone (what a lossy file sends). The order of pops and pushes:

Decoder (top down)::

    for each chunk:  pop v ~ N(0, I);  u = f(v);  pop y_K | u;  pop z_K | y_K, u;  push v under q~(v|y_K)
    for k = K..L+1, for each chunk:
                     pop y_{k-1} | y_k, z_k;  if k > L+1: pop z_{k-1} | y_{k-1}, z_k;  push z_k under q(z_k|y_{k-1})

Encoder: the exact reverse (bottom up), so that only the very first pop needs initial bits;
every later pop takes bits that an earlier push left on the stack. Level by level across
chunks (rather than chunk by chunk) puts every tile's ``y_K`` on top of the stream, then
every ``y_{K-1}``, ...: a decoder reaches the coarse levels of all tiles first, and
``up_to`` stops it at any level.

The RealNVP prior on ``u`` is coded in its base space: ``v = f^{-1}(u)`` has the standard
normal prior, which factorises over dimensions. The posterior used for ``v`` is the Gaussian
``q~ = N(f^{-1}(mu_q), (sigma_q exp(log|det df^{-1}/du| / D))^2)``: ``q(u|y_K)`` carried through
the flow at its mean. Any such choice is a valid code; its length is the negative ELBO with
the posterior ``f_# q~`` in place of ``q(u|y_K)``, whose difference the benchmark measures.

**Prior-mean latents** (``bits_back=False``): every latent is fixed at the mean of its prior
instead -- ``v = 0`` (``u = f(0)``), then ``z_k`` the mean of ``p(z_k | y_k, h_k)`` -- which the
decoder computes from what it has already decoded. The code is then the plain sum of the
levels' likelihoods under those latents, with no latent on the stream and no initial bits.
Where the latents carry (almost) nothing, as in a model whose KL terms are ~0, this code is as
short as the ELBO and free of bits-back's overhead: in level-by-level order every tile's ``z_1``
is popped before any is pushed back, so bits-back needs initial bits of about the tiles'
``z_1`` pops minus their ``x`` pushes, which is most of the file on an easy photograph
(:func:`selfvae.codec.encode` picks the shorter code). Same order of levels, same previews.

Discrete levels are coded channel by channel (the channel coupling makes a pixel's channels
dependent) under integer tables; latents on a grid of step ``delta`` (see :mod:`.ans`).
Every network runs on the CPU, per chunk, in the same batches in encoder and decoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..distributions import DiagonalGaussian, DiscretizedLogisticMixture
from ..model import SelfVAE
from ..phases import PHASES, PhasedMixture
from .ans import Stack, grid_values, integer_table, seed_words
from .container import CodecError

Levels = List[Optional[torch.Tensor]]
Likelihood = Union[DiscretizedLogisticMixture, PhasedMixture]


# --------------------------------------------------------------------------- levels and latents
def _tile_rows(table: np.ndarray, tiles: int, keep: torch.Tensor) -> np.ndarray:
    """The rows of a per-pixel table ``(tiles * pixels, n)`` that belong to the tiles in ``keep``."""
    return table.reshape(tiles, -1, table.shape[-1])[keep.numpy()].reshape(-1, table.shape[-1])


def _push_mixture(stack: Stack, dist: DiscretizedLogisticMixture, value: torch.Tensor,
               gray: Optional[torch.Tensor] = None) -> None:
    """Push integer ``(B, C, H, W)`` under one mixture channel by channel, last channel first."""
    B, C = value.shape[:2]
    for c in reversed(range(C)):
        keep = ~gray if c and gray is not None else None
        if keep is not None and not keep.any():
            continue
        table = integer_table(dist.channel_pmf(c, value[:, :c] if c else None))
        if keep is None:
            stack.push_values(value[:, c], table)
        else:
            stack.push_values(value[:, c][keep], _tile_rows(table, B, keep))


def _pop_mixture(stack: Stack, dist: DiscretizedLogisticMixture, gray: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pop ``(B, C, H, W)`` under one mixture channel by channel (channel 0 first): uint8."""
    B, C, H, W = dist.shape
    values: List[torch.Tensor] = []
    for c in range(C):
        keep = ~gray if c and gray is not None else None
        if keep is not None and not keep.any():
            values.append(values[0].clone())
            continue
        table = integer_table(dist.channel_pmf(c, torch.stack(values, dim=1) if c else None))
        if keep is None:
            values.append(torch.from_numpy(stack.pop_values(table).astype(np.int64)).reshape(B, H, W))
        else:
            channel = values[0].clone()
            channel[keep] = torch.from_numpy(stack.pop_values(_tile_rows(table, B, keep)).astype(np.int64)).reshape(
                -1, H, W)
            values.append(channel)
    return torch.stack(values, dim=1).to(torch.uint8)


def push_level(stack: Stack, dist: Likelihood, value: torch.Tensor, gray: Optional[torch.Tensor] = None) -> None:
    """Push a level (integer ``(B, C, H, W)``) channel by channel, last channel first; a phased
    likelihood (:mod:`selfvae.phases`) phase by phase, last phase first, each phase under its mixture
    given the true earlier phases. Tiles marked in ``gray`` (bool ``(B,)``; their channels are equal)
    send channel 0 alone: the decoder copies it. A first phase known from the level above
    (:attr:`PhasedMixture.given`) is not sent."""
    if not isinstance(dist, PhasedMixture):
        _push_mixture(stack, dist, value, gray)
        return
    phases = dist.split(value.to(torch.uint8))
    if dist.given is not None and not torch.equal(phases[0], dist.given.to(torch.uint8)):
        raise ValueError("the level's first phase differs from the level above, which its transform copies: "
                         "the level has probability zero")
    for step in reversed(range(dist.first_step, len(phases))):
        _push_mixture(stack, dist.phase(step, phases[:step]), phases[step], gray)


def pop_level(stack: Stack, dist: Likelihood, gray: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pop a level (the reverse of :func:`push_level`): uint8 ``(B, C, H, W)``; tiles marked in
    ``gray`` take channel 0 for every channel."""
    if not isinstance(dist, PhasedMixture):
        return _pop_mixture(stack, dist, gray)
    phases: List[torch.Tensor] = [] if dist.given is None else [dist.given.to(torch.uint8)]
    for step in range(dist.first_step, PHASES):
        phases.append(_pop_mixture(stack, dist.phase(step, phases), gray))
    return dist.join(phases)


def gray_masks(chunks: List[Levels], gray: List[torch.Tensor], lowest: int) -> Optional[List[torch.Tensor]]:
    """The per-chunk masks of gray tiles if every level the code sends keeps them gray (equal
    channels, as channel-wise transforms do), else None: then every tile codes all its channels."""
    if not any(bool(g.any()) for g in gray):
        return None
    for levels, mask in zip(chunks, gray):
        for level in levels[lowest:]:
            if level.shape[1] > 1 and mask.any():
                tiles = level[mask]
                if not bool((tiles == tiles[:, :1]).all()):
                    return None
    return gray


def base_posterior(model: SelfVAE, y_top: torch.Tensor) -> Normal:
    """``q~(v | y_K)``: the Gaussian posterior of u carried into the flow's base space at its mean."""
    q = model.q_u(y_top)
    v_mean, log_det = model.p_u.inverse(q.mean)
    scale = torch.exp(log_det / model.p_u.dims).view(-1, 1, 1, 1)
    return _gaussian(v_mean, q.std * scale)


@dataclass
class Normal:
    """A diagonal Gaussian given by its mean and standard deviation (what the coder needs)."""

    mean: torch.Tensor
    std: torch.Tensor


def _gaussian(mean: torch.Tensor, std: torch.Tensor) -> Normal:
    return Normal(mean, std)


def _standard_normal(shape) -> Normal:
    return Normal(torch.zeros(shape), torch.ones(shape))


def prior_z(model: SelfVAE, k: int, y_k: torch.Tensor, parent: torch.Tensor) -> DiagonalGaussian:
    return model.p_z[k - 1](model.p_z[k - 1].condition(y_k), parent)


def likelihood(model: SelfVAE, k: int, y_k: torch.Tensor, z_k: torch.Tensor) -> Likelihood:
    """``p(y_{k-1} | y_k, z_k)``."""
    return model.p_y[k - 1](model.p_y[k - 1].condition(y_k), z_k)


@dataclass
class Latent:
    """A latent on the grid: its symbols (int32, flat) and the float tensor they stand for."""

    symbols: np.ndarray
    value: torch.Tensor


def pop_latent(stack: Stack, dist, delta: float) -> Latent:
    symbols = stack.pop_latent(dist.mean, dist.std, delta)
    return Latent(symbols, grid_values(symbols, dist.mean.shape, delta))


def push_latent(stack: Stack, latent: Latent, dist, delta: float) -> None:
    """``dist``: anything with ``mean`` and ``std`` (a :class:`DiagonalGaussian`, a :class:`Normal`)."""
    stack.push_latent(latent.symbols, dist.mean, dist.std, delta)


# --------------------------------------------------------------------------- encoder
@dataclass
class Encoded:
    """An encoded stream: the stored words (the untouched bottom ``kept`` words of the seed
    removed), the seed length, the stream words a decoder reads to reach each level, and the
    latent each chunk's lowest level was coded with (``z_{L+1}``, or ``u`` when L = K)."""

    words: np.ndarray
    seed_words: int
    kept: int
    preview_words: Dict[int, int]
    parents: List[torch.Tensor]


def chunk_sizes(total: int, chunk: int, lowest: int = 0, bits_back: bool = True) -> List[int]:
    """Tiles per batch: ``chunk`` each for prior-mean latents (no initial bits to save); for bits-back
    starting with one tile and growing up to ``chunk``.

    Only the first pop of the whole stream needs initial bits; later pops take the bits earlier
    chunks pushed. Level by level (x, ``lowest = 0``) a chunk's first pop (of ``z_1``) takes what
    earlier chunks pushed for x, which keeps up with batches growing by half (1, 2, 3, 5, 8, 12, ...)
    as long as x costs at least 1.5 times the popped latents. Chunk by chunk (a lone ``y_k``) a chunk
    reuses the latents the chunk before it pushed, plus only the small net cost of ``y_k``: batches
    grow by one tile (1, 2, 3, ...). The encoder adds initial bits where the schedule falls short.
    """
    if not bits_back:
        return [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])
    sizes, size = [], 1
    while total > 0:
        sizes.append(min(size, chunk, total))
        total -= sizes[-1]
        size = max(size + 1, math.ceil(1.5 * size)) if lowest == 0 else size + 1
    return sizes


def chunks_of(tiles: torch.Tensor, chunk: int, lowest: int = 0, bits_back: bool = True) -> List[torch.Tensor]:
    """``tiles`` split into the batches of :func:`chunk_sizes` (the decoder splits identically)."""
    return list(torch.split(tiles, chunk_sizes(tiles.shape[0], chunk, lowest, bits_back)))


def levels_from(model: SelfVAE, tiles: torch.Tensor, lowest: int) -> Levels:
    """``[None] * lowest + [y_L, ..., y_K]`` of a chunk of tiles (uint8 x, or y_L itself)."""
    levels: Levels = [None] * lowest + [tiles]
    for k in range(lowest + 1, model.levels + 1):
        levels.append(model.chain.transforms[k - 1](levels[k - 1], model.specs[k - 1]))
    return levels


def top_latent(model: SelfVAE, tiles: int) -> torch.Tensor:
    """The prior-mean ``u`` of a batch of ``tiles``: the flow's image of ``v = 0``."""
    return model.p_u.forward_flow(torch.zeros((tiles,) + model.u_shape))[0]


def prior_means(model: SelfVAE, levels: Levels, lowest: int) -> Dict[int, torch.Tensor]:
    """The prior-mean latents of one chunk, top down: ``{K + 1: u, K: z_K, ..., lowest + 1: z_{lowest+1}}``
    (key ``K + 1`` holds ``u``), each computed from the level it is conditioned on, exactly as a decoder
    that has decoded those levels computes it."""
    K = model.levels
    latents = {K + 1: top_latent(model, levels[K].shape[0])}
    for k in range(K, lowest, -1):
        latents[k] = prior_z(model, k, levels[k], latents[k + 1]).mean
    return latents


@torch.no_grad()
def prior_mean_log_likelihood(model: SelfVAE, levels: Levels, lowest: int) -> torch.Tensor:
    """``ln p(y_L..y_K)`` in nats per tile ``(B,)`` with every latent at its prior mean: what the
    prior-mean code costs, up to the coder's rounding of probabilities."""
    K = model.levels
    latents = prior_means(model, levels, lowest)
    total = model.p_top(None, latents[K + 1]).log_prob(levels[K])
    for k in range(K, lowest, -1):
        total = total + likelihood(model, k, levels[k], latents[k]).log_prob(levels[k - 1])
    return total


class _Encoder:
    """The encoder's operations on one chunk; :func:`encode` calls them in a valid order."""

    def __init__(self, model: SelfVAE, chunks: List[Levels], lowest: int, delta: float, seed: int,
                 gray: Optional[List[torch.Tensor]], bits_back: bool = True):
        self.model, self.chunks, self.lowest, self.delta, self.bits_back = model, chunks, lowest, delta, bits_back
        self.gray = gray or [None] * len(chunks)
        self.stack = Stack(seed_words(seed))
        self.z: List[Dict[int, Latent]] = [{} for _ in chunks]
        self.parents: List[Optional[torch.Tensor]] = [None] * len(chunks)
        # prior-mean latents depend on the levels only: all of a chunk's are known before any push
        self.fixed = [prior_means(model, lv, lowest) for lv in chunks] if not bits_back else None

    def step(self, c: int, k: int) -> None:
        """Pop z_k under q(z_k | y_{k-1}); push z_{k-1} under its prior; push y_{k-1} (prior-mean
        latents: push y_{k-1} alone)."""
        m, lv, z, s, d = self.model, self.chunks[c], self.z[c], self.stack, self.delta
        if not self.bits_back:
            push_level(s, likelihood(m, k, lv[k], self.fixed[c][k]), lv[k - 1], self.gray[c])
            return
        z[k] = pop_latent(s, m.q_z[k - 1](lv[k - 1]), d)
        if k > self.lowest + 1:
            push_latent(s, z[k - 1], prior_z(m, k - 1, lv[k - 1], z[k].value), d)
        push_level(s, likelihood(m, k, lv[k], z[k].value), lv[k - 1], self.gray[c])

    def top(self, c: int) -> None:
        """Pop v under q~(v | y_K); push z_K under p(z_K | y_K, u); push y_K; push v under N(0, I)
        (prior-mean latents: push y_K alone)."""
        m, lv, z, s, d = self.model, self.chunks[c], self.z[c], self.stack, self.delta
        K = m.levels
        if not self.bits_back:
            fixed = self.fixed[c]
            self.parents[c] = fixed[self.lowest + 1]
            push_level(s, m.p_top(None, fixed[K + 1]), lv[K], self.gray[c])
            return
        v = pop_latent(s, base_posterior(m, lv[K]), d)
        u = m.p_u.forward_flow(v.value)[0]
        if K > self.lowest:
            push_latent(s, z[K], prior_z(m, K, lv[K], u), d)
        self.parents[c] = z[self.lowest + 1].value if K > self.lowest else u
        push_level(s, m.p_top(None, u), lv[K], self.gray[c])
        push_latent(s, v, _standard_normal(v.value.shape), d)


def _encode_once(model: SelfVAE, chunks: List[Levels], lowest: int, delta: float, seed: int, level_major: bool,
                 gray: Optional[List[torch.Tensor]], bits_back: bool = True):
    coder = _Encoder(model, chunks, lowest, delta, seed, gray, bits_back)
    steps = range(lowest + 1, model.levels + 1)
    phase_start: Dict[str, int] = {}
    if level_major:
        for k in steps:  # bottom up, every chunk at each level
            phase_start[f"step{k}"] = len(coder.stack.trace) - 1
            for c in range(len(chunks)):
                coder.step(c, k)
        phase_start["top"] = len(coder.stack.trace) - 1
        for c in range(len(chunks)):
            coder.top(c)
    else:
        for c in range(len(chunks)):  # chunk by chunk: a chunk's pops reuse what the one before pushed
            for k in steps:
                coder.step(c, k)
            coder.top(c)
    return coder.stack, phase_start, coder.parents


@torch.no_grad()
def encode(model: SelfVAE, chunks: List[Levels], lowest: int, delta: float,
           gray: Optional[List[torch.Tensor]] = None, bits_back: bool = True) -> Encoded:
    """Bits-back encode level ``lowest`` of every chunk's levels (:func:`levels_from` of the batches
    of :func:`chunks_of`; only the levels at and above ``lowest`` are read). ``gray``: per chunk, a
    bool ``(B,)`` mask of tiles whose levels all have equal channels (:func:`gray_masks`), coded as
    one channel. ``bits_back=False``: the latents at their prior means instead (no seed, no latents
    on the stream).

    x (``lowest = 0``) is coded level by level across chunks, so that a decoder meets every tile's
    coarse levels first. A lone ``y_k`` (a lossy file) is coded chunk by chunk instead: its latents
    cost more to pop than ``y_k`` leaves on the stack, so level by level would need the initial bits
    of every chunk, chunk by chunk only the first chunk's."""
    level_major = lowest == 0
    first = chunks[0][lowest]
    dims = first.shape[0] * (math.prod(model.z_shapes[lowest]) if lowest < model.levels else model.p_u.dims)
    seed = 64 + dims * 20 // 32 if bits_back else 0  # ~20 bits per latent dimension of the first pop
    while True:  # grown until enough
        stack, phase_start, parents = _encode_once(model, chunks, lowest, delta, seed, level_major, gray, bits_back)
        if stack.low > 4 or not bits_back:
            break
        seed *= 4
    words = stack.words()
    reference = seed_words(seed)
    kept = max(0, stack.low - 2)  # the head of the coder may have moved below the lowest size
    while kept and not np.array_equal(words[:kept], reference[:kept]):
        kept -= 1
    # words a decoder reads from the top to finish each level: down to the lowest point of its way
    # there, plus the words under it that the coder's head spans (as kept is below the lowest point)
    final, head = stack.size, stack.low - kept
    trace = np.asarray(stack.trace)
    preview = {k: final - kept for k in range(lowest, model.levels + 1)}  # chunk by chunk: all of it
    if level_major:
        preview[model.levels] = int(final - trace[phase_start["top"]:].min()) + head
        for k in range(lowest + 1, model.levels + 1):
            preview[k - 1] = int(final - trace[phase_start[f"step{k}"]:].min()) + head
    return Encoded(words[kept:], seed, kept, preview, parents)


# --------------------------------------------------------------------------- decoder
def _check_depth(stack: Stack, kept: int) -> None:
    """A valid stream never takes the decoder below the seed words it starts from (the encoder's
    lowest point is above them): going below means the header announces more than the stream holds."""
    if stack.low < kept:
        raise CodecError("corrupt data: the stream ends before the images its header announces")


def _check_left(stack: Stack) -> None:
    """Before a pop of a stream without seed (prior-mean latents): every push moves the coder out of its
    initial state, so a valid stream is not empty while anything is left to pop; an empty one means the
    header announces more than the stream holds (checked before each level, so a corrupt header costs
    no more decoding than the stream's own length)."""
    if stack.empty:
        raise CodecError("corrupt data: the stream ends before the images its header announces")


class _Decoder:
    """The decoder's operations on one chunk, each the exact reverse of an :class:`_Encoder` one."""

    def __init__(self, model: SelfVAE, words: np.ndarray, seed: int, kept: int, sizes: List[int], lowest: int,
                 delta: float, gray: Optional[List[torch.Tensor]], bits_back: bool = True):
        self.model, self.sizes, self.lowest, self.delta, self.kept = model, sizes, lowest, delta, kept
        self.bits_back = bits_back
        self.gray = gray or [None] * len(sizes)
        self.stack = Stack(np.concatenate([seed_words(seed)[:kept], words]).astype(np.uint32))
        K = model.levels
        self.chunks: List[Levels] = [[None] * (K + 1) for _ in sizes]
        self.z: List[Dict[int, Latent]] = [{} for _ in sizes]
        self.parents: List[Optional[torch.Tensor]] = [None] * len(sizes)

    def top(self, c: int) -> None:
        m, lv, z, s, d = self.model, self.chunks[c], self.z[c], self.stack, self.delta
        K = m.levels
        if not self.bits_back:
            u = top_latent(m, self.sizes[c])
            _check_left(s)
            lv[K] = pop_level(s, m.p_top(None, u), self.gray[c])
            if K > self.lowest:
                z[K] = prior_z(m, K, lv[K], u).mean
            else:
                self.parents[c] = u
            return
        v = pop_latent(s, _standard_normal((self.sizes[c],) + m.u_shape), d)
        u = m.p_u.forward_flow(v.value)[0]
        lv[K] = pop_level(s, m.p_top(None, u), self.gray[c])
        if K > self.lowest:
            z[K] = pop_latent(s, prior_z(m, K, lv[K], u), d)
        else:
            self.parents[c] = u
        push_latent(s, v, base_posterior(m, lv[K]), d)
        _check_depth(s, self.kept)

    def step(self, c: int, k: int) -> None:
        m, lv, z, s, d = self.model, self.chunks[c], self.z[c], self.stack, self.delta
        if not self.bits_back:
            _check_left(s)
            lv[k - 1] = pop_level(s, likelihood(m, k, lv[k], z[k]), self.gray[c])
            if k > self.lowest + 1:
                z[k - 1] = prior_z(m, k - 1, lv[k - 1], z[k]).mean
            else:
                self.parents[c] = z[k]
            return
        lv[k - 1] = pop_level(s, likelihood(m, k, lv[k], z[k].value), self.gray[c])
        if k > self.lowest + 1:
            z[k - 1] = pop_latent(s, prior_z(m, k - 1, lv[k - 1], z[k].value), d)
        else:
            self.parents[c] = z[k].value
        push_latent(s, z[k], m.q_z[k - 1](lv[k - 1]), d)
        _check_depth(s, self.kept)


@torch.no_grad()
def decode(model: SelfVAE, words: np.ndarray, seed: int, kept: int, sizes: List[int], lowest: int,
           delta: float, up_to: Optional[int] = None, gray: Optional[List[torch.Tensor]] = None,
           bits_back: bool = True) -> Tuple[List[Levels], List[torch.Tensor]]:
    """Decode the chunks (of ``sizes`` tiles) down to level ``up_to`` (default ``lowest``), in the
    order :func:`encode` used (level by level for ``lowest = 0``, else chunk by chunk), with the
    latents :func:`encode` used (bits-back, or ``bits_back=False`` their prior means).

    Returns every chunk's levels (``None`` below ``up_to``) and the latent its lowest level was
    coded with (as :class:`Encoded` ``parents``). Raises :class:`CodecError` if the stream runs out
    early or does not return to its seed after a full decode (a corrupted or foreign stream)."""
    K = model.levels
    up_to = lowest if up_to is None else max(up_to, lowest)
    coder = _Decoder(model, words, seed, kept, sizes, lowest, delta, gray, bits_back)
    order = list(reversed(range(len(sizes))))
    if lowest == 0:
        for c in order:
            coder.top(c)
        for k in range(K, up_to, -1):
            for c in order:
                coder.step(c, k)
    else:
        for c in order:
            coder.top(c)
            for k in range(K, lowest, -1):
                coder.step(c, k)
    if up_to == lowest and not np.array_equal(coder.stack.words(), seed_words(seed)):
        raise CodecError("corrupt data: the stream did not decode back to its initial state (the file is "
                         "damaged, or was not made with this model)")
    return coder.chunks, coder.parents  # type: ignore[return-value]
