"""The README's main job, measured: wall time, training images/s, final test ELBO and IW bpd,
side by side with the lossless bits per dimension of PNG (and WebP lossless) on the very
same test patches.

    python experiments/default_run.py --out runs/default          # trains (about 15 min on 2 CPU cores)
    python experiments/default_run.py --out runs/default --no-train  # only re-reads an existing run

Extra arguments after ``--`` are passed to ``python -m selfvae.train``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np

from selfvae.datasets import load_dataset


def codec_bpd(images: np.ndarray, ext: str, params: list) -> float:
    """Mean bits per dimension of coding each uint8 ``(C, H, W)`` image on its own as a file
    (headers included: that is what storing or sending one patch costs)."""
    total = 0
    for image in images:
        ok, data = cv2.imencode(ext, cv2.cvtColor(np.transpose(image, (1, 2, 0)), cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {ext}")
        decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        if not np.array_equal(np.transpose(decoded, (2, 0, 1)), image):
            raise RuntimeError(f"{ext} round trip is not lossless")
        total += len(data) * 8
    return total / images.size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/default")
    p.add_argument("--no-train", action="store_true", help="do not train; report the run in --out")
    p.add_argument("train_args", nargs="*", help="extra arguments for selfvae.train (after --)")
    args = p.parse_args()

    wall = None
    if not args.no_train:
        cmd = [sys.executable, "-m", "selfvae.train", "--transform", "downscale", "--levels", "3",
               "--out", args.out] + args.train_args
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
    with open(os.path.join(args.out, "eval.json")) as f:
        result = json.load(f)
    with open(os.path.join(args.out, "log.jsonl")) as f:
        rates = [r["images_per_s"] for r in map(json.loads, f) if "images_per_s" in r]

    data = result["data"]
    test = load_dataset(data["dataset"], "test", image_size=data["image_size"], root=data["root"], seed=data["seed"],
                        test_fraction=data["test_fraction"], validation_fraction=data["validation_fraction"])
    images = test.images.numpy()
    png = codec_bpd(images, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 9])
    webp = codec_bpd(images, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])  # quality > 100 = lossless

    print()
    print(f"| run | {args.out} ({result['config']['transform']}, {result['parameters']['total'] / 1e6:.2f} M "
          f"parameters, {result['step']} steps, {result['device']}, {result['train']['precision']}) |")
    print("|---|---|")
    if wall is not None:
        print(f"| wall time (train + evaluation) | {wall / 60:.1f} min |")
    if rates:
        print(f"| training images/s (median of logged intervals) | {float(np.median(rates)):.1f} |")
    print(f"| test images | {result['n_images']} |")
    print(f"| ELBO (test) | {result['elbo_bpd']:.3f} bpd |")
    if result.get("iw_bpd") is not None:
        print(f"| IW bound, {result['iw_samples']} samples ({result['iw_n_images']} test images) | "
              f"{result['iw_bpd']:.3f} bpd (ELBO of the same samples {result['iw_elbo_bpd']:.3f}) |")
    print(f"| PNG, lossless, one file per patch (same test patches) | {png:.3f} bpd |")
    print(f"| WebP, lossless, one file per patch (same test patches) | {webp:.3f} bpd |")
    print("| per-term ELBO bpd | " + ", ".join(f"{k} {v:.3f}" for k, v in result["terms_bpd"].items()) + " |")


if __name__ == "__main__":
    main()
