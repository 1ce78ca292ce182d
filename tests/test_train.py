"""`python -m selfvae.train`: resume equivalence (through SIGKILL, faults injected from outside the
training code by tests/fault_injection.py), the NaN guard, DDP replicas, and the errors a user can run
into — every one a single line before any work starts."""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_OVERRIDES
from selfvae import train
from selfvae.checkpoint import read_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
LIKELIHOOD_KEYS = ("elbo_bpd", "terms_bpd", "n_images", "iw_bpd", "iw_elbo_bpd", "iw_samples", "iw_n_images")


def train_args(out, root, *extra, steps=6, dataset="cifar10"):
    args = ["--dataset", dataset, "--data-root", str(root), "--transform", "downscale", "--levels", "1",
            "--steps", str(steps), "--batch-size", "8", "--checkpoint-every", "3", "--eval-every", "3",
            "--image-every", "100", "--log-every", "1", "--iw-samples", "2", "--iw-images", "4",
            "--warmup", "2", "--threads", "1", "--no-progress", "--out", str(out)]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    return args + list(extra)


def run_train(out, root, *extra, steps=6, env=None, launcher=None, faults=None, dataset="cifar10"):
    args = train_args(out, root, *extra, steps=steps, dataset=dataset)
    if faults:
        launcher = [sys.executable, os.path.join(HERE, "fault_injection.py")]
    cmd = (launcher or [sys.executable, "-m", "selfvae.train"]) + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), **(faults or {})})


def weights(out):
    return read_checkpoint(os.path.join(out, "latest.pt"))["model"]


