"""Image quality metrics: PSNR, SSIM and the Fréchet Inception Distance (FID).

PSNR and SSIM compare two batches of uint8 images ``(B, C, H, W)`` (values 0..255)
image by image and return float64 ``(B,)`` tensors. They follow the standard
definitions and agree with ``skimage.metrics.peak_signal_noise_ratio`` and
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=0)``.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the
2048-d pool features of the FID Inception network. Nothing can be downloaded at run
time, so the network's weights must be a local file (``pt_inception-2015-12-05``
converted for torch-fidelity, ``weights-inception-2015-12-05-6726825d.pth``); the
architecture comes from the ``torch-fidelity`` package. ``torch-fidelity``'s
``__init__`` imports torchvision for its other feature extractors (CLIP, VGG, DINOv2),
although its InceptionV3 extractor is pure torch; where torchvision is not
installed (there is no CPU build for every torch) :func:`load_inception` loads that
one module without running the package's ``__init__``. Install it with
``pip install --no-deps torch-fidelity`` on such machines.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F


class MetricsError(ValueError):
    """A metric cannot be computed as asked (bad shapes, missing weights or package)."""


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    for name, t in (("first", a), ("second", b)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise MetricsError(f"{what}: the {name} batch must be a (B, C, H, W) tensor, got "
                               f"{getattr(t, 'shape', type(t).__name__)}")
    if a.shape != b.shape:
        raise MetricsError(f"{what}: batches have different shapes {tuple(a.shape)} and {tuple(b.shape)}")


# --------------------------------------------------------------------------- PSNR
def psnr(a: torch.Tensor, b: torch.Tensor, max_value: float = 255.0,
         mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: ``10 log10(max_value^2 / MSE)``.

    a, b: ``(B, C, H, W)`` images (uint8 0..255, or any dtype on the same scale as ``max_value``).
    mask: optional bool ``(B or 1, 1 or C, H, W)``: the MSE is taken over the masked entries only
    (e.g. the filled region of an inpainted image); an image with an empty mask gets ``nan``.
    Returns float64 ``(B,)``; an image identical to its reference has MSE 0 and PSNR ``inf``
    (as in scikit-image). Average PSNRs only where all are finite, or report the infinite ones.
    """
    _check_pair(a, b, "psnr")
    diff = a.to(torch.float64) - b.to(torch.float64)
    if mask is None:
        mse = diff.pow(2).flatten(1).mean(1)
    else:
        weight = _mask_weights(mask, a.shape, "psnr")
        mse = (diff.pow(2) * weight).flatten(1).sum(1) / weight.flatten(1).sum(1)
    return 10.0 * torch.log10(max_value ** 2 / mse)


def _mask_weights(mask: torch.Tensor, shape: torch.Size, what: str) -> torch.Tensor:
    """A bool mask broadcast to ``shape`` ``(B, C, H, W)`` as float64 0/1 weights."""
    if mask.dim() != 4 or mask.shape[-2:] != shape[-2:] or mask.shape[0] not in (1, shape[0]) \
            or mask.shape[1] not in (1, shape[1]):
        raise MetricsError(f"{what}: a mask of shape {tuple(mask.shape)} does not fit images of shape "
                           f"{tuple(shape)}; expected (B or 1, 1 or C, H, W)")
    return mask.to(torch.float64).expand(shape)


