"""experiments/benchmark.py's plan and its comparison with the authors' code (experiments/authors_step.py).

The timings themselves are measured by running the script, never in tests; these check which rows a run
measures and how the ratio against the authors' models is formed."""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    key = f"{name}_under_test"
    if key in sys.modules:
        return sys.modules[key]
    sys.path.insert(0, str(ROOT / "experiments"))  # benchmark.py imports experiments/common.py
    spec = importlib.util.spec_from_file_location(key, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


bench = _load("benchmark")


def _args(**kw) -> argparse.Namespace:
    values = dict(only=None, quick=False, baseline=None, variants=None, original=False, authors=None)
    values.update(kw)
    return argparse.Namespace(**values)


def test_authors_rows_are_measured_once_before_the_pair_they_compare_with():
    rows = bench.plan(_args(only="paper:0:32,paper:1:32,small:3:32,paper:3:32", authors="/their/tree",
                            variants="fp32,fp32+compile"))
    kinds = [(r.get("authors"), r["preset"], r["levels"], r.get("compile", False)) for r in rows]
    assert kinds == [("VAE", "paper", 0, False), (None, "paper", 0, False), (None, "paper", 0, True),
                     ("srVAE", "paper", 1, False), (None, "paper", 1, False), (None, "paper", 1, True),
                     (None, "small", 3, False), (None, "small", 3, True),
                     (None, "paper", 3, False), (None, "paper", 3, True)]
    assert all(r["tree"] == "/their/tree" for r in rows if r.get("authors"))
    # without --authors no row of theirs
    assert not any(r.get("authors") for r in bench.plan(_args(only="paper:0:32,paper:1:32")))


def _row(preset, k, images_per_s, **kw):
    row = dict(preset=preset, K=k, size=32, overrides={}, precision="fp32", compiled=False,
               images_per_s=images_per_s, gflop_per_image=1.0, parameters=30e6)
    row.update(kw)
    return row


def test_versus_authors_divides_each_of_ours_by_the_authors_model_of_its_pair():
    rows = [_row("authors", 0, 5.0, label="authors' VAE"), _row("paper", 0, 15.0),
            _row("paper", 0, 20.0, compiled=True), _row("authors", 1, 2.0, label="authors' srVAE"),
            _row("paper", 1, 7.0), _row("small", 1, 100.0), _row("paper", 3, 9.0)]
    lines = bench.versus_authors(rows).splitlines()
    assert len(lines) == 3  # the small preset and K = 3 have no pair
    assert "3.00x the authors' VAE" in lines[0] and "fp32)" in lines[0]
    assert "4.00x the authors' VAE" in lines[1] and "fp32 compiled" in lines[1]
    assert "3.50x the authors' srVAE" in lines[2]


def test_authors_step_refuses_a_folder_that_is_not_their_code(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "authors_step.py"), str(tmp_path),
                           "--model", "VAE"], capture_output=True, text=True)
    assert done.returncode != 0
    assert str(tmp_path) in done.stderr and "ioangatop/srVAE" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["VAE", "srVAE"])
def test_authors_pairs_name_the_models_authors_step_knows(name):
    step = _load("authors_step")
    assert name in step.CONFIGS and name in bench.AUTHORS_PAIRS.values()
    assert bench.AUTHORS_PAIRS[("paper", step.OURS[name], 32)] == name
