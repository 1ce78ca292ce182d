"""``sketch``: pencil sketch (dodge blend), bit-exact with the classic OpenCV recipe.

For an RGB (or 1-channel) level with 256 values::

    gray   = luminance(x)                     # cv2.cvtColor(x, COLOR_RGB2GRAY); 1-channel input as is
    inv    = 255 - gray
    blur   = GaussianBlur(inv, 21 x 21, sigma 3.5)   # sigma 0 in OpenCV = 0.3*((21-1)/2-1)+0.8 = 3.5
    sketch = divide(gray, 255 - blur, scale=256)      # round(gray*256 / (255-blur)), saturated to 255

``cv2.divide`` returns 0 where the divisor is 0 (a float division would give inf or
nan); the torch implementation reproduces that rule on purpose. It also reproduces
OpenCV's fixed-point luminance and Gaussian (see :mod:`transforms.gray` and
:mod:`transforms.blur`) and divides in integers: ``(512*gray + d) // (2*d)`` equals
``round(256*gray/d)`` with no ties (``512*gray/d`` is never an odd integer for
``d <= 255``), so the result equals OpenCV's exactly.

Output: ``1 x H x W``, 256 values. Not repeatable (a sketch of a sketch adds nothing),
and the input must have 256 values (a sketch of a ``bits:3`` level has no meaning).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import LevelSpec, Transform, TransformError, register
from .blur import gaussian_blur_fixed_point
from .gray import luminance, luminance_reference

KSIZE = 21
SIGMA = 0.0  # OpenCV default for ksize 21: 3.5


@register
class Sketch(Transform):
    """Pencil sketch: ``(B, 3 or 1, H, W)`` uint8, 256 values -> ``(B, 1, H, W)`` uint8, 256 values."""

    name = "sketch"
    repeatable = False

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        if spec.num_values != 256:
            raise TransformError(f"'sketch' needs an 8-bit input with 256 values, got {spec.num_values} values "
                                 f"(a sketch of a quantized level has no meaning; put 'sketch' before 'bits')")
        if spec.channels not in (1, 3):
            raise TransformError(f"'sketch' needs 3 (RGB) or 1 channel, got {spec.channels}")
        return LevelSpec(1, spec.height, spec.width, 256)

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        gray = luminance(y) if y.shape[1] == 3 else y
        blurred = gaussian_blur_fixed_point(255 - gray, KSIZE, SIGMA).to(torch.int32)
        divisor = 255 - blurred
        g = gray.to(torch.int32)
        quotient = (512 * g + divisor) // (2 * divisor).clamp_min(1)
        return torch.where(divisor == 0, 0, quotient.clamp_max(255)).to(torch.uint8)

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        gray = luminance_reference(y)[0] if y.shape[0] == 3 else np.ascontiguousarray(y[0])
        blurred = cv2.GaussianBlur(255 - gray, (KSIZE, KSIZE), SIGMA, borderType=cv2.BORDER_REFLECT_101)
        return cv2.divide(gray, 255 - blurred, scale=256)[None]
