"""PSNR and SSIM against scikit-image on real photographs; the Fréchet distance; FID's error paths."""
import importlib.util
import math

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from selfvae.metrics import (MetricsError, fid_from_features, frechet_distance, gaussian_statistics, load_inception,
                             psnr, ssim)

# Both sides compute in float64 from the same integers; the only differences are summation
# order (separable valid convolution vs scipy's reflected filter, then cropped), so they agree
# to ~1e-12. 1e-9 leaves room for BLAS differences while being far below the required 1e-3.
TOL = 1e-9


def _crops(size=(48, 64)):
    """Crops of bundled photographs (uint8 (H, W, 3)) with their degraded versions."""
    h, w = size
    photos = [skimage.data.astronaut()[60:60 + h, 180:180 + w], skimage.data.coffee()[100:100 + h, 200:200 + w],
              skimage.data.chelsea()[80:80 + h, 150:150 + w]]
    rng = np.random.default_rng(0)
    pairs = []
    for i, photo in enumerate(photos):
        noisy = np.clip(photo + rng.normal(0, [5, 20, 60][i], photo.shape), 0, 255).round().astype(np.uint8)
        blurred = np.clip(gaussian_filter(photo.astype(float), sigma=(1.2, 1.2, 0)), 0, 255).round().astype(np.uint8)
        shifted = np.roll(photo, 1, axis=1)
        for other in (noisy, blurred, shifted):
            pairs.append((photo, other))
    pairs.append((photos[0], photos[1]))  # unrelated images
    return pairs


def _batch(arrays):
    return torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays]))


@pytest.mark.parametrize("size", [(48, 64), (11, 11), (32, 17)])
def test_psnr_and_ssim_match_skimage(size):
    pairs = _crops(size)
    a, b = _batch([p[0] for p in pairs]), _batch([p[1] for p in pairs])
    got_psnr, got_ssim = psnr(b, a), ssim(a, b)
    assert got_psnr.shape == got_ssim.shape == (len(pairs),) and got_ssim.dtype == torch.float64
    for i, (x, y) in enumerate(pairs):
        expected_psnr = peak_signal_noise_ratio(x, y, data_range=255)
        expected_ssim = structural_similarity(x.transpose(2, 0, 1), y.transpose(2, 0, 1), gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=0)
        assert abs(float(got_psnr[i]) - expected_psnr) < TOL, i
        assert abs(float(got_ssim[i]) - expected_ssim) < TOL, i
    assert (got_ssim < 1).all() and torch.isfinite(got_psnr).all()
    # more noise on the same photo: lower PSNR and SSIM
    photo = pairs[0][0].astype(float)
    rng = np.random.default_rng(1)
    noisy = [np.clip(photo + rng.normal(0, s, photo.shape), 0, 255).round().astype(np.uint8) for s in (3, 15, 45)]
    clean = _batch([pairs[0][0]] * 3)
    assert (ssim(clean, _batch(noisy)).diff() < 0).all() and (psnr(clean, _batch(noisy)).diff() < 0).all()


def test_identical_images_and_errors():
    x = _batch([skimage.data.astronaut()[:32, :32]])
    assert math.isinf(float(psnr(x, x))) and float(psnr(x, x)) > 0
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim(x, x.flip(-1))) < 0.9
    with pytest.raises(MetricsError, match="smaller than the 11x11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(MetricsError, match="different shapes"):
        psnr(x, x[..., :16, :16])


def test_psnr_and_ssim_over_a_region():
    """With a mask, PSNR is that of the masked pixels and SSIM the map's mean over the masked window
    centres; a full mask gives the unmasked figures."""
    pairs = _crops((32, 32))
    a, b = _batch([p[0] for p in pairs]), _batch([p[1] for p in pairs])
    full = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    assert torch.allclose(psnr(b, a, mask=full), psnr(b, a), rtol=0, atol=1e-9)
    assert torch.allclose(ssim(a, b, mask=full), ssim(a, b), rtol=0, atol=1e-12)
    region = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    region[..., 8:20, 4:30] = True
    expected = psnr(b[..., 8:20, 4:30], a[..., 8:20, 4:30])
    assert torch.allclose(psnr(b, a, mask=region), expected, rtol=0, atol=1e-9)
    # the left half identical, the right half changed: SSIM 1 over windows inside the left half only
    mixed = a.clone()
    mixed[..., 16:] = b[..., 16:]
    left, right = torch.zeros_like(full), torch.zeros_like(full)
    left[..., :11], right[..., 16:] = True, True  # centres up to column 10: windows within columns 0..15
    assert torch.allclose(ssim(a, mixed, mask=left), torch.ones(len(pairs), dtype=torch.float64), atol=1e-12)
    assert (ssim(a, mixed, mask=right) < 0.999).all()
    assert torch.isnan(psnr(a, b, mask=torch.zeros_like(full))).all()
    with pytest.raises(MetricsError, match="mask"):
        ssim(a, b, mask=full[..., :16])


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    D = 6
    mu = rng.normal(size=D)
    A = rng.normal(size=(D, D))
    sigma = A @ A.T + 0.1 * np.eye(D)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 3.0, D), rng.uniform(0.1, 3.0, D)
    mu2 = mu + rng.normal(size=D)
    expected = np.sum((mu - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # full covariances: the usual sqrtm formula, and symmetry
    B = rng.normal(size=(D, D))
    sigma2 = B @ B.T + 0.1 * np.eye(D)
    covmean = scipy.linalg.sqrtm(sigma @ sigma2).real
    reference = np.sum((mu - mu2) ** 2) + np.trace(sigma) + np.trace(sigma2) - 2 * np.trace(covmean)
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(mu2, sigma2, mu, sigma) == pytest.approx(reference, rel=1e-8)
    with pytest.raises(MetricsError, match="shapes"):
        frechet_distance(mu, sigma, mu[:3], sigma2)


def test_frechet_distance_of_feature_sets():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(50, 8))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-9)
    mu, sigma = gaussian_statistics(f)
    assert np.allclose(mu, f.mean(0)) and np.allclose(sigma, np.cov(f, rowvar=False))
    # a shift by c in every dimension adds ||c||^2
    assert fid_from_features(f, f + 2.0) == pytest.approx(8 * 4.0, rel=1e-9)
    # fewer samples than dimensions: singular covariances still give a finite, non-negative value
    g = rng.normal(size=(5, 8))
    value = fid_from_features(g, rng.normal(size=(5, 8)))
    assert math.isfinite(value) and value >= 0
    assert fid_from_features(g, g) == pytest.approx(0.0, abs=1e-7)
    # large samples of the same Gaussian: the distance shrinks towards 0
    big = fid_from_features(rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)))
    assert big < 0.01
    with pytest.raises(MetricsError, match="at least 2"):
        gaussian_statistics(f[:1])


def test_fid_needs_local_weights_and_the_package(tmp_path):
    with pytest.raises(MetricsError, match="not found"):
        load_inception(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    expected = "could not be loaded" if importlib.util.find_spec("torch_fidelity") else "torch-fidelity"
    with pytest.raises(MetricsError, match=expected):
        load_inception(str(junk))
