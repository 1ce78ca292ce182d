"""Inpainting with the hierarchy against OpenCV's classical inpainting, on held-out images.

    python experiments/inpaint_benchmark.py --model runs/default/latest.pt --images 64 --out runs/inpaint_benchmark

Images: ``--images`` images spread evenly over the checkpoint's test split (or every image under
``--folder``, fitted to the model's size). Masks: the fixed set of
:func:`selfvae.inpaint.standard_masks` (the centred square of half the side, four thick random
strokes, the right half), the same for every image. Fills:

* ``selfVAE (mode)``: :func:`selfvae.inpaint.inpaint`, ``--iterations`` pseudo-Gibbs sweeps from a
  Telea fill, the last one decoded by posterior means and most likely values;
* ``selfVAE (sample)``: the same chain (same seed, so the same first sweeps), its last draw;
* ``selfVAE (mode, 1 sweep)``: a single mode-decoded descent from the Telea fill (what the chain
  adds over it);
* ``selfVAE (mode, mean init)``: as the first, started from the mean colour instead of Telea
  (how much of the result the initial fill decides);
* ``selfVAE (mode, from u)``: as the first, the top level redrawn from u in every sweep (the
  full chain; see :mod:`selfvae.inpaint` on when it pays);
* ``Telea r=3``, ``Navier-Stokes r=3``: ``cv2.inpaint``;
* ``mean colour``: each image's mean known colour (the trivial fill).

Figures, each per image then averaged over the images (± the standard deviation over images in
the JSON): ``PSNR hole``, the PSNR of the filled pixels only; ``SSIM hole``, the SSIM map
averaged over the window centres inside the hole (the 11x11 windows also see the known pixels
around it, so this scores the fill and how it joins its surroundings; :func:`selfvae.metrics.ssim`
with ``mask``); ``SSIM image``, SSIM of the whole image (the known pixels are exact for every
method, so it differs from 1 only through the hole). Writes ``OUT/inpaint_benchmark.md`` (the
table, also printed), ``OUT/inpaint_benchmark.json`` and ``OUT/inpaint_<mask>.png`` (rows: input
with the hole grey, mask, each fill, original) for the first ``--grid`` images.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict

import numpy as np
import torch
from tqdm import tqdm

from selfvae import cli
from selfvae.checkpoint import load_model
from selfvae.images import save_rows
from selfvae.inpaint import (DEFAULT_ITERATIONS, classical_inpaint, inpaint, mask_image, mean_fill, show_hole,
                             standard_masks)
from selfvae.metrics import psnr, ssim

from common import write_report

MASK_TITLES = {"centre": "centre square", "strokes": "random strokes", "half": "right half"}


def fills(model, args: argparse.Namespace) -> Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """name -> fill(x, missing): uint8 ``(B, C, H, W)`` and bool ``(B, 1, H, W)`` -> uint8 ``(B, C, H, W)``."""
    def ours(decode: str = "mode", init: str = "telea", iterations: int = args.iterations, from_u: bool = False):
        def fill(x, missing):
            g = torch.Generator().manual_seed(args.seed)
            return inpaint(model, x, missing, iterations=iterations, decode=decode, init=init, from_u=from_u,
                           generator=g).images
        return fill

    return {"selfVAE (mode)": ours(), "selfVAE (sample)": ours(decode="sample"),
            "selfVAE (mode, 1 sweep)": ours(iterations=1), "selfVAE (mode, mean init)": ours(init="mean"),
            "selfVAE (mode, from u)": ours(from_u=True),
            "Telea r=3": lambda x, m: classical_inpaint(x, m, "telea", 3),
            "Navier-Stokes r=3": lambda x, m: classical_inpaint(x, m, "ns", 3),
            "mean colour": mean_fill}


def measure(x: torch.Tensor, missing: torch.Tensor, methods: Dict, batch: int, progress: tqdm) -> Dict[str, Dict]:
    """Every method on x (in chunks of ``batch``): its fills and per-image figures."""
    rows = {}
    for name, fill in methods.items():
        outs, seconds = [], 0.0
        for start in range(0, len(x), batch):
            chunk, hole = x[start:start + batch], missing[start:start + batch]
            began = time.perf_counter()
            outs.append(fill(chunk, hole))
            seconds += time.perf_counter() - began
            progress.update(len(chunk))
        out = torch.cat(outs)
        assert torch.equal(out[~missing.expand_as(x)], x[~missing.expand_as(x)]), f"{name} changed known pixels"
        rows[name] = {"images": out, "psnr_hole": psnr(out, x, mask=missing), "ssim_hole": ssim(out, x, mask=missing),
                      "ssim_image": ssim(out, x), "ms_per_image": 1000 * seconds / len(x)}
    return rows


def summary(rows: Dict[str, Dict]) -> Dict[str, Dict]:
    out = {}
    for name, row in rows.items():
        out[name] = {"ms_per_image": row["ms_per_image"]}
        for key in ("psnr_hole", "ssim_hole", "ssim_image"):
            values = row[key].numpy()
            finite = values[np.isfinite(values)]
            out[name][key] = {"mean": float(finite.mean()), "std": float(finite.std()),
                              "not_finite": int((~np.isfinite(values)).sum()), "per_image": values.tolist()}
    return out


def report(result: Dict) -> str:
    lines = [f"Inpainting, {result['n_images']} held-out images ({result['source_text']}), model "
             f"{result['transform']} at {result['size']}x{result['size']}; selfVAE: {result['iterations']} sweeps, "
             f"seed {result['seed']}. Figures per image, averaged over images.", "",
             "| mask | hole | fill | PSNR hole (dB) | SSIM hole | SSIM image | ms / image |",
             "|---|---|---|---|---|---|---|"]
    for mask, entry in result["masks"].items():
        for name, row in entry["methods"].items():
            lines.append(f"| {MASK_TITLES[mask]} | {100 * entry['fraction']:.0f} % | {name} | "
                         f"{row['psnr_hole']['mean']:.2f} | {row['ssim_hole']['mean']:.3f} | "
                         f"{row['ssim_image']['mean']:.3f} | {row['ms_per_image']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a selfvae checkpoint")
    p.add_argument("--out", default="runs/inpaint_benchmark")
    p.add_argument("--images", type=int, default=64, help="images spread evenly over the test split (0 = all)")
    p.add_argument("--folder", default=None, help="use every image under this folder instead of the test split")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="pseudo-Gibbs sweeps of selfVAE")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--grid", type=int, default=8, help="images shown in each PNG grid")
    p.add_argument("--mask-seed", type=int, default=0, help="seed of the random strokes")
    p.add_argument("--seed", type=int, default=0, help="seed of selfVAE's draws")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, state = load_model(args.model, map_location="cpu")
    model.eval()
    if args.folder:
        images, source = cli.folder_images(args.folder, model, progress=False)
        text = f"folder {args.folder}"
    else:
        images, source = cli.dataset_images(state, model, None, None, "test", progress=False)
        text = f"{source['dataset']} test split"
    if args.images and args.images < len(images):
        images = images[torch.linspace(0, len(images) - 1, args.images).round().long()]
    size = model.specs[0].height
    masks = standard_masks(size, size, seed=args.mask_seed)
    methods = fills(model, args)
    os.makedirs(args.out, exist_ok=True)
    result = {"model": os.path.abspath(args.model), "transform": model.config.transform, "size": size,
              "n_images": len(images), "source": source, "source_text": text, "iterations": args.iterations,
              "seed": args.seed, "mask_seed": args.mask_seed, "masks": {}}
    with tqdm(total=len(masks) * len(methods) * len(images), desc="inpaint", unit="image") as progress:
        for name, mask in masks.items():
            missing = mask[None].expand(len(images), -1, -1, -1)
            rows = measure(images, missing, methods, args.batch, progress)
            shown = slice(0, args.grid)
            picture = [show_hole(images[shown], missing[shown]), mask_image(missing[shown])]
            picture += [row["images"][shown] for row in rows.values()] + [images[shown]]
            grid = save_rows(picture, os.path.join(args.out, f"inpaint_{name}.png"),
                             labels=["input (hole grey)", "mask"] + list(rows) + ["original"])
            result["masks"][name] = {"fraction": float(mask.float().mean()), "grid": grid, "methods": summary(rows)}
    text = report(result)
    write_report(args.out, "inpaint_benchmark", text, result)
    print("\n" + "\n".join(entry["grid"] for entry in result["masks"].values()))


if __name__ == "__main__":
    sys.exit(main())
