"""Tests of the ``transforms`` package: specs, batching, OpenCV agreement, chains, errors.

Agreement with the OpenCV references (``Transform.reference``), measured on photographs
by ``experiments/transform_agreement.py`` and checked here on photo crops:

* every transform is **exact** (100 % of pixels equal, max abs difference 0):
  ``bits`` and ``gray`` by integer arithmetic, ``blur`` and ``sketch`` because the torch
  code reproduces OpenCV's 8-bit fixed-point Gaussian and ``cv2.divide`` rounding,
  ``downscale`` because bicubic x1/2 taps are exact binary fractions, ``lowpass``
  because both sides work in float64 (a tie at .5 is the only possible difference).

The tolerances are therefore stated as ``TOLERANCE[name] = (min fraction exact,
max abs difference)`` and all set to ``(1.0, 0)``.
"""
from __future__ import annotations


import cv2
import numpy as np
import pytest
import torch
from skimage import data

from transforms import base
from transforms import Chain, LevelSpec, Transform, TransformError, available, parse_chain, register, spec_of

# chain -> (min fraction of exact pixels, max abs difference) against the OpenCV reference
TOLERANCE = {
    "downscale": (1.0, 0),
    "sketch": (1.0, 0),
    "bits:3": (1.0, 0),
    "bits:1": (1.0, 0),
    "gray": (1.0, 0),
    "blur": (1.0, 0),
    "lowpass:0.25": (1.0, 0),
    "lowpass:0.1": (1.0, 0),
    "lowpass:1": (1.0, 0),
    # chains, compared level by level (inputs with fewer than 256 values included)
    "sketch,downscale:2": (1.0, 0),
    "bits:3,downscale": (1.0, 0),
    "bits:3,blur": (1.0, 0),
    "bits:3,lowpass:0.25": (1.0, 0),
    "bits:3,gray": (1.0, 0),
    "downscale,blur,bits:2": (1.0, 0),
    "subsample": (1.0, 0),
    "bits:3,subsample:2": (1.0, 0),
}
SINGLE = ["downscale", "sketch", "bits:3", "bits:1", "gray", "blur", "lowpass:0.25", "lowpass:1", "subsample"]
ALL_CHAINS = sorted(TOLERANCE)


# ----------------------------------------------------------------------------- data

def _crops(size_h: int, size_w: int, per_image: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for img in (data.astronaut(), data.coffee(), data.chelsea()):
        h, w = img.shape[:2]
        for _ in range(per_image):
            top, left = rng.integers(0, h - size_h + 1), rng.integers(0, w - size_w + 1)
            out.append(img[top:top + size_h, left:left + size_w].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))


@pytest.fixture(scope="module")
def crops64() -> np.ndarray:
    """Six 64x64 RGB photo crops, uint8 (6, 3, 64, 64)."""
    return _crops(64, 64, 2, seed=0)


@pytest.fixture(scope="module")
def crops32() -> np.ndarray:
    """Six 32x32 RGB photo crops, uint8 (6, 3, 32, 32)."""
    return _crops(32, 32, 2, seed=1)


@pytest.fixture(scope="module")
def crops_odd() -> np.ndarray:
    """Three 31x45 RGB photo crops (odd sizes), uint8 (3, 3, 31, 45)."""
    return _crops(31, 45, 1, seed=2)


def _diff_stats(a: np.ndarray, b: np.ndarray):
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return float(np.mean(d == 0)), int(d.max())


def _accepts(chain: Chain, batch: np.ndarray) -> bool:
    try:
        chain.specs(LevelSpec(*batch.shape[1:]))
        return True
    except TransformError:
        return False


# ----------------------------------------------------------------------------- per transform

@pytest.mark.parametrize("text", SINGLE)
def test_output_matches_declared_spec(text, crops64):
    chain = parse_chain(text)
    x = torch.from_numpy(crops64)
    (spec,) = chain.specs(spec_of(x))
    (y,) = chain(x)
    assert y.dtype == torch.uint8 and y.device == x.device
    assert tuple(y.shape) == (x.shape[0],) + spec.shape
    assert int(y.max()) <= spec.num_values - 1
    expected = {"downscale": (3, 32, 32, 256), "sketch": (1, 64, 64, 256), "bits:3": (3, 64, 64, 8),
                "bits:1": (3, 64, 64, 2), "gray": (1, 64, 64, 256), "blur": (3, 64, 64, 256),
                "lowpass:0.25": (3, 64, 64, 256), "lowpass:1": (3, 64, 64, 256), "subsample": (3, 32, 32, 256)}[text]
    assert (spec.channels, spec.height, spec.width, spec.num_values) == expected
    # the output really is 256-valued (or 2^n-valued), not collapsed onto a few levels
    distinct = torch.unique(y).numel()
    assert distinct <= spec.num_values
    assert distinct >= (spec.num_values if spec.num_values <= 8 else 64)


