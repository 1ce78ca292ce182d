"""Reading, cropping, resizing and writing image files: one set of rules for the whole project.

Every array here is ``numpy.uint8`` of shape ``(C, H, W)``, values 0..255, channels in RGB
order (``C = 3``) or gray (``C = 1``).

Reading (:func:`read_image`)
----------------------------
Files are decoded with Pillow; a file Pillow does not recognise is handed to OpenCV
(``cv2.imdecode``), e.g. PAM. The same rules apply to both decoders:

* **size limit**: an image whose header claims more than ``max_pixels`` pixels
  (default :data:`MAX_PIXELS` = 2**26, e.g. 8192x8192) is refused *before* its pixels are
  decoded, with an error naming the file and the claimed size. The limit is below Pillow's
  own decompression-bomb threshold, so it is the rule that applies; Pillow's
  ``DecompressionBombError``/``Warning`` (for a header above Pillow's limit) become the
  same error. OpenCV cannot report a size before decoding, so for the (rare) OpenCV
  fallback the limit is checked after decoding, under OpenCV's own limit of 2**30 pixels;
* **16 bits -> 8 bits**: the top byte, ``v >> 8`` (65535 -> 255, ``257 k`` -> ``k``); this is
  what Pillow does for 16-bit colour PNGs, and it is applied to 16-bit gray the same way;
* **alpha** (RGBA, gray+alpha, palette or gray/RGB with a transparent colour, premultiplied
  alpha): composited on a **white** background,
  ``out = round((c * a + 255 * (255 - a)) / 255)``: opaque pixels are unchanged, fully
  transparent pixels become white;
* **palette, 1-bit, CMYK, YCbCr, LAB, HSV**: Pillow's conversion to RGB (or to gray for
  1-bit); a palette image is colour even when its palette is gray;
* **EXIF orientation** is applied (Pillow path; the OpenCV fallback reads pixels as stored);
* **floating-point** images (and integer samples beyond 16 bits) are refused.

After these steps an image is gray (1 channel) or RGB (3 channels). ``channels`` then
picks what the caller gets: ``3`` -> RGB, a gray image replicated to three channels;
``1`` -> gray, a colour image converted with ITU-R BT.601 luma
(``0.299 R + 0.587 G + 0.114 B``, OpenCV's ``COLOR_RGB2GRAY``); ``None`` -> as stored.

Every failure (missing file, a directory, not an image, truncated or corrupt data, too
large, unsupported sample type) raises :class:`ImageReadError` whose message starts with
the file's path.

Resizing (:func:`center_crop_resize`, :func:`crop_resize`)
---------------------------------------------------------
Crop first, then resize with Pillow's Lanczos filter (antialiased when shrinking, each
channel on its own); a crop that already has the target size is copied unchanged.
Cropping first means no pixel outside the crop leaks in through the filter's support.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "ImageReadError", "read_image", "center_crop_resize", "crop_resize", "write_png"]

#: Images whose header claims more pixels than this are refused before decoding (8192 x 8192).
MAX_PIXELS = 2 ** 26

_LANCZOS = Image.Resampling.LANCZOS
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(ValueError):
    """An image file cannot be read: the message starts with the file's path and says why."""


# --------------------------------------------------------------------------- reading


