"""What every dataset shares: the error type, the in-memory container, and the on-disk cache.

Every dataset is held in memory as one ``torch.uint8`` tensor of shape ``(N, C, H, W)``
with values 0..255 in RGB channel order; a single item is a ``(C, H, W)`` uint8 tensor.

Caching: decoded folders and the built default dataset are cached as uncompressed
``.npz`` files in :func:`cache_directory`. Writes go to a temporary file that is then
renamed (``os.replace``), so a reader never sees a half-written cache; an unreadable cache
file is ignored (and rebuilt by the caller); an unwritable cache folder only warns.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from typing import Any, Sequence

import numpy as np
import torch

#: Names accepted by ``load_dataset`` / ``load_splits``.
DATASETS = ("default", "photos", "cifar10", "imagenette", "celeba", "folder")

#: The three splits; validation is carved out of the training images.
SPLITS = ("train", "validation", "test")

#: Default ``image_size`` per dataset (``None`` in ``load_dataset`` means this).
DEFAULT_IMAGE_SIZES = {"default": 32, "photos": 32, "cifar10": 32, "imagenette": 64, "celeba": 64, "folder": 64}


class DataError(ValueError):
    """Bad input data: missing/corrupt file or folder, unknown dataset, bad split.

    The message always names the offending file or folder and the problem.
    """


class ImageTensorDataset(torch.utils.data.Dataset):
    """An in-memory image dataset.

    Attributes:
        images: ``torch.uint8`` tensor ``(N, C, H, W)``, values 0..255, RGB.
        name: dataset name with its size, e.g. ``"default32"``, ``"cifar10"``, ``"celeba64"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        indices: ``int64`` tensor ``(N,)``, position of each image in the full collection
            before splitting (file list order / CIFAR batch order / patch order of the
            default dataset's train or test patches).
        coords: for ``"default"`` and ``"photos"``, ``int64 (N, 3)``: ``(photo index into
            DEFAULT_SOURCES / the folder's sorted files, top row, left column)`` of each patch.
        labels: for ``"cifar10"`` only, ``int64 (N,)`` class labels.
        paths: for folder datasets, the absolute path of each image's file.
        info: free-form metadata (root folder, crop, ...).

    ``dataset[i]`` returns ``images[i]``: a ``(C, H, W)`` uint8 tensor.
    """

    def __init__(self, images: torch.Tensor, name: str, split: str, *, indices: torch.Tensor | None = None,
                 coords: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 paths: list[str] | None = None, info: dict[str, Any] | None = None) -> None:
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

    def subset(self, positions: torch.Tensor, split: str) -> "ImageTensorDataset":
        """The images at ``positions`` (``int64 (M,)``, in that order) as a dataset of ``split``."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        pick = positions.tolist()
        return ImageTensorDataset(
            self.images[positions], self.name, split, indices=self.indices[positions],
            coords=None if self.coords is None else self.coords[positions],
            labels=None if self.labels is None else self.labels[positions],
            paths=None if self.paths is None else [self.paths[i] for i in pick], info=self.info)

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


def check_image_size(name: str, image_size: int | None) -> int:
    """``image_size``, or the dataset's default when ``None``; a positive integer or :class:`DataError`."""
    size = DEFAULT_IMAGE_SIZES[name] if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise DataError(f"{name}: image_size must be a positive integer, got {image_size!r}")
    return int(size)


# --------------------------------------------------------------------------- cache


def cache_directory(cache_dir: str | None = None) -> str:
    """The cache folder: ``cache_dir``, else ``$SELFVAE_CACHE``, else ``~/.cache/selfvae``."""
    if cache_dir is None:
        cache_dir = os.environ.get("SELFVAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "selfvae")
    return os.path.abspath(cache_dir)


def content_hash(obj: Any) -> str:
    """SHA-256 hex digest of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
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


def load_npz(path: str, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Arrays ``keys`` from the cache file ``path``, or ``None`` if absent or unreadable."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in keys}
    except Exception as e:  # corrupt cache: the caller rebuilds it
        warnings.warn(f"ignoring unreadable dataset cache {path}: {e}", RuntimeWarning, stacklevel=3)
        return None


def remove_stale(folder: str, prefix: str, keep: str) -> None:
    """Delete older cache files ``prefix*.npz`` in ``folder`` other than ``keep``."""
    try:
        for fn in os.listdir(folder):
            if fn.startswith(prefix) and fn.endswith(".npz") and fn != os.path.basename(keep):
                os.remove(os.path.join(folder, fn))
    except OSError:
        pass
