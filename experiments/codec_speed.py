"""Codec speed, side by side with an older checkout: encode and decode time of whole photographs
with the shipped model, and whether both trees write the same bytes.

    git worktree add /tmp/base <commit>
    python experiments/codec_speed.py --baseline /tmp/base --corpus runs/corpus --photos 2 --repeats 3

Each measurement runs in a fresh subprocess (``--threads`` torch threads), the trees taking turns
(baseline, current, baseline, current, ...) so that a drift of the machine's speed falls on both;
the report gives the median of ``--repeats`` per tree and photograph, their ratio, and whether the
trees' files have the same SHA-256 (each tree codes with its own shipped model: equal where the
change leaves both the format and the weights alone). Photographs: the first
``--photos`` of the corpus's held-out set, or the package photograph ``grace_hopper`` without
``--corpus``; ``--crop N`` codes their top-left N x N pixels only. Nothing else should run on the
machine meanwhile.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List

from benchmark import baseline_commit
from common import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: What one subprocess runs: code one photograph with the tree on its path, time it, print JSON.
CHILD = r"""
import hashlib, json, sys, time
import numpy as np, torch
from selfvae import codec, shipped
from transforms.imageio import read_image
path, crop, threads, rule = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
model, _ = shipped.load(None)
image = read_image(path, channels=None)
if crop:
    image = np.ascontiguousarray(image[:, :crop, :crop])
kwargs = {} if rule == "default" else {"window_rule": rule}
start = time.perf_counter()
data = codec.encode(model, [image], **kwargs)
encode_s = time.perf_counter() - start
start = time.perf_counter()
back = codec.decode(model, data).images[0]
decode_s = time.perf_counter() - start
if not np.array_equal(back, image):
    raise SystemExit("round trip is not lossless")
print(json.dumps({"encode_s": encode_s, "decode_s": decode_s, "bpd": 8 * len(data) / image.size,
                  "sha256": hashlib.sha256(data).hexdigest(), "shape": list(image.shape)}))
"""


def measure(tree: str, path: str, args) -> Dict:
    env = {**os.environ, "PYTHONPATH": tree + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run([sys.executable, "-c", CHILD, path, str(args.crop), str(args.threads), args.rule],
                          capture_output=True, text=True, cwd=tree, env=env)
    if done.returncode:
        raise SystemExit(f"{tree}: coding {path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def photographs(args) -> Dict[str, str]:
    if args.corpus:
        folder = os.path.join(args.corpus, "heldout")
        names = sorted(os.listdir(folder))[:args.photos]
        return {os.path.splitext(n)[0]: os.path.abspath(os.path.join(folder, n)) for n in names}
    from codec_benchmark import HELD_OUT, package_file  # the package photographs the benchmark uses
    return {"grace_hopper": package_file(*HELD_OUT["grace_hopper"])}


def report(rows: List[Dict], args, base: str) -> str:
    lines = [f"Codec speed, {args.threads} threads, window rule `{args.rule}`, median of {args.repeats} "
             f"(baseline: {base})", "",
             "| photo | size | bpd (current / baseline) | same bytes | encode s (baseline) | encode s (current) | "
             "ratio | decode s (baseline) | decode s (current) | ratio |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, c = r["baseline"], r["current"]
        lines.append(f"| {r['photo']} | {'x'.join(map(str, c['shape']))} | {c['bpd']:.4f} / {b['bpd']:.4f} | "
                     f"{'yes' if c['sha256'] == b['sha256'] else 'no'} | {b['encode_s']:.2f} | {c['encode_s']:.2f} | "
                     f"{b['encode_s'] / c['encode_s']:.2f}x | {b['decode_s']:.2f} | {c['decode_s']:.2f} | "
                     f"{b['decode_s'] / c['decode_s']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="a checkout of the older code (git worktree)")
    p.add_argument("--corpus", default=None, help="the photograph corpus (its held-out photographs)")
    p.add_argument("--photos", type=int, default=1, help="how many held-out photographs (sorted by name)")
    p.add_argument("--crop", type=int, default=0, help="code the top-left N x N pixels only (0: whole)")
    p.add_argument("--rule", default="default", choices=["default", "mixture", "owner"], help="window rule")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/codec_speed")
    args = p.parse_args()
    if not os.path.isdir(os.path.join(args.baseline, "selfvae")):
        raise SystemExit(f"--baseline {args.baseline} is not a checkout of this repository")
    base = baseline_commit(args.baseline)
    rows = []
    for name, path in photographs(args).items():
        runs: Dict[str, List[Dict]] = {"baseline": [], "current": []}
        for i in range(args.repeats):
            for tree, key in ((args.baseline, "baseline"), (ROOT, "current")):
                runs[key].append(measure(tree, path, args))
                print(f"{name} {key} #{i + 1}: encode {runs[key][-1]['encode_s']:.2f} s, decode "
                      f"{runs[key][-1]['decode_s']:.2f} s", flush=True)
        row = {"photo": name}
        for key, measured in runs.items():
            row[key] = {**measured[0], "encode_s": statistics.median(m["encode_s"] for m in measured),
                        "decode_s": statistics.median(m["decode_s"] for m in measured),
                        "all": [{k: m[k] for k in ("encode_s", "decode_s")} for m in measured]}
        rows.append(row)
    write_report(args.out, "codec_speed", report(rows, args, base), {"rows": rows, "baseline": base,
                                                                     "threads": args.threads, "rule": args.rule})


if __name__ == "__main__":
    sys.exit(main())
