"""CIFAR-10 from its python pickle batches (Krizhevsky, 2009), read without running pickled code.

Reads ``data_batch_1`` .. ``data_batch_5`` (the 50 000 training images; ``test_batch`` is
not read), 32x32 only. ``root`` is the ``cifar-10-batches-py`` folder or its parent. The
test split is a seeded permutation's first ``test_fraction`` of the images, validation a
seeded draw from the rest (``splits.permutation_test_split``, ``splits.carve_validation``).
"""
from __future__ import annotations

import importlib
import os
import pickle
from typing import Any

import numpy as np
import torch

from .common import DataError, ImageTensorDataset
from .splits import Splits, carve_validation, make_record, permutation_test_split

_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_ROW = 3 * 32 * 32


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


def load_cifar10_splits(root: str | None, image_size: int, seed: int, test_fraction: float,
                        validation_fraction: float) -> Splits:
    """The three splits of CIFAR-10's training batches (images uint8 ``(N, 3, 32, 32)``, with labels)."""
    if image_size != 32:
        raise DataError(f"cifar10: images are 32x32, image_size={image_size} is not supported")
    images, labels, folder = load_cifar10_images(root)
    train_idx, test_idx = permutation_test_split(images.shape[0], seed, test_fraction)
    info = {"root": folder, "seed": seed}

    def part(idx: np.ndarray, split: str) -> ImageTensorDataset:
        return ImageTensorDataset(torch.from_numpy(images[idx]), "cifar10", split, indices=torch.from_numpy(idx),
                                  labels=torch.from_numpy(labels[idx]), info=info)

    train, validation = carve_validation(part(train_idx, "train"), seed, validation_fraction)
    test = part(test_idx, "test")
    ids = {s.split: s.indices.tolist() for s in (train, validation, test)}
    record = make_record("cifar10", folder, 32, seed, test_fraction, validation_fraction,
                         "test: numpy permutation; validation: torch.randperm(seed + 1)", ids)
    return Splits(train, validation, test, record)