def log_records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_resume_after_sigkill_gives_identical_parameters(tiny_cifar, tmp_path):
    straight = run_train(tmp_path / "straight", tiny_cifar)
    assert straight.returncode == 0, straight.stderr
    killed = run_train(tmp_path / "resumed", tiny_cifar, faults={"FAULT_KILL_AT_STEP": "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    halfway = read_checkpoint(str(tmp_path / "resumed" / "latest.pt"))
    assert halfway["step"] == 3
    # the killed run logged step 4's predecessor after the checkpoint: the resumed run must not repeat it
    assert max(r["step"] for r in log_records(tmp_path / "resumed")) == 4
    # --resume alone: the configs come from the checkpoint
    resumed = subprocess.run([sys.executable, "-m", "selfvae.train", "--out", str(tmp_path / "resumed"), "--resume",
                              "--no-progress", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # and the second half of training changed them: the comparison is not vacuous
    assert any(not torch.equal(a[n], halfway["model"][n]) for n in a if a[n].is_floating_point())
    # log.jsonl holds every step once, as the straight run's does
    steps = [r["step"] for r in log_records(tmp_path / "resumed") if "bpd" in r]
    assert steps == [r["step"] for r in log_records(tmp_path / "straight") if "bpd" in r] == list(range(1, 7))
    for folder in ("straight", "resumed"):
        result = json.loads((tmp_path / folder / "eval.json").read_text())
        for key in LIKELIHOOD_KEYS + ("config", "train", "data", "parameters", "step"):
            assert key in result, key
        assert result["step"] == 6 and result["n_images"] == 18 and result["iw_n_images"] == 4
        assert result["iw_bpd"] <= result["iw_elbo_bpd"] + 1e-6
    assert (tmp_path / "straight" / "samples_final.png").exists()
    assert (tmp_path / "straight" / "reconstructions_final.png").exists()


def test_nan_steps_are_skipped_and_counted(tiny_cifar, tmp_path):
    result = run_train(tmp_path / "run", tiny_cifar, "--max-bad-steps", "3", faults={"FAULT_NAN_STEPS": "2,3"})
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["skipped_steps"] == 2
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "run").values() if v.is_floating_point())
    assert [r["skipped"] for r in log_records(tmp_path / "run") if "skipped" in r][:4] == [0, 0, 1, 2]


def test_too_many_bad_steps_in_a_row_stop_with_a_clear_message(tiny_cifar, tmp_path):
    result = run_train(tmp_path / "run", tiny_cifar, "--max-bad-steps", "3", faults={"FAULT_NAN_STEPS": "1,2,3"})
    assert result.returncode == 2
    assert "3 consecutive steps had a NaN/inf loss or gradient" in result.stderr


def test_a_write_killed_mid_checkpoint_leaves_no_temporary_after_resume(tiny_cifar, tmp_path):
    """Before: the half-written temporary file of a killed checkpoint write stayed forever."""
    out = tmp_path / "run"
    killed = run_train(out, tiny_cifar, faults={"FAULT_KILL_IN_SAVE": "3"})  # saves: best, latest at step 3; then step 6
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    resumed = run_train(out, tiny_cifar, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_run_errors(tiny_cifar, tmp_path):
    out = tmp_path / "run"
    assert run_train(out, tiny_cifar, steps=3).returncode == 0
    again = run_train(out, tiny_cifar, steps=3)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    other = run_train(out, tiny_cifar, "--resume", "--set", "width=16", steps=3)
    assert other.returncode == 2 and "another config" in other.stderr and "width" in other.stderr
    longer = run_train(out, tiny_cifar, "--resume", steps=5)
    assert longer.returncode == 2 and "steps: 3 then, 5 now" in longer.stderr
    missing = run_train(tmp_path / "empty", tiny_cifar, "--resume", steps=3)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    data = (broken / "latest.pt").read_bytes()
    (broken / "latest.pt").write_bytes(data[:1000])
    corrupt = run_train(broken, tiny_cifar, "--resume", steps=3)
    assert corrupt.returncode == 2 and "corrupt or truncated" in corrupt.stderr
    no_data = run_train(tmp_path / "y", tmp_path / "nowhere", steps=3)
    assert no_data.returncode == 2 and "nowhere" in no_data.stderr


def test_an_earlier_runs_files_make_a_new_run_refuse(tiny_cifar, tmp_path, capsys):
    """Before: a folder with best.pt but no latest.pt was trained into, overwriting best.pt and
    appending to the earlier log.jsonl."""
    for leftover in ("best.pt", "log.jsonl", "samples_000100.png"):
        out = tmp_path / leftover.split(".")[0]
        out.mkdir()
        (out / leftover).write_bytes(b"an earlier run")
        code = train.main(train_args(out, tiny_cifar))
        assert code == 2 and "already holds a run" in capsys.readouterr().err
        assert (out / leftover).read_bytes() == b"an earlier run" and len(list(out.iterdir())) == 1


BAD_ARGUMENTS = [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-4"], "--batch-size"),
    (["--steps", "0"], "--steps"), (["--steps", "-5"], "--steps"),
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr-min", "inf"], "--lr-min"),
    (["--log-every", "0"], "--log-every"), (["--eval-every", "0"], "--eval-every"),
    (["--checkpoint-every", "0"], "--checkpoint-every"), (["--image-every", "0"], "--image-every"),
    (["--iw-samples", "-1"], "--iw-samples"), (["--iw-images", "0"], "--iw-images"),
    (["--levels", "-1"], "--levels"),
    (["--validation-fraction", "0"], "--validation-fraction"), (["--validation-fraction", "1.5"],
                                                                "--validation-fraction"),
]


@pytest.mark.parametrize("bad,option", BAD_ARGUMENTS, ids=[" ".join(b) for b, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_before_any_work(tiny_cifar, tmp_path, capsys, bad, option):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        train.main(train_args(out, tiny_cifar) + bad)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert option in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def write_folder(folder, n, size):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


BAD_CONFIGS = [
    (["--levels", "10"], "does not fit 3x32x32"),
    (["--set", "latent_size=3"], "latent_size 3 does not fit"),
    (["--set", "min_logvar=nan"], "min_logvar must be a finite number"),
    (["--set", "wdith=3"], "unknown config key 'wdith'"),
    (["--lr", "1e-3", "--lr-min", "1e-2"], "lr_min"),
]


@pytest.mark.parametrize("bad,message", BAD_CONFIGS, ids=[" ".join(b) for b, _ in BAD_CONFIGS])
def test_models_that_cannot_be_built_give_one_line(tiny_cifar, tmp_path, capsys, bad, message):
    """Before: these ended in tracebacks from deep inside the model."""
    out = tmp_path / "run"
    start = time.perf_counter()
    assert train.main(train_args(out, tiny_cifar) + bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert time.perf_counter() - start < 30 and not out.exists()


def test_other_up_front_errors(tmp_path, capsys):
    folder = write_folder(tmp_path / "odd", 12, 33)
    assert train.main(train_args(tmp_path / "a", folder, dataset="folder") + ["--image-size", "33"]) == 2
    assert "cannot halve a 33x33" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a folder")
    assert train.main(train_args(tmp_path / "file", folder, dataset="folder")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_changed_folder_is_reported_on_resume(tmp_path):
    """The split is recorded in the checkpoint; a folder that changed since is named, not used."""
    folder = write_folder(tmp_path / "images", 40, 32)
    out = tmp_path / "run"
    first = run_train(out, folder, steps=3, dataset="folder")
    assert first.returncode == 0, first.stderr
    assert read_checkpoint(str(out / "latest.pt"))["split"]["dataset"] == "folder"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "new.png")
    resumed = run_train(out, folder, "--resume", steps=3, dataset="folder")
    assert resumed.returncode == 2 and "changed since the checkpoint" in resumed.stderr


def test_ddp_two_processes_keep_identical_replicas(tiny_cifar, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "selfvae.train"]
    result = run_train(tmp_path / "ddp", tiny_cifar, steps=4, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "ddp" / "eval.json").read_text())
    assert report["replica_max_abs_diff"] == 0.0
    assert report["step"] == 4 and report["skipped_steps"] == 0


def test_bf16_autocast_trains_like_fp32(tiny_cifar, tmp_path):
    """The bf16 autocast path (the default on CUDA) exercised on CPU: likelihoods and the prior stay
    in float32 inside, so the figures are finite, no step is skipped, and after the same short run
    the test ELBO is within 0.02 bpd of the fp32 run's."""
    from selfvae.runtime import cpu_bf16_kernels

    reports = {}
    for precision in ("bf16", "fp32"):
        result = run_train(tmp_path / precision, tiny_cifar, "--precision", precision, steps=12)
        assert result.returncode == 0, result.stderr
        reports[precision] = json.loads((tmp_path / precision / "eval.json").read_text())
        # the slow-bf16 warning is printed exactly when this CPU lacks bf16 kernels, and only for bf16
        warned = "without bf16 kernels" in result.stderr
        assert warned == (precision == "bf16" and not cpu_bf16_kernels()), result.stderr
    report = reports["bf16"]
    assert report["train"]["precision"] == "bf16" and report["skipped_steps"] == 0
    assert all(math.isfinite(v) for v in [report["elbo_bpd"], report["iw_bpd"], *report["terms_bpd"].values()])
    assert abs(report["elbo_bpd"] - reports["fp32"]["elbo_bpd"]) < 0.02, (report["elbo_bpd"],
                                                                          reports["fp32"]["elbo_bpd"])


def test_weight_average_is_the_documented_moving_average():
    from selfvae.train import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    avg = WeightAverage(net, 0.9)
    expected = {n: t.detach().clone() for n, t in net.state_dict().items()}
    for t in range(1, 8):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        avg.update(net)
        rate = 1 - min(0.9, (1 + t) / (10 + t))
        expected = {n: e + rate * (net.state_dict()[n] - e) for n, e in expected.items()}
    for n in expected:
        assert torch.allclose(avg.average[n], expected[n], atol=1e-6), n
    # the average is not the weights themselves
    assert not torch.allclose(avg.average["weight"], net.weight)


def test_ema_run_resumes_exactly_and_evaluates_the_average(tiny_cifar, tmp_path):
    straight = run_train(tmp_path / "straight", tiny_cifar, "--ema", "0.5")
    assert straight.returncode == 0, straight.stderr
    killed = run_train(tmp_path / "resumed", tiny_cifar, "--ema", "0.5", faults={"FAULT_KILL_AT_STEP": "4"})
    assert killed.returncode == -signal.SIGKILL
    resumed = run_train(tmp_path / "resumed", tiny_cifar, "--ema", "0.5", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = read_checkpoint(str(tmp_path / "straight" / "latest.pt"))
    b = read_checkpoint(str(tmp_path / "resumed" / "latest.pt"))
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    for name, tensor in a["ema"]["tensors"].items():
        assert torch.equal(tensor, b["ema"]["tensors"][name]), name
    # load_model gives the average, which differs from the raw weights that training resumes from
    from selfvae.checkpoint import load_model

    model, _ = load_model(str(tmp_path / "straight" / "latest.pt"))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[n], t) for n, t in a["ema"]["tensors"].items())
    assert any(not torch.equal(a["model"][n], t) for n, t in a["ema"]["tensors"].items())
    result = json.loads((tmp_path / "straight" / "eval.json").read_text())
    assert result["weights"].startswith("moving average")
    # a run without --ema cannot resume one with it
    other = run_train(tmp_path / "resumed", tiny_cifar, "--ema", "0", "--resume")
    assert other.returncode == 2 and "ema" in other.stderr


def test_the_paper_preset_trains_in_bf16_on_a_gpu_only_unless_asked():
    """The paper preset's bf16 autocast is for GPUs: on a CPU without bf16 units it only slows
    training, so ``--preset paper`` on a CPU trains in fp32 unless ``--precision bf16`` is given."""
    from selfvae.train import configs_from_args, parse_args

    def precision(argv, cuda):
        return configs_from_args(parse_args(argv), cuda)[1].precision

    assert precision(["--preset", "paper", "--levels", "0"], cuda=False) == "fp32"
    assert precision(["--preset", "paper", "--levels", "0"], cuda=True) == "bf16"
    assert precision(["--preset", "paper", "--levels", "0", "--precision", "bf16"], cuda=False) == "bf16"
    assert precision(["--levels", "3"], cuda=False) == "fp32"


def test_bf16_on_a_cpu_without_bf16_kernels_is_warned_about(monkeypatch):
    """oneDNN's bf16 kernels need AVX-512: the detection agrees with the instruction probes, and a
    bf16 run is warned about on a CPU without them only (never on CUDA, never for fp32)."""
    from selfvae import runtime

    probes = torch.cpu
    if probes._is_avx512_bf16_supported() or probes._is_amx_tile_supported():
        assert runtime.cpu_bf16_kernels()
    if not probes._is_avx512_supported():
        assert not runtime.cpu_bf16_kernels()
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(runtime, "cpu_bf16_kernels", lambda: False)
    assert "several times slower than fp32" in train.precision_warning(cpu, "bf16")
    assert train.precision_warning(cpu, "fp32") is None and train.precision_warning(cuda, "bf16") is None
    monkeypatch.setattr(runtime, "cpu_bf16_kernels", lambda: True)
    assert train.precision_warning(cpu, "bf16") is None


def test_a_run_started_from_another_runs_weights_starts_exactly_there(tiny_cifar, tmp_path):
    """``--init-from``: a new run (step 0, its own schedule) whose model is the source's, weights and
    config; model options that disagree with the source are named; a missing source is refused."""
    first = tmp_path / "first"
    assert run_train(first, tiny_cifar, steps=3).returncode == 0
    source = weights(first)
    run = train.set_up(train.parse_args(train_args(tmp_path / "second", tiny_cifar, "--init-from",
                                                   str(first / "latest.pt"), steps=4)))
    assert run.config.init_from == str(first / "latest.pt") and run.config.steps == 4
    state = run.model.state_dict()
    assert state.keys() == source.keys() and all(torch.equal(state[k], source[k]) for k in source)
    with pytest.raises(train.cli.UserError, match="its model has another config.*width"):
        train.set_up(train.parse_args(train_args(tmp_path / "third", tiny_cifar, "--init-from",
                                                 str(first / "latest.pt"), "--set", "width=16")))
    with pytest.raises(train.cli.UserError, match="--init-from.*does not exist"):
        train.set_up(train.parse_args(train_args(tmp_path / "fourth", tiny_cifar, "--init-from",
                                                 str(tmp_path / "none.pt"))))
    continued = run_train(tmp_path / "fifth", tiny_cifar, "--init-from", str(first / "latest.pt"), steps=2)
    assert continued.returncode == 0, continued.stderr
    assert read_checkpoint(str(tmp_path / "fifth" / "latest.pt"))["step"] == 2


def test_cuda_device_without_index_is_given_one(monkeypatch):
    """``--device cuda`` (no index) on one GPU: ``torch.cuda.set_device`` refuses a device without
    an index (seen on torch 2.11 on an H100), so the run names the current one. Checked without a
    GPU by standing in for the two calls."""
    seen = []

    def set_device(device):
        if isinstance(device, torch.device) and device.index is None:
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
        seen.append(device)

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ddp = train.Distributed(torch.device("cuda"))
    assert ddp.device == torch.device("cuda:0") and seen == [torch.device("cuda:0")]
    assert train.Distributed(torch.device("cuda:0")).device == torch.device("cuda:0")


def test_variants_pack_keeps_the_weight_average_and_feeds_init_from(tiny_cifar, tmp_path):
    """experiments/train_variants.py's weights-only checkpoint of a run with ``--ema``: it holds the
    averaged weights (what the run's own evaluation used), no optimiser state, loads alone, and a new
    run starts from it with ``--init-from``."""
    import importlib.util
    import tarfile

    from selfvae.checkpoint import load_model

    spec = importlib.util.spec_from_file_location("train_variants", os.path.join(os.path.dirname(HERE), "experiments",
                                                                                 "train_variants.py"))
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    out = tmp_path / "variants"
    result = run_train(out / "avg", tiny_cifar, "--ema", "0.9", steps=4)
    assert result.returncode == 0, result.stderr
    for name in ("variants.json", "variants.md"):
        (out / name).write_text("[]")
    pack = tmp_path / "pack"
    variants.pack(argparse.Namespace(out=str(out), pack=str(pack)), ["avg"])
    state = read_checkpoint(str(out / "avg" / "latest.pt"))
    packed = read_checkpoint(str(pack / "avg.pt"))
    assert "optimizer" not in packed and "ema" not in packed and packed["step"] == 4
    averaged = state["ema"]["tensors"]
    assert averaged and all(torch.equal(packed["model"][k], v) for k, v in averaged.items())
    assert any(not torch.equal(state["model"][k], v) for k, v in averaged.items())  # the average differs
    model, _ = load_model(str(pack / "avg.pt"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in packed["model"].items())
    with tarfile.open(pack / "variants.tar.gz") as tar:
        assert {"avg/eval.json", "avg/log.jsonl"} <= set(tar.getnames())
    again = run_train(tmp_path / "next", tiny_cifar, "--init-from", str(pack / "avg.pt"), steps=2)
    assert again.returncode == 0, again.stderr


def test_free_bits_raise_only_the_latents_below_the_floor_and_keep_a_nan_a_nan():
    """The loss with free bits: each latent's KL counts as max(KL, floor); a KL above the floor keeps its
    gradient, one below gets none, the other terms are untouched, and 0 free bits is the negative ELBO."""
    stub = types.SimpleNamespace(x_dims=3 * 32 * 32, latent_names=lambda: ["u", "z1"])  # what it reads
    floor = 64.0 / stub.x_dims                       # 64 bits per image, in bits per dim
    terms = {"x": torch.tensor(2.0), "y1": torch.tensor(0.5),
             "z1": torch.tensor(0.5 * floor), "u": torch.tensor(3.0 * floor)}
    terms = {k: v.clone().requires_grad_(True) for k, v in terms.items()}
    bits = {**terms, "bpd": sum(terms.values())}
    assert train.training_objective(stub, bits, 0.0) is bits["bpd"]
    loss = train.training_objective(stub, bits, 64.0)
    assert loss.item() == pytest.approx(2.0 + 0.5 + floor + 3.0 * floor)
    assert loss.item() >= bits["bpd"].item()
    loss.backward()
    grads = {k: float(v.grad) for k, v in terms.items()}
    assert grads == {"x": pytest.approx(1.0), "y1": pytest.approx(1.0), "z1": 0.0, "u": pytest.approx(1.0)}
    nan = {**terms, "bpd": bits["bpd"] * float("nan")}
    assert not torch.isfinite(train.training_objective(stub, nan, 64.0))


def test_a_run_with_free_bits_logs_its_loss_above_the_bound_and_keeps_the_option(tiny_cifar, tmp_path):
    result = run_train(tmp_path / "run", tiny_cifar, "--free-bits", "200", steps=3)
    assert result.returncode == 0, result.stderr
    steps = [r for r in log_records(tmp_path / "run") if "loss" in r]
    assert len(steps) == 3
    floor = 200.0 / (3 * 32 * 32)
    for r in steps:  # the loss counts every KL term as at least 200 bits per image
        kl = [r[name] for name in ("u", "z1")]
        assert r["loss"] == pytest.approx(r["bpd"] + sum(max(k, floor) - k for k in kl), rel=1e-5)
        assert r["loss"] >= r["bpd"] - 1e-6
    assert read_checkpoint(os.path.join(tmp_path / "run", "latest.pt"))["train"]["free_bits"] == 200.0
    refused = run_train(tmp_path / "run", tiny_cifar, "--free-bits", "10", "--resume", steps=3)
    assert refused.returncode != 0 and "free_bits" in refused.stderr
