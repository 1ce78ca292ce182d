"""``downscale``: bicubic downscaling by 1/2, agreeing exactly with ``cv2.resize(INTER_CUBIC)``.

``(B, C, H, W)`` -> ``(B, C, H/2, W/2)``, same number of values ``N`` as the input;
``H`` and ``W`` must be even. ``downscale:K`` in a chain gives K levels.

Torch: ``F.interpolate(mode="bicubic", align_corners=False, antialias=False)`` on the
values as float32 (they stay in ``0..N-1``, no rescaling), then clamp to ``[0, N-1]``
(bicubic overshoots near edges) and round half to even.

Antialiasing, decided by measurement (``experiments/transform_agreement.py``): at an
exact factor 1/2, plain bicubic samples half-way between pixels with the 4 taps
``(-3, 19, 19, -3) / 32`` (Keys a = -0.75, the same kernel as OpenCV), which is itself
a mild low-pass; it agrees with ``cv2.resize(..., INTER_CUBIC)`` on 100 % of pixels
(uint8 and float32 OpenCV paths alike). ``antialias=True`` in torch (PIL-style widened
kernel) or in kornia (a Gaussian pre-blur) agrees with neither INTER_CUBIC (about 30-50 %
exact) nor INTER_AREA (about 50-70 % exact), so it is not used.

The OpenCV reference resizes each channel as float32 with ``INTER_CUBIC``, then clips
and rounds the same way (float32 so that levels with fewer than 256 values are clamped
to their own range, not to 255).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .base import LevelSpec, Transform, halved_spec, register


@register
class Downscale(Transform):
    """Bicubic x1/2: ``(B, C, H, W)`` uint8 -> ``(B, C, H/2, W/2)`` uint8, same number of values."""

    name = "downscale"

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        return halved_spec(self.name, spec)

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        h, w = y.shape[2] // 2, y.shape[3] // 2
        out = F.interpolate(y.to(torch.float32), size=(h, w), mode="bicubic", align_corners=False,
                            antialias=False)
        return out.clamp_(0, spec.num_values - 1).round_().to(torch.uint8)

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        h, w = y.shape[1] // 2, y.shape[2] // 2
        out = np.stack([cv2.resize(c.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) for c in y])
        return np.rint(np.clip(out, 0, spec.num_values - 1)).astype(np.uint8)
