"""What every command-line entry point shares: argument types that check values up front,
device resolution, and one way to end with a clear error.

A problem the user must fix (a bad argument, a missing or corrupt file, data that does
not fit the model) ends the command with one ``error: ...`` line on stderr and exit
status 2, before any long work where it can be checked up front. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from transforms import TransformError
from transforms.imageio import ImageReadError

from .checkpoint import CheckpointError
from .codec.container import CodecError
from .config import ConfigError
from .datasets import DataError, load_image_folder, load_splits, split_changes
from .metrics import MetricsError
from .model import SelfVAE
from .runtime import reuse_large_allocations


class UserError(RuntimeError):
    """A problem the user must fix; the message says what and where."""


#: Exceptions that are the user's to fix: printed as one line, exit status 2.
USER_ERRORS = (UserError, CheckpointError, CodecError, ConfigError, DataError, TransformError, ImageReadError,
               MetricsError)


def error_line(error: object, limit: int = 2000) -> str:
    """``error: <message>`` on one line (torch's messages span many lines), at most ``limit``
    characters of message."""
    text = " ".join(str(error).split())
    return "error: " + (text if len(text) <= limit else text[:limit] + " ...")


def run(command: Callable[[], object]) -> int:
    """Run ``command()``; a user error becomes one ``error:`` line on stderr and status 2.
    Large freed blocks are kept for reuse first (:func:`selfvae.runtime.reuse_large_allocations`)."""
    reuse_large_allocations()
    try:
        command()
    except USER_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def parser(prog: str, doc: Optional[str]) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


# --------------------------------------------------------------------------- argument types
def _number(kind: type, text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a valid {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def _at_least(kind: type, minimum: float, strict: bool = False) -> Callable[[str], float]:
    """An argument type: a ``kind`` number >= ``minimum`` (> with ``strict``)."""
    def parse(text: str):
        value = _number(kind, text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {value}")
        return value
    return parse


positive_int = _at_least(int, 1)
nonnegative_int = _at_least(int, 0)
positive_float = _at_least(float, 0.0, strict=True)
nonnegative_float = _at_least(float, 0.0)


def finite_float(text: str) -> float:
    """An argument type: any finite float, negative ones included."""
    return _number(float, text)


def open_fraction(text: str) -> float:
    value = _number(float, text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def fraction_below_one(text: str) -> float:
    value = _number(float, text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


# --------------------------------------------------------------------------- checks up front
def resolve_device(arg: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; checks that a requested CUDA device exists."""
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(arg)
    except RuntimeError as e:
        raise UserError(f"--device '{arg}': {e}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device '{arg}': only cpu and cuda devices are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {arg} given but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {arg}: there are {torch.cuda.device_count()} CUDA devices")
    return device


def check_output_folder(path: str, option: str = "--out") -> str:
    """``path`` can be (or become) a folder we write into; returns its absolute path."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path} is a file, not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot create or write to this folder")
    return path


def check_output_file(path: str, option: str) -> str:
    """``path`` is a file we can write later (its folder exists or can be created, and it is not a
    folder): checked before any long work. Returns its absolute path."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise UserError(f"{option} {path} is a folder, not a file")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} exists and is not writable")
    check_output_folder(os.path.dirname(path), option)
    return path


def check_input_files(paths: Sequence[str], option: str) -> List[str]:
    """Every path exists and is a file."""
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{option} {path}: no such file")
        if os.path.isdir(path):
            raise UserError(f"{option} {path} is a folder, not a file")
    return list(paths)


# --------------------------------------------------------------------------- images for a model
def check_images_fit(images: torch.Tensor, model: SelfVAE, what: str) -> None:
    """Raise unless uint8 ``images`` ``(N, C, H, W)`` have the shape of x and there is at least one."""
    expected = model.specs[0].shape
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise UserError(f"{what}: images have shape {tuple(images.shape[1:])}, the model expects "
                            f"{expected} (C, H, W)")
    if images.shape[0] == 0:
        raise UserError(f"{what}: no images")


def dataset_images(state: Dict[str, Any], model: SelfVAE, dataset: Optional[str], data_root: Optional[str],
                   split: str, progress: bool = True) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Images of ``split`` of ``dataset`` (default: the dataset recorded in the checkpoint) at the
    model's size. For the checkpoint's own dataset the recorded root, seed and fractions are used, and
    a change of the data since training is reported. Returns uint8 ``(N, C, H, W)`` and a description."""
    stored = dict(state.get("split") or state.get("data") or {})
    name = dataset or stored.get("dataset") or state.get("evaluate_on")
    if not name:
        raise UserError("the checkpoint records no dataset; pass --dataset (with --data-root) or --folder")
    same = name == stored.get("dataset")
    root = data_root if data_root is not None else (stored.get("root") if same else None)
    kwargs: Dict[str, Any] = {"seed": int(stored.get("seed", 0))} if same else {}
    for key in ("test_fraction", "validation_fraction"):
        if same and key in stored:
            kwargs[key] = stored[key]
    splits = load_splits(name, model.config.image_size, root, progress=progress, **kwargs)
    data = getattr(splits, split)
    check_images_fit(data.images, model, f"{name} ({split} split)")
    source = {"dataset": name, "root": root, "split": split, "image_size": model.config.image_size, **kwargs}
    if same and "digest" in stored:
        changes = split_changes(stored, splits.record)
        if changes:
            print("note: the data changed since training: " + "; ".join(changes) + " (the split is derived from "
                  "each file, so no training image moved into the test split)", file=sys.stderr)
            source["changes"] = changes
    return data.images, source


def folder_images(folder: str, model: SelfVAE, progress: bool) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Every image under ``folder`` (recursive), centre-cropped and resized to the model's size."""
    images, _ = load_image_folder(folder, model.config.image_size, progress=progress)
    images = torch.from_numpy(images)
    check_images_fit(images, model, f"folder {folder}")
    return images, {"folder": os.path.abspath(folder), "image_size": model.config.image_size}
