"""Which changes pay for the codec model at this scale: short runs on the photograph corpus, each
changing one thing against the recipe of ``experiments/train_codec_model.py``, all evaluated on
the corpus's held-out photographs (ELBO bpd on every held-out patch; no image of them is trained on).

    python experiments/codec_ablation.py --steps 600 --threads 1 --out runs/codec_ablation

Every run uses the same seed, data order rule, batch and number of steps; the table gives the
held-out bpd, the bits each latent carries, parameters, and the training cost (median
images/s and wall time of the run, training plus the final evaluation). Resumable: a finished
run (its ``eval.json``) is reused; ``--only NAME`` runs a subset.
"""
from __future__ import annotations

import argparse
import math
import os

from common import trained, write_report

#: name -> (what changes, extra arguments of selfvae.train); "recipe" is the baseline.
VARIANTS = {
    "recipe": ("the recipe: small preset, subsample:3, phases, flips", []),
    "downscale": ("the paper's bicubic pyramid (downscale:3): every level's four phases coded",
                  ["--transform", "downscale"]),
    "affine": ("augmentation: flips + small affine warps", ["--augment", "affine"]),
    "levels4": ("four levels (32 -> 16 -> 8 -> 4 -> 2)", ["--levels", "4"]),
    "width48": ("width 48, growth 24 (wider nets)", ["--set", "width=48", "--set", "growth=24"]),
    "components5": ("5 logistic mixture components instead of 10", ["--set", "components=5"]),
    "batch64": ("batch 64 (twice the images per step)", ["--batch-size", "64"]),
    "latent8": ("8 latent channels instead of 16", ["--set", "latent_channels=8"]),
    "ema": ("moving average of the weights, decay 0.99", ["--ema", "0.99"]),
    "narrow": ("networks narrowed above 8x8 (width and growth halve per doubling)", ["--set", "narrow_above=8"]),
    "nophases": ("pixels independent given the level above (phases=1, the paper)", ["--set", "phases=1"]),
}


def run(name: str, args: argparse.Namespace) -> dict:
    base = ["--dataset", "photos", "--data-root", args.corpus, "--transform", "subsample", "--levels", "3",
            "--preset", "small", "--set", "narrow_above=0", "--augment", "flip", "--steps", str(args.steps),
            "--seed", str(args.seed),
            "--eval-every", str(args.steps), "--image-every", str(args.steps),
            "--checkpoint-every", str(max(args.steps // 4, 1)), "--iw-samples", "0", "--no-progress"]
    extra = VARIANTS[name][1]
    for option in extra[::2]:  # a variant's option replaces the baseline's
        if option != "--set" and option in base:
            j = base.index(option)
            del base[j:j + 2]
    threads = ["--threads", str(args.threads)] if args.threads else []
    return trained(os.path.join(args.out, name), base + extra + threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/codec_ablation")
    p.add_argument("--corpus", default="runs/corpus")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None)
    args = p.parse_args()

    names = args.only or list(VARIANTS)
    rows = {}
    for name in names:
        rows[name] = run(name, args)
    first = next(iter(rows.values()))
    x_dims = 3 * first["config"]["image_size"] ** 2
    base = rows.get("recipe")
    lines = [f"{args.steps} steps, seed {args.seed}, corpus `{args.corpus}`; held-out: every 32x32 tile of the "
             f"corpus's held-out photographs ({first['n_images']} patches), ELBO. Latent columns: bits per image "
             "carried by each latent (its KL term). Cost: median training images/s and wall time "
             "(training + final evaluation), 2-core CPU.", "",
             "| change | held-out ELBO bpd | vs recipe | x | y1 | y2 | y3 | z bits (z1/z2/z3) | u bits | parameters | "
             "images/s | wall |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        t = r["terms_bpd"]
        levels = len([k for k in t if k.startswith("z")])
        zs = "/".join(f"{t[f'z{k}'] * x_dims:.1f}" for k in range(1, levels + 1))
        delta = f"{r['elbo_bpd'] - base['elbo_bpd']:+.3f}" if base else "–"
        ys = [f"{t[k]:.3f}" if k in t else "–" for k in ("x", "y1", "y2", "y3")]
        lines.append(f"| {VARIANTS[name][0]} | {r['elbo_bpd']:.3f} | {delta} | {' | '.join(ys)} | {zs} | "
                     f"{t.get('u', math.nan) * x_dims:.1f} | {r['parameters']['total'] / 1e6:.2f} M | "
                     f"{r['images_per_s']:.1f} | {r['wall_seconds'] / 60:.1f} min |")
    write_report(args.out, "codec_ablation", "\n".join(lines), rows)


if __name__ == "__main__":
    main()
