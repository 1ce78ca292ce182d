"""Image-folder datasets: ``"folder"``, ``"imagenette"`` and ``"celeba"``.

Files are found recursively by extension (``.png .jpg .jpeg .bmp .webp``, any case; names
starting with ``.`` such as macOS ``._x.jpg`` files are ignored) and sorted by relative
path, so the order is deterministic. Each file is decoded to RGB by
``transforms.imageio.read_image`` (its docstring has the rules: alpha on white, 16 bits
as ``v >> 8``, EXIF orientation, size limit), cropped and resized with Lanczos:

* ``"folder"``: the largest centred square, resized to ``image_size`` (default 64);
* ``"imagenette"`` (e.g. ``imagenette2-160``): the same; when the folder has a ``train``
  sub-folder only that one is read;
* ``"celeba"`` (``img_align_celeba``, Liu et al. 2015): rows 40..187 and columns 15..162
  (148x148, the usual crop of the aligned faces), resized to ``image_size`` (default 64).

An unreadable, truncated or corrupt file raises :class:`DataError` naming the file
(``on_bad_image="skip"`` skips it with a warning instead).

Each file's split follows from ``(seed, its relative path)`` alone
(``splits.hash_assign``): adding or removing files never moves another file between splits.

The decoded folder is cached (``common.cache_directory``) under a key covering the absolute
folder path, every file's relative path, size and modification time, the crop and the size.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from transforms.imageio import ImageReadError, crop_resize, read_image

from .common import (DataError, ImageTensorDataset, cache_directory, content_hash, load_npz, remove_stale,
                     save_npz_atomic)
from .splits import Splits, hash_assign, make_record

#: File extensions (lower case) read from image folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: CelebA crop: (top row, left column, height, width) before resizing.
CELEBA_CROP = (40, 15, 148, 148)

#: Bump when the decoding/resizing of folder datasets changes (invalidates caches).
FOLDER_CACHE_VERSION = 1

#: ``"center"`` or ``(top, left, height, width)``.
Crop = Union[str, Tuple[int, int, int, int]]


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


def prepare_image(path: str, size: int, crop: Crop) -> np.ndarray:
    """Read, crop (``"center"`` or ``(top, left, height, width)``) and resize one file to uint8 ``(3, size, size)``."""
    try:
        image = read_image(path, channels=3)
    except ImageReadError as e:
        raise DataError(str(e)) from e
    _, h, w = image.shape
    if crop == "center":
        side = min(h, w)
        box = ((h - side) // 2, (w - side) // 2, side, side)
    else:
        box = crop  # type: ignore[assignment]
        top, left, ch, cw = box
        if top + ch > h or left + cw > w:
            raise DataError(f"{path}: image of {h}x{w} (HxW) is too small for the crop rows {top}..{top + ch - 1}, "
                            f"columns {left}..{left + cw - 1}")
    return crop_resize(image, box, size)


def decode_folder(root: str, files: list[str], image_size: int, crop: Crop, *, kind: str, on_bad_image: str,
                  num_workers: int | None, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` (relative to ``root``) on a thread pool.

    Returns uint8 ``(N, 3, S, S)`` images and ``int64 (N,)`` positions in ``files`` of the
    images kept (all of them unless ``on_bad_image="skip"`` left some out).
    """
    def work(path: str) -> np.ndarray | None:
        try:
            return prepare_image(path, image_size, crop)
        except DataError as e:
            if on_bad_image == "raise":
                raise
            warnings.warn(f"skipping image: {e}", RuntimeWarning, stacklevel=2)
            return None

    paths = [os.path.join(root, rel) for rel in files]
    images = np.empty((len(paths), 3, image_size, image_size), np.uint8)
    kept: list[int] = []
    pool = ThreadPoolExecutor(max_workers=num_workers or min(8, os.cpu_count() or 1))
    try:
        results = tqdm(pool.map(work, paths), total=len(paths), desc=f"loading {kind} {root}", leave=False,
                       disable=not progress)
        for i, img in enumerate(results):
            if img is not None:
                images[len(kept)] = img
                kept.append(i)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # do not decode the rest after a failure
        raise
    pool.shutdown(wait=True)
    if not kept:
        raise DataError(f"{root}: none of the {len(paths)} image files could be read")
    return images[:len(kept)], np.asarray(kept, np.int64)


def load_image_folder(root: str, image_size: int, crop: Crop = "center", *, kind: str = "folder",
                      cache_dir: str | None = None, on_bad_image: str = "raise", num_workers: int | None = None,
                      progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Every image under ``root``, cropped and resized, through the cache.

    Args:
        root: image folder (searched recursively).
        image_size: output side ``S``.
        crop: ``"center"`` (largest centred square) or ``(top, left, height, width)``.
        kind: dataset name used in the cache file name.
        cache_dir: see ``common.cache_directory``.
        on_bad_image: ``"raise"`` -> :class:`DataError` naming the file; ``"skip"`` -> warn, leave it out.
        num_workers: decoding threads (default ``min(8, cpu_count)``).
        progress: show a progress bar while decoding (never when served from the cache).

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
    prefix = f"{kind}{image_size}-{content_hash([root, crop_key, on_bad_image])[:12]}-"
    key = content_hash({"version": FOLDER_CACHE_VERSION, "root": root, "size": image_size, "crop": crop_key,
                        "on_bad_image": on_bad_image, "files": stats})
    folder = cache_directory(cache_dir)
    cache_file = os.path.join(folder, prefix + key[:20] + ".npz")
    cached = load_npz(cache_file, ("images", "kept"))
    if cached is None:
        images, kept = decode_folder(root, files, image_size, crop, kind=kind, on_bad_image=on_bad_image,
                                     num_workers=num_workers, progress=progress)
        save_npz_atomic(cache_file, images=images, kept=kept)
        remove_stale(folder, prefix, cache_file)
        cached = {"images": images, "kept": kept}
    return cached["images"], [os.path.join(root, files[i]) for i in cached["kept"]]


def load_folder_splits(name: str, root: str | None, image_size: int, seed: int, test_fraction: float,
                       validation_fraction: float, *, cache_dir: str | None = None, on_bad_image: str = "raise",
                       progress: bool = True) -> Splits:
    """The three splits of the folder dataset ``name`` (images uint8 ``(N, 3, S, S)``, with their paths)."""
    if root is None:
        raise DataError(f"{name}: root (the image folder) is required")
    folder = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: image folder for {name} does not exist")
    crop: Crop = "center"
    if name == "imagenette" and os.path.isdir(os.path.join(folder, "train")):
        folder = os.path.join(folder, "train")
    elif name == "celeba":
        crop = CELEBA_CROP
    images, paths = load_image_folder(folder, image_size, crop, kind=name, cache_dir=cache_dir,
                                      on_bad_image=on_bad_image, progress=progress)
    items = [os.path.relpath(p, folder).replace(os.sep, "/") for p in paths]
    assigned = hash_assign(items, seed, test_fraction, validation_fraction)
    everything = ImageTensorDataset(torch.from_numpy(images), f"{name}{image_size}", "all", paths=paths,
                                    info={"root": folder, "crop": crop, "seed": seed})
    parts = {split: everything.subset(torch.tensor([i for i, s in enumerate(assigned) if s == split],
                                                   dtype=torch.int64), split)
             for split in ("train", "validation", "test")}
    ids = {split: [items[i] for i in part.indices.tolist()] for split, part in parts.items()}
    record = make_record(name, folder, image_size, seed, test_fraction, validation_fraction,
                         "sha256(seed, relative path)", ids)
    return Splits(parts["train"], parts["validation"], parts["test"], record)
