"""The checkpoint format: a model rebuilt from a checkpoint alone computes the same numbers, bad
files give clear errors, and loading never runs code stored in a file."""
import os
import pickle
import stat

import pytest
import torch

from selfvae.checkpoint import CheckpointError, load_model, read_checkpoint, remove_stale_temporaries, save_checkpoint
from selfvae.config import ModelConfig
from selfvae.model import build_model

from test_model import tiny


def test_model_rebuilt_from_config_and_checkpoint_computes_the_same_numbers(tmp_path):
    model, x = tiny("downscale", 2)
    model.eval()
    noise = model.sample_noise(x.shape[0], 0, seed=1, device=x.device)
    with torch.no_grad():
        expected = model.elbo_terms(x, noise=noise)
    clone = build_model(ModelConfig.from_dict(model.config.to_dict()))
    clone.load_state_dict(model.state_dict())
    clone.eval()
    path = tmp_path / "model.pt"
    save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(path))
    loaded, _ = load_model(str(path))
    loaded.eval()
    with torch.no_grad():
        for other in (clone, loaded):
            got = other.elbo_terms(x, noise=noise)
            for name in expected:
                assert torch.equal(got[name], expected[name]), name
    # a reloaded model is already initialised: data-dependent init must not run again
    assert all(bool(m.initialized) for m in loaded.modules() if hasattr(m, "initialized"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    broken = tmp_path / "broken.pt"
    model, _ = tiny("downscale", 1)
    save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(broken))
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(str(broken))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a selfvae checkpoint"):
        load_model(str(foreign))
    other = tmp_path / "other.pt"
    save_checkpoint({"config": model.config.replace(width=16).to_dict(), "model": model.state_dict()}, str(other))
    with pytest.raises(CheckpointError, match="do not match its config"):
        load_model(str(other))




class _Trap:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_pickle_is_not_executed(tmp_path):
    """Before: torch.load(weights_only=False) ran the pickle's code. Now nothing runs and the error
    says why the file was refused."""
    victim = tmp_path / "created-by-checkpoint"
    model, _ = tiny("downscale", 1)
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "selfvae-checkpoint", "version": 2, "config": model.config.to_dict(),
                "model": model.state_dict(), "payload": _Trap(str(victim))}, crafted, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="other than tensors and plain values"):
        load_model(str(crafted))
    assert not victim.exists()
    # the same with a plain pickle file (not torch's zip format)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"x": _Trap(str(victim))}))
    with pytest.raises(CheckpointError):
        read_checkpoint(str(plain))
    assert not victim.exists()


def test_unknown_globals_and_versions_give_clear_errors(tmp_path):
    model, _ = tiny("downscale", 1)
    state = {"format": "selfvae-checkpoint", "version": 99, "config": model.config.to_dict(),
             "model": model.state_dict()}
    future = tmp_path / "future.pt"
    torch.save(state, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(str(future))
    bad_config = tmp_path / "bad_config.pt"
    save_checkpoint({"config": {**model.config.to_dict(), "latent_size": 3}, "model": model.state_dict()},
                    str(bad_config))
    with pytest.raises(CheckpointError, match="invalid config"):
        load_model(str(bad_config))
    with pytest.raises(CheckpointError, match="is a folder"):
        load_model(str(tmp_path))


def test_checkpoints_get_the_users_umask_and_no_temporary_is_left(tmp_path):
    """Before: checkpoints were written 0600 (mkstemp's mode), whatever the umask."""
    model, _ = tiny("downscale", 1)
    old = os.umask(0o022)
    try:
        path = tmp_path / "model.pt"
        save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_temporaries_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".tmp-abc123.pt").write_bytes(b"half a checkpoint")
    (tmp_path / "latest.pt").write_bytes(b"keep")
    removed = remove_stale_temporaries(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [".tmp-abc123.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