@pytest.mark.parametrize("n", range(1, 8))
def test_bits_uses_exactly_2n_values(n):
    ramp = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    (y,) = parse_chain(f"bits:{n}")(ramp)
    assert torch.equal(torch.unique(y), torch.arange(2 ** n, dtype=torch.uint8))
    assert torch.equal(y, ramp >> (8 - n))


def test_bits_after_bits_shifts_relative_to_input_values():
    ramp = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y3, y1 = parse_chain("bits:3,bits:1")(ramp)
    assert torch.equal(y1, ramp >> 7) and torch.equal(y1, y3 >> 2)
    assert [s.num_values for s in parse_chain("bits:3,bits:1").specs(LevelSpec(1, 16, 16))] == [8, 2]


def test_lowpass_one_is_identity_and_keeps_the_mean(crops64):
    x = torch.from_numpy(crops64)
    assert torch.equal(parse_chain("lowpass:1")(x)[0], x)
    (y,) = parse_chain("lowpass:0.0001")(x)  # sqrt(f) * 64 = 0.64 -> h = w = 1: only the DC coefficient
    assert y.float().std(dim=(2, 3)).max() < 1.0
    assert torch.allclose(y.float().mean(dim=(2, 3)), x.float().mean(dim=(2, 3)), atol=0.6)
    assert parse_chain("lowpass:0.25").transforms[0].kept(LevelSpec(3, 64, 40)) == (32, 20)


@pytest.mark.parametrize("text", SINGLE)
def test_deterministic(text, crops32):
    x = torch.from_numpy(crops32)
    chain = parse_chain(text)
    assert torch.equal(chain(x)[0], chain(x.clone())[0])


@pytest.mark.parametrize("text", SINGLE)
def test_batch_independence(text, crops32):
    x = torch.from_numpy(crops32)
    chain = parse_chain(text)
    batched = chain(x)[0]
    singles = torch.cat([chain(x[i:i + 1])[0] for i in range(x.shape[0])])
    assert torch.equal(batched, singles)


def test_subsample_keeps_the_first_phase_and_only_it_declares_one(crops32):
    """``subsample`` is the pixels (2i, 2j) of its input, the phase its ``kept_phase`` names; no
    other transform claims to copy a phase (a phased likelihood would then skip coding it)."""
    x = torch.from_numpy(crops32)
    t = parse_chain("subsample").transforms[0]
    assert t.kept_phase == 0 and torch.equal(t(x), x[:, :, 0::2, 0::2])
    for name in available():
        if name != "subsample":
            assert base._REGISTRY[name].kept_phase is None, name


def test_transform_call_checks_input_and_output(crops32):
    x = torch.from_numpy(crops32)
    t = parse_chain("downscale").transforms[0]
    assert t(x).shape == (6, 3, 16, 16)
    with pytest.raises(TransformError, match="cannot halve a 31x32"):
        t(x[:, :, :31])


@pytest.mark.parametrize("text", ALL_CHAINS)
@pytest.mark.parametrize("size", ["64", "32", "odd"])
def test_agreement_with_opencv(text, size, crops64, crops32, crops_odd):
    batch = {"64": crops64, "32": crops32, "odd": crops_odd}[size]
    chain = parse_chain(text)
    if not _accepts(chain, batch):
        assert size == "odd" and ("downscale" in text or "subsample" in text)
        pytest.skip("downscale and subsample need even sizes")
    min_exact, max_diff = TOLERANCE[text]
    ours = [y.numpy() for y in chain(torch.from_numpy(batch))]
    for i, img in enumerate(batch):
        refs = chain.reference(img)
        assert len(refs) == len(ours)
        for k, ref in enumerate(refs):
            assert ref.dtype == np.uint8 and ref.shape == ours[k][i].shape
            exact, worst = _diff_stats(ours[k][i], ref)
            assert exact >= min_exact and worst <= max_diff, (text, size, i, k, exact, worst)


