"""``python -m selfvae.evaluate``: the JSON figures, the IW bound against the ELBO of the same samples,
the mode table, and clean errors (exit code 2, one ``error:`` line, no traceback)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import evaluate, evaluation
from selfvae.datasets import load_dataset
from selfvae.checkpoint import save_checkpoint
from selfvae.config import make_config
from selfvae.model import build_model, parameter_counts

TINY = dict(width=8, growth=4, dense_layers=1, blocks=1, components=3, flow_couplings=2, flow_hidden=8,
            latent_channels=4, latent_size=4, image_size=16)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_folder(folder, n=40, size=16, seed=0):
    """n smooth random RGB PNGs of size x size (coarse 4x4 colours upscaled, light noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        up = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR)).astype(float)
        image = np.clip(up + rng.normal(0, 4, up.shape), 0, 255).round().astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        images.append(image.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(images))


def make_checkpoint(path, images, folder, transform="downscale", levels=2, steps=25, data=True, **overrides):
    """A tiny model trained for ``steps`` AdaMax steps on ``images``, saved with a 'data' entry naming
    ``folder`` as a 'folder' dataset."""
    torch.manual_seed(0)
    model = build_model(make_config("small", transform, levels, **{**TINY, **overrides}))
    model.initialize(images[:16])
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = images[torch.randperm(len(images), generator=g)[:16]]
        loss = model.bits_per_dim(model(x))["bpd"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {"config": model.config.to_dict(), "model": model.state_dict(), "step": steps}
    if data:
        state["data"] = {"dataset": "folder", "root": str(folder), "image_size": 16, "seed": 0}
    save_checkpoint(state, str(path))
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    images = write_folder(root / "images")
    model = make_checkpoint(root / "model.pt", images, root / "images")
    return root, model, images


@pytest.fixture(autouse=True)
def cache(setup, monkeypatch):
    monkeypatch.setenv("SELFVAE_CACHE", str(setup[0] / "cache"))


FAST = ["--no-progress", "--timing-repeats", "2", "--mode-images", "6", "--batch-size", "8"]


def test_json_figures_and_mode_table(setup, capsys):
    root, model, _ = setup
    out = root / "eval.json"
    args = [str(root / "model.pt"), "--iw-samples", "16", "--iw-chunk", "5", "--json", str(out)]
    assert evaluate.main(args + FAST) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    for key, kind in [("elbo_bpd", float), ("iw_bpd", float), ("iw_elbo_bpd", float), ("iw_samples", int),
                      ("terms_bpd", dict), ("n_images", int), ("modes", list), ("parameters", dict),
                      ("generation_time", dict)]:
        assert isinstance(result[key], kind), key
    assert result["iw_samples"] == 16
    test_split = load_dataset("folder", "test", image_size=16, root=str(root / "images"))
    assert result["n_images"] == len(test_split) and 2 <= len(test_split) <= 12  # ~15 % of the 40 images
    assert list(result["terms_bpd"]) == ["x", "y1", "y2", "z1", "z2", "u"]
    assert sum(result["terms_bpd"].values()) == pytest.approx(result["elbo_bpd"])
    assert result["terms_bpd"]["x"] > 0 and result["terms_bpd"]["y1"] > 0
    # IW bound vs the ELBO of the same 16 samples: logmeanexp >= mean image by image (Jensen),
    # so this holds for every draw, not just on average
    assert result["iw_bpd"] <= result["iw_elbo_bpd"] + 1e-6
    assert result["parameters"] == parameter_counts(model)
    timing = result["generation_time"]
    assert timing["batch"] == 32 and len(timing["times_s"]) == 2 and timing["min_s"] <= timing["median_s"]
    assert timing["device"] == "cpu"
    assert result["fid"] is None

    rows = {(r["mode"], r["level"]): r for r in result["modes"]}
    expected = [("generate", None), ("cond-generate", 1), ("cond-generate", 2), ("cond-reconstruct", 1),
                ("cond-reconstruct", 2), ("reconstruct1", None), ("reconstruct2", None)]
    assert [(r["mode"], r["level"]) for r in result["modes"]] == expected
    assert rows[("generate", None)]["sent_dims"] == 0 and rows[("generate", None)]["psnr"] is None
    assert set(rows[("cond-reconstruct", 2)]["sent"]) == {"y2", "z1", "z2"}
    assert rows[("cond-generate", 1)]["sent"] == {"y1": 3 * 8 * 8}
    assert set(rows[("reconstruct2", None)]["sent"]) == {"u", "z1", "z2"}
    for key, r in rows.items():
        if key[0] != "generate":
            assert r["n_images"] == len(test_split) and r["bits"] > 0 and 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1, key
            assert r["bpd"] == pytest.approx(r["bits"] / (3 * 16 * 16))
            assert r["bits"] == pytest.approx(sum(r["sent_bits"].values()))
    # y_k costs the same in both conditional modes; sending more levels costs more bits
    # (two Monte Carlo estimates of the same quantity, from different posterior samples of z2 on a
    # handful of test images: with the small preset's phases they differed by 2.1 % in one run)
    assert rows[("cond-generate", 1)]["sent_bits"]["y1"] == pytest.approx(
        rows[("cond-reconstruct", 1)]["sent_bits"]["y1"], rel=0.05)
    assert rows[("cond-generate", 1)]["bits"] > rows[("cond-generate", 2)]["bits"]

    mode_lines = printed.split("comparison row:")[0]
    table = [line for line in mode_lines.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(expected)
    for title in ("generation", "conditional generation", "conditional reconstruction", "reconstruction 1",
                  "reconstruction 2"):
        assert any(line.startswith(f"| {title} |") for line in table), title
    assert "IW bound (16 samples" in printed and "ELBO:" in printed


def test_models_line_up_in_one_comparison_table(setup, capsys, tmp_path):
    root, model, _ = setup
    table = tmp_path / "models.md"
    for name in ("first", "second"):
        assert evaluate.main([str(root / "model.pt"), "--iw-samples", "0", "--no-modes", "--table", str(table),
                              "--name", name] + FAST) == 0
    lines = table.read_text().splitlines()
    assert lines[0] == evaluation.comparison_header().splitlines()[0] and len(lines) == 4
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == len(evaluation.COMPARISON_COLUMNS)
    total = parameter_counts(model)["total"]
    assert cells[0] == "first" and cells[1] == "downscale:2" and cells[3] == f"{total / 1e6:.3f}"
    assert cells[5] == "–" and cells[7] == "–" and cells[8] == "–"  # no IW bound, no FID: no efficiency
    assert float(cells[6].split()[0]) > 0 and "(cpu)" in cells[6]
    assert lines[3].startswith("| second |")
    # 1 / (FID x parameters in millions)
    assert evaluation.parameter_efficiency(20.0, 2_000_000) == pytest.approx(1 / 40)
    assert evaluation.parameter_efficiency(None, 2_000_000) is None
    other = tmp_path / "notes.md"
    other.write_text("# my notes\n")
    code = evaluate.main([str(root / "model.pt"), "--table", str(other)] + FAST)
    assert code == 2 and "not a selfvae comparison table" in capsys.readouterr().err
    assert other.read_text() == "# my notes\n"


def test_iw_bound_is_below_the_same_samples_elbo_and_chunk_invariant(setup):
    _, model, images = setup
    a = evaluation.iw_bound(model, images[:12], samples=8, chunk=8, batch_size=5, seed=3, progress=False)
    b = evaluation.iw_bound(model, images[:12], samples=8, chunk=3, batch_size=5, seed=3, progress=False)
    assert a["iw_bpd"] == pytest.approx(b["iw_bpd"], abs=1e-6)
    assert a["iw_bpd"] <= a["iw_elbo_bpd"] + 1e-9
    assert a["iw_bpd"] < a["iw_elbo_bpd"]  # strictly: the weights vary across samples
    with torch.no_grad():
        w = model.log_weights(images[:5], 8, seed=3).double()
    scale = 3 * 16 * 16 * np.log(2)
    first = -float((torch.logsumexp(w, 1) - np.log(8)).sum()) / scale
    assert first < -float(w.mean(1).sum()) / scale


def test_other_data_sources_and_options(setup, capsys, tmp_path):
    root, _, _ = setup
    out = tmp_path / "folder.json"
    other = tmp_path / "other"
    write_folder(other, n=5, size=24, seed=3)  # resized to 16 on loading
    args = [str(root / "model.pt"), "--folder", str(other), "--iw-samples", "0", "--no-modes", "--timing-repeats",
            "0", "--json", str(out), "--no-progress"]
    assert evaluate.main(args) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 5 and result["iw_bpd"] is None and result["modes"] is None
    assert result["generation_time"] is None and result["data"]["folder"] == str(other)
    args = [str(root / "model.pt"), "--dataset", "folder", "--data-root", str(root / "images"), "--split", "train",
            "--max-images", "7", "--iw-samples", "2", "--no-modes", "--timing-repeats", "0", "--json", str(out),
            "--no-progress"]
    assert evaluate.main(args) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 7 and result["iw_n_images"] == 7 and result["data"]["split"] == "train"


def error_of(argv, capsys):
    code = evaluate.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_errors_in_process(setup, capsys, tmp_path):
    root, model, images = setup
    ckpt = str(root / "model.pt")
    code, err = error_of([ckpt, "--folder", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "does not exist" in err[0]
    (tmp_path / "empty").mkdir()
    code, err = error_of([ckpt, "--folder", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no image files" in err[0]
    code, err = error_of([ckpt, "--fid-weights", str(tmp_path / "inception.pth")], capsys)
    assert code == 2 and "not found" in err[0] and "downloaded" in err[0]
    # a checkpoint without a 'data' entry needs --dataset or --folder
    bare = tmp_path / "bare.pt"
    save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(bare))
    code, err = error_of([str(bare)], capsys)
    assert code == 2 and "--dataset" in err[0]
    # data that does not fit the model: a grayscale model given RGB images
    gray = tmp_path / "gray.pt"
    make_checkpoint(gray, images[:, :1], root / "images", steps=0, image_channels=1)
    code, err = error_of([str(gray), "--iw-samples", "0"], capsys)
    assert code == 2 and "model expects (1, 16, 16)" in err[0]


def test_arguments_and_outputs_are_checked_before_any_work(setup, capsys, tmp_path):
    """Before: an unwritable --json was found only after the whole evaluation; --iw-samples -1 was
    accepted."""
    root, _, _ = setup
    ckpt = str(root / "model.pt")
    code, err = error_of([ckpt, "--json", str(tmp_path)], capsys)  # a folder, not a file
    assert code == 2 and len(err) == 1 and "is a folder" in err[0]
    (tmp_path / "file").write_text("x")
    code, err = error_of([ckpt, "--json", str(tmp_path / "file" / "eval.json")], capsys)
    assert code == 2 and "is a file, not a folder" in err[0]
    for bad in (["--iw-samples", "-1"], ["--batch-size", "0"], ["--mode-images", "0"], ["--iw-chunk", "x"]):
        with pytest.raises(SystemExit) as exit_:
            evaluate.main([ckpt] + bad)
        assert exit_.value.code == 2
        assert bad[0] in capsys.readouterr().err


def run_cli(*argv):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "selfvae.evaluate", *argv], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_missing_and_corrupt_checkpoints_exit_2(setup, tmp_path):
    root, _, _ = setup
    proc = run_cli(str(tmp_path / "missing.pt"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: checkpoint '{tmp_path / 'missing.pt'}' does not exist"
    corrupt = tmp_path / "corrupt.pt"
    data = (root / "model.pt").read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    proc = run_cli(str(corrupt))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "corrupt or truncated" in lines[0]


def test_plain_vae_has_no_conditional_modes(setup, tmp_path):
    root, _, images = setup
    vae = tmp_path / "vae.pt"
    make_checkpoint(vae, images, root / "images", levels=0, steps=2)
    out = tmp_path / "vae.json"
    assert evaluate.main([str(vae), "--iw-samples", "4", "--json", str(out)] + FAST) == 0
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["modes"]] == ["generate", "reconstruct1", "reconstruct2"]
    assert list(result["terms_bpd"]) == ["x", "u"] and result["iw_bpd"] <= result["iw_elbo_bpd"] + 1e-6
