"""``gray``: luminance, bit-exact with OpenCV's ``cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)``.

Images are RGB. ITU-R BT.601 weights 0.299 R + 0.587 G + 0.114 B, computed the way
OpenCV computes them for 8-bit images: 15-bit fixed-point weights
``(9798, 19235, 3735)`` (they sum to ``2**15``) and ``(sum + 2**14) >> 15`` (round half
up). This was checked against ``cv2.cvtColor`` on all 2**24 RGB triples.
Output: ``1 x H x W``, same number of values as the input (the weights sum to one,
so ``0..n-1`` maps into ``0..n-1``).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import LevelSpec, Transform, TransformError, register

_WEIGHTS = (9798, 19235, 3735)  # R, G, B in units of 2**-15
_SHIFT = 15


def luminance(y: torch.Tensor) -> torch.Tensor:
    """RGB uint8 ``(B, 3, H, W)`` -> luminance uint8 ``(B, 1, H, W)``, exact integer arithmetic."""
    x = y.to(torch.int32)
    total = _WEIGHTS[0] * x[:, 0:1] + _WEIGHTS[1] * x[:, 1:2] + _WEIGHTS[2] * x[:, 2:3]
    return ((total + (1 << (_SHIFT - 1))) >> _SHIFT).to(torch.uint8)


def luminance_reference(y: np.ndarray) -> np.ndarray:
    """OpenCV reference: RGB uint8 ``(3, H, W)`` -> uint8 ``(1, H, W)``."""
    return cv2.cvtColor(np.ascontiguousarray(y.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)[None]


@register
class Gray(Transform):
    """Luminance of an RGB level: ``(B, 3, H, W)`` uint8 -> ``(B, 1, H, W)`` uint8.

    Not repeatable, and rejects 1-channel input (it is already one channel).
    """

    name = "gray"
    repeatable = False

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        if spec.channels == 1:
            raise TransformError("'gray' needs an RGB input, but the input is already one channel")
        if spec.channels != 3:
            raise TransformError(f"'gray' needs 3 (RGB) channels, got {spec.channels}")
        return LevelSpec(1, spec.height, spec.width, spec.num_values)

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        return luminance(y)

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        return luminance_reference(y)
