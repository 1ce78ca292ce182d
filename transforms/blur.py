"""``blur``: Gaussian blur, bit-exact with OpenCV's 8-bit ``cv2.GaussianBlur``.

The kernel is fixed: 5 x 5, sigma 1.0, border ``BORDER_REFLECT_101`` (OpenCV's default:
``dcb|abcd|cba``). Output: same shape and same number of values as the input.

OpenCV blurs 8-bit images in fixed point, and so does :func:`gaussian_blur_fixed_point`,
so that the torch implementation and the OpenCV reference agree exactly (measured by
``experiments/transform_agreement.py`` and checked by the tests):

1. the 1-D kernel is computed in double precision (OpenCV's ``getGaussianKernelBitExact``;
   ``sigma <= 0`` means ``0.3 * ((ksize - 1) / 2 - 1) + 0.8``, and ksize 3/5/7 with
   ``sigma <= 0`` use the binomial tables), then quantized to multiples of 1/256 with
   error diffusion from the outer taps inwards, the centre tap taking the remainder so
   that the integer taps sum to exactly 256 (``getGaussianKernelFixedPoint_ED``);
2. a horizontal pass then a vertical pass accumulate exact integer sums
   ``sum_ij k_i k_j x`` (at most ``255 * 2**16``, so int32 is exact);
3. the result is ``(sum + 2**15) >> 16``, i.e. rounded half up.

The helpers here are shared with :mod:`transforms.sketch`.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Tuple

import cv2
import numpy as np
import torch

from .base import LevelSpec, Transform, register

_FRACTION_BITS = 8  # OpenCV's ufixedpoint16: 8 fractional bits per 1-D tap
_BINOMIAL = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


@lru_cache(maxsize=None)
def gaussian_kernel_fixed_point(ksize: int, sigma: float) -> Tuple[int, ...]:
    """OpenCV's 8-bit 1-D Gaussian kernel: ``ksize`` non-negative ints summing to 256.

    ``ksize`` must be odd and positive; ``sigma <= 0`` selects OpenCV's default sigma
    for that size.
    """
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be odd and positive, got {ksize}")
    if sigma <= 0 and ksize in _BINOMIAL:
        real = list(_BINOMIAL[ksize])
    else:
        s = sigma if sigma > 0 else ksize * 0.15 + 0.35
        scale = -0.125 / (s * s)
        half = (ksize - 1) // 2
        values = [math.exp((1 - ksize + 2 * i) ** 2 * scale) for i in range(half)]
        mul = 1.0 / (2.0 * sum(values) + 1.0)
        real = [v * mul for v in values] + [mul] + [v * mul for v in reversed(values)]
    one = 1 << _FRACTION_BITS
    taps = [0] * ksize
    err, total = 0.0, 0
    for i in range(ksize // 2):
        adjusted = real[i] * one + err
        v = int(np.rint(adjusted))  # cvRound: half to even
        err = adjusted - v
        taps[i] = taps[ksize - 1 - i] = v
        total += v
    taps[ksize // 2] = one - 2 * total
    return tuple(taps)


@lru_cache(maxsize=None)
def reflect101_indices(n: int, pad: int) -> Tuple[int, ...]:
    """Source index of each position ``-pad .. n + pad - 1`` under ``BORDER_REFLECT_101``.

    Same rule as OpenCV's ``borderInterpolate`` (reflects repeatedly, so ``pad`` may
    exceed ``n``; a length-1 axis maps everything to 0).
    """
    out: List[int] = []
    for p in range(-pad, n + pad):
        if n == 1:
            out.append(0)
            continue
        while p < 0 or p >= n:
            p = -p if p < 0 else 2 * (n - 1) - p
        out.append(p)
    return tuple(out)


def gaussian_blur_fixed_point(y: torch.Tensor, ksize: int, sigma: float) -> torch.Tensor:
    """Batched Gaussian blur, bit-exact with ``cv2.GaussianBlur(img, (ksize, ksize), sigma)`` on uint8.

    y: uint8 ``(B, C, H, W)`` on any device -> uint8 ``(B, C, H, W)`` on the same device.
    Integer arithmetic only (int32), so the result does not depend on the device or on
    TF32 settings. Values stay within the input's range (the taps are non-negative).
    """
    taps = gaussian_kernel_fixed_point(ksize, sigma)
    pad = ksize // 2
    _, _, h, w = y.shape
    x = y.to(torch.int32)
    cols = torch.tensor(reflect101_indices(w, pad), dtype=torch.long, device=y.device)
    xp = x.index_select(3, cols)
    horizontal = sum(k * xp[..., i:i + w] for i, k in enumerate(taps) if k)
    rows = torch.tensor(reflect101_indices(h, pad), dtype=torch.long, device=y.device)
    hp = horizontal.index_select(2, rows)
    vertical = sum(k * hp[:, :, i:i + h, :] for i, k in enumerate(taps) if k)
    return ((vertical + (1 << 15)) >> 16).to(torch.uint8)


@register
class Blur(Transform):
    """Gaussian blur, 5 x 5, sigma 1.0, reflect-101 border; ``(B, C, H, W)`` uint8 -> same shape.

    The number of values is kept (a blurred ``bits:3`` level still holds 0..7).
    """

    name = "blur"
    ksize = 5
    sigma = 1.0

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        return spec

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        return gaussian_blur_fixed_point(y, self.ksize, self.sigma)

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(np.ascontiguousarray(c), (self.ksize, self.ksize), self.sigma,
                                          borderType=cv2.BORDER_REFLECT_101) for c in y])
