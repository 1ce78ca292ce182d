"""Train / validation / test splits, and a record of each split to compare later.

Three rules, one per kind of dataset:

* ``"default"``: the test patches come from held-out image tiles (see ``photo_patches``);
* ``"cifar10"``: the test split is the first ``round(test_fraction * N)`` entries of a
  permutation drawn from ``numpy.random.default_rng(seed)`` (:func:`permutation_test_split`);
* folder datasets (``"folder"``, ``"imagenette"``, ``"celeba"``): each file's split is a
  function of ``(seed, its relative path)`` only (:func:`hash_assign`), so adding or
  removing files never moves another file between splits.

Validation is carved out of the training images. For ``"default"`` and ``"cifar10"``,
whose contents are fixed, it is the first ``max(1, round(validation_fraction * n_train))``
entries of ``torch.randperm(n_train)`` seeded with ``seed + 1`` (:func:`carve_validation`),
and the training images keep that permutation's order. Folder datasets draw validation
by hash like the test split.

A :class:`Splits` carries a ``record`` (plain JSON types) saying what the split was; the
trainer stores it in the checkpoint and :func:`split_changes` lists what differs later.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .common import DataError, ImageTensorDataset

#: Datasets read from an image folder (split by hashing each file's relative path).
FOLDER_DATASETS = ("imagenette", "celeba", "folder")


@dataclass
class Splits:
    """The three splits of one dataset, and ``record``: what the split was (JSON-able plain types).

    ``record`` holds ``dataset``, ``root`` (absolute, or None), ``image_size``, ``seed``,
    ``test_fraction``, ``validation_fraction``, ``rule``, ``n_train``, ``n_validation``,
    ``n_test`` and ``digest``: the SHA-256 of the sorted list of (item id, split), where the
    item id is the relative path (folders), the index (cifar10) or ``[photo, row, col]``
    (default).
    """

    train: ImageTensorDataset
    validation: ImageTensorDataset
    test: ImageTensorDataset
    record: dict


def check_fraction(name: str, value: float, *, zero_allowed: bool) -> None:
    """``value`` in [0, 1) (``zero_allowed``) or (0, 1), else :class:`DataError` naming ``name``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0.0 <= float(value) < 1.0 if zero_allowed else 0.0 < float(value) < 1.0)
    if not ok:
        raise DataError(f"{name} must be in {'[0, 1)' if zero_allowed else '(0, 1)'}, got {value!r}")


def check_fractions(test_fraction: float, validation_fraction: float) -> None:
    """``test_fraction`` in [0, 1) and ``validation_fraction`` in (0, 1), else :class:`DataError`."""
    check_fraction("test_fraction", test_fraction, zero_allowed=True)
    check_fraction("validation_fraction", validation_fraction, zero_allowed=False)


