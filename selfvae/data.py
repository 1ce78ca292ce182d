"""Datasets and training augmentation for selfvae (SPEC section 5).

Every dataset is held in memory as one ``torch.uint8`` tensor of shape
``(N, C, H, W)`` with values 0..255 in RGB channel order; a single item is a
``(C, H, W)`` uint8 tensor.  Nothing is ever downloaded: every loader reads local
files, and the built-in ``"default"`` dataset is cut from colour photographs that
ship inside scikit-image.

Datasets (``load_dataset(name, split, ...)``)
---------------------------------------------
``"default"``
    32x32 or 64x64 patches cut from the bundled scikit-image photographs listed
    in :data:`DEFAULT_SOURCES` (public domain, CC0, or no known copyright
    restrictions).  Test patches come from
    image regions that no training patch touches (see :func:`default_dataset_info`).
``"cifar10"``
    The CIFAR-10 python pickle batches ``data_batch_1`` .. ``data_batch_5`` (the
    50 000 training images; ``test_batch`` is not read).  32x32 only.
``"imagenette"``
    An image folder (e.g. ``imagenette2-160``); if it contains a ``train``
    sub-folder only that one is read.  Centre-cropped to a square, resized to
    ``image_size`` (default 64).
``"celeba"``
    An image folder of aligned CelebA faces (``img_align_celeba``): crop rows
    40..187 and columns 15..162 (148x148, top-left corner (40, 15)), then
    resize to ``image_size`` (default 64).
``"folder"``
    Any image folder: centre-crop to a square, resize to ``image_size``
    (default 64).

For every dataset except ``"default"``, ``split="test"`` is a held-out
``test_fraction`` (15 %) of the training images chosen by a permutation seeded
with ``seed`` (:func:`split_indices`); ``"train"`` is the rest.  The two are
disjoint and together cover every image.  For ``"default"`` the same fraction of
image *tiles* is held out instead (so that test pixels never occur in training
patches).

Image files (folder datasets)
-----------------------------
Files are found recursively by extension (``.png .jpg .jpeg .bmp .webp``, any
case; names starting with ``.`` such as macOS ``._x.jpg`` files are ignored) and
sorted by relative path, so the order is deterministic.  Decoding uses Pillow
and applies the EXIF orientation.  Conversions to 8-bit RGB:

* grayscale (``L``, ``1``)         -> replicated to the three channels;
* 16-bit (``I;16`` grayscale, 16-bit RGB(A) PNG) -> top 8 bits (``v >> 8``);
* palette (``P``)                  -> looked up to RGB (RGBA if it has transparency);
* with alpha (``RGBA``, ``LA``, ``PA``, tRNS) -> composited on a **white**
  background: ``out = round((c*a + 255*(255 - a)) / 255)``; fully opaque pixels
  are unchanged, fully transparent pixels become white;
* other modes (CMYK, YCbCr, ...)   -> Pillow's conversion to RGB.

An unreadable, truncated or corrupt file raises :class:`DataError` naming the
file (``on_bad_image="skip"`` instead skips it with a warning).  Resizing uses
Pillow's Lanczos filter (antialiased when downscaling); when the crop already has
the target size the pixels are copied unchanged.

Caching
-------
Decoded folders and the built default dataset are cached as uncompressed
``.npz`` files in ``cache_dir`` (default: ``$SELFVAE_CACHE`` or
``~/.cache/selfvae``).  The key of a folder cache covers the absolute folder path,
every file's relative path, size and modification time, the crop and the size, so
the cache is invalidated when the folder changes; the default-dataset key covers
:data:`DEFAULT_DATASET_VERSION`, the patch geometry, the seed, the test fraction
and the SHA-256 of every source photo.  Writes go to a temporary file that is then
renamed (``os.replace``), so a reader never sees a half-written cache.  An
unreadable cache file is ignored and rebuilt; an unwritable cache directory only
produces a warning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import os
import pickle
import tempfile
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm.auto import tqdm

__all__ = [
    "DataError",
    "ImageTensorDataset",
    "load_dataset",
    "augment",
    "random_affine_params",
    "dataset_names",
    "split_indices",
    "list_image_files",
    "read_image_rgb",
    "load_cifar10_images",
    "load_image_folder",
    "DEFAULT_SOURCES",
    "DEFAULT_DATASET_VERSION",
    "default_dataset_info",
    "load_default_photos",
    "cache_directory",
]

# --------------------------------------------------------------------------- #
# Constants
# --------------------------------------------------------------------------- #

_DATASET_NAMES = ("default", "cifar10", "imagenette", "celeba", "folder")

#: File extensions (lower case) read from image folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: Default ``image_size`` per dataset (``None`` in :func:`load_dataset` means this).
DEFAULT_IMAGE_SIZES = {"default": 32, "cifar10": 32, "imagenette": 64, "celeba": 64, "folder": 64}

#: CelebA crop: (top row, left column, height, width) before resizing.
CELEBA_CROP = (40, 15, 148, 148)

_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_ROW = 3 * 32 * 32

#: Bump when the decoding/resizing of folder datasets changes (invalidates caches).
FOLDER_CACHE_VERSION = 1

#: Bump when the construction of the built-in default dataset changes.
DEFAULT_DATASET_VERSION = 1

#: Photographs bundled with scikit-image that the default dataset is cut from,
#: with their provenance and licence as stated in scikit-image's documentation
#: (docstrings of the ``skimage.data`` functions).  ``scale`` is applied (area
#: interpolation) before cutting patches; patch coordinates refer to the scaled photo.
DEFAULT_SOURCES: list[dict[str, Any]] = [
    {
        "name": "astronaut",
        "file": "astronaut.png",
        "scale": 1.0,
        "description": "Eileen Collins, NASA astronaut (portrait)",
        "licence": "Public domain (NASA; no known copyright restrictions)",
        "source": "NASA Great Images database, https://flic.kr/p/r9qvLn",
    },
    {
        "name": "chelsea",
        "file": "chelsea.png",
        "scale": 1.0,
        "description": "Chelsea the cat",
        "licence": "CC0 1.0 (photographer: Stefan van der Walt)",
        "source": "scikit-image sample data",
    },
    {
        "name": "coffee",
        "file": "coffee.png",
        "scale": 1.0,
        "description": "Coffee cup, courtesy of Pikolo Espresso Bar",
        "licence": "CC0 1.0 (photographer: Rachel Michetti)",
        "source": "scikit-image sample data",
    },
    {
        "name": "hubble_deep_field",
        "file": "hubble_deep_field.jpg",
        "scale": 1.0,
        "description": "Hubble eXtreme Deep Field",
        "licence": "Public domain (NASA media guidelines: may be freely used)",
        "source": "HubbleSite, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
    },
    {
        "name": "immunohistochemistry",
        "file": "ihc.png",
        "scale": 1.0,
        "description": "IHC staining of colonic glands (micrograph)",
        "licence": "No known copyright restrictions (per scikit-image)",
        "source": "Center for Microscopy And Molecular Imaging (CMMI), scikit-image sample data",
    },
    {
        "name": "retina",
        "file": "retina.jpg",
        "scale": 0.5,
        "description": "Fundus photograph of a normal left eye",
        "licence": "CC0 1.0 Universal Public Domain Dedication (Mikael Häggström)",
        "source": "Wikimedia Commons, "
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
    },
    {
        "name": "rocket",
        "file": "rocket.jpg",
        "scale": 1.0,
        "description": "Launch of DSCOVR on Falcon 9",
        "licence": "Public domain (released by SpaceX)",
        "source": "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/",
    },
]

# Patch geometry of the default dataset per image size:
#   tile          side of the square tiles that are assigned to train or test,
#   train_stride  stride of the (overlapping) training patches,
#   test_stride   stride of the test patches inside a test tile.  At 32 px the test
#                 patches do not overlap; at 64 px they overlap by half (9 per tile
#                 instead of 4: the photos are too small for enough disjoint 64-px
#                 test patches).  Either way no test pixel is in any training patch.
_DEFAULT_GEOMETRY = {
    32: {"tile": 64, "train_stride": 16, "test_stride": 32},
    64: {"tile": 128, "train_stride": 16, "test_stride": 32},
}

#: Patches whose largest per-channel standard deviation is below this value are
#: (nearly) constant -- e.g. the black corners of the retina photograph -- and
#: are left out of the default dataset.
MIN_PATCH_STD = 2.0

_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS

#: How many times each builder actually ran (not served from cache); for tests.
BUILD_COUNTS: Counter = Counter()


class DataError(ValueError):
    """Bad input data: missing/corrupt file or folder, unknown dataset, bad split.

    The message always names the offending file or folder and the problem.
    """


# --------------------------------------------------------------------------- #
# Dataset container
# --------------------------------------------------------------------------- #


class ImageTensorDataset(torch.utils.data.Dataset):
    """An in-memory image dataset.

    Attributes:
        images: ``torch.uint8`` tensor ``(N, C, H, W)``, values 0..255, RGB.
        name: dataset name with its size, e.g. ``"default32"``, ``"cifar10"``,
            ``"celeba64"``.
        split: ``"train"`` or ``"test"``.
        indices: ``int64`` tensor ``(N,)``, position of each image in the full
            collection before splitting (file list order / CIFAR batch order /
            patch order of the split for ``"default"``).
        coords: for ``"default"`` only, ``int64`` tensor ``(N, 3)`` with
            ``(photo index into DEFAULT_SOURCES, top row, left column)`` of each
            patch in the (scaled) photo; ``None`` otherwise.
        labels: for ``"cifar10"`` only, ``int64`` tensor ``(N,)`` of class labels.
        paths: for folder datasets, the source file of each image; else ``None``.
        info: free-form metadata (root folder, crop, ...).

    ``dataset[i]`` returns ``images[i]``: a ``(C, H, W)`` uint8 tensor.
    """

    def __init__(
        self,
        images: torch.Tensor,
        name: str,
        split: str,
        *,
        indices: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        paths: list[str] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"dataset {name!r}: images must be a uint8 tensor (N, C, H, W)")
        n = images.shape[0]
        for what, value in (("indices", indices), ("coords", coords), ("labels", labels), ("paths", paths)):
            if value is not None and len(value) != n:
                raise DataError(f"dataset {name!r}: {what} has {len(value)} entries for {n} images")
        self.images = images
        self.name = name
        self.split = split
        self.indices = indices if indices is not None else torch.arange(n, dtype=torch.int64)
        self.coords = coords
        self.labels = labels
        self.paths = paths
        self.info = dict(info or {})

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        """Image ``i`` as a ``(C, H, W)`` uint8 tensor."""
        return self.images[i]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"ImageTensorDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, shape=({c}, {h}, {w}))"


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_DATASET_NAMES)


# --------------------------------------------------------------------------- #
# Splitting and caching helpers
# --------------------------------------------------------------------------- #


def _check_split(split: str, test_fraction: float) -> None:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 <= float(test_fraction) < 1.0):
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction!r}")


def split_indices(n: int, split: str, seed: int = 0, test_fraction: float = 0.15) -> np.ndarray:
    """Indices (sorted ``int64 (M,)``) of ``split`` among ``n`` items.

    A permutation of ``range(n)`` drawn from ``numpy.random.default_rng(seed)``;
    its first ``n_test = round(test_fraction * n)`` entries are the test set
    (at least one and at most ``n - 1`` when ``test_fraction > 0`` and ``n >= 2``),
    the rest the training set.  Deterministic in ``seed``; train and test are
    disjoint and together ``range(n)``.
    """
    _check_split(split, test_fraction)
    n_test = int(round(float(test_fraction) * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    n_test = min(n_test, n)
    perm = np.random.default_rng(seed).permutation(n)
    chosen = perm[:n_test] if split == "test" else perm[n_test:]
    return np.sort(chosen).astype(np.int64)


def cache_directory(cache_dir: str | None = None) -> str:
    """The cache folder: ``cache_dir``, else ``$SELFVAE_CACHE``, else ``~/.cache/selfvae``."""
    if cache_dir is None:
        cache_dir = os.environ.get("SELFVAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "selfvae")
    return os.path.abspath(cache_dir)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def _atomic_save_npz(path: str, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically (temp file in the same folder, then ``os.replace``).

    Failures to write (read-only cache, full disk) only warn.
    """
    folder = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not write dataset cache {path}: {e}", RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass


