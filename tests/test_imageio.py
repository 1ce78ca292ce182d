"""Tests of ``transforms.imageio``: one rule set for reading, one resize, atomic PNG writing."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import png_claiming
from transforms.imageio import MAX_PIXELS, ImageReadError, center_crop_resize, crop_resize, read_image, write_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rgb(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def chw(a):
    return a.transpose(2, 0, 1)


def white_composite(color, alpha):
    """The documented rule, written out: round((c * a + 255 * (255 - a)) / 255)."""
    c, a = color.astype(np.float64), alpha.astype(np.float64)[..., None]
    return np.floor((c * a + 255 * (255 - a)) / 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- conversions


def test_rgb_and_gray_and_channels(tmp_path):
    rgb, gray = _rgb(seed=1), _rgb(seed=2)[..., 0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(read_image(tmp_path / "rgb.png"), chw(rgb))
    assert read_image(tmp_path / "rgb.png").dtype == np.uint8
    assert np.array_equal(read_image(tmp_path / "rgb.png", channels=None), chw(rgb))
    assert np.array_equal(read_image(tmp_path / "rgb.png", channels=1)[0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[None], 3, 0))  # replicated
    assert np.array_equal(read_image(tmp_path / "gray.png", channels=None), gray[None])  # stays gray
    assert np.array_equal(read_image(tmp_path / "gray.png", channels=1), gray[None])
    with pytest.raises(ValueError, match="channels"):
        read_image(tmp_path / "rgb.png", channels=2)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.dstack([_rgb(seed=3), np.random.default_rng(4).integers(0, 256, (8, 8), dtype=np.uint8)])
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = read_image(tmp_path / "rgba.png")
    assert np.array_equal(got, chw(white_composite(rgba[..., :3], rgba[..., 3])))
    assert (got[:, 0, 0] == 255).all() and np.array_equal(got[:, 0, 1], rgba[0, 1, :3])  # transparent, opaque
    gray = _rgb(seed=5)[..., 0]
    la = np.dstack([gray, np.full((8, 8), 100, np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    expected = white_composite(gray[..., None], la[..., 1])[..., 0]
    assert np.array_equal(read_image(tmp_path / "la.png", channels=None), expected[None])  # gray stays gray
    assert np.array_equal(read_image(tmp_path / "la.png"), np.repeat(expected[None], 3, 0))
    # a transparent colour (tRNS) in a gray image, and in a palette image
    Image.fromarray(gray).save(tmp_path / "trns.png", transparency=int(gray[3, 3]))
    got = read_image(tmp_path / "trns.png", channels=None)
    assert got.shape == (1, 8, 8) and got[0, 3, 3] == 255
    assert np.array_equal(got[0][gray != gray[3, 3]], gray[gray != gray[3, 3]])
    pal = Image.fromarray((np.arange(64).reshape(8, 8) % 3).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.save(tmp_path / "pal_t.png", transparency=1)  # green is transparent -> white
    expected = np.array([[255, 0, 0], [255, 255, 255], [0, 0, 255]], np.uint8)[np.arange(64).reshape(8, 8) % 3]
    assert np.array_equal(read_image(tmp_path / "pal_t.png"), chw(expected))


def test_sixteen_bits_take_the_top_byte(tmp_path):
    g16 = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1021 + 123).astype(np.uint16)
    g16[0, :3] = (65535, 257 * 200, 255)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    got = read_image(tmp_path / "g16.png", channels=None)
    assert got.shape == (1, 8, 8) and np.array_equal(got[0], (g16 >> 8).astype(np.uint8))
    assert list(got[0, 0, :3]) == [255, 200, 0]
    c16 = np.dstack([g16, 65535 - g16, g16 // 3])  # BGR
    cv2.imwrite(str(tmp_path / "c16.png"), c16)
    assert np.array_equal(read_image(tmp_path / "c16.png"), chw((c16[..., ::-1] >> 8).astype(np.uint8)))
    cv2.imwrite(str(tmp_path / "g16.tif"), g16)
    assert np.array_equal(read_image(tmp_path / "g16.tif", channels=None)[0], (g16 >> 8).astype(np.uint8))


def test_palette_one_bit_cmyk_and_exif_orientation(tmp_path):
    pal = Image.fromarray((np.arange(64).reshape(8, 8) % 3).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.save(tmp_path / "pal.png")
    lut = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    assert np.array_equal(read_image(tmp_path / "pal.png", channels=None), chw(lut[np.arange(64).reshape(8, 8) % 3]))
    bits = np.random.default_rng(6).integers(0, 2, (8, 8)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert np.array_equal(read_image(tmp_path / "bits.png", channels=None)[0], bits.astype(np.uint8) * 255)
    cmyk = Image.fromarray(_rgb(seed=7)).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    assert np.array_equal(read_image(tmp_path / "cmyk.tif"), chw(np.asarray(cmyk.convert("RGB"))))
    wide = _rgb(4, 6, seed=8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(wide).save(tmp_path / "rotated.png", exif=exif)
    got = read_image(tmp_path / "rotated.png")
    assert got.shape == (3, 6, 4) and np.array_equal(got, chw(np.rot90(wide, k=-1)))


def test_opencv_fallback_and_rejected_sample_types(tmp_path):
    rgb = _rgb(seed=9)
    cv2.imwrite(str(tmp_path / "img.pam"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # Pillow cannot read PAM
    with pytest.raises(Exception):
        Image.open(tmp_path / "img.pam")
    assert np.array_equal(read_image(tmp_path / "img.pam"), chw(rgb))
    cv2.imwrite(str(tmp_path / "float.pfm"), rgb.astype(np.float32))  # only OpenCV reads PFM
    with pytest.raises(ImageReadError, match=r"float\.pfm.*sample type"):
        read_image(tmp_path / "float.pfm")
    Image.fromarray(rgb[..., 0].astype(np.float32)).save(tmp_path / "float.tif")  # Pillow mode F
    with pytest.raises(ImageReadError, match=r"float\.tif.*sample type"):
        read_image(tmp_path / "float.tif")


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"absent\.jpg.*no such file"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)
    (tmp_path / "text.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"text\.png.*cannot decode"):
        read_image(tmp_path / "text.png")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")
    assert issubclass(ImageReadError, ValueError)


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize("width,height", [(50000, 50000), (10000, 10000), (9000, 8000)])
def test_huge_header_is_refused_before_decoding(tmp_path, width, height):
    """Above Pillow's bomb error (50000^2), between its warning and error (10000^2), and only above ours."""
    assert width * height > MAX_PIXELS
    path = png_claiming(tmp_path / "huge.png", width, height)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20 * 2 ** 20
    message = str(e.value)
    assert message.startswith(str(path)) and f"{width * height:,} pixels" in message
    assert f"{MAX_PIXELS:,}" in message
    if width * height < 89478485:  # below Pillow's own limit our check sees the header: the size is named
        assert f"{width}x{height}" in message


