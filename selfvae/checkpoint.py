"""The one checkpoint format: a dict saved with ``torch.save`` holding the model config.

Keys: ``format`` (``"selfvae-checkpoint"``), ``version``, ``config`` (the
:class:`~selfvae.config.ModelConfig` as a dict), ``model`` (state dict), and for
training checkpoints ``optimizer``, ``scheduler``, ``step``, ``rng``, ``train`` (the
training arguments) and ``data`` (dataset name, root, image size, seed).

A model is rebuilt from a checkpoint alone with :func:`load_model`.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from typing import Any, Dict, Tuple

import torch

from .config import ModelConfig
from .model import SelfVAE, build_model

FORMAT = "selfvae-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A missing, corrupt, foreign or mismatching checkpoint."""


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    """Write ``state`` atomically: a temporary file in the same folder, flushed to disk, then
    renamed over ``path``. A crash mid-write leaves the previous file intact."""
    state = {"format": FORMAT, "version": VERSION, **state}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint file; raises :class:`CheckpointError` naming the problem."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a folder; give the .pt file (e.g. {path}/latest.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or truncated ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a selfvae checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint '{path}' has format version {state.get('version')}, "
                              f"this selfvae reads version {VERSION}")
    for key in ("config", "model"):
        if key not in state:
            raise CheckpointError(f"checkpoint '{path}' lacks its '{key}' entry")
    return state


def load_model(path: str, map_location: Any = "cpu") -> Tuple[SelfVAE, Dict[str, Any]]:
    """Rebuild the model stored in a checkpoint from its config and weights alone."""
    state = read_checkpoint(path, map_location)
    try:
        config = ModelConfig.from_dict(state["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{path}' holds an invalid config: {e}") from None
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint '{path}': weights do not match its config ({e})") from None
    return model.to(map_location), state


def config_difference(a: ModelConfig, b: ModelConfig) -> Dict[str, Tuple[Any, Any]]:
    """Keys whose values differ between two configs: name -> (a's value, b's value)."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in da if da[k] != db[k]}