def read_image(path: str, channels: int | None = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file with the rules of the module docstring.

    Args:
        path: the file.
        channels: 3 (RGB), 1 (gray) or ``None`` (1 or 3, as stored).
        max_pixels: refuse images whose header claims more pixels than this.

    Returns:
        uint8 ``(C, H, W)``, values 0..255.

    Raises:
        ImageReadError: naming ``path``.
    """
    if channels not in (1, 3, None):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"{path}: cannot read image: no such file")
    if os.path.isdir(path):
        raise ImageReadError(f"{path}: cannot read image: it is a directory")
    try:
        hwc = _read_with_pillow(path, max_pixels)
    except UnidentifiedImageError:
        hwc = _read_with_opencv(path, max_pixels)
    if channels == 3 and hwc.shape[2] == 1:
        hwc = np.repeat(hwc, 3, axis=2)
    elif channels == 1 and hwc.shape[2] == 3:
        hwc = cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def _too_large(path: str, pixels: int, max_pixels: int, size: str = "") -> ImageReadError:
    claimed = f"{size} ({pixels:,} pixels)" if size else f"{pixels:,} pixels"
    return ImageReadError(f"{path}: the image claims to be {claimed}; images above {max_pixels:,} pixels "
                          f"are refused before decoding")


def _read_with_pillow(path: str, max_pixels: int) -> np.ndarray:
    """uint8 ``(H, W, 1 or 3)``; raises ``UnidentifiedImageError`` when Pillow knows no such format."""
    try:
        # Pillow warns (or raises) about a huge header inside Image.open; make the warning an error
        # so that it is reported like our own limit instead of printed. (catch_warnings is process
        # global: under threads the worst case is that this one filter outlives the call.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size  # from the header; nothing decoded yet
                if width * height > max_pixels:
                    raise _too_large(path, width * height, max_pixels, f"{width}x{height}")
                im.load()
                return _pil_to_array(ImageOps.exif_transpose(im), path)
    except (ImageReadError, UnidentifiedImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, int(claimed.group(1)) if claimed else 0, max_pixels) from None
    except Exception as e:  # Pillow raises many types on truncated or corrupt data
        raise ImageReadError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def _pil_to_array(im: Image.Image, path: str) -> np.ndarray:
    """A loaded Pillow image -> uint8 ``(H, W, 1)`` gray or ``(H, W, 3)`` RGB (module docstring rules)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageReadError(f"{path}: unsupported {mode} image with values outside 0..65535")
        return (a.astype(np.uint32) >> 8).astype(np.uint8)[:, :, None]
    if mode.startswith("F") or mode.startswith("I"):
        raise ImageReadError(f"{path}: unsupported sample type (mode {mode}); 8-bit and 16-bit images are read")
    transparent = "transparency" in im.info
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if transparent or mode == "PA" else "RGB")
    elif (mode == "L" and transparent) or mode == "La":
        im = im.convert("LA")
    elif (mode == "RGB" and transparent) or mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA", "RGBX"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    if im.mode in ("LA", "RGBA"):
        return _composite_on_white(a[:, :, :-1], a[:, :, -1])
    return np.ascontiguousarray(a[:, :, :3])


def _read_with_opencv(path: str, max_pixels: int) -> np.ndarray:
    """The fallback decoder: uint8 ``(H, W, 1 or 3)`` from whatever ``cv2.imdecode`` reads."""
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    except (OSError, cv2.error) as e:
        raise ImageReadError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    if img is None:
        raise ImageReadError(f"{path}: cannot decode image: not a format Pillow or OpenCV can read")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise _too_large(path, img.shape[0] * img.shape[1], max_pixels, f"{img.shape[1]}x{img.shape[0]}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported sample type {img.dtype}; 8-bit and 16-bit images are read")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 2:
        return _composite_on_white(img[:, :, :1], img[:, :, 1])
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 4:
        rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        return _composite_on_white(rgba[:, :, :3], rgba[:, :, 3])
    if img.shape[2] != 1:
        raise ImageReadError(f"{path}: unsupported number of channels {img.shape[2]}")
    return img


def _composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round((c * a + 255 * (255 - a)) / 255)`` for uint8 ``color (H, W, C)`` and ``alpha (H, W)``."""
    a = alpha.astype(np.uint32)[:, :, None]
    return ((color.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


# --------------------------------------------------------------------------- cropping and resizing


def crop_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box = (top, left, height, width)`` out of a ``(C, H, W)`` uint8 image, resize to ``(C, size, size)``.

    Lanczos (Pillow), each channel on its own; a crop of ``size x size`` is returned unchanged.
    The box must lie inside the image (``ValueError`` otherwise).
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (C, H, W) image, got {image.dtype} {image.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    top, left, height, width = box
    _, h, w = image.shape
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > h or left + width > w:
        raise ValueError(f"crop rows {top}..{top + height - 1}, columns {left}..{left + width - 1} "
                         f"do not fit an image of {h}x{w} (HxW)")
    crop = image[:, top:top + height, left:left + width]
    if (height, width) == (size, size):
        return np.ascontiguousarray(crop)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize((size, size), _LANCZOS))
                     for plane in crop])


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of a ``(C, H, W)`` uint8 image, resized to ``(C, size, size)`` (Lanczos)."""
    _, h, w = image.shape
    side = min(h, w)
    return crop_resize(image, ((h - side) // 2, (w - side) // 2, side, side), size)


# --------------------------------------------------------------------------- writing


def write_png(path: str, image: np.ndarray) -> None:
    """Write a uint8 ``(C, H, W)`` image (C = 1 gray or 3 RGB) as PNG, atomically.

    The file is written next to ``path`` under a temporary name and renamed over it
    (``os.replace``), so a reader never sees a half-written file. Raises ``OSError``.
    """
    if image.ndim != 3 or image.dtype != np.uint8 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 (1 or 3, H, W) image, got {image.dtype} {image.shape}")
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    pil = Image.fromarray(hwc[:, :, 0] if image.shape[0] == 1 else hwc)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
