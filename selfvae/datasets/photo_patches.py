"""The built-in ``"default"`` dataset: patches of public-domain / CC0 photographs bundled with scikit-image.

Nothing is downloaded: the photographs of :data:`DEFAULT_SOURCES` ship inside the
installed scikit-image (licences listed there). The images are 32x32 or 64x64 patches.
Each photo is cut into square tiles; a seeded ``test_fraction`` of the tiles is held out,
the test patches lie inside those tiles and no training patch touches them, so no test
pixel is ever seen in training (:func:`build_patches`). Validation is carved out of the
training patches (``splits.carve_validation``).

The built arrays are cached (``common.cache_directory``) under a key covering
:data:`DEFAULT_DATASET_VERSION`, the patch geometry, the seed, the test fraction and the
SHA-256 of every source photo.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Callable

import numpy as np
import torch

from .common import DataError, ImageTensorDataset, cache_directory, content_hash, load_npz, save_npz_atomic
from .splits import Splits, carve_validation, check_fraction, make_record

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


def build_patches(image_size: int, seed: int, test_fraction: float) -> dict[str, np.ndarray]:
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
    key = content_hash(
        {"version": DEFAULT_DATASET_VERSION, "size": image_size, "seed": int(seed),
         "test_fraction": float(test_fraction), "geometry": _DEFAULT_GEOMETRY[image_size],
         "min_std": MIN_PATCH_STD, "sources": [[s["name"], s["scale"]] for s in DEFAULT_SOURCES],
         "hashes": _source_hashes()}
    )
    path = os.path.join(cache_directory(cache_dir), f"default{image_size}-{key[:20]}.npz")
    arrays = load_npz(path, _DEFAULT_KEYS)
    if arrays is None:
        arrays = build_patches(image_size, int(seed), float(test_fraction))
        save_npz_atomic(path, **arrays)
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
    check_fraction("test_fraction", test_fraction, zero_allowed=True)
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


def load_default_splits(image_size: int, seed: int, test_fraction: float, validation_fraction: float,
                        cache_dir: str | None = None) -> Splits:
    """The three splits of the default dataset (images uint8 ``(N, 3, S, S)``, with their patch coordinates)."""
    a = _default_arrays(image_size, seed, test_fraction, cache_dir)
    info = {"sources": [s["name"] for s in DEFAULT_SOURCES], "seed": seed}

    def part(split: str) -> ImageTensorDataset:
        return ImageTensorDataset(torch.from_numpy(a[f"{split}_images"]), f"default{image_size}", split,
                                  coords=torch.from_numpy(a[f"{split}_coords"]), info=info)

    train, validation = carve_validation(part("train"), seed, validation_fraction)
    test = part("test")
    ids = {s.split: s.coords.tolist() for s in (train, validation, test)}
    record = make_record("default", None, image_size, seed, test_fraction, validation_fraction,
                         "test: held-out tiles; validation: torch.randperm(seed + 1)", ids)
    return Splits(train, validation, test, record)