def test_sketch_divide_by_zero_follows_opencv():
    # A flat white image: blur(255 - 255) = 0, divisor 255 - 0 = 255 -> 255.
    # A flat black image: inverse 255, blur 255, divisor 0 -> cv2.divide gives 0, not nan/inf.
    for value, expected in ((255, 255), (0, 0)):
        img = np.full((3, 24, 24), value, np.uint8)
        ref = parse_chain("sketch").reference(img)[0]
        (ours,) = parse_chain("sketch")(torch.from_numpy(img)[None])
        assert np.all(ref == expected) and np.all(ours.numpy() == expected)


def test_sketch_and_gray_on_gray_input(crops32):
    x = torch.from_numpy(crops32)
    (g,) = parse_chain("gray")(x)
    via_gray = parse_chain("gray,sketch")(x)[1]
    assert torch.equal(via_gray, parse_chain("sketch")(x)[0])  # sketch of the luminance == sketch
    assert torch.equal(parse_chain("sketch")(g)[0], via_gray)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("text", ALL_CHAINS)
def test_gpu_matches_cpu(text, crops64):
    x = torch.from_numpy(crops64)
    chain = parse_chain(text)
    for cpu, gpu in zip(chain(x), chain(x.cuda())):
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu, gpu.cpu())


# ----------------------------------------------------------------------------- chain parser

def test_registry_lists_the_transforms():
    assert set(available()) >= {"bits", "blur", "downscale", "gray", "lowpass", "sketch", "subsample"}


def test_parse_counts_and_arguments():
    assert len(parse_chain("")) == 0 and len(parse_chain("   ")) == 0
    assert len(parse_chain("downscale")) == 1
    assert len(parse_chain("downscale:3")) == 3
    chain = parse_chain(" sketch , downscale:2 ")
    assert [t.name for t in chain.transforms] == ["sketch", "downscale", "downscale"]
    bits = parse_chain("bits:3").transforms
    assert len(bits) == 1 and bits[0].n == 3 and str(bits[0]) == "bits:3"
    low = parse_chain("lowpass:0.25").transforms
    assert len(low) == 1 and low[0].f == 0.25
    assert str(parse_chain("downscale:2,bits:3")) == "downscale:2,bits:3"


def test_chain_specs():
    x = LevelSpec(3, 64, 64)
    assert parse_chain("downscale:3").specs(x) == [LevelSpec(3, 32, 32), LevelSpec(3, 16, 16), LevelSpec(3, 8, 8)]
    assert parse_chain("sketch,downscale:2").specs(x) == [LevelSpec(1, 64, 64, 256), LevelSpec(1, 32, 32, 256),
                                                          LevelSpec(1, 16, 16, 256)]
    assert parse_chain("bits:3").specs(x) == [LevelSpec(3, 64, 64, 8)]
    assert parse_chain("downscale,bits:2").specs(x) == [LevelSpec(3, 32, 32, 256), LevelSpec(3, 32, 32, 4)]
    assert parse_chain("gray,sketch").specs(x) == [LevelSpec(1, 64, 64), LevelSpec(1, 64, 64)]
    assert parse_chain("blur,lowpass:0.5").specs(LevelSpec(1, 7, 9, 16)) == [LevelSpec(1, 7, 9, 16)] * 2
    assert parse_chain("").specs(x) == []


def test_chain_outputs_match_specs(crops64):
    x = torch.from_numpy(crops64)
    chain = parse_chain("sketch,downscale:2,bits:3")
    ys = chain(x)
    for y, spec in zip(ys, chain.specs(spec_of(x))):
        assert tuple(y.shape[1:]) == spec.shape and int(y.max()) < spec.num_values