def permutation_test_split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``int64`` indices ``(train, test)`` of ``range(n)``.

    A permutation drawn from ``numpy.random.default_rng(seed)``; its first
    ``round(test_fraction * n)`` entries (at least one and at most ``n - 1`` when
    ``test_fraction > 0`` and ``n >= 2``) are the test set.
    """
    n_test = int(round(float(test_fraction) * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    n_test = min(n_test, n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


def carve_validation(train: ImageTensorDataset, seed: int,
                     validation_fraction: float) -> tuple[ImageTensorDataset, ImageTensorDataset]:
    """``(train, validation)``: validation is a seeded draw from ``train`` (the trainer's historical draw).

    ``perm = torch.randperm(n, generator=Generator().manual_seed(seed + 1))``; validation is
    ``perm[:n_val]`` with ``n_val = max(1, round(validation_fraction * n))`` (at most
    ``n - 1`` when ``n >= 2``), training is ``perm[n_val:]``, both in the permutation's order.
    """
    n = len(train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    n_val = max(1, int(round(validation_fraction * n)))
    if n >= 2:
        n_val = min(n_val, n - 1)
    return train.subset(perm[n_val:], "train"), train.subset(perm[:n_val], "validation")


def unit_hash(seed: int, item: str, purpose: str) -> float:
    """A number in [0, 1) fixed by ``(purpose, seed, item)``: the first 8 bytes of a SHA-256."""
    digest = hashlib.sha256(f"{purpose}:{seed}:{item}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def hash_assign(items: Sequence[str], seed: int, test_fraction: float, validation_fraction: float) -> list[str]:
    """The split (``"train"``/``"validation"``/``"test"``) of each item, from its own hash only.

    An item is in test when ``unit_hash(seed, item, "test") < test_fraction``; of the others,
    in validation when ``unit_hash(seed, item, "validation") < validation_fraction``. So an
    item's split does not depend on which other items exist.

    Tiny collections: when no item falls under a fraction (probability ``(1 - f) ** n``),
    the item with the smallest hash is taken, so that the split is not empty (test: when
    ``test_fraction > 0`` and there are at least 2 items; validation: when at least 2 items
    are left for training). Adding items never moves a training item into test even then;
    removing that one chosen item can.
    """
    test_u = [unit_hash(seed, item, "test") for item in items]
    split = ["test" if u < test_fraction else "train" for u in test_u]
    if test_fraction > 0 and len(items) >= 2 and "test" not in split:
        split[int(np.argmin(test_u))] = "test"
    rest = [i for i, s in enumerate(split) if s == "train"]
    val_u = {i: unit_hash(seed, items[i], "validation") for i in rest}
    for i in rest:
        if val_u[i] < validation_fraction:
            split[i] = "validation"
    if len(rest) >= 2 and "validation" not in split:
        split[min(rest, key=val_u.__getitem__)] = "validation"
    return split


def split_digest(ids_by_split: dict[str, list[Any]]) -> str:
    """SHA-256 hex of the sorted list of ``[item id, split]`` (ids: str, int or ``[photo, row, col]``)."""
    pairs = sorted(([item, split] for split, ids in ids_by_split.items() for item in ids),
                   key=lambda pair: json.dumps(pair))
    return hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()


def make_record(name: str, root: str | None, image_size: int, seed: int, test_fraction: float,
                validation_fraction: float, rule: str, ids_by_split: dict[str, list[Any]]) -> dict:
    """The ``record`` of a :class:`Splits` (see there); plain JSON types only."""
    return {"dataset": name, "root": root, "image_size": int(image_size), "seed": int(seed),
            "test_fraction": float(test_fraction), "validation_fraction": float(validation_fraction),
            "rule": rule, **{f"n_{s}": len(ids_by_split[s]) for s in ("train", "validation", "test")},
            "digest": split_digest(ids_by_split)}


_COMPARED = (("dataset", "dataset"), ("root", "data root"), ("image_size", "image size"), ("seed", "seed"),
             ("test_fraction", "test fraction"), ("validation_fraction", "validation fraction"),
             ("rule", "split rule"))


def split_changes(stored: dict, current: dict) -> list[str]:
    """Human-readable differences between two split records (``stored``: then, ``current``: now); [] if same."""
    def shown(value: Any) -> str:
        return "(not recorded)" if value is None else str(value)

    changes = [f"{label} {shown(stored.get(key))} then, {shown(current.get(key))} now"
               for key, label in _COMPARED if stored.get(key) != current.get(key)]
    if stored.get("digest") == current.get("digest"):
        return changes
    counts = [tuple(record.get(f"n_{s}") for s in ("train", "validation", "test")) for record in (stored, current)]
    if not changes and current.get("dataset") in FOLDER_DATASETS:
        then, now = (sum(c or 0 for c in count) for count in counts)
        changes.append(f"the image folder {current.get('root')} changed since the checkpoint: "
                       f"{then} images then, {now} now (split digest differs)")
    else:
        then, now = ("/".join(shown(c) for c in count) for count in counts)
        changes.append(f"the split differs (digest): train/validation/test {then} then, {now} now")
    return changes
