"""`python -m selfvae.train`: resume equivalence (through SIGKILL), the NaN guard, DDP replicas,
and the errors a user can run into."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import TINY_OVERRIDES
from selfvae.checkpoint import read_checkpoint


def run_train(out, root, *extra, steps=6, env=None, launcher=None):
    args = ["--dataset", "cifar10", "--data-root", str(root), "--transform", "downscale", "--levels", "1",
            "--steps", str(steps), "--batch-size", "8", "--checkpoint-every", "3", "--eval-every", "3",
            "--image-every", "100", "--log-every", "1", "--iw-samples", "2", "--iw-images", "4",
            "--warmup", "2", "--threads", "1", "--no-progress", "--out", str(out)]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    cmd = (launcher or [sys.executable, "-m", "selfvae.train"]) + args + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def weights(out):
    return read_checkpoint(os.path.join(out, "latest.pt"))["model"]


def test_resume_after_sigkill_gives_identical_parameters(tiny_cifar, tmp_path):
    straight = run_train(tmp_path / "straight", tiny_cifar)
    assert straight.returncode == 0, straight.stderr
    killed = run_train(tmp_path / "resumed", tiny_cifar, "--kill-at-step", "4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    halfway = read_checkpoint(str(tmp_path / "resumed" / "latest.pt"))
    assert halfway["step"] == 3
    resumed = run_train(tmp_path / "resumed", tiny_cifar, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # and the second half of training changed them: the comparison is not vacuous
    assert any(not torch.equal(a[n], halfway["model"][n]) for n in a if a[n].is_floating_point())
    for folder in ("straight", "resumed"):
        result = json.loads((tmp_path / folder / "eval.json").read_text())
        for key in ("elbo_bpd", "iw_bpd", "terms_bpd", "n_images", "iw_samples"):
            assert key in result
        assert result["steps"] == 6 and result["n_images"] == 18
    assert (tmp_path / "straight" / "samples_final.png").exists()
    assert (tmp_path / "straight" / "reconstructions_final.png").exists()


def test_nan_steps_are_skipped_and_counted(tiny_cifar, tmp_path):
    result = run_train(tmp_path / "run", tiny_cifar, "--poison-steps", "2,3", "--max-bad-steps", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["skipped_steps"] == 2
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "run").values() if v.is_floating_point())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in log if "skipped" in r][:4] == [0, 0, 1, 2]


def test_too_many_bad_steps_in_a_row_stop_with_a_clear_message(tiny_cifar, tmp_path):
    result = run_train(tmp_path / "run", tiny_cifar, "--poison-steps", "1,2,3", "--max-bad-steps", "3")
    assert result.returncode == 2
    assert "3 consecutive steps had a NaN/inf loss or gradient" in result.stderr


def test_run_errors(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    assert run_train(out, tiny_cifar, steps=3).returncode == 0
    again = run_train(out, tiny_cifar, steps=3)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    other = run_train(out, tiny_cifar, "--resume", "--set", "width=16", steps=3)
    assert other.returncode == 2 and "another config" in other.stderr and "width" in other.stderr
    missing = run_train(tmp_path / "empty", tiny_cifar, "--resume", steps=3)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    data = (broken / "latest.pt").read_bytes()
    (broken / "latest.pt").write_bytes(data[:1000])
    corrupt = run_train(broken, tiny_cifar, "--resume", steps=3)
    assert corrupt.returncode == 2 and "corrupt or truncated" in corrupt.stderr
    bad_key = run_train(tmp_path / "x", tiny_cifar, "--set", "wdith=3", steps=3)
    assert bad_key.returncode == 2 and "unknown config key 'wdith'" in bad_key.stderr
    no_data = run_train(tmp_path / "y", tmp_path / "nowhere", steps=3)
    assert no_data.returncode == 2 and "nowhere" in no_data.stderr


def test_ddp_two_processes_keep_identical_replicas(tiny_cifar, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "selfvae.train"]
    result = run_train(tmp_path / "ddp", tiny_cifar, steps=4, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "ddp" / "eval.json").read_text())
    assert report["replica_max_abs_diff"] == 0.0
    # both ranks trained: the parameters moved from the initialisation
    assert report["steps"] == 4 and report["skipped_steps"] == 0


def test_bf16_autocast_path_trains_with_finite_figures(tiny_cifar, tmp_path):
    """The bf16 autocast path (the default on CUDA) exercised on CPU: likelihoods and the prior stay
    in float32 inside, so the figures are finite and no step is skipped."""
    result = run_train(tmp_path / "bf16", tiny_cifar, "--precision", "bf16", steps=3)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bf16" / "eval.json").read_text())
    assert report["precision"] == "bf16" and report["skipped_steps"] == 0
    assert all(math.isfinite(v) for v in [report["elbo_bpd"], report["iw_bpd"], *report["terms_bpd"].values()])