def _load_npz(path: str, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Arrays ``keys`` from the cache file ``path``, or ``None`` if absent or unreadable."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in keys}
    except Exception as e:  # corrupt cache: rebuild
        warnings.warn(f"ignoring unreadable dataset cache {path}: {e}", RuntimeWarning, stacklevel=3)
        return None


def _remove_stale(folder: str, prefix: str, keep: str) -> None:
    """Delete older cache files ``prefix*.npz`` in ``folder`` other than ``keep``."""
    try:
        for fn in os.listdir(folder):
            if fn.startswith(prefix) and fn.endswith(".npz") and fn != os.path.basename(keep):
                os.remove(os.path.join(folder, fn))
    except OSError:
        pass


# --------------------------------------------------------------------------- #
# CIFAR-10
# --------------------------------------------------------------------------- #


def _numpy_global(module: str, name: str) -> Any:
    # Old pickles name ``numpy.core.multiarray``; NumPy 2 moved it to ``numpy._core``.
    if module.startswith("numpy.core"):
        try:
            return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
        except (ImportError, AttributeError):
            pass
    return getattr(importlib.import_module(module), name)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals a CIFAR batch needs (no code execution)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")
        return _numpy_global(module, name)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one CIFAR-10 python batch.

    Returns:
        images: uint8 ``(n, 3, 32, 32)`` RGB (the batch's ``data`` rows are the
            R, G, B planes, each row-major 32x32).
        labels: int64 ``(n,)`` or ``None`` if the batch has no labels.
    """
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read CIFAR-10 batch ({e})") from e
    except Exception as e:  # truncated / corrupt pickle
        raise DataError(f"{path}: corrupt or truncated CIFAR-10 pickle ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: CIFAR-10 batch is a {type(batch).__name__}, expected a dict")

    def get(key: str) -> Any:
        return batch.get(key.encode("ascii"), batch.get(key))

    data = get("data")
    if data is None:
        raise DataError(f"{path}: CIFAR-10 batch has no 'data' entry")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _CIFAR_ROW or data.shape[0] == 0:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"{path}: CIFAR-10 'data' must be an array (n, {_CIFAR_ROW}), got {shape}")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or data.min() < 0 or data.max() > 255:
            raise DataError(f"{path}: CIFAR-10 'data' must hold uint8 values, got dtype {data.dtype}")
        data = data.astype(np.uint8)
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    labels = get("labels")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{path}: {labels.shape[0]} labels for {images.shape[0]} images")
    return images, labels


def _cifar_folder(root: str | None) -> str:
    if root is None:
        raise DataError("cifar10: root must be the folder with data_batch_1..5 (or its parent)")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: CIFAR-10 folder does not exist")
    if not os.path.exists(os.path.join(root, _CIFAR_BATCHES[0])) and os.path.isdir(os.path.join(root, _CIFAR_FOLDER)):
        root = os.path.join(root, _CIFAR_FOLDER)
    missing = [b for b in _CIFAR_BATCHES if not os.path.isfile(os.path.join(root, b))]
    if missing:
        raise DataError(f"{root}: missing CIFAR-10 batch file(s) {', '.join(missing)}")
    return root


def load_cifar10_images(root: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """All CIFAR-10 training images from ``data_batch_1`` .. ``data_batch_5``.

    ``root`` is the ``cifar-10-batches-py`` folder or its parent.

    Returns:
        images: uint8 ``(N, 3, 32, 32)`` (N = 50 000 for the real data), RGB.
        labels: int64 ``(N,)`` (-1 where a batch has no labels).
        folder: the folder the batches were read from.
    """
    folder = _cifar_folder(root)
    images, labels = [], []
    for b in _CIFAR_BATCHES:
        x, y = _read_cifar_batch(os.path.join(folder, b))
        images.append(x)
        labels.append(y if y is not None else np.full(x.shape[0], -1, np.int64))
    return np.concatenate(images), np.concatenate(labels), folder


# --------------------------------------------------------------------------- #
# Image files
# --------------------------------------------------------------------------- #


def list_image_files(root: str) -> list[str]:
    """Image files under ``root`` (recursive), as relative POSIX paths, sorted.

    Raises:
        DataError: ``root`` is not a folder or contains no image file.
    """
    if not os.path.isdir(root):
        raise DataError(f"{root}: image folder does not exist")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"))
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(files)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round((c*a + 255*(255-a)) / 255)`` for uint8 ``rgb (H,W,C)`` and ``alpha (H,W)``."""
    a = alpha.astype(np.uint32)[..., None]
    out = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _pil_to_rgb(im: Image.Image, path: str) -> np.ndarray:
    """Convert a loaded Pillow image to uint8 ``(H, W, 3)`` RGB (see module docstring)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: unsupported {mode} image with values outside 0..65535")
        gray = (a.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise DataError(f"{path}: floating-point images are not supported")
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("P", "PA", "L", "RGB") and ("transparency" in im.info or mode == "PA"):
        im, mode = im.convert("RGBA"), "RGBA"
    elif mode == "P":
        im, mode = im.convert("RGB"), "RGB"
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        im, mode = im.convert("RGBA"), "RGBA"
    if mode == "L":
        return np.repeat(np.asarray(im)[..., None], 3, axis=2)
    if mode == "LA":
        a = np.asarray(im)
        return np.repeat(_composite_on_white(a[..., :1], a[..., 1]), 3, axis=2)
    if mode == "RGB":
        return np.asarray(im).copy()
    if mode == "RGBA":
        a = np.asarray(im)
        return _composite_on_white(a[..., :3], a[..., 3])
    if mode == "RGBX":
        return np.asarray(im)[..., :3].copy()
    return np.asarray(im.convert("RGB")).copy()


def read_image_rgb(path: str) -> np.ndarray:
    """Decode an image file to uint8 ``(H, W, 3)`` RGB with the documented conversions.

    Raises:
        DataError: naming ``path`` if the file cannot be opened or decoded
            (missing, not an image, truncated, corrupt, unsupported mode).
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _pil_to_rgb(im, path)
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types on corrupt data
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise DataError(f"{path}: decoded to an unexpected array {rgb.shape} {rgb.dtype}")
    return rgb


def _crop_box(shape: tuple[int, ...], crop: str | tuple[int, int, int, int], path: str) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the crop of an ``(H, W, ...)`` image."""
    h, w = shape[:2]
    if crop == "center":
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side
    top, left, ch, cw = crop  # type: ignore[misc]
    if top + ch > h or left + cw > w:
        raise DataError(
            f"{path}: image of {h}x{w} (HxW) is too small for the crop rows {top}..{top + ch - 1}, "
            f"columns {left}..{left + cw - 1}"
        )
    return top, left, ch, cw


def _prepare_image(path: str, size: int, crop: str | tuple[int, int, int, int]) -> np.ndarray:
    """Read, crop and resize one file to uint8 ``(3, size, size)``."""
    rgb = read_image_rgb(path)
    top, left, ch, cw = _crop_box(rgb.shape, crop, path)
    out = np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
    if (ch, cw) != (size, size):
        # Crop first, then resize: pixels outside the crop never leak in through
        # the filter support (Pillow's ``box=`` argument would sample them).
        out = np.asarray(Image.fromarray(out).resize((size, size), _LANCZOS))
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def load_image_folder(
    root: str,
    image_size: int,
    crop: str | tuple[int, int, int, int] = "center",
    *,
    kind: str = "folder",
    cache_dir: str | None = None,
    on_bad_image: str = "raise",
    num_workers: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Load every image under ``root``, cropped and resized, through the cache.

    Args:
        root: image folder (searched recursively).
        image_size: output side ``S``.
        crop: ``"center"`` (largest centred square) or ``(top, left, height, width)``.
        kind: dataset name used in the cache file name.
        cache_dir: see :func:`cache_directory`.
        on_bad_image: ``"raise"`` (default) -> :class:`DataError` naming the file;
            ``"skip"`` -> leave the file out with a warning.
        num_workers: decoding threads (default ``min(8, cpu_count)``).

    Returns:
        images: uint8 ``(N, 3, S, S)``.
        paths: absolute path of each image, same order (sorted relative paths).
    """
    if on_bad_image not in ("raise", "skip"):
        raise DataError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
    root = os.path.abspath(os.path.expanduser(root))
    files = list_image_files(root)
    stats = []
    for rel in files:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError as e:
            raise DataError(f"{os.path.join(root, rel)}: cannot stat image file ({e})") from e
        stats.append([rel, st.st_size, st.st_mtime_ns])
    crop_key = crop if crop == "center" else list(crop)  # type: ignore[arg-type]
    prefix = f"{kind}{image_size}-{_hash([root, crop_key, on_bad_image])[:12]}-"
    key = _hash(
        {"version": FOLDER_CACHE_VERSION, "root": root, "size": image_size, "crop": crop_key,
         "on_bad_image": on_bad_image, "files": stats}
    )
    folder = cache_directory(cache_dir)
    cache_file = os.path.join(folder, prefix + key[:20] + ".npz")
    cached = _load_npz(cache_file, ("images", "kept"))
    if cached is not None:
        return cached["images"], [os.path.join(root, files[i]) for i in cached["kept"]]

    BUILD_COUNTS[kind] += 1
    paths = [os.path.join(root, rel) for rel in files]

    def work(path: str) -> np.ndarray | None:
        try:
            return _prepare_image(path, image_size, crop)
        except DataError as e:
            if on_bad_image == "raise":
                raise
            warnings.warn(f"skipping image: {e}", RuntimeWarning, stacklevel=2)
            return None

    images = np.empty((len(paths), 3, image_size, image_size), np.uint8)
    kept: list[int] = []
    workers = num_workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        results = pool.map(work, paths)
        for i, img in enumerate(tqdm(results, total=len(paths), desc=f"loading {kind} {root}", leave=False)):
            if img is not None:
                images[len(kept)] = img
                kept.append(i)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # do not decode the rest after a failure
        raise
    pool.shutdown(wait=True)
    if not kept:
        raise DataError(f"{root}: none of the {len(paths)} image files could be read")
    images = images[: len(kept)]
    kept_arr = np.asarray(kept, np.int64)
    _atomic_save_npz(cache_file, images=images, kept=kept_arr)
    _remove_stale(folder, prefix, cache_file)
    return images, [paths[i] for i in kept]


# --------------------------------------------------------------------------- #
# Built-in default dataset
# --------------------------------------------------------------------------- #


def _skimage_data_dir() -> str:
    import skimage.data

    return os.path.dirname(os.path.abspath(skimage.data.__file__))


@functools.lru_cache(maxsize=1)
def load_default_photos() -> tuple[np.ndarray, ...]:
    """The photographs of :data:`DEFAULT_SOURCES`, scaled, as uint8 ``(H, W, 3)`` RGB arrays.

    Reads only the files bundled inside the installed scikit-image (through the
    ``skimage.data`` functions, which verify their SHA-256); never downloads.
    The result is memoised; the arrays are read-only.

    Raises:
        DataError: a photo is not bundled with the installed scikit-image.
    """
    import cv2
    import skimage.data

    data_dir = _skimage_data_dir()
    photos = []
    for src in DEFAULT_SOURCES:
        path = os.path.join(data_dir, src["file"])
        if not os.path.isfile(path):
            raise DataError(
                f"{path}: photo {src['name']!r} of the default dataset is not bundled with the installed "
                "scikit-image (it would need a download)"
            )
        loader: Callable[[], np.ndarray] = getattr(skimage.data, src["name"])
        try:
            img = np.asarray(loader())
        except Exception as e:
            raise DataError(f"{path}: cannot load bundled photo {src['name']!r} ({type(e).__name__}: {e})") from e
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DataError(f"{path}: expected an RGB uint8 photo, got {img.shape} {img.dtype}")
        if src["scale"] != 1.0:
            h, w = img.shape[:2]
            size = (int(w * src["scale"]), int(h * src["scale"]))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        img = np.ascontiguousarray(img)
        img.setflags(write=False)
        photos.append(img)
    return tuple(photos)


def _source_hashes() -> list[str]:
    data_dir = _skimage_data_dir()
    out = []
    for src in DEFAULT_SOURCES:
        path = os.path.join(data_dir, src["file"])
        try:
            with open(path, "rb") as f:
                out.append(hashlib.sha256(f.read()).hexdigest())
        except OSError:
            out.append("missing")
    return out


def _window_std(photo: np.ndarray, p: int) -> np.ndarray:
    """Largest per-channel standard deviation of every ``p x p`` window.

    Args:
        photo: uint8 ``(H, W, C)``.
    Returns:
        float64 ``(H - p + 1, W - p + 1)``; entry ``[r, c]`` is for the window
        with top-left corner ``(r, c)``.
    """
    x = photo.astype(np.float64)
    s1 = np.pad(x, ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
    s2 = np.pad(x * x, ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)

    def box(s: np.ndarray) -> np.ndarray:
        return s[p:, p:] - s[:-p, p:] - s[p:, :-p] + s[:-p, :-p]

    n = float(p * p)
    mean = box(s1) / n
    var = np.maximum(box(s2) / n - mean * mean, 0.0)
    return np.sqrt(var).max(axis=2)


def _window_any(mask: np.ndarray, p: int) -> np.ndarray:
    """``out[r, c]`` = whether ``mask[r:r+p, c:c+p]`` has a True entry; ``(H-p+1, W-p+1)`` bool."""
    s = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (s[p:, p:] - s[:-p, p:] - s[p:, :-p] + s[:-p, :-p]) > 0


def _build_default(image_size: int, seed: int, test_fraction: float) -> dict[str, np.ndarray]:
    """Cut the default dataset's train and test patches.

    Each (scaled) photo is divided into a grid of ``tile x tile`` squares (only
    complete tiles take part in the draw; the partial tiles at the right/bottom
    edges stay training area).  Candidate test tiles are the complete tiles whose
    test patches are all non-flat; per photo
    ``max(1, round(test_fraction * n_complete_tiles))`` of them are drawn with
    ``numpy.random.default_rng([seed, photo_index])``.  Test patches: the
    ``P x P`` windows at stride ``test_stride`` inside each test tile.  Training
    patches: every window at stride ``train_stride`` that does not touch any test
    tile and is not flat (largest per-channel std below :data:`MIN_PATCH_STD`).
    Hence no test pixel appears in any training patch.

    Returns:
        dict with ``train_images``/``test_images`` uint8 ``(N, 3, P, P)``,
        ``train_coords``/``test_coords`` int64 ``(N, 3)`` (photo, row, col),
        ``photo_shapes`` int64 ``(n_photos, 2)`` and ``test_tiles`` int64
        ``(T, 3)`` (photo, row, col of the tile's top-left pixel).
    """
    BUILD_COUNTS["default"] += 1
    geo = _DEFAULT_GEOMETRY[image_size]
    p, tile, stride, tstride = image_size, geo["tile"], geo["train_stride"], geo["test_stride"]
    offsets = np.arange(0, tile - p + 1, tstride)  # test patch offsets inside a tile
    photos = load_default_photos()
    train_img, train_xy, test_img, test_xy, test_tiles = [], [], [], [], []
    for k, photo in enumerate(photos):
        h, w = photo.shape[:2]
        nty, ntx = h // tile, w // tile
        flat = _window_std(photo, p) < MIN_PATCH_STD  # (h-p+1, w-p+1)
        windows = np.lib.stride_tricks.sliding_window_view(photo, (p, p), axis=(0, 1))  # (h-p+1, w-p+1, 3, p, p)

        candidates = [
            (ty, tx)
            for ty in range(nty)
            for tx in range(ntx)
            if not flat[np.ix_(ty * tile + offsets, tx * tile + offsets)].any()
        ]
        n_test = 0
        if test_fraction > 0 and nty * ntx > 0:
            n_test = min(max(1, int(round(test_fraction * nty * ntx))), len(candidates))
        rng = np.random.default_rng([seed, k])
        chosen = sorted(candidates[i] for i in rng.choice(len(candidates), size=n_test, replace=False))

        in_test = np.zeros((h, w), bool)
        for ty, tx in chosen:
            in_test[ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile] = True
            test_tiles.append((k, ty * tile, tx * tile))
            rr, cc = np.meshgrid(ty * tile + offsets, tx * tile + offsets, indexing="ij")
            rr, cc = rr.ravel(), cc.ravel()
            test_img.append(windows[rr, cc])
            test_xy.append(np.stack([np.full_like(rr, k), rr, cc], axis=1))

        rr, cc = np.meshgrid(np.arange(0, h - p + 1, stride), np.arange(0, w - p + 1, stride), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        keep = ~(_window_any(in_test, p)[rr, cc] | flat[rr, cc])
        rr, cc = rr[keep], cc[keep]
        train_img.append(windows[rr, cc])
        train_xy.append(np.stack([np.full_like(rr, k), rr, cc], axis=1))

    def cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(parts).astype(dtype)) if parts else np.zeros(shape, dtype)

    return {
        "train_images": cat(train_img, (0, 3, p, p), np.uint8),
        "train_coords": cat(train_xy, (0, 3), np.int64),
        "test_images": cat(test_img, (0, 3, p, p), np.uint8),
        "test_coords": cat(test_xy, (0, 3), np.int64),
        "photo_shapes": np.asarray([ph.shape[:2] for ph in photos], np.int64),
        "test_tiles": np.asarray(test_tiles, np.int64).reshape(-1, 3),
    }


_DEFAULT_KEYS = ("train_images", "train_coords", "test_images", "test_coords", "photo_shapes", "test_tiles")


def _default_arrays(image_size: int, seed: int, test_fraction: float, cache_dir: str | None) -> dict[str, np.ndarray]:
    """The default dataset's arrays (see :func:`_build_default`), from cache or built and cached."""
    if image_size not in _DEFAULT_GEOMETRY:
        raise DataError(f"default dataset: image_size must be one of {sorted(_DEFAULT_GEOMETRY)}, got {image_size}")
    key = _hash(
        {"version": DEFAULT_DATASET_VERSION, "size": image_size, "seed": int(seed),
         "test_fraction": float(test_fraction), "geometry": _DEFAULT_GEOMETRY[image_size],
         "min_std": MIN_PATCH_STD, "sources": [[s["name"], s["scale"]] for s in DEFAULT_SOURCES],
         "hashes": _source_hashes()}
    )
    path = os.path.join(cache_directory(cache_dir), f"default{image_size}-{key[:20]}.npz")
    arrays = _load_npz(path, _DEFAULT_KEYS)
    if arrays is None:
        arrays = _build_default(image_size, int(seed), float(test_fraction))
        _atomic_save_npz(path, **arrays)
    return arrays


def default_dataset_info(
    image_size: int = 32, seed: int = 0, test_fraction: float = 0.15, cache_dir: str | None = None
) -> dict[str, Any]:
    """Counts and provenance of the built-in default dataset (builds/caches it if needed).

    Returns a dict with ``image_size``, ``n_train``, ``n_test``, ``tile``,
    ``train_stride``, ``test_stride``, ``min_patch_std``, ``version``, ``seed``,
    ``n_test_tiles`` and ``photos``: one dict per source with ``name``,
    ``licence``, ``source``, ``description``, ``scale``, ``shape`` (H, W after
    scaling), ``n_train`` and ``n_test``.
    """
    _check_split("train", test_fraction)
    a = _default_arrays(image_size, seed, test_fraction, cache_dir)
    n_train = np.bincount(a["train_coords"][:, 0], minlength=len(DEFAULT_SOURCES))
    n_test = np.bincount(a["test_coords"][:, 0], minlength=len(DEFAULT_SOURCES))
    photos = []
    for k, src in enumerate(DEFAULT_SOURCES):
        photos.append(
            {
                "name": src["name"],
                "description": src["description"],
                "licence": src["licence"],
                "source": src["source"],
                "scale": src["scale"],
                "shape": tuple(int(v) for v in a["photo_shapes"][k]),
                "n_train": int(n_train[k]),
                "n_test": int(n_test[k]),
            }
        )
    geo = _DEFAULT_GEOMETRY[image_size]
    return {
        "image_size": image_size,
        "n_train": int(a["train_images"].shape[0]),
        "n_test": int(a["test_images"].shape[0]),
        "tile": geo["tile"],
        "train_stride": geo["train_stride"],
        "test_stride": geo["test_stride"],
        "min_patch_std": MIN_PATCH_STD,
        "version": DEFAULT_DATASET_VERSION,
        "seed": seed,
        "n_test_tiles": int(a["test_tiles"].shape[0]),
        "photos": photos,
    }


# --------------------------------------------------------------------------- #
# Public loader
# --------------------------------------------------------------------------- #


def _check_size(name: str, image_size: int | None) -> int:
    size = DEFAULT_IMAGE_SIZES[name] if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise DataError(f"{name}: image_size must be a positive integer, got {image_size!r}")
    return int(size)


def load_dataset(
    name: str,
    split: str,
    image_size: int | None = None,
    root: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.15,
    cache_dir: str | None = None,
    *,
    on_bad_image: str = "raise",
) -> ImageTensorDataset:
    """Load the ``split`` (``"train"``/``"test"``) of dataset ``name`` into memory.

    Args:
        name: one of :func:`dataset_names` (see the module docstring).
        split: ``"train"`` or ``"test"``.
        image_size: output side; ``None`` -> :data:`DEFAULT_IMAGE_SIZES`.
            ``"default"``: 32 or 64; ``"cifar10"``: 32 only.
        root: data folder (ignored by ``"default"``).
        seed: seed of the train/test split.
        test_fraction: fraction held out as test (images, or tiles for ``"default"``).
        cache_dir: cache folder (see :func:`cache_directory`).
        on_bad_image: folder datasets only: ``"raise"`` or ``"skip"`` unreadable files.

    Returns:
        :class:`ImageTensorDataset` with ``images`` uint8 ``(N, 3, S, S)``.

    Raises:
        DataError: unknown name (the message lists the known names), bad split,
            size or fraction, missing/empty folder, corrupt file (named).
    """
    if name not in _DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(_DATASET_NAMES)}")
    _check_split(split, test_fraction)
    size = _check_size(name, image_size)

    if name == "default":
        a = _default_arrays(size, seed, test_fraction, cache_dir)
        return ImageTensorDataset(
            torch.from_numpy(a[f"{split}_images"]),
            f"default{size}",
            split,
            coords=torch.from_numpy(a[f"{split}_coords"]),
            info={"sources": [s["name"] for s in DEFAULT_SOURCES], "seed": seed},
        )

    if name == "cifar10":
        if size != 32:
            raise DataError(f"cifar10: images are 32x32, image_size={image_size} is not supported")
        images, labels, folder = load_cifar10_images(root)
        idx = split_indices(images.shape[0], split, seed, test_fraction)
        return ImageTensorDataset(
            torch.from_numpy(images[idx]),
            "cifar10",
            split,
            indices=torch.from_numpy(idx),
            labels=torch.from_numpy(labels[idx]),
            info={"root": folder, "seed": seed},
        )

    if root is None:
        raise DataError(f"{name}: root (the image folder) is required")
    folder = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: image folder for {name} does not exist")
    crop: str | tuple[int, int, int, int] = "center"
    if name == "imagenette" and os.path.isdir(os.path.join(folder, "train")):
        folder = os.path.join(folder, "train")
    elif name == "celeba":
        crop = CELEBA_CROP
    images, paths = load_image_folder(
        folder, size, crop, kind=name, cache_dir=cache_dir, on_bad_image=on_bad_image
    )
    idx = split_indices(images.shape[0], split, seed, test_fraction)
    return ImageTensorDataset(
        torch.from_numpy(images[idx]),
        f"{name}{size}",
        split,
        indices=torch.from_numpy(idx),
        paths=[paths[i] for i in idx],
        info={"root": folder, "crop": crop, "seed": seed},
    )


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #


def random_affine_params(
    batch: int,
    generator: torch.Generator,
    device: torch.device | str,
    *,
    p_flip: float = 0.5,
    max_translate: float = 1.0 / 16.0,
    max_rotate_deg: float = 5.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
) -> dict[str, torch.Tensor]:
    """Draw :func:`augment`'s random parameters (one ``torch.rand(batch, 5)`` call).

    Returns a dict of ``(batch,)`` tensors on ``device``: ``flip`` (bool),
    ``angle`` (radians), ``scale``, ``tx`` and ``ty`` (fractions of the width
    and height).
    """
    r = torch.rand(batch, 5, generator=generator, device=device, dtype=torch.float32)
    lo, hi = scale_range
    return {
        "flip": r[:, 0] < p_flip,
        "angle": (2 * r[:, 1] - 1) * math.radians(max_rotate_deg),
        "scale": lo + (hi - lo) * r[:, 2],
        "tx": (2 * r[:, 3] - 1) * max_translate,
        "ty": (2 * r[:, 4] - 1) * max_translate,
    }


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    p_flip: float = 0.5,
    max_translate: float = 1.0 / 16.0,
    max_rotate_deg: float = 5.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    mode: str = "bilinear",
) -> torch.Tensor:
    """Random horizontal flip and small random affine warp of a uint8 batch, on its device.

    Per image (all drawn at once from ``generator``, which must live on
    ``x.device``; see :func:`random_affine_params`): a horizontal flip with
    probability ``p_flip``; then a rotation uniform in ``+-max_rotate_deg``
    about the image centre, an isotropic scale uniform in ``scale_range`` and a
    translation uniform in ``+-max_translate`` of the width (x) and height (y).
    Output pixel ``(i, j)`` (centred coordinates ``p = (j + 0.5 - W/2,
    i + 0.5 - H/2)``) samples the (flipped) input at ``R(angle) p / scale + (tx W,
    ty H)``.  The warp is one batched ``grid_sample`` (``mode`` ``"bilinear"`` or
    ``"nearest"``) with reflection padding -- no black borders -- and the result
    is rounded and clamped back to 0..255, so an integer image maps to an integer
    image.  Identical generator states give identical outputs.

    Args:
        x: uint8 ``(B, C, H, W)``.
        generator: ``torch.Generator`` on ``x.device``.

    Returns:
        uint8 ``(B, C, H, W)`` on ``x.device``.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"augment expects a uint8 tensor (B, C, H, W), got {getattr(x, 'dtype', type(x))} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if torch.device(generator.device).type != x.device.type:
        raise ValueError(f"augment: generator is on {generator.device}, images on {x.device}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"augment: mode must be 'bilinear' or 'nearest', got {mode!r}")
    b, _, h, w = x.shape
    if b == 0:
        return x.clone()
    prm = random_affine_params(
        b, generator, x.device, p_flip=p_flip, max_translate=max_translate,
        max_rotate_deg=max_rotate_deg, scale_range=scale_range,
    )
    out = torch.where(prm["flip"][:, None, None, None], x.flip(-1), x)
    if max_translate == 0 and max_rotate_deg == 0 and scale_range[0] == scale_range[1] == 1:
        return out
    # The map above in grid_sample's normalised coordinates (u = 2 px / W, v = 2 py / H).
    cos = torch.cos(prm["angle"]) / prm["scale"]
    sin = torch.sin(prm["angle"]) / prm["scale"]
    theta = torch.stack(
        [
            torch.stack([cos, -sin * h / w, 2 * prm["tx"]], dim=1),
            torch.stack([sin * w / h, cos, 2 * prm["ty"]], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    warped = F.grid_sample(out.float(), grid, mode=mode, padding_mode="reflection", align_corners=False)
    return warped.round_().clamp_(0, 255).to(torch.uint8)
