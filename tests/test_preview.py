"""Tests of ``python -m transforms.preview``: files written, errors as one line, input never overwritten."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
from skimage import data

from conftest import png_claiming
from transforms.preview import MAX_SIZE, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_preview(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "transforms.preview", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_preview_cli_writes_levels_and_grid(tmp_path):
    img = data.astronaut()[100:140, 200:248]  # RGB 40x48
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    r = _run_preview(str(src), "--chain", "sketch,downscale:2,bits:3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    expected = {"level_0.png": (40, 48, 3), "level_1.png": (40, 48), "level_2.png": (20, 24),
                "level_3.png": (10, 12), "level_4.png": (10, 12), "grid.png": (40, 5 * 48 + 4 * 4, 3)}
    for name, shape in expected.items():
        written = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert written is not None and written.shape == shape, name
    level0 = cv2.cvtColor(cv2.imread(str(out / "level_0.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(level0, img)
    level4 = cv2.imread(str(out / "level_4.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(level4)) <= {round(v * 255 / 7) for v in range(8)}  # 0..7 rescaled for display
    grid = cv2.cvtColor(cv2.imread(str(out / "grid.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(grid[:, :48], img) and (grid[:, 48:52] == 255).all()  # input first, white gap
    assert "level 4 (bits:3): 1x10x12, 8 values" in r.stdout and "grid.png" in r.stdout
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]  # atomic writes leave no temp file


def test_preview_cli_errors(tmp_path):
    r = _run_preview(str(tmp_path / "missing.png"), "--chain", "downscale", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "error: " in r.stderr and "cannot read image" in r.stderr and "no such file" in r.stderr
    assert "Traceback" not in r.stderr
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.zeros((20, 20, 3), np.uint8))
    r = _run_preview(str(src), "--chain", "nope", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown transform 'nope'" in r.stderr and "downscale" in r.stderr
    assert "Traceback" not in r.stderr


def test_preview_huge_header_is_one_line_error(tmp_path):
    """A header claiming 50000x50000 pixels: one 'error:' line, exit 2, nothing decoded or written."""
    src = png_claiming(tmp_path / "huge.png", 50000, 50000)
    r = _run_preview(str(src), "--chain", "downscale", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "huge.png" in lines[0]
    assert "2,500,000,000 pixels" in lines[0]
    assert not (tmp_path / "o").exists()


def test_preview_size_limit_up_front(tmp_path, capsys):
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.zeros((20, 20, 3), np.uint8))
    assert main([str(src), "--chain", "downscale", "--out", str(tmp_path / "o"), "--size", "60000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "60000" in err[0] and str(MAX_SIZE) in err[0]
    assert not (tmp_path / "o").exists()
    assert main([str(src), "--chain", "downscale", "--out", str(tmp_path / "o"), "--size", "0"]) == 2


def test_preview_refuses_to_overwrite_its_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("level_0.png", "level_2.png", "grid.png"):
        src = out / name
        cv2.imwrite(str(src), data.astronaut()[:32, :32])
        before = src.read_bytes()
        assert main([str(src), "--chain", "downscale:2", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "overwritten" in err and name in err
        assert src.read_bytes() == before
        os.remove(src)
    # the same file reached through another path (a symlink to the folder) is caught too
    src = out / "level_1.png"
    cv2.imwrite(str(src), data.astronaut()[:32, :32])
    os.symlink(out, tmp_path / "link")
    assert main([str(tmp_path / "link" / "level_1.png"), "--chain", "downscale", "--out", str(out)]) == 2
    # an input that is not among the outputs is fine (level_5 is not written by a 1-step chain)
    os.rename(src, out / "level_5.png")
    assert main([str(out / "level_5.png"), "--chain", "downscale", "--out", str(out)]) == 0


def test_preview_in_process_size_and_bad_chain(tmp_path, capsys):
    src = tmp_path / "gray.png"
    cv2.imwrite(str(src), data.camera()[:90, :120])  # 1-channel input stays 1 channel
    assert main([str(src), "--chain", "downscale:2", "--out", str(tmp_path / "o"), "--size", "32"]) == 0
    assert cv2.imread(str(tmp_path / "o" / "level_0.png"), cv2.IMREAD_UNCHANGED).shape == (32, 32)
    assert cv2.imread(str(tmp_path / "o" / "level_2.png"), cv2.IMREAD_UNCHANGED).shape == (8, 8)
    assert cv2.imread(str(tmp_path / "o" / "grid.png"), cv2.IMREAD_UNCHANGED).shape == (32, 3 * 32 + 2 * 4)
    assert main([str(src), "--chain", "downscale:3", "--out", str(tmp_path / "p"), "--size", "20"]) == 2
    err = capsys.readouterr().err
    assert "step 3 ('downscale')" in err and "cannot halve a 5x5" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main([str(bad), "--chain", "downscale", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.png" in err and "cannot decode image" in err