def test_new_transform_can_be_registered_from_outside(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # leave the real registry untouched

    @register
    class Invert(Transform):
        """``n - 1 - v``: same shape and number of values."""

        name = "invert_test"

        def output_spec(self, spec):
            return spec

        def apply(self, y, spec):
            return (spec.num_values - 1) - y

        def reference(self, y, spec):
            return (spec.num_values - 1 - y).astype(np.uint8)

    assert "invert_test" in available()
    chain = parse_chain("bits:3,invert_test,downscale")
    assert chain.specs(LevelSpec(3, 8, 8)) == [LevelSpec(3, 8, 8, 8)] * 2 + [LevelSpec(3, 4, 4, 8)]
    x = torch.arange(192, dtype=torch.uint8).reshape(1, 3, 8, 8)
    y3, inv, small = chain(x)
    assert torch.equal(inv, 7 - (x >> 5)) and small.shape == (1, 3, 4, 4)
    with pytest.raises(TypeError, match="registered twice"):
        register(type("Other", (Transform,), {"name": "invert_test"}))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("text, message", [
    ("foo", r"unknown transform 'foo'.*known transforms: bits, blur, downscale, gray, lowpass, sketch, subsample"),
    ("downscale,foo:2", r"unknown transform 'foo'"),
    ("downscale:x", r"malformed chain 'downscale:x'.*positive integer"),
    ("downscale:0", r"positive integer"),
    ("sketch::", r"malformed chain 'sketch::'"),
    (",,", r"malformed chain ',,'"),
    ("downscale,", r"malformed chain"),
    ("Downscale", r"malformed chain"),
    ("bits", r"'bits' needs the number of bits"),
    ("bits:0", r"malformed 'bits:0'.*1\.\.8"),
    ("bits:9", r"malformed 'bits:9'"),
    ("bits:x", r"malformed 'bits:x'"),
    ("bits:2.5", r"malformed 'bits:2.5'"),
    ("lowpass", r"'lowpass' needs the fraction"),
    ("lowpass:0", r"malformed 'lowpass:0'.*0 < f <= 1"),
    ("lowpass:1.5", r"malformed 'lowpass:1.5'"),
    ("lowpass:-0.5", r"malformed 'lowpass:-0.5'"),
    ("lowpass:abc", r"malformed 'lowpass:abc'"),
    ("lowpass:nan", r"malformed 'lowpass:nan'"),
    ("sketch,sketch", r"'sketch' of a 'sketch' adds nothing.*cannot follow itself"),
    ("sketch:2", r"cannot follow itself"),
    ("gray,gray", r"'gray' of a 'gray' adds nothing"),
    ("sketch,downscale,sketch", r"'sketch' may appear only once"),
])
def test_parse_errors(text, message):
    with pytest.raises(TransformError, match=message):
        parse_chain(text)


@pytest.mark.parametrize("text, spec, message", [
    ("downscale:3", LevelSpec(3, 20, 20), r"chain 'downscale:3', step 3 \('downscale'\) on input 3x20x20: "
                                          r"'downscale' cannot halve a 5x5 image"),
    ("downscale", LevelSpec(3, 21, 20), r"cannot halve a 21x20 image"),
    ("downscale", LevelSpec(3, 1, 1), r"cannot halve a 1x1 image"),
    ("sketch,gray", LevelSpec(3, 32, 32), r"step 2 \('gray'\).*already one channel"),
    ("gray", LevelSpec(1, 32, 32), r"already one channel"),
    ("gray", LevelSpec(4, 32, 32), r"3 \(RGB\) channels, got 4"),
    ("sketch", LevelSpec(2, 32, 32), r"'sketch' needs 3 \(RGB\) or 1 channel, got 2"),
    ("bits:3,sketch", LevelSpec(3, 32, 32), r"step 2 \('sketch'\).*256 values, got 8 values"),
    ("bits:2,bits:3", LevelSpec(3, 32, 32), r"step 2 \('bits:3'\).*keeps 8 values but the input has only 4"),
    ("bits:8", LevelSpec(3, 32, 32), r"'bits:8' keeps 256 values but the input has only 256"),
    ("bits:2", LevelSpec(3, 32, 32, 10), r"power of two, got 10"),
])
def test_meaningless_or_impossible_chains(text, spec, message):
    with pytest.raises(TransformError, match=message):
        parse_chain(text).specs(spec)


def test_chain_call_raises_for_impossible_size():
    with pytest.raises(TransformError, match=r"step 3 \('downscale'\).*cannot halve a 5x5"):
        parse_chain("downscale:3")(torch.zeros(1, 3, 20, 20, dtype=torch.uint8))
    with pytest.raises(TransformError, match=r"step 1 \('gray'\).*3 \(RGB\) channels, got 2"):
        parse_chain("gray")(torch.zeros(1, 2, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 3, 8, 8), r"expected dtype torch.uint8.*got torch.float32"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), r"expected dtype torch.uint8"),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), r"expected shape \(B, C, H, W\), got \(3, 8, 8\) \(rank 3\)"),
    (np.zeros((1, 3, 8, 8), np.uint8), r"expected a torch.Tensor, got ndarray"),
])
def test_bad_tensors(bad, message):
    with pytest.raises(TransformError, match=message):
        parse_chain("blur")(bad)
    with pytest.raises(TransformError, match=message):
        parse_chain("blur").transforms[0](bad)


def test_tensor_not_matching_spec():
    t = parse_chain("blur").transforms[0]
    with pytest.raises(TransformError, match=r"expected \(B, 1, 8, 8\), got \(1, 3, 8, 8\)"):
        t(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), LevelSpec(1, 8, 8))
