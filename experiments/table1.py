"""The structure of the paper's Table 1 on a fixed compute budget.

Trains the VAE (K = 0), selfVAE-downscale (K = 1), selfVAE-sketch (K = 1) and
selfVAE-downscale-3lvl (K = 3) for the same number of steps on each dataset, evaluates
each on its test split (ELBO and IW bound), and writes

* ``OUT/table1.md``: test ELBO bpd, IW bpd, parameters and wall time per model and dataset;
* ``OUT/samples_<dataset>.png``: one row of unconditional samples per model.

    python experiments/table1.py --steps 300 --out runs/table1                # built-in data, 32 and 64
    python experiments/table1.py --cifar10 ~/data/cifar-10-batches-py --imagenette ~/data/imagenette \\
        --celeba ~/data/celeba --steps 20000 --preset paper --out runs/table1-paper

A run whose ``eval.json`` exists is reused, so an interrupted table continues where it stopped.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List, Tuple

import torch

from selfvae import modes
from selfvae.checkpoint import load_model
from selfvae.images import save_rows

from common import trained, write_report

MODELS: List[Tuple[str, str, int]] = [
    ("VAE", "downscale", 0),
    ("selfVAE-downscale", "downscale", 1),
    ("selfVAE-sketch", "sketch", 1),
    ("selfVAE-downscale-3lvl", "downscale", 3),
]


def run_one(dataset: str, root: str | None, size: int, transform: str, levels: int, out: str,
            args: argparse.Namespace) -> Dict:
    """Train one model (unless its eval.json exists) and return its eval.json plus wall time."""
    cmd = ["--dataset", dataset, "--image-size", str(size), "--transform", transform, "--levels", str(levels),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--iw-samples", str(args.iw_samples), "--image-every", str(args.steps),
           "--eval-every", str(max(args.steps // 4, 1)), "--checkpoint-every", str(max(args.steps // 4, 1))]
    cmd += (["--data-root", root] if root else []) + (["--iw-images", str(args.iw_images)] if args.iw_images else [])
    return trained(out, cmd + (["--preset", args.preset] if args.preset else []))


@torch.no_grad()
def sample_rows(outs: List[str], num: int, seed: int) -> List[torch.Tensor]:
    rows = []
    for out in outs:
        model, _ = load_model(os.path.join(out, "latest.pt"))
        model.eval()
        g = torch.Generator().manual_seed(seed)
        rows.append(modes.generate(model, num, generator=g).images)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/table1")
    p.add_argument("--steps", type=int, default=300, help="training steps of every model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="sizes of the built-in data")
    p.add_argument("--no-default", action="store_true", help="skip the built-in data")
    p.add_argument("--cifar10", help="folder with the CIFAR-10 python batches (32x32)")
    p.add_argument("--imagenette", help="Imagenette image folder (64x64)")
    p.add_argument("--celeba", help="CelebA image folder (64x64, the paper's crop)")
    p.add_argument("--preset", default=None, help="model preset (default: small on CPU, paper on CUDA)")
    p.add_argument("--iw-samples", type=int, default=32)
    p.add_argument("--iw-images", type=int, default=128, help="test images for the IW bound (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    datasets: List[Tuple[str, str, str | None, int]] = []
    if not args.no_default:
        datasets += [(f"default{s}", "default", None, s) for s in args.sizes]
    for name, size in (("cifar10", 32), ("imagenette", 64), ("celeba", 64)):
        if getattr(args, name):
            datasets.append((f"{name}{size}", name, getattr(args, name), size))

    rows = []
    for label, dataset, root, size in datasets:
        outs = []
        for model_name, transform, levels in MODELS:
            out = os.path.join(args.out, label, model_name)
            result = run_one(dataset, root, size, transform, levels, out, args)
            rows.append((label, model_name, result))
            outs.append(out)
        path = save_rows(sample_rows(outs, 8, args.seed), os.path.join(args.out, f"samples_{label}.png"),
                         labels=[m for m, _, _ in MODELS])
        print(f"wrote {path} (rows: {', '.join(m for m, _, _ in MODELS)})", flush=True)

    lines = [f"Budget: {args.steps} steps x batch {args.batch_size} per model, seed {args.seed}; "
             f"IW bound with {args.iw_samples} samples on {args.iw_images or 'all'} test images spread over the split.", "",
             "| data | model | K | test ELBO bpd (all) | ELBO of the IW samples | IW bpd (IW subset) | parameters "
             "| wall time |",
             "|---|---|---|---|---|---|---|---|"]
    levels = {name: k for name, _, k in MODELS}
    for label, model_name, r in rows:
        iw = f"{r['iw_bpd']:.3f}" if r.get("iw_bpd") is not None else "–"
        sub = f"{r['iw_elbo_bpd']:.3f}" if r.get("iw_elbo_bpd") is not None else "–"
        lines.append(f"| {label} | {model_name} | {levels[model_name]} | {r['elbo_bpd']:.3f} | {sub} | {iw} | "
                     f"{r['parameters']['total'] / 1e6:.2f} M | {r['wall_seconds'] / 60:.1f} min |")
    text = "\n".join(lines)
    write_report(args.out, "table1", text)


if __name__ == "__main__":
    main()
