"""Inspect the built-in default dataset (patches of scikit-image's bundled photographs; test = whole photographs).

Prints the train/test patch counts at 32 and 64 pixels, the photographs used with
their licences, and writes PNG grids of a few train and test patches.

    python experiments/default_dataset.py --out runs/default_dataset
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

from selfvae.datasets import DEFAULT_SOURCES, default_dataset_info, load_dataset


def grid(images: torch.Tensor, ncol: int = 16, pad: int = 2) -> np.ndarray:
    """Tile uint8 ``(N, 3, S, S)`` images into one uint8 ``(rows*(S+pad)+pad, ncol*(S+pad)+pad, 3)`` array."""
    n, _, s, _ = images.shape
    rows = max(1, -(-n // ncol))
    out = np.full((rows * (s + pad) + pad, ncol * (s + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images.numpy()):
        r, q = divmod(i, ncol)
        y, x = pad + r * (s + pad), pad + q * (s + pad)
        out[y : y + s, x : x + s] = img.transpose(1, 2, 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/default_dataset", help="folder for the PNG grids")
    ap.add_argument("--n", type=int, default=64, help="patches per grid")
    ap.add_argument("--seed", type=int, default=0, help="split seed")
    ap.add_argument("--cache-dir", default=None, help="dataset cache (default $SELFVAE_CACHE or ~/.cache/selfvae)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    print("Photographs (bundled with scikit-image):")
    for src in DEFAULT_SOURCES:
        print(f"  {src['name']:<22} {src['description']}\n  {'':<22} licence: {src['licence']}\n"
              f"  {'':<22} source:  {src['source']}")
    for size in (32, 64):
        info = default_dataset_info(size, cache_dir=args.cache_dir)
        print(f"\ndefault{size}: {info['n_train']} train / {info['n_test']} test patches "
              f"(train stride {info['train_stride']}, test photographs tiled at stride {info['test_stride']})")
        for p in info["photos"]:
            print(f"  {p['name']:<22} {p['split']:<5} {p['shape'][0]:>4}x{p['shape'][1]:<4} (scale {p['scale']}) "
                  f"train {p['n_train']:>5}  test {p['n_test']:>4}")
        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            ds = load_dataset("default", split, image_size=size, seed=args.seed, cache_dir=args.cache_dir)
            pick = np.sort(rng.choice(len(ds), size=min(args.n, len(ds)), replace=False))
            path = os.path.join(args.out, f"default{size}_{split}.png")
            Image.fromarray(grid(ds.images[torch.from_numpy(pick)], ncol=16 if size == 32 else 8)).save(path)
            print(f"  wrote {path}")


if __name__ == "__main__":
    main()
