"""Conditional flows on the latents' priors (``--set z_flow=N``) against the diagonal Gaussian, on
the same budget.

Trains the same model (same data, seed, steps, batch) with ``z_flow = 0`` and with each
``--flows N``, evaluates each on the test split, and prints and writes ``OUT/z_flow.md``:
test ELBO bpd, IW bound, the bits every latent carries (its KL term, per image and per
dimension of x), parameters, and training time per step. Resumable: a run whose ``eval.json``
exists is reused.

    python experiments/z_flow.py --steps 600 --out runs/z_flow
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict

from common import trained, write_report


def train(out: str, z_flow: int, args: argparse.Namespace) -> Dict:
    cmd = ["--transform", args.transform, "--levels", str(args.levels), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--iw-samples", str(args.iw_samples),
           "--iw-images", str(args.iw_images), "--image-every", str(args.steps), "--eval-every", str(args.steps),
           "--checkpoint-every", str(max(args.steps // 4, 1)), "--set", f"z_flow={z_flow}", "--no-progress"]
    return trained(out, cmd + (["--threads", str(args.threads)] if args.threads else []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/z_flow")
    p.add_argument("--flows", type=int, nargs="+", default=[4], help="z_flow values compared with 0")
    p.add_argument("--transform", default="downscale")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iw-samples", type=int, default=32)
    p.add_argument("--iw-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    rows = {n: train(os.path.join(args.out, f"z_flow{n}"), n, args) for n in [0] + args.flows}
    terms = [f"z{k}" for k in range(1, args.levels + 1)] + ["u"]
    x_dims = 3 * rows[0]["config"]["image_size"] ** 2
    lines = [f"Budget: {args.steps} steps x batch {args.batch_size}, seed {args.seed}, "
             f"{args.transform}:{args.levels}, built-in data, figures on its test split (tiles held out from the "
             f"training photographs). "
             f"IW bound: {args.iw_samples} samples on {args.iw_images} test images. Latent columns: the KL term "
             f"of each latent in bits per image (bits per dimension of x).", "",
             "| z_flow | test ELBO bpd | IW bpd | " + " | ".join(f"{t} bits" for t in terms) +
             " | parameters | images/s (median) | wall time |",
             "|---|---:|---:|" + "---:|" * len(terms) + "---:|---:|---:|"]
    for n, r in rows.items():
        iw = f"{r['iw_bpd']:.3f}" if r.get("iw_bpd") is not None else "–"
        bits = [r["terms_bpd"].get(t) for t in terms]
        cells = " | ".join(f"{b * x_dims:.1f} ({b:.4f})" if b is not None and math.isfinite(b) else "–" for b in bits)
        lines.append(f"| {n} | {r['elbo_bpd']:.3f} | {iw} | {cells} | {r['parameters']['total'] / 1e6:.3f} M | "
                     f"{r['images_per_s']:.1f} | {r['wall_seconds'] / 60:.1f} min |")
    text = "\n".join(lines)
    write_report(args.out, "z_flow", text)


if __name__ == "__main__":
    main()