# --------------------------------------------------------------------------- SSIM
def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The normalised 1-d Gaussian of ``scipy.ndimage.gaussian_filter``: radius
    ``int(truncate * sigma + 0.5)`` (5 for sigma 1.5, i.e. 11 taps). float64 ``(2r+1,)``."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels.

    a, b: ``(B, C, H, W)`` images (uint8 0..255 by default; set ``data_range`` for other scales),
    with H, W >= 11 (the Gaussian window). Returns float64 ``(B,)``.

    Local statistics use an 11-tap Gaussian window (sigma 1.5), population (co)variances,
    ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; the SSIM map is averaged over the positions where the
    window lies fully inside the image (scikit-image computes the map with reflected borders
    and then crops the 5-pixel border, which gives the same numbers), then over channels.

    mask: optional bool ``(B or 1, 1 or C, H, W)``: the map is averaged over the window centres
    that are masked (and lie 5 pixels or more inside the image) instead; ``nan`` where there are
    none. The windows around those centres also see unmasked pixels, so for an inpainted region
    this measures the fill together with how it joins its surroundings.
    """
    _check_pair(a, b, "ssim")
    window = gaussian_window(sigma)
    size = window.numel()
    if a.shape[-1] < size or a.shape[-2] < size:
        raise MetricsError(f"ssim: images of {a.shape[-2]}x{a.shape[-1]} are smaller than the "
                           f"{size}x{size} Gaussian window")
    B, C, H, W = a.shape
    x = a.to(torch.float64).reshape(B * C, 1, H, W)
    y = b.to(torch.float64).reshape(B * C, 1, H, W)
    wx = window.to(x.device).view(1, 1, 1, size)
    wy = window.to(x.device).view(1, 1, size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter
        return F.conv2d(F.conv2d(t, wx), wy)

    stats = blur(torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, H, W)).view(B * C, 5, H - size + 1,
                                                                                       W - size + 1)
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    if mask is None:
        return s.flatten(1).mean(1).view(B, C).mean(1)
    r = size // 2  # the map's (0, 0) is the window centred on pixel (r, r)
    weight = _mask_weights(mask, a.shape, "ssim")[:, :, r:H - r, r:W - r].reshape(B, -1)
    return (s.reshape(B, -1) * weight).sum(1) / weight.sum(1)


# --------------------------------------------------------------------------- Fréchet distance
def gaussian_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, ``N - 1``) of features ``(N, D)``, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise MetricsError(f"need at least 2 feature vectors (N, D) for a covariance, got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:

        ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

    mu: ``(D,)``; sigma: ``(D, D)`` symmetric positive semi-definite. The trace term is
    computed as ``sum sqrt(eig(s1^(1/2) sigma2 s1^(1/2)))`` (a symmetric PSD matrix with the
    eigenvalues of ``sigma1 sigma2``), which is exact for singular covariances (fewer samples
    than dimensions) where ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` needs an offset and can
    return complex noise. Returns a float >= 0 (tiny negative rounding is clipped to 0).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    D = mu1.shape[0]
    if mu2.shape != (D,) or sigma1.shape != (D, D) or sigma2.shape != (D, D):
        raise MetricsError(f"frechet_distance: shapes do not agree: mu {mu1.shape}, {mu2.shape}; "
                           f"sigma {sigma1.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


# --------------------------------------------------------------------------- FID
def _inception_class():
    """``torch_fidelity``'s InceptionV3 feature extractor class, importing it without torchvision
    when needed (see the module docstring). Raises :class:`MetricsError` if the package is absent."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        return FeatureExtractorInceptionV3
    except ModuleNotFoundError as e:
        if e.name not in ("torchvision",) and not (e.name or "").startswith("torchvision."):
            raise MetricsError("FID needs the 'torch-fidelity' package (pip install --no-deps torch-fidelity); "
                               f"it is not installed ({e})") from None
    # torch_fidelity/__init__ imported torchvision: load the pure-torch submodules directly.
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise MetricsError("FID needs the 'torch-fidelity' package; it is not installed")
    for name in [n for n in sys.modules if n == "torch_fidelity" or n.startswith("torch_fidelity.")]:
        del sys.modules[name]  # a half-imported package left behind by the failed import
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["torch_fidelity"] = package
    try:
        module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    except ModuleNotFoundError as e:
        raise MetricsError(f"cannot import torch-fidelity's InceptionV3 extractor without torchvision ({e})") from None
    return module.FeatureExtractorInceptionV3


def load_inception(weights_path: str, device: Optional[torch.device] = None) -> torch.nn.Module:
    """The FID Inception network (torch-fidelity's ``inception-v3-compat``) with weights read from the
    local file ``weights_path``; it maps uint8 ``(B, 3, H, W)`` images to its 2048-d pool features.
    Raises :class:`MetricsError` if the file is missing or unreadable, or the package is absent."""
    if not weights_path or not os.path.isfile(weights_path):
        raise MetricsError(f"FID Inception weights '{weights_path}' not found; FID needs a local copy of "
                           "weights-inception-2015-12-05-6726825d.pth (nothing is downloaded at run time)")
    cls = _inception_class()
    try:
        net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights_path)
    except Exception as e:  # torch.load / load_state_dict raise many types on a wrong file
        raise MetricsError(f"FID Inception weights '{weights_path}' could not be loaded "
                           f"({type(e).__name__}: {str(e)[:300]})") from None
    return net.to(device or "cpu").eval()


@torch.no_grad()
def inception_features(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 50,
                       device: Optional[torch.device] = None) -> np.ndarray:
    """2048-d pool features of uint8 images ``(N, C, H, W)`` (C = 1 is repeated to RGB; the network
    resizes to 299x299 itself): float64 ``(N, 2048)``."""
    device = device or next(net.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features = net(x.to(torch.uint8))
        features = features[0] if isinstance(features, (tuple, list)) else features
        out.append(features.double().cpu().numpy().reshape(x.shape[0], -1))
    return np.concatenate(out)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets ``(N_a, D)`` and ``(N_b, D)``."""
    return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


def fid(images_a: torch.Tensor, images_b: torch.Tensor, weights_path: str, batch_size: int = 50,
        device: Optional[torch.device] = None) -> float:
    """FID between two uint8 image sets ``(N, C, H, W)`` with the Inception weights at ``weights_path``.
    FID is biased upwards for small N (the paper-style figure uses 10k-50k images)."""
    net = load_inception(weights_path, device)
    return fid_from_features(inception_features(net, images_a, batch_size, device),
                             inception_features(net, images_b, batch_size, device))


__all__ = ["MetricsError", "psnr", "ssim", "gaussian_window", "gaussian_statistics", "frechet_distance",
           "load_inception", "inception_features", "fid_from_features", "fid"]
