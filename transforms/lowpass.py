"""``lowpass:f``: keep the lowest-frequency fraction ``f`` of the 2-D DCT, per channel.

Definition. With the orthonormal 2-D DCT-II ``Y = D_H X D_W^T`` of one ``H x W``
channel ``X`` (``D_N[k, n] = sqrt(a_k / N) cos(pi (2n + 1) k / (2N))``, ``a_0 = 1``,
``a_k = 2``), the transform keeps the top-left rectangle of coefficients
``0 <= i < h``, ``0 <= j < w`` with

    h = max(1, floor(sqrt(f) * H + 1/2)),   w = max(1, floor(sqrt(f) * W + 1/2)),

i.e. the same fraction ``sqrt(f)`` of the frequencies along each axis, so about a
fraction ``f`` of the ``H * W`` coefficients. All other coefficients are set to zero,
the inverse DCT is taken, and the result is rounded (half to even) and clamped to
``0 .. N-1``. ``f = 1`` is the identity. ``0 < f <= 1``.

Torch: batched matrix products with DCT bases built on the input's device in float64
(``X' = D_h^T (D_h X D_w^T) D_w`` with ``D_h`` the first ``h`` rows of ``D_H``), so the
result does not depend on TF32 settings. Reference: ``cv2.dct`` / ``cv2.idct`` in
float64 per channel; OpenCV's DCT supports only even sizes (and 1), so odd sizes fall
back to ``scipy.fft.dctn`` / ``idctn`` with ``norm="ortho"`` (the same transform).
Output: same shape and number of values as the input.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import cv2
import numpy as np
import torch

from .base import LevelSpec, Transform, TransformError, register


def dct_matrix(n: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II basis ``(n, n)``: row ``k`` is frequency ``k``; ``Y = D @ x``."""
    k = torch.arange(n, device=device, dtype=dtype)[:, None]
    i = torch.arange(n, device=device, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] = math.sqrt(1.0 / n)
    return d


def kept_size(f: float, n: int) -> int:
    """Number of frequencies kept along an axis of length ``n``: ``max(1, floor(sqrt(f)*n + 1/2))``."""
    return max(1, min(n, int(math.floor(math.sqrt(f) * n + 0.5))))


@register
class Lowpass(Transform):
    """DCT low-pass: ``(B, C, H, W)`` uint8 -> same shape and number of values."""

    name = "lowpass"
    takes_argument = True

    def __init__(self, arg: Optional[str] = None):
        if arg is None:
            raise TransformError("'lowpass' needs the fraction of coefficients to keep: 'lowpass:f' with 0 < f <= 1")
        try:
            f = float(arg)
        except ValueError:
            f = float("nan")
        if not 0.0 < f <= 1.0:  # also rejects nan
            raise TransformError(f"malformed 'lowpass:{arg}': the fraction must be a number with 0 < f <= 1")
        self.f = f
        self.arg = arg

    def __str__(self) -> str:
        return f"lowpass:{self.arg}"

    __repr__ = __str__

    def kept(self, spec: LevelSpec) -> Tuple[int, int]:
        """``(h, w)``: the kept top-left rectangle of DCT coefficients."""
        return kept_size(self.f, spec.height), kept_size(self.f, spec.width)

    def output_spec(self, spec: LevelSpec) -> LevelSpec:
        return spec

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        hk, wk = self.kept(spec)
        dh = dct_matrix(y.shape[2], device=y.device)[:hk]  # (h, H)
        dw = dct_matrix(y.shape[3], device=y.device)[:wk]  # (w, W)
        coeffs = dh @ y.to(torch.float64) @ dw.T            # (B, C, h, w)
        out = dh.T @ coeffs @ dw                             # (B, C, H, W)
        return out.round_().clamp_(0, spec.num_values - 1).to(torch.uint8)

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:
        hk, wk = self.kept(spec)
        out = []
        for c in y.astype(np.float64):
            coeffs = _dct2(c)
            coeffs[hk:, :] = 0.0
            coeffs[:, wk:] = 0.0
            out.append(_idct2(coeffs))
        return np.clip(np.rint(np.stack(out)), 0, spec.num_values - 1).astype(np.uint8)


def _cv2_supports(a: np.ndarray) -> bool:
    return all(n % 2 == 0 or n == 1 for n in a.shape)


def _dct2(a: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D DCT-II of a float64 ``(H, W)`` array (OpenCV, or scipy for odd sizes)."""
    if _cv2_supports(a):
        return cv2.dct(a)
    import scipy.fft  # only needed for odd sizes, which cv2.dct does not implement
    return scipy.fft.dctn(a, type=2, norm="ortho")


def _idct2(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_dct2`."""
    if _cv2_supports(a):
        return cv2.idct(a)
    import scipy.fft
    return scipy.fft.idctn(a, type=2, norm="ortho")