def test_max_pixels_argument(tmp_path):
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png", max_pixels=64).shape == (3, 8, 8)
    with pytest.raises(ImageReadError, match="8x8"):
        read_image(tmp_path / "small.png", max_pixels=63)


# --------------------------------------------------------------------------- resizing and writing


def test_center_crop_resize():
    img = np.zeros((3, 8, 12), np.uint8)
    img[:, :, 2:10] = chw(_rgb(seed=5))
    img[:, :, :2] = img[:, :, 10:] = 77
    assert np.array_equal(center_crop_resize(img, 8), img[:, :, 2:10])  # already the size: unchanged
    tall = np.full((1, 40, 20), 50, np.uint8)
    tall[:, 10:30] = 200
    assert (center_crop_resize(tall, 7) == 200).all()  # nothing outside the centre square leaks in
    photo = _rgb(37, 41, seed=6)
    expected = np.asarray(Image.fromarray(photo[:, 2:39]).resize((16, 16), Image.Resampling.LANCZOS))
    out = center_crop_resize(chw(photo), 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8 and np.array_equal(out, chw(expected))
    assert center_crop_resize(chw(photo), 64).shape == (3, 64, 64)
    assert np.array_equal(crop_resize(chw(photo), (3, 4, 10, 10), 10), chw(photo[3:13, 4:14]))
    with pytest.raises(ValueError, match="do not fit"):
        crop_resize(chw(photo), (30, 0, 10, 10), 4)
    with pytest.raises(ValueError, match="size"):
        center_crop_resize(chw(photo), 0)


def test_write_png_round_trip(tmp_path):
    rgb, gray = chw(_rgb(seed=10)), _rgb(seed=11)[None, :, :, 0]
    write_png(str(tmp_path / "rgb.png"), rgb)
    write_png(str(tmp_path / "gray.png"), gray)
    assert np.array_equal(read_image(tmp_path / "rgb.png", channels=None), rgb)
    assert np.array_equal(read_image(tmp_path / "gray.png", channels=None), gray)
    write_png(str(tmp_path / "rgb.png"), 255 - rgb)  # replaces the file
    assert np.array_equal(read_image(tmp_path / "rgb.png"), 255 - rgb)
    assert sorted(os.listdir(tmp_path)) == ["gray.png", "rgb.png"]  # no temporary file left
    with pytest.raises(ValueError):
        write_png(str(tmp_path / "x.png"), rgb.astype(np.float32))


def test_transforms_does_not_import_selfvae():
    code = "import sys, transforms.imageio, transforms.preview; print([m for m in sys.modules if m.split('.')[0] == 'selfvae'])"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
