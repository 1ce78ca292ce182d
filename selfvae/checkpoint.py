"""The one checkpoint format: a dict of tensors and plain values written with ``torch.save``.

Keys: ``format`` (``"selfvae-checkpoint"``), ``version``, ``config`` (the
:class:`~selfvae.config.ModelConfig` as a dict), ``model`` (state dict), and for training
checkpoints ``train`` (the :class:`~selfvae.config.TrainConfig` as a dict), ``split`` (what
the train/validation/test split was), ``optimizer``, ``scheduler``, ``step``, ``best_val``,
``skipped`` and ``rng``.

Checkpoints are read with ``torch.load(weights_only=True)``: only tensors and plain Python
values are unpickled, so a crafted file cannot run code. A model is rebuilt from a
checkpoint alone with :func:`load_model`. With ``--ema`` training checkpoints also hold ``ema``
(the averaged tensors by name and the number of updates), which :func:`load_model` uses.
"""
from __future__ import annotations

import glob
import os
import pickle
import tempfile
import zipfile
from typing import Any, Dict, Tuple

import torch

from .config import ConfigError, ModelConfig
from .model import SelfVAE, build_model

FORMAT = "selfvae-checkpoint"
VERSION = 2
TEMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A missing, corrupt, foreign or mismatching checkpoint."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    """Write ``state`` as a checkpoint (format and version added), atomically (:func:`atomic_save`)."""
    atomic_save({"format": FORMAT, "version": VERSION, **state}, path)


def atomic_save(state: Any, path: str) -> None:
    """``torch.save`` ``state`` atomically: a temporary file in the same folder, flushed to disk, then
    renamed over ``path``. A crash mid-write leaves the previous file intact (and a temporary
    file that :func:`remove_stale_temporaries` clears). The file gets the user's umask
    permissions, like any file they write."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str) -> list:
    """Delete temporary checkpoint files that a killed writer left in ``folder``; returns their paths."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), TEMP_PREFIX + "*.pt")):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def read_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint file; raises :class:`CheckpointError` naming the problem."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a folder; give the .pt file (e.g. {path}/latest.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global that is not a tensor or a plain value
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"checkpoint '{path}' holds objects other than tensors and plain values; it was "
                              f"not loaded, since unpickling them could run code ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ImportError,
            KeyError, TypeError, IndexError, MemoryError) as e:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or truncated ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a selfvae checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint '{path}' has format version {state.get('version')!r}, "
                              f"this selfvae reads version {VERSION}")
    for key in ("config", "model"):
        if key not in state:
            raise CheckpointError(f"checkpoint '{path}' lacks its '{key}' entry")
    return state


def model_config_of(state: Dict[str, Any], path: str) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint's ``state``."""
    try:
        return ModelConfig.from_dict(dict(state["config"]))
    except (TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"checkpoint '{path}' holds an invalid config: {e}") from None


def evaluated_weights(state: Dict[str, Any]) -> Dict[str, Any]:
    """The weights a checkpoint is evaluated with: its moving average (``ema``, from ``--ema``) over
    ``model`` where it has one, else ``model`` (the raw weights that training resumes from)."""
    weights = state["model"]
    if isinstance(state.get("ema"), dict) and "tensors" in state["ema"]:
        weights = {**weights, **state["ema"]["tensors"]}
    return weights


def load_model(path: str, map_location: Any = "cpu") -> Tuple[SelfVAE, Dict[str, Any]]:
    """Rebuild the model stored in a checkpoint from its config and weights alone.
    Returns the model (in eval mode) and the checkpoint's state dict. A training checkpoint with a
    moving average of the weights (``ema``, from ``--ema``) gives the averaged weights: those are
    the ones validated and evaluated (``model`` holds the raw weights that training resumes from)."""
    state = read_checkpoint(path, map_location)
    model = build_model(model_config_of(state, path))
    try:
        model.load_state_dict(evaluated_weights(state))
    except (RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint '{path}': weights do not match its config ({e})") from None
    return model.to(map_location).eval(), state
