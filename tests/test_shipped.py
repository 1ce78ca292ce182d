"""The shipped codec model ``photo``: it is installed with the package, matches its recorded
fingerprint, gives a finite likelihood below 8 bits per dimension on photographs it never saw,
is the default of compress / decompress / evaluate, and a damaged copy is refused."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import shipped
from selfvae.checkpoint import CheckpointError
from selfvae.config import ModelConfig
from selfvae.datasets import load_dataset
from selfvae.evaluation import elbo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *argv, cwd):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_photo_is_shipped_with_its_record():
    assert "photo" in shipped.names() and shipped.DEFAULT_MODEL == "photo"
    info = shipped.record("photo")
    path = os.path.join(shipped.WEIGHTS_DIR, "photo.pt")
    assert os.path.getsize(path) == info["file_bytes"] <= 20 * 1024 * 1024
    assert shipped.file_sha256(path) == info["file_sha256"]
    assert len(info["corpus"]["sha256"]) == 64 and int(info["corpus"]["sha256"], 16) >= 0
    assert info["steps"] > 0 and info["train_wall_seconds"] > 0
    assert info["train"]["dataset"] == "photos"
    # the weights are the model of the record's config
    model, state = shipped.load("photo")
    # (a record written before a config key existed reads it at its default, the old behaviour)
    assert model.config == ModelConfig.from_dict(info["config"]) == ModelConfig.from_dict(state["config"])
    assert state["step"] == info["steps"]


def test_photo_gives_a_finite_bound_on_unseen_photographs():
    model, _ = shipped.load(None)  # the default model
    test = load_dataset("default", "test")  # coffee and motorcycle: not in the model's corpus
    x = test.images[torch.linspace(0, len(test) - 1, 8).long()]
    torch.manual_seed(0)
    result = elbo(model, x, batch_size=8)
    assert np.isfinite(result["elbo_bpd"]) and 0 < result["elbo_bpd"] < 8.0
    assert all(np.isfinite(v) for v in result["terms_bpd"].values())


def test_damaged_or_unknown_weights_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(shipped.WEIGHTS_DIR, folder)
    data = bytearray((folder / "photo.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "photo.pt").write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", str(folder))
    with pytest.raises(CheckpointError, match="fingerprint"):
        shipped.load("photo")
    with pytest.raises(CheckpointError, match="shipped models: photo"):
        shipped.resolve("no-such-model")
    # a file path is taken as a path, even where a shipped name exists
    own = tmp_path / "photo"
    own.write_bytes(b"")
    assert shipped.resolve(str(own)) == (str(own), None)


def test_compress_and_decompress_default_to_the_shipped_model(tmp_path):
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((40, 30), Image.BILINEAR))
    Image.fromarray(image).save(tmp_path / "small.png")
    r = run("selfvae.compress", tmp_path / "small.png", "-o", tmp_path / "small.svae", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("selfvae.decompress", tmp_path / "small.svae", "-o", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "small.png")), image)
    # a file made with the shipped model is refused by another model
    r = run("selfvae.decompress", tmp_path / "small.svae", "-o", tmp_path / "other", "--model", "nope",
            cwd=tmp_path)
    assert r.returncode != 0 and "nope" in r.stderr


def test_evaluate_defaults_to_the_shipped_model_on_the_built_in_test_photographs(tmp_path):
    r = run("selfvae.evaluate", "--max-images", "4", "--iw-samples", "2", "--no-modes", "--timing-repeats", "0",
            "--no-progress", "--json", tmp_path / "e.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["shipped"] == "photo" and result["data"]["dataset"] == "default"
    assert result["data"]["split"] == "test" and result["n_images"] == 4
    assert np.isfinite(result["elbo_bpd"]) and result["iw_bpd"] <= result["iw_elbo_bpd"] + 1e-6


def test_the_recipe_takes_a_finished_weights_only_stage_as_done_and_resumes_an_unfinished_one(tmp_path):
    """The codec recipe continues from a committed stage: a finished stage's weights alone (no optimiser
    state, step = its planned steps) is done, so the next stage starts from it; a checkpoint with
    optimiser state but no evaluation at its last step, or one short of its steps, is resumed."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
    import train_codec_model as recipe
    from selfvae.checkpoint import save_checkpoint

    def stage(name, step, steps, optimizer, evaluated=None):
        folder = tmp_path / name
        folder.mkdir()
        state = {"config": {}, "model": {}, "step": step, "train": {"steps": steps}}
        if optimizer:
            state["optimizer"] = {}
        save_checkpoint(state, str(folder / "latest.pt"))
        if evaluated is not None:
            (folder / "eval.json").write_text(json.dumps({"step": evaluated}))
        return str(folder)

    assert recipe.stage_done(stage("weights_only", 1600, 1600, optimizer=False))
    assert not recipe.stage_done(stage("weights_only_short", 1500, 1600, optimizer=False))
    assert not recipe.stage_done(stage("unevaluated", 1600, 1600, optimizer=True))
    assert recipe.stage_done(stage("evaluated", 4000, 4000, optimizer=True, evaluated=4000))
    assert not recipe.stage_done(stage("evaluated_earlier", 4000, 4000, optimizer=True, evaluated=3000))
    assert not recipe.stage_done(str(tmp_path / "missing"))
    names = [name for name, _ in recipe.STAGES]
    assert names[:3] == ["base", "longer", "third"] and len(set(names)) == len(names)
