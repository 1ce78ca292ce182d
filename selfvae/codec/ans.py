"""The entropy coder: a stack ANS coder (``constriction``) with the two kinds of symbols the
model needs, and the integer probability tables that make encoder and decoder agree.

* Discrete levels (``x``, ``y_k``) are coded channel by channel with categorical tables:
  the model's float64 probabilities are quantised to integer frequencies (every value at
  least 1, the total exactly ``2**PRECISION``) before the coder sees them, so the coder
  works on integers that the decoder reproduces exactly from the same computation.
* Continuous latents are coded on a uniform grid of step ``delta = 2**-latent_bits``:
  symbol ``s`` stands for the value ``s * delta``, ``|s * delta| <= GRID_RANGE``, under a
  Gaussian quantised to that grid (``QuantizedGaussian``). In bits-back coding the grid step
  cancels between a pop under the posterior and a push under the prior, up to
  discretisation error. The range is kept small on purpose: the coder gives every symbol in
  range at least ``2**-PRECISION`` of probability, so a pop lands on an arbitrary symbol of
  the range with probability (symbols in range) / 2**PRECISION -- 6e-5 at the default grid
  (1,025 symbols), where a range of +-2**15 symbols would make it 0.4 % per latent dimension.

A stack is last in, first out: the decoder undoes the encoder's operations in reverse
order. :class:`Stack` also records how low the stack went, which tells how many words of
the stream a decoder reads to reach any point (the bytes a preview needs).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

try:
    import constriction
except ImportError as e:  # pragma: no cover - a declared dependency
    raise ImportError("selfvae's codec needs constriction (pip install constriction)") from e

PRECISION = 24  # bits of the integer probability tables (constriction's default ANS precision)
GRID_RANGE = 8.0  # latents are coded within [-GRID_RANGE, GRID_RANGE] (values beyond are clipped)
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_GAUSSIANS: dict = {}


def grid_limit(delta: float) -> int:
    """The largest grid symbol for a grid of step ``delta``."""
    return int(round(GRID_RANGE / delta))


def _gaussian_model(delta: float):
    limit = grid_limit(delta)
    if limit not in _GAUSSIANS:
        _GAUSSIANS[limit] = constriction.stream.model.QuantizedGaussian(-limit, limit)
    return _GAUSSIANS[limit]


def integer_table(pmf: torch.Tensor) -> np.ndarray:
    """float64 probabilities ``(..., n)`` -> integer frequencies ``(N, n)`` (as float64 for the coder)
    with every value >= 1 and each row summing to exactly ``2**PRECISION``."""
    p = pmf.reshape(-1, pmf.shape[-1]).cpu().numpy().astype(np.float64)
    n = p.shape[1]
    total = 1 << PRECISION
    freq = np.floor(np.clip(p, 0.0, 1.0) * (total - n)) + 1.0
    rows = np.arange(freq.shape[0])
    freq[rows, p.argmax(1)] += total - freq.sum(1)
    return freq


def seed_words(count: int) -> np.ndarray:
    """The fixed pseudo-random words a stream starts from (bits-back's initial bits): the same top
    words for every ``count``, so a longer seed only adds words underneath."""
    full = np.random.default_rng(0x5E1F_5AE).integers(0, 2 ** 32, size=count, dtype=np.uint64).astype(np.uint32)
    return full[::-1].copy()  # index -1 (the top of the stack) is the same word for every count


class Stack:
    """An ANS stack of 32-bit words with the symbol kinds of the codec; records the smallest size
    it reached (``low``) and a trace of sizes between operations."""

    def __init__(self, words: Optional[np.ndarray] = None):
        self.coder = constriction.stream.stack.AnsCoder(words) if words is not None and len(words) else \
            constriction.stream.stack.AnsCoder()
        self.low = self.size
        self.trace: List[int] = [self.size]

    @property
    def size(self) -> int:
        """Words on the stack."""
        return int(self.coder.num_words())

    @property
    def empty(self) -> bool:
        """In the coder's initial state: nothing left to pop (a pop now would return garbage)."""
        return bool(self.coder.is_empty())

    def _moved(self) -> None:
        self.low = min(self.low, self.size)
        self.trace.append(self.size)

    def words(self) -> np.ndarray:
        return np.asarray(self.coder.get_compressed(), dtype=np.uint32)

    # ------------------------------------------------------------------ discrete values
    def push_values(self, values: torch.Tensor, table: np.ndarray) -> None:
        """Push integer ``values`` (any shape, N in all) under the rows of ``table`` ``(N, n)``."""
        symbols = values.reshape(-1).cpu().numpy().astype(np.int32)
        self.coder.encode_reverse(symbols, _CATEGORICAL, table)
        self._moved()

    def pop_values(self, table: np.ndarray) -> np.ndarray:
        """Pop one value per row of ``table``: int32 ``(N,)``."""
        out = self.coder.decode(_CATEGORICAL, table)
        self._moved()
        return out

    # ------------------------------------------------------------------ latents on a grid
    def push_latent(self, symbols: np.ndarray, mean: torch.Tensor, std: torch.Tensor, delta: float) -> None:
        """Push grid symbols under ``N(mean, std^2)`` quantised to the grid of step ``delta``."""
        m, s = _grid_units(mean, std, delta)
        self.coder.encode_reverse(symbols.reshape(-1).astype(np.int32), _gaussian_model(delta), m, s)
        self._moved()

    def pop_latent(self, mean: torch.Tensor, std: torch.Tensor, delta: float) -> np.ndarray:
        """Pop grid symbols (int32, ``mean.numel()`` of them) under the quantised ``N(mean, std^2)``."""
        m, s = _grid_units(mean, std, delta)
        out = self.coder.decode(_gaussian_model(delta), m, s)
        self._moved()
        return out


def _grid_units(mean: torch.Tensor, std: torch.Tensor, delta: float):
    limit = grid_limit(delta)
    m = (mean.detach().double().reshape(-1) / delta).clamp(-limit, limit).cpu().numpy()
    s = (std.detach().double().reshape(-1) / delta).clamp(1e-3, 2.0 * limit).cpu().numpy()
    return m, s


def grid_values(symbols: np.ndarray, shape, delta: float) -> torch.Tensor:
    """Grid symbols -> the float32 latent tensor of ``shape`` they stand for (``symbol * delta``)."""
    return torch.from_numpy(symbols.astype(np.float64) * delta).float().reshape(shape)
