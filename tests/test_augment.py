"""Tests of selfvae.augment: determinism from the caller's generator, agreement with an OpenCV
reference warp, exact identity, reflection borders."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from selfvae.augment import augment, random_affine_params


def _smooth_batch(b=64, size=32, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 3, 3, generator=g) * 255
    x = torch.nn.functional.interpolate(low, size=(size, width or size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def test_augment_shape_dtype_determinism():
    x = _smooth_batch()
    y1 = augment(x, torch.Generator().manual_seed(7))
    y2 = augment(x, torch.Generator().manual_seed(7))
    y3 = augment(x, torch.Generator().manual_seed(8))
    assert y1.shape == x.shape and y1.dtype == torch.uint8 and y1.device == x.device
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    # the generator state advances: two calls in a row differ
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(augment(x, g), augment(x, g))
    # content is preserved: small mean difference (after undoing the flip when it helps)
    diff = torch.minimum(
        (y1.float() - x.float()).abs().mean(dim=(1, 2, 3)), (y1.float() - x.flip(-1).float()).abs().mean(dim=(1, 2, 3))
    )
    other = (x.float() - x.roll(1, 0).float()).abs().mean(dim=(1, 2, 3))
    assert diff.mean() < 0.25 * other.mean() and diff.max() < 20


def test_augment_matches_opencv_reference():
    """The batched warp equals cv2.warpAffine with the documented map (also for non-square images)."""
    h, w = 32, 40
    x = _smooth_batch(b=12, size=h, width=w, seed=3)
    y = augment(x, torch.Generator().manual_seed(5))
    prm = random_affine_params(12, torch.Generator().manual_seed(5), "cpu")
    assert 0 < int(prm["flip"].sum()) < 12
    for i in range(12):
        img = x[i].permute(1, 2, 0).numpy()
        if prm["flip"][i]:
            img = img[:, ::-1]
        s = float(prm["scale"][i])
        c, sn = math.cos(float(prm["angle"][i])) / s, math.sin(float(prm["angle"][i])) / s
        tx, ty = float(prm["tx"][i]) * w, float(prm["ty"][i]) * h
        # destination pixel (col, row) -> source pixel, centres at integers
        m = np.array(
            [
                [c, -sn, c * (0.5 - w / 2) - sn * (0.5 - h / 2) + tx + w / 2 - 0.5],
                [sn, c, sn * (0.5 - w / 2) + c * (0.5 - h / 2) + ty + h / 2 - 0.5],
            ]
        )
        ref = cv2.warpAffine(
            np.ascontiguousarray(img).astype(np.float32), m, (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT,
        )
        d = np.abs(ref.round() - y[i].permute(1, 2, 0).numpy().astype(np.float32))
        assert d.max() <= 1 and d.mean() < 0.05


def test_augment_flip_only():
    x = _smooth_batch(b=64)
    y = augment(x, torch.Generator().manual_seed(0), max_translate=0.0, max_rotate_deg=0.0, scale_range=(1.0, 1.0))
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 10 < int(flipped.sum()) < 54 and 10 < int(same.sum())
    assert torch.equal(augment(x, torch.Generator(), p_flip=0.0, max_translate=0.0, max_rotate_deg=0.0,
                               scale_range=(1.0, 1.0)), x)


def test_augment_identity_warp_is_exact_and_borders_not_black():
    x = _smooth_batch(b=8)
    # a (practically) identity warp through the bilinear path returns the input exactly
    y = augment(
        x, torch.Generator().manual_seed(1), p_flip=0.0, max_translate=1e-7, max_rotate_deg=1e-7, scale_range=(1.0, 1.0)
    )
    assert torch.equal(y, x)
    # constant images stay constant: reflection padding, no black borders
    c = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    yc = augment(c, torch.Generator().manual_seed(2), max_translate=0.125, max_rotate_deg=10)
    assert torch.equal(yc, c)
    # nearest resampling only produces values present in the input image
    r = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    yn = augment(r, torch.Generator().manual_seed(4), mode="nearest")
    for i in range(4):
        assert set(yn[i].unique().tolist()) <= set(r[i].unique().tolist())


def test_augment_non_square_and_bad_input():
    x = torch.randint(0, 256, (3, 1, 16, 24), dtype=torch.uint8)
    assert augment(x, torch.Generator().manual_seed(0)).shape == (3, 1, 16, 24)
    assert augment(x[:0], torch.Generator()).shape == (0, 1, 16, 24)
    with pytest.raises(ValueError):
        augment(x.float(), torch.Generator())
    with pytest.raises(ValueError):
        augment(x[0], torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_cuda():
    x = _smooth_batch().cuda()
    y1 = augment(x, torch.Generator(device="cuda").manual_seed(3))
    y2 = augment(x, torch.Generator(device="cuda").manual_seed(3))
    assert y1.is_cuda and torch.equal(y1, y2)
    with pytest.raises(ValueError):
        augment(x, torch.Generator())


def test_augment_leaves_the_global_rng_alone():
    """Every draw comes from the given generator (the trainer checkpoints it for exact resume)."""
    x = _smooth_batch(b=8)
    state = torch.get_rng_state()
    augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
