"""Datasets for selfvae: every split of every dataset as uint8 ``(N, C, H, W)`` tensors in memory.

``load_splits(name, ...)`` gives train, validation and test at once, with a ``record`` of
what the split was; ``load_dataset(name, split, ...)`` gives one of them. Nothing is
downloaded: every loader reads local files.

=============  ===========================================================  ==============
name           what                                                         module
=============  ===========================================================  ==============
``default``    32/64-px patches of photographs bundled with scikit-image    photo_patches
``photos``     patches of a folder of photographs, split by photograph      photo_patches
``cifar10``    CIFAR-10's five python training batches (32x32)              cifar10
``imagenette`` an image folder, its ``train`` sub-folder if there is one    image_folder
``celeba``     aligned CelebA faces, crop 148x148 at (40, 15), resized      image_folder
``folder``     any image folder, centre square, resized                     image_folder
=============  ===========================================================  ==============

How each dataset is split is in ``splits`` (and the dataset's module).
"""
from __future__ import annotations

from .cifar10 import load_cifar10_images
from .common import (DATASETS, DEFAULT_IMAGE_SIZES, SPLITS, DataError, ImageTensorDataset, cache_directory,
                     check_image_size)
from .image_folder import CELEBA_CROP, IMAGE_EXTENSIONS, list_image_files, load_image_folder
from .photo_patches import DEFAULT_DATASET_VERSION, DEFAULT_SOURCES, default_dataset_info, load_default_photos
from .splits import Splits, check_fractions, split_changes
from . import cifar10, image_folder, photo_patches

__all__ = ["DATASETS", "SPLITS", "DEFAULT_IMAGE_SIZES", "DataError", "ImageTensorDataset", "Splits",
           "load_splits", "load_dataset", "split_changes", "load_image_folder", "list_image_files",
           "load_cifar10_images", "DEFAULT_SOURCES", "DEFAULT_DATASET_VERSION",
           "default_dataset_info", "load_default_photos", "cache_directory", "CELEBA_CROP", "IMAGE_EXTENSIONS"]


def load_splits(name: str, image_size: int | None = None, root: str | None = None, *, seed: int = 0,
                test_fraction: float = 0.15, validation_fraction: float = 0.05, cache_dir: str | None = None,
                progress: bool = True, on_bad_image: str = "raise") -> Splits:
    """Train, validation and test splits of dataset ``name``, and the record of that split.

    Args:
        name: one of :data:`DATASETS`.
        image_size: output side; ``None`` -> :data:`DEFAULT_IMAGE_SIZES`.
            ``"default"``: 32 or 64; ``"cifar10"``: 32 only.
        root: data folder (ignored by ``"default"``).
        seed: seed of the split.
        test_fraction: in [0, 1), the share held out as test (images; photographs for ``"photos"``
            without ``train/`` + ``heldout/`` sub-folders; ignored by ``"default"``, whose test
            photographs are fixed).
        validation_fraction: in (0, 1), the share of the training images used for validation.
        cache_dir: cache folder (see :func:`cache_directory`).
        progress: show the progress bar while decoding an image folder.
        on_bad_image: folder datasets only: ``"raise"`` or ``"skip"`` unreadable files.

    Returns:
        :class:`Splits`; each split's ``images`` are uint8 ``(N, 3, S, S)``.

    Raises:
        DataError: unknown name (the message lists the known names), bad size or fraction
            (named), missing/empty folder, corrupt file (named).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    check_fractions(test_fraction, validation_fraction)
    size = check_image_size(name, image_size)
    if name == "default":
        return photo_patches.load_default_splits(size, seed, test_fraction, validation_fraction, cache_dir)
    if name == "photos":
        return photo_patches.load_photo_folder_splits(root, size, seed, test_fraction, validation_fraction,
                                                      cache_dir, on_bad_image, progress)
    if name == "cifar10":
        return cifar10.load_cifar10_splits(root, size, seed, test_fraction, validation_fraction)
    return image_folder.load_folder_splits(name, root, size, seed, test_fraction, validation_fraction,
                                           cache_dir=cache_dir, on_bad_image=on_bad_image, progress=progress)


def load_dataset(name: str, split: str, image_size: int | None = None, root: str | None = None, seed: int = 0,
                 test_fraction: float = 0.15, cache_dir: str | None = None, *, validation_fraction: float = 0.05,
                 on_bad_image: str = "raise", progress: bool = True) -> ImageTensorDataset:
    """One split (``"train"``, ``"validation"`` or ``"test"``) of dataset ``name``; see :func:`load_splits`."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    splits = load_splits(name, image_size, root, seed=seed, test_fraction=test_fraction,
                         validation_fraction=validation_fraction, cache_dir=cache_dir, progress=progress,
                         on_bad_image=on_bad_image)
    return getattr(splits, split)
