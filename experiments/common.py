"""What the experiment scripts share: training runs that an interrupted experiment reuses
(:func:`trained`), and writing a report as markdown and JSON (:func:`write_report`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List


def trained(out: str, train_args: List[str]) -> Dict:
    """The ``eval.json`` of the run in ``out`` plus ``wall_seconds`` (and ``images_per_s``, the median
    of its logged training speed); trains it first with ``train_args`` (``--out`` added) unless its
    ``eval.json`` exists. A folder holding an unfinished run is an error, not silently redone."""
    report = os.path.join(out, "eval.json")
    if not os.path.exists(report):
        if os.path.exists(out):
            raise SystemExit(f"{out} holds an unfinished run; remove it or finish it with selfvae.train --resume")
        cmd = [sys.executable, "-m", "selfvae.train", *train_args, "--out", out]
        print("\n$ " + " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        with open(os.path.join(out, "wall_time.json"), "w") as f:
            json.dump({"seconds": time.perf_counter() - start}, f)
    with open(report) as f:
        result = json.load(f)
    wall = os.path.join(out, "wall_time.json")
    result["wall_seconds"] = json.load(open(wall))["seconds"] if os.path.exists(wall) else float("nan")
    with open(os.path.join(out, "log.jsonl")) as f:
        speeds = sorted(s for s in (json.loads(line).get("images_per_s") for line in f if line.strip()) if s)
    result["images_per_s"] = speeds[len(speeds) // 2] if speeds else float("nan")
    return result


def write_report(out: str, name: str, text: str, figures=None) -> None:
    """``OUT/NAME.md`` with ``text`` and, given ``figures``, ``OUT/NAME.json`` (values JSON does not know
    written as strings); then prints the text."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    if figures is not None:
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(figures, f, indent=2, default=str)
    print("\n" + text)
