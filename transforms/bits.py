"""``bits:n``: keep the top ``n`` bits of every subpixel (1 <= n <= 8).

For an input with ``N = 2**m`` values, ``y = x >> (m - n)``: values ``0 .. 2**n - 1``
(not multiples of ``2**(8-n)``), declared ``num_values = 2**n``. The input must have
more than ``2**n`` values (``bits:3`` after ``bits:2`` adds nothing) and a power-of-two
number of values. Same shape as the input. Exact agreement with the numpy reference.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .base import LevelSpec, Transform, TransformError, register


@register
class Bits(Transform):
    """Top ``n`` bits: ``(B, C, H, W)`` uint8 with N values -> same shape, ``2**n`` values."""

    name = "bits"
    takes_argument = True

    def __init__(self, arg: Optional[str] = None):
        if arg is None:
            raise TransformError("'bits' needs the number of bits to keep: 'bits:n' with n in 1..8")
        if not arg.isdigit() or not 1 <= int(arg) <= 8:
            raise TransformError(f"malformed 'bits:{arg}': the number of bits must be an integer in 1..8")
        self.n = int(arg)

    def __str__(self) -> str:
        return f"bits:{self.n}"

    __repr__ = __str__

    def _shift(self, spec: LevelSpec) -> int:
        n_in = spec.num_values
        if n_in < 2 or n_in & (n_in - 1):
            raise TransformError(f"'{self}' needs an input whose number of values is a power of two, got {n_in}")
        if n_in <= 2 ** self.n:
            raise TransformError(f"'{self}' keeps {2 ** self.n} values but the input has only {n_in}; "
                                 f"it would not reduce anything")
        return n_in.bit_length() - 1 - self.n

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        self._shift(spec)
        return LevelSpec(spec.channels, spec.height, spec.width, 2 ** self.n)

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        return y >> self._shift(spec)

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        return (y >> self._shift(spec)).astype(np.uint8)
