"""Models that ship inside the package, loaded by name: ``--model photo``.

Each shipped model is two files in ``selfvae/weights/``: ``NAME.pt``, a checkpoint holding the
model config and weights only (no optimiser state; format of :mod:`selfvae.checkpoint`), and
``NAME.json``, its record: the SHA-256 of the ``.pt`` file (checked at every load, so a
damaged or swapped file is refused), the model config, the training config, the corpus it
was trained on (its SHA-256 from ``experiments/build_corpus.py``), the steps and wall time
of training, and the held-out figures measured when it was exported.

``photo`` is the default model of ``compress``, ``decompress`` and ``evaluate``; it is made by
``experiments/train_codec_model.py`` (which also exports it here).

Where a command takes ``--model``, :func:`resolve` accepts either a checkpoint file or a
shipped name; a path wins when both exist.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from .checkpoint import CheckpointError, load_model
from .model import SelfVAE

#: The folder of the shipped weights inside the installed package.
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

#: The model used when a command is given none.
DEFAULT_MODEL = "photo"


def names() -> List[str]:
    """Names of the shipped models (those with both ``NAME.pt`` and ``NAME.json``), sorted."""
    if not os.path.isdir(WEIGHTS_DIR):
        return []
    return sorted(f[:-3] for f in os.listdir(WEIGHTS_DIR)
                  if f.endswith(".pt") and os.path.isfile(os.path.join(WEIGHTS_DIR, f[:-3] + ".json")))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(name: str) -> Dict[str, Any]:
    """The ``NAME.json`` record of a shipped model; :class:`CheckpointError` if there is none."""
    path = os.path.join(WEIGHTS_DIR, f"{name}.json")
    if name not in names():
        known = ", ".join(names()) or "none are installed"
        raise CheckpointError(f"no shipped model named '{name}' (shipped models: {known})")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: the record of shipped model '{name}' cannot be read ({e})") from None


def verified_path(name: str) -> str:
    """Path of shipped model ``name``'s weights, after checking their SHA-256 against its record."""
    info = record(name)
    path = os.path.join(WEIGHTS_DIR, f"{name}.pt")
    digest = file_sha256(path)
    if digest != info.get("file_sha256"):
        raise CheckpointError(f"{path}: the shipped weights of '{name}' do not match their recorded fingerprint "
                              f"(SHA-256 {digest[:16]}…, recorded {str(info.get('file_sha256'))[:16]}…); "
                              "the file is damaged or was replaced: reinstall selfvae")
    return path


def resolve(model: Optional[str]) -> Tuple[str, Optional[str]]:
    """``(checkpoint path, shipped name or None)`` for a ``--model`` argument.

    ``None`` -> the default shipped model; an existing file -> itself; a shipped name -> its
    verified weights. Anything else raises :class:`CheckpointError`: a path-like argument (with a
    ``/`` or ending in ``.pt``) as a missing checkpoint, a bare word naming both readings.
    """
    model = DEFAULT_MODEL if model is None else model
    if os.path.exists(model):
        return model, None
    if model in names():
        return verified_path(model), model
    if os.sep in model or "/" in model or model.endswith(".pt"):  # meant as a file
        raise CheckpointError(f"checkpoint '{model}' does not exist")
    known = ", ".join(names()) or "none are installed"
    raise CheckpointError(f"'{model}' is neither a checkpoint file nor a shipped model name "
                          f"(shipped models: {known})")


def load(model: Optional[str], map_location: Any = "cpu") -> Tuple[SelfVAE, Dict[str, Any]]:
    """Load a checkpoint file or a shipped model by name (see :func:`resolve`); returns (model, state)."""
    path, _ = resolve(model)
    return load_model(path, map_location)
