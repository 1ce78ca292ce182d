"""Patches of whole photographs, split by photograph: the built-in ``"default"`` dataset and ``"photos"``.

``"default"``: public-domain / CC0 photographs bundled with scikit-image
(:data:`DEFAULT_SOURCES`, nothing downloaded). Six are training photographs; two others
(``coffee`` and ``motorcycle_left``) are the test split, whole: no training patch comes
from them, so every test figure is generalisation to unseen photographs, not recall.

``"photos"``: any folder of photographs (e.g. the corpus of ``experiments/build_corpus.py``),
split by photograph (its ``train/`` and ``heldout/`` sub-folders, or a hash of each path).

Both cut patches at the photographs' own resolution (:func:`photo_patch_arrays`): overlapping
training patches (stride ``S // 2``, flat ones left out) and the non-overlapping tiles of each
test photograph. Built arrays are cached (``common.cache_directory``) under a key covering
:data:`DEFAULT_DATASET_VERSION`, the geometry and every source file (SHA-256 for the bundled
photos; size and modification time for folders).
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from typing import Any

import numpy as np
import torch

from tqdm.auto import tqdm

from .common import DataError, ImageTensorDataset, cache_directory, content_hash, load_npz, save_npz_atomic
from .splits import Splits, carve_validation, hash_assign, make_record

#: Bump when the construction of the built-in default dataset changes.
DEFAULT_DATASET_VERSION = 2

#: Photographs bundled with scikit-image that the default dataset is cut from,
#: with their provenance and licence as stated in scikit-image's documentation
#: (docstrings of the ``skimage.data`` functions).  ``scale`` is applied (area
#: interpolation) before cutting patches; patch coordinates refer to the scaled photo.
#: ``split``: ``"train"`` photographs give the training (and validation) patches, ``"test"``
#: photographs are the test split, whole.
DEFAULT_SOURCES: list[dict[str, Any]] = [
    {
        "name": "astronaut",
        "file": "astronaut.png",
        "scale": 1.0,
        "split": "train",
        "description": "Eileen Collins, NASA astronaut (portrait)",
        "licence": "Public domain (NASA; no known copyright restrictions)",
        "source": "NASA Great Images database, https://flic.kr/p/r9qvLn",
    },
    {
        "name": "chelsea",
        "file": "chelsea.png",
        "scale": 1.0,
        "split": "train",
        "description": "Chelsea the cat",
        "licence": "CC0 1.0 (photographer: Stefan van der Walt)",
        "source": "scikit-image sample data",
    },
    {
        "name": "coffee",
        "file": "coffee.png",
        "scale": 1.0,
        "split": "test",
        "description": "Coffee cup, courtesy of Pikolo Espresso Bar",
        "licence": "CC0 1.0 (photographer: Rachel Michetti)",
        "source": "scikit-image sample data",
    },
    {
        "name": "hubble_deep_field",
        "file": "hubble_deep_field.jpg",
        "scale": 1.0,
        "split": "train",
        "description": "Hubble eXtreme Deep Field",
        "licence": "Public domain (NASA media guidelines: may be freely used)",
        "source": "HubbleSite, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
    },
    {
        "name": "immunohistochemistry",
        "file": "ihc.png",
        "scale": 1.0,
        "split": "train",
        "description": "IHC staining of colonic glands (micrograph)",
        "licence": "No known copyright restrictions (per scikit-image)",
        "source": "Center for Microscopy And Molecular Imaging (CMMI), scikit-image sample data",
    },
    {
        "name": "retina",
        "file": "retina.jpg",
        "scale": 0.5,
        "split": "train",
        "description": "Fundus photograph of a normal left eye",
        "licence": "CC0 1.0 Universal Public Domain Dedication (Mikael Häggström)",
        "source": "Wikimedia Commons, "
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
    },
    {
        "name": "rocket",
        "file": "rocket.jpg",
        "scale": 1.0,
        "split": "train",
        "description": "Launch of DSCOVR on Falcon 9",
        "licence": "Public domain (released by SpaceX)",
        "source": "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/",
    },
    {
        "name": "motorcycle_left",
        "file": "motorcycle_left.png",
        "scale": 1.0,
        "split": "test",
        "description": "Motorcycle, left view of a rectified stereo pair (Middlebury 2014, downsampled 4x)",
        "licence": "Middlebury 2014 stereo benchmark (Scharstein et al.), redistributed in scikit-image's "
                   "sample data; used for evaluation only",
        "source": "https://vision.middlebury.edu/stereo/data/scenes2014/, scikit-image sample data",
    },
]

# Patch geometry per image size: training patches overlap (stride ``P // 2``), test patches
# tile each held-out photograph without overlap (stride ``P``) and are all kept, flat or not.
TRAIN_STRIDE_DIVISOR = 2

#: Training patches whose largest per-channel standard deviation is below this value are
#: (nearly) constant -- e.g. the black corners of the retina photograph -- and are left
#: out of training (test patches are never filtered: the test split is whole photographs).
MIN_PATCH_STD = 2.0


def _skimage_data_dir() -> str:
    import skimage.data

    return os.path.dirname(os.path.abspath(skimage.data.__file__))


@functools.lru_cache(maxsize=1)
def load_default_photos() -> tuple[np.ndarray, ...]:
    """The photographs of :data:`DEFAULT_SOURCES`, scaled, as uint8 ``(H, W, 3)`` RGB arrays.

    Reads only the files bundled inside the installed scikit-image; never downloads.
    The result is memoised; the arrays are read-only.

    Raises:
        DataError: a photo is not bundled with the installed scikit-image.
    """
    from transforms.imageio import ImageReadError, read_image

    data_dir = _skimage_data_dir()
    photos = []
    for src in DEFAULT_SOURCES:
        path = os.path.join(data_dir, src["file"])
        if not os.path.isfile(path):
            raise DataError(
                f"{path}: photo {src['name']!r} of the default dataset is not bundled with the installed "
                "scikit-image (it would need a download)"
            )
        try:
            img = np.ascontiguousarray(read_image(path, channels=3).transpose(1, 2, 0))
        except ImageReadError as e:
            raise DataError(f"{path}: cannot load bundled photo {src['name']!r} ({e})") from e
        photos.append(_scaled(img, src["scale"]))
    return tuple(photos)


def _scaled(img: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale != 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


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


def cut_patches(photo: np.ndarray, p: int, stride: int, drop_flat: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every ``p x p`` window of ``photo`` at ``stride`` (rows and columns from 0).

    Args:
        photo: uint8 ``(H, W, 3)``.
        p: patch side; a photo smaller than ``p`` gives no patch.
        stride: step between windows; ``stride == p`` tiles the photo without overlap
            (the right / bottom remainder narrower than ``p`` is not covered).
        drop_flat: leave out windows whose largest per-channel std is below :data:`MIN_PATCH_STD`.

    Returns:
        patches uint8 ``(N, 3, p, p)`` and their top-left corners int64 ``(N, 2)`` (row, column).
    """
    h, w = photo.shape[:2]
    if h < p or w < p:
        return np.zeros((0, 3, p, p), np.uint8), np.zeros((0, 2), np.int64)
    rr, cc = np.meshgrid(np.arange(0, h - p + 1, stride), np.arange(0, w - p + 1, stride), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    if drop_flat:
        keep = _window_std(photo, p)[rr, cc] >= MIN_PATCH_STD
        rr, cc = rr[keep], cc[keep]
    windows = np.lib.stride_tricks.sliding_window_view(photo, (p, p), axis=(0, 1))  # (h-p+1, w-p+1, 3, p, p)
    return np.ascontiguousarray(windows[rr, cc]), np.stack([rr, cc], axis=1).astype(np.int64)


def photo_patch_arrays(photos: list[np.ndarray], is_test: list[bool], p: int) -> dict[str, np.ndarray]:
    """Train and test patches of whole photographs: each photo is entirely train or entirely test.

    Training photos give every non-flat ``p x p`` window at stride ``p // 2``; test photos
    are tiled without overlap (stride ``p``), every tile kept. Coordinates are
    ``(photo index, top row, left column)``.

    Returns:
        dict with ``train_images``/``test_images`` uint8 ``(N, 3, p, p)``,
        ``train_coords``/``test_coords`` int64 ``(N, 3)`` and ``photo_shapes`` int64 ``(n_photos, 2)``.
    """
    parts: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    for k, (photo, test) in enumerate(zip(photos, is_test)):
        stride = p if test else max(1, p // TRAIN_STRIDE_DIVISOR)
        patches, xy = cut_patches(photo, p, stride, drop_flat=not test)
        images, coords = parts["test" if test else "train"]
        images.append(patches)
        coords.append(np.concatenate([np.full((len(xy), 1), k, np.int64), xy], axis=1))
    out: dict[str, np.ndarray] = {}
    for split, (images, coords) in parts.items():
        out[f"{split}_images"] = (np.ascontiguousarray(np.concatenate(images)) if images
                                  else np.zeros((0, 3, p, p), np.uint8))
        out[f"{split}_coords"] = np.concatenate(coords) if coords else np.zeros((0, 3), np.int64)
    out["photo_shapes"] = np.asarray([ph.shape[:2] for ph in photos], np.int64).reshape(-1, 2)
    return out


def build_patches(image_size: int) -> dict[str, np.ndarray]:
    """Cut the default dataset: training patches from the ``"train"`` sources, test tiles of the ``"test"`` ones.

    See :func:`photo_patch_arrays`; no test photograph contributes any training patch.
    """
    is_test = [src["split"] == "test" for src in DEFAULT_SOURCES]
    return photo_patch_arrays(list(load_default_photos()), is_test, image_size)


_KEYS = ("train_images", "train_coords", "test_images", "test_coords", "photo_shapes")

#: Image sizes of the default dataset.
DEFAULT_SIZES = (32, 64)


def _default_arrays(image_size: int, cache_dir: str | None) -> dict[str, np.ndarray]:
    """The default dataset's arrays (see :func:`build_patches`), from cache or built and cached."""
    if image_size not in DEFAULT_SIZES:
        raise DataError(f"default dataset: image_size must be one of {list(DEFAULT_SIZES)}, got {image_size}")
    key = content_hash(
        {"version": DEFAULT_DATASET_VERSION, "size": image_size, "divisor": TRAIN_STRIDE_DIVISOR,
         "min_std": MIN_PATCH_STD, "sources": [[s["name"], s["scale"], s["split"]] for s in DEFAULT_SOURCES],
         "hashes": _source_hashes()}
    )
    path = os.path.join(cache_directory(cache_dir), f"default{image_size}-{key[:20]}.npz")
    arrays = load_npz(path, _KEYS)
    if arrays is None:
        arrays = build_patches(image_size)
        save_npz_atomic(path, **arrays)
    return arrays


def default_dataset_info(image_size: int = 32, cache_dir: str | None = None) -> dict[str, Any]:
    """Counts and provenance of the built-in default dataset (builds/caches it if needed).

    Returns a dict with ``image_size``, ``n_train``, ``n_test`` (patches; validation is
    carved out of ``n_train``), ``train_stride``, ``test_stride``, ``min_patch_std``,
    ``version`` and ``photos``: one dict per source with ``name``, ``split``, ``licence``,
    ``source``, ``description``, ``scale``, ``shape`` (H, W after scaling), ``n_train`` and
    ``n_test``.
    """
    a = _default_arrays(image_size, cache_dir)
    n_train = np.bincount(a["train_coords"][:, 0], minlength=len(DEFAULT_SOURCES))
    n_test = np.bincount(a["test_coords"][:, 0], minlength=len(DEFAULT_SOURCES))
    photos = [{"name": src["name"], "split": src["split"], "description": src["description"],
               "licence": src["licence"], "source": src["source"], "scale": src["scale"],
               "shape": tuple(int(v) for v in a["photo_shapes"][k]),
               "n_train": int(n_train[k]), "n_test": int(n_test[k])}
              for k, src in enumerate(DEFAULT_SOURCES)]
    return {"image_size": image_size, "n_train": int(a["train_images"].shape[0]),
            "n_test": int(a["test_images"].shape[0]), "train_stride": image_size // TRAIN_STRIDE_DIVISOR,
            "test_stride": image_size, "min_patch_std": MIN_PATCH_STD, "version": DEFAULT_DATASET_VERSION,
            "photos": photos}


def _splits_from_arrays(a: dict[str, np.ndarray], name: str, root: str | None, image_size: int, seed: int,
                        test_fraction: float, validation_fraction: float, how: str,
                        info: dict[str, Any]) -> Splits:
    def part(split: str) -> ImageTensorDataset:
        return ImageTensorDataset(torch.from_numpy(a[f"{split}_images"]), f"{name}{image_size}", split,
                                  coords=torch.from_numpy(a[f"{split}_coords"]), info=info)

    train, validation = carve_validation(part("train"), seed, validation_fraction)
    test = part("test")
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{root or name}: no {'training' if len(train) == 0 else 'test'} patches of "
                        f"{image_size}x{image_size} (photographs too small or too few)")
    ids = {s.split: s.coords.tolist() for s in (train, validation, test)}
    record = make_record(name, root, image_size, seed, test_fraction, validation_fraction, how, ids)
    return Splits(train, validation, test, record)


def load_default_splits(image_size: int, seed: int, test_fraction: float, validation_fraction: float,
                        cache_dir: str | None = None) -> Splits:
    """The three splits of the default dataset (images uint8 ``(N, 3, S, S)``, with their patch coordinates).

    The test split is fixed (the ``"test"`` photographs of :data:`DEFAULT_SOURCES`):
    ``test_fraction`` does not change it; ``seed`` draws the validation patches.
    """
    a = _default_arrays(image_size, cache_dir)
    info = {"sources": [s["name"] for s in DEFAULT_SOURCES],
            "test_photos": [s["name"] for s in DEFAULT_SOURCES if s["split"] == "test"], "seed": seed}
    return _splits_from_arrays(a, "default", None, image_size, seed, test_fraction, validation_fraction,
                               "test: whole held-out photographs (DEFAULT_SOURCES); validation: "
                               "torch.randperm(seed + 1) of the training patches", info)


# --------------------------------------------------------------------------- folders of photographs
#: Sub-folder names that fix the split of a ``"photos"`` folder (first match wins).
TRAIN_FOLDERS = ("train",)
TEST_FOLDERS = ("heldout", "test")


def photo_folder_split(root: str, files: list[str], seed: int, test_fraction: float) -> tuple[list[bool], str]:
    """Whether each photo (relative path under ``root``) is a test photo, and how that was decided.

    A folder with a ``train/`` and a ``heldout/`` (or ``test/``) sub-folder keeps that split
    (files elsewhere are ignored by the caller); otherwise each photo's split follows from
    ``(seed, relative path)`` alone (:func:`~selfvae.datasets.splits.hash_assign`).
    """
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    test_dir = next((d for d in TEST_FOLDERS if d in tops), None)
    if "train" in tops and test_dir is not None:
        return [f.startswith(test_dir + "/") for f in files], f"sub-folders train/ and {test_dir}/"
    assigned = hash_assign(files, seed, test_fraction, 0.0)
    return [s == "test" for s in assigned], "sha256(seed, relative path) per photograph"


def load_photo_folder_splits(root: str | None, image_size: int, seed: int, test_fraction: float,
                             validation_fraction: float, cache_dir: str | None = None,
                             on_bad_image: str = "raise", progress: bool = True) -> Splits:
    """The ``"photos"`` dataset: a folder of photographs cut into patches at native resolution.

    Each photograph is entirely train or entirely test (:func:`photo_folder_split`); patches
    as in :func:`photo_patch_arrays` (training: non-flat windows at stride ``S // 2``; test:
    every tile of a non-overlapping grid). Validation is a seeded draw of training patches
    (it picks the best checkpoint; the test photographs are never seen). Coordinates are
    ``(photo index in the sorted file list, top row, left column)``; ``info["files"]`` lists
    the photos.

    Raises:
        DataError: no root, missing/empty folder, a corrupt file (named; ``on_bad_image="skip"``
            warns and leaves it out), no training or no test patch.
    """
    from transforms.imageio import ImageReadError, read_image

    from .image_folder import list_image_files

    if root is None:
        raise DataError("photos: root (the folder of photographs) is required")
    if on_bad_image not in ("raise", "skip"):
        raise DataError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
    folder = os.path.abspath(os.path.expanduser(root))
    files = list_image_files(folder)
    is_test, how = photo_folder_split(folder, files, seed, test_fraction)
    if how.startswith("sub-folders"):
        keep = [i for i, f in enumerate(files) if f.split("/", 1)[0] in TRAIN_FOLDERS + TEST_FOLDERS]
        files, is_test = [files[i] for i in keep], [is_test[i] for i in keep]
    stats = []
    for rel in files:
        st = os.stat(os.path.join(folder, rel))
        stats.append([rel, st.st_size, st.st_mtime_ns, is_test[len(stats)]])
    key = content_hash({"version": DEFAULT_DATASET_VERSION, "root": folder, "size": image_size,
                        "divisor": TRAIN_STRIDE_DIVISOR, "min_std": MIN_PATCH_STD, "files": stats,
                        "on_bad_image": on_bad_image})
    cache_file = os.path.join(cache_directory(cache_dir), f"photos{image_size}-{key[:20]}.npz")
    arrays = load_npz(cache_file, _KEYS + ("kept",))
    if arrays is None:
        photos, tests, kept = [], [], []
        for i, rel in enumerate(tqdm(files, desc=f"cutting patches {folder}", leave=False, disable=not progress)):
            path = os.path.join(folder, rel)
            try:
                photos.append(np.ascontiguousarray(read_image(path, channels=3).transpose(1, 2, 0)))
            except ImageReadError as e:
                if on_bad_image == "raise":
                    raise DataError(str(e)) from e
                warnings.warn(f"skipping image: {e}", RuntimeWarning, stacklevel=2)
                continue
            tests.append(is_test[i])
            kept.append(i)
        arrays = photo_patch_arrays(photos, tests, image_size)
        arrays["kept"] = np.asarray(kept, np.int64)
        save_npz_atomic(cache_file, **arrays)
    kept_files = [files[i] for i in arrays["kept"].tolist()]
    info = {"root": folder, "files": kept_files, "split_by": how, "seed": seed}
    return _splits_from_arrays(arrays, "photos", folder, image_size, seed, test_fraction, validation_fraction,
                               f"test: whole photographs ({how}); validation: torch.randperm(seed + 1) of "
                               "the training patches", info)
