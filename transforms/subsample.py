"""``subsample``: every other pixel, the top-left one of each 2x2 block (``y[:, :, ::2, ::2]``).

``(B, C, H, W)`` -> ``(B, C, H/2, W/2)``, the same values; ``H`` and ``W`` must be even.
``subsample:K`` in a chain gives K levels. The OpenCV reference is ``cv2.resize`` with
``INTER_NEAREST`` (which picks the pixel at ``floor(2 i)``: the same one).

Why a transform this plain: the output *is* one of the input's four 2x2 phases
(:attr:`kept_phase` = 0, the pixels ``(2i, 2j)``). A model with ``phases = 4``
(:mod:`selfvae.phases`) codes that phase first, so given ``y_k`` it is known exactly and
``p(y_{k-1} | y_k, z_k)`` codes only the other three phases: the levels together hold
exactly as many values as x (a non-redundant pyramid, the interlaced coding of lossless
codecs). A ``downscale`` pyramid codes ``1 + 1/4 + 1/16 + ...`` times x's values, and a
likelihood that ignores how ``y_k`` was made from ``y_{k-1}`` pays for the overlap.
The price: the levels are aliased (no low-pass), which matters for super-resolution and
lossy previews, not for lossless coding.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import LevelSpec, Transform, halved_spec, register


@register
class Subsample(Transform):
    """The pixels ``(2i, 2j)``: ``(B, C, H, W)`` uint8 -> ``(B, C, H/2, W/2)`` uint8, same values."""

    name = "subsample"
    kept_phase = 0

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        return halved_spec(self.name, spec)

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        return y[:, :, ::2, ::2].contiguous()

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        h, w = y.shape[1] // 2, y.shape[2] // 2
        return np.stack([cv2.resize(np.ascontiguousarray(c), (w, h), interpolation=cv2.INTER_NEAREST) for c in y])
