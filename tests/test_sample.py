"""``python -m selfvae.sample``: every mode writes valid PNG grids of the documented layout,
superres from low-resolution files, and clean errors for bad inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae import sample
from selfvae.checkpoint import save_checkpoint
from selfvae.config import make_config
from selfvae.model import build_model

TINY = dict(width=8, growth=4, dense_layers=1, blocks=1, components=3, flow_couplings=2, flow_hidden=8,
            latent_channels=4, latent_size=4, image_size=16)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAD, SIZE = 2, 16  # images.make_grid's border; the model's image size
TILE = 128  # every tile is enlarged by pixel repetition to 128 pixels (16 x 8, 8 x 16, 4 x 32)


def grid_size(rows, cols):
    """(width, height) of a make_grid grid of rows x cols enlarged cells."""
    return cols * (TILE + PAD) + PAD, rows * (TILE + PAD) + PAD


def tile(grid, row, col):
    """The enlarged cell (row, col) of a grid image (H, W, 3), counted from the grid's right edge so
    that a label column on the left does not matter."""
    cols = (grid.shape[1] - PAD) // (TILE + PAD)
    left = grid.shape[1] - grid_size(1, cols)[0] + PAD + col * (TILE + PAD)
    top = PAD + row * (TILE + PAD)
    return grid[top:top + TILE, left:left + TILE]


def check_grid(path, rows, cols, labelled):
    """A grid PNG of rows x cols cells; labelled grids carry a label column on the left."""
    width, height = open_png(path)
    expected = grid_size(rows, cols)
    assert height == expected[1], path
    assert (width > expected[0] + 10) if labelled else (width == expected[0]), (path, width, expected)


def write_png(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def make_checkpoint(path, transform, levels, folder=None, steps=10):
    """A tiny model (16x16 images) trained a few steps on smooth random images; with a 'data' entry
    naming ``folder`` (a 'folder' dataset) when given."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 256, (24, 3, 4, 4), generator=g).float()
    images = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    torch.manual_seed(0)
    model = build_model(make_config("small", transform, levels, **TINY))
    model.initialize(images[:8])
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    for step in range(steps):
        loss = model.bits_per_dim(model(images[(step * 8) % 24:(step * 8) % 24 + 8]))["bpd"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {"config": model.config.to_dict(), "model": model.state_dict()}
    if folder is not None:
        state["data"] = {"dataset": "folder", "root": str(folder), "image_size": SIZE, "seed": 0}
    save_checkpoint(state, str(path))
    return str(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_checkpoint(root / "k2.pt", "downscale", 2, folder=root / "images")
    return root


@pytest.fixture(autouse=True)
def cache(root, monkeypatch):
    monkeypatch.setenv("SELFVAE_CACHE", str(root / "cache"))


def run(argv, capsys):
    code = sample.main(argv)
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def open_png(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB"
        return im.size


# mode, extra arguments, {file name: (grid rows, grid columns, rows labelled)}
CASES = [
    ("generate", ["--num", "5", "--nrow", "4"],
     {"generate.png": (2, 4, False), "generate_y1.png": (2, 4, False), "generate_y2.png": (2, 4, False)}),
    # rows: inputs, y_k upscaled, 2 draws
    ("cond-generate", ["--num", "3", "--samples", "2", "--level", "2"],
     {"cond-generate_k2.png": (4, 3, True), "cond-generate_k2_levels.png": (3, 3, True)}),
    ("cond-reconstruct", ["--num", "3"],
     {"cond-reconstruct_k1.png": (3, 3, True), "cond-reconstruct_k1_levels.png": (3, 3, True)}),
    ("reconstruct1", ["--num", "3"], {"reconstruct1.png": (2, 3, True), "reconstruct1_levels.png": (3, 3, True)}),
    ("reconstruct2", ["--num", "3", "--decode", "sample"],
     {"reconstruct2.png": (2, 3, True), "reconstruct2_levels.png": (3, 3, True)}),
    # 2 pairs; each row x_a, 5 steps, x_b
    ("interpolate", ["--num", "4", "--steps", "5"],
     {"interpolate_linear.png": (2, 7, False), "interpolate_spherical.png": (2, 7, False)}),
    # each row: the input and 4 draws
    ("resample-z", ["--num", "3", "--samples", "4"], {"resample-z.png": (3, 5, False)}),
]


@pytest.mark.parametrize("mode,extra,files", CASES, ids=[c[0] for c in CASES])
def test_every_mode_writes_its_grids(root, tmp_path, capsys, mode, extra, files):
    out = tmp_path / "out"
    code, printed, err = run([str(root / "k2.pt"), "--mode", mode, "--out", str(out)] + extra, capsys)
    assert code == 0, err
    assert sorted(printed) == sorted(str(out / name) for name in files)
    for name, (rows, cols, labelled) in files.items():
        check_grid(out / name, rows, cols, labelled)


def test_inputs_from_files_are_fitted_with_a_note(root, tmp_path, capsys):
    a = write_png(tmp_path / "a.png", 40, 30, seed=1)  # non-square: centre crop, resize
    b = write_png(tmp_path / "b.png", 16, 16, seed=2)  # already at the model's size
    out = tmp_path / "out"
    code, printed, err = run([str(root / "k2.pt"), "--mode", "interpolate", "--images", a, b, "--steps", "3",
                              "--out", str(out)], capsys)
    assert code == 0, err
    notes = [line for line in printed if line.startswith("note:")]
    assert len(notes) == 1 and "a.png is 30x40" in notes[0] and "resized to 16x16" in notes[0]
    check_grid(out / "interpolate_linear.png", 1, 5, labelled=False)
    # the end points of each row are the inputs themselves, enlarged by pixel repetition
    grid = np.asarray(Image.open(out / "interpolate_linear.png"))
    scale = TILE // SIZE
    assert np.array_equal(tile(grid, 0, 4), np.asarray(Image.open(b)).repeat(scale, 0).repeat(scale, 1))


@pytest.mark.parametrize("low,k", [(8, 1), (4, 2)])
def test_superres_from_a_low_resolution_file(root, tmp_path, capsys, low, k):
    files = [write_png(tmp_path / f"low{i}.png", low, low, seed=i) for i in range(2)]
    out = tmp_path / "out"
    code, printed, err = run([str(root / "k2.pt"), "--mode", "superres", "--images", *files, "--samples", "3",
                              "--out", str(out)], capsys)
    assert code == 0, err
    stem = f"superres_k{k}"
    check_grid(out / f"{stem}.png", 4, 2, labelled=True)  # the input (upscaled) above 3 draws
    check_grid(out / f"{stem}_levels.png", 3, 2, labelled=True)
    for i in range(2):
        assert open_png(out / f"{stem}_{i:02d}_low{i}.png") == (SIZE, SIZE)
    # the first grid row is the low-resolution input, upscaled by pixel repetition
    grid = np.asarray(Image.open(out / f"{stem}.png"))
    source = np.asarray(Image.open(files[0]))
    assert np.array_equal(tile(grid, 0, 0), source.repeat(TILE // low, 0).repeat(TILE // low, 1))
    assert len(printed) == 4


def test_errors_are_one_line_and_exit_2(root, tmp_path, capsys):
    ckpt = str(root / "k2.pt")
    out = str(tmp_path / "out")

    def error(*argv):
        code, _, err = run([ckpt, "--out", out, *argv], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    assert "super-resolves from 8x8 (k=1), 4x4 (k=2)" in error(
        "--mode", "superres", "--images", write_png(tmp_path / "odd.png", 10, 10))
    assert "already the model's resolution" in error(
        "--mode", "superres", "--images", write_png(tmp_path / "full.png", 16, 16))
    assert "different sizes" in error("--mode", "superres", "--images", write_png(tmp_path / "l8.png", 8, 8),
                                      write_png(tmp_path / "l4.png", 4, 4))
    assert "--level 2 does not fit" in error("--mode", "superres", "--level", "2", "--images", str(tmp_path / "l8.png"))
    assert "pass --images" in error("--mode", "superres")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert "broken.png: cannot decode image" in error("--mode", "reconstruct1", "--images", str(broken))
    assert "missing.png" in error("--mode", "reconstruct1", "--images", str(tmp_path / "missing.png"))
    assert "--level must be in 1..2" in error("--mode", "cond-reconstruct", "--level", "3")
    assert "interpolate needs two images" in error("--mode", "interpolate", "--num", "1")
    assert "does not apply to --mode generate" in error("--mode", "generate", "--images", str(tmp_path / "l8.png"))
    code, _, err = run([str(tmp_path / "none.pt"), "--mode", "generate", "--out", out], capsys)
    assert code == 2 and err == [f"error: checkpoint '{tmp_path / 'none.pt'}' does not exist"]


def test_chains_without_downscale_or_levels(tmp_path, capsys):
    bits = make_checkpoint(tmp_path / "bits.pt", "bits:3", 1, steps=0)
    low = write_png(tmp_path / "low.png", 8, 8)
    code, _, err = run([bits, "--mode", "superres", "--images", low, "--out", str(tmp_path)], capsys)
    assert code == 2 and "starts with 'downscale'" in err[0] and "'bits:3'" in err[0]
    # the 3-bit level is shown stretched to 0..255 next to the input
    code, printed, err = run([bits, "--mode", "cond-reconstruct", "--images", low, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    check_grid(tmp_path / "cond-reconstruct_k1.png", 3, 1, labelled=True)
    vae = make_checkpoint(tmp_path / "vae.pt", "downscale", 0, steps=0)
    code, _, err = run([vae, "--mode", "cond-generate", "--images", low, "--out", str(tmp_path)], capsys)
    assert code == 2 and "plain VAE" in err[0]
    # no 'data' entry in the checkpoint and no --images: a clear error
    code, _, err = run([vae, "--mode", "reconstruct1", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--dataset" in err[0]
    code, printed, err = run([vae, "--mode", "reconstruct2", "--images", low, "--out", str(tmp_path)], capsys)
    assert code == 0
    check_grid(tmp_path / "reconstruct2_levels.png", 1, 1, labelled=True)


def test_command_line_process(root, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "SELFVAE_CACHE": str(root / "cache")}
    proc = subprocess.run([sys.executable, "-m", "selfvae.sample", str(root / "k2.pt"), "--mode", "generate",
                           "--num", "2", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / n) for n in ("generate.png", "generate_y1.png", "generate_y2.png")]
