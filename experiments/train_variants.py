"""Train several model variants side by side on one GPU within a wall-clock budget, for the table
of what pays (issue 10): each variant's held-out bpd against its parameters and training cost.

    python experiments/train_variants.py --corpus runs/corpus --out runs/variants --budget 400 \
        --variants w32,w64,w48d2,w64ema,w32cont

The small models are bound by kernel-launch overhead, not by the GPU's arithmetic, so several
of them run at once on one device nearly as fast as each alone. All variants start together:

1. a probe: every variant runs ``--probe-steps`` steps at once, and its training images/s (the
   median of its log lines, with the others running beside it) is read from its ``log.jsonl``;
2. the runs: every variant trains for as many steps as fit in ``--budget`` seconds at that rate,
   all at once again (so the contention is the probe's), with the schedule of ``selfvae.train``
   ending at its own last step; each is evaluated there on the test split (the corpus's held-out
   photographs: ELBO on all their tiles, the IW bound on ``--iw-images``).

``OUT/variants.json`` and ``OUT/variants.md`` list, per variant: parameters, batch, steps, training
images/s, held-out ELBO and IW bpd with the terms (the json also the best validation bpd). ``--pack DIR``
writes a weights-only checkpoint of each variant (``DIR/<name>.pt``: config, model weights,
the weight average where there is one, steps, training config; loadable by ``--init-from``
and by every command that takes ``--checkpoint``) and the logs as ``DIR/variants.tar.gz``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from selfvae.config import make_train_config  # noqa: E402
from selfvae.checkpoint import evaluated_weights, read_checkpoint, save_checkpoint  # noqa: E402

#: The shipped model's architecture (experiments/train_codec_model.py), then the variants' changes.
MODEL = ["--transform", "subsample", "--levels", "3", "--preset", "small", "--set", "narrow_above=0",
         "--set", "phases=4"]
WIDE = ["--set", "width=64", "--set", "growth=32"]
VARIANTS: Dict[str, List[str]] = {
    "w32": MODEL + ["--batch-size", "64"],
    "w48": MODEL + ["--set", "width=48", "--set", "growth=24", "--batch-size", "64"],
    "w64": MODEL + WIDE + ["--batch-size", "64"],
    "w48d2": MODEL + ["--set", "width=48", "--set", "growth=24", "--set", "dense_layers=2", "--batch-size", "64"],
    "w64ema": MODEL + WIDE + ["--batch-size", "64", "--ema", "0.999"],
    "w64c20": MODEL + WIDE + ["--set", "components=20", "--batch-size", "64"],
    "w64b128": MODEL + WIDE + ["--batch-size", "128"],
    # a third stage of the shipped model: its weights, a fresh schedule at a lower peak
    "w32cont": ["--init-from", "checkpoints/codec_photo/latest.pt", "--lr", "1e-3", "--batch-size", "32"],
}
COMMON = ["--dataset", "photos", "--augment", "flip", "--seed", "0", "--no-progress", "--iw-images", "512"]


def launch(name: str, options: List[str], folder: str, extra: List[str], args: argparse.Namespace):
    os.makedirs(folder, exist_ok=True)
    cmd = [sys.executable, "-m", "selfvae.train", "--data-root", args.corpus, "--out", folder, "--device",
           args.device, "--threads", str(args.threads)] + COMMON + options + extra
    log = open(os.path.join(folder, "stdout.txt"), "w")
    print(f"[{name}]", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: Dict[str, subprocess.Popen], deadline: float) -> Dict[str, int]:
    codes = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = proc.wait()
            print(f"[{name}] killed at the deadline", flush=True)
    return codes


def read_log(folder: str) -> List[dict]:
    path = os.path.join(folder, "log.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tail(folder: str, n: int = 15) -> str:
    with open(os.path.join(folder, "stdout.txt"), encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-n:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="runs/corpus", help="the photograph corpus (experiments/build_corpus.py)")
    p.add_argument("--out", default="runs/variants", help="one folder per variant, the probe's in OUT/probe")
    p.add_argument("--variants", default="w32,w64,w48d2,w64ema,w32cont",
                   help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--budget", type=float, default=400.0, help="seconds of training per variant (all at once)")
    p.add_argument("--probe-steps", type=int, default=300)
    p.add_argument("--device", default="cuda", help="passed to every run (cuda: bf16 autocast, selfvae.train's default)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    p.add_argument("--evals", type=int, default=4, help="validations per run")
    p.add_argument("--deadline", type=float, default=None, help="seconds from now after which runs are killed")
    p.add_argument("--pack", default=None, help="folder for weights-only checkpoints and a tarball of the logs")
    args = p.parse_args()
    start = time.time()
    deadline = start + (args.deadline or 10 * args.budget)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")

    # 1. the probe, all at once
    big = "1000000"
    probe = {n: launch(n, VARIANTS[n], os.path.join(args.out, "probe", n),
                       ["--steps", str(args.probe_steps), "--eval-every", big, "--checkpoint-every", big,
                        "--image-every", big, "--iw-samples", "0", "--log-every", str(max(1, args.probe_steps // 6)),
                        "--warmup", str(min(50, args.probe_steps))], args)
             for n in names}
    codes = wait_all(probe, deadline)
    rates = {}
    for n in names:
        lines = read_log(os.path.join(args.out, "probe", n))[1:]  # the first line includes start-up
        if codes[n] or not lines:
            print(tail(os.path.join(args.out, "probe", n)))
            raise SystemExit(f"[{n}] probe failed (exit {codes[n]})")
        rates[n] = statistics.median(line["images_per_s"] for line in lines if "images_per_s" in line)
    print("probe images/s (all at once):", {n: round(r) for n, r in rates.items()}, f"{time.time() - start:.0f} s",
          flush=True)

    # 2. the runs, all at once, each for the steps its rate fits in the budget
    steps = {n: max(100, int(rates[n] * args.budget / batch_of_variant(n)) // 100 * 100) for n in names}
    runs = {}
    for n in names:
        every = max(100, steps[n] // args.evals)
        runs[n] = launch(n, VARIANTS[n], os.path.join(args.out, n),
                         ["--steps", str(steps[n]), "--eval-every", str(every), "--checkpoint-every", str(every),
                          "--image-every", str(steps[n]), "--log-every", "100"], args)
    run_start = time.time()
    codes = wait_all(runs, deadline)
    print(f"runs finished in {time.time() - run_start:.0f} s", flush=True)

    rows = []
    for n in names:
        folder = os.path.join(args.out, n)
        row = {"variant": n, "options": VARIANTS[n], "steps": steps[n], "batch": batch_of_variant(n),
               "probe_images_per_s": round(rates[n], 1), "exit": codes[n]}
        if os.path.isfile(os.path.join(folder, "eval.json")):
            with open(os.path.join(folder, "eval.json"), encoding="utf-8") as f:
                result = json.load(f)
            row.update({k: result.get(k) for k in ("elbo_bpd", "iw_bpd", "terms_bpd", "step", "parameters",
                                                    "best_validation_bpd", "skipped_steps")})
        log = read_log(folder)
        rates_logged = [line["images_per_s"] for line in log[1:] if "images_per_s" in line]
        if rates_logged:
            row["train_images_per_s"] = round(statistics.median(rates_logged), 1)
        if codes[n]:
            print(tail(folder))
        rows.append(row)
    with open(os.path.join(args.out, "variants.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    table = markdown(rows)
    with open(os.path.join(args.out, "variants.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table), flush=True)
    if args.pack:
        pack(args, names)


def markdown(rows: List[dict]) -> List[str]:
    """The lines of ``variants.md``: one row per variant."""
    table = ["| variant | params | batch | steps | images/s | held-out ELBO | IW | x | y1 | y2 | y3 | KL |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r.get("terms_bpd") or {}
        kl = sum(v for k, v in t.items() if k.startswith("z") or k == "u")
        params = (r.get("parameters") or {}).get("total")  # eval.json: counts per component and total
        cells = [r["variant"], f"{params / 1e6:.2f} M" if params else "", r["batch"], r.get("step", ""),
                 r.get("train_images_per_s", ""), _f(r.get("elbo_bpd")), _f(r.get("iw_bpd")),
                 *(_f(t.get(k)) for k in ("x", "y1", "y2", "y3")), _f(kl)]
        table.append("| " + " | ".join(map(str, cells)) + " |")
    return table


def batch_of_variant(name: str) -> int:
    """The batch a variant trains with: its ``--batch-size``, else the training default."""
    options = VARIANTS[name]
    return int(options[options.index("--batch-size") + 1]) if "--batch-size" in options else \
        make_train_config("small").batch_size


def _f(v) -> str:
    return "" if v is None else f"{v:.3f}"


def pack(args: argparse.Namespace, names: List[str]) -> None:
    os.makedirs(args.pack, exist_ok=True)
    for n in names:
        path = os.path.join(args.out, n, "latest.pt")
        if not os.path.isfile(path):
            continue
        state = read_checkpoint(path)
        save_checkpoint({"config": state["config"], "model": evaluated_weights(state), "step": state["step"],
                         "train": state.get("train"), "evaluate_on": state.get("evaluate_on", "default")},
                        os.path.join(args.pack, f"{n}.pt"))
    with tarfile.open(os.path.join(args.pack, "variants.tar.gz"), "w:gz") as tar:
        for name in ("variants.json", "variants.md"):
            tar.add(os.path.join(args.out, name), arcname=name)
        for n in names:
            for leaf in ("eval.json", "log.jsonl", "stdout.txt", "samples_final.png", "reconstructions_final.png"):
                path = os.path.join(args.out, n, leaf)
                if os.path.isfile(path):
                    tar.add(path, arcname=f"{n}/{leaf}")
    print("packed", sorted(os.listdir(args.pack)), flush=True)


if __name__ == "__main__":
    main()
