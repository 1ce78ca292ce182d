"""Time the training augmentation: our batched warp against two kornia versions, on CPU.

    PYTHONPATH=. python experiments/augment_speed.py [--repeats 200] [--threads 1]

The same job (random horizontal flip p=0.5, rotation +-5 deg, isotropic scale 0.95..1.05,
translation +-1/16, reflection padding, bilinear, rounded back to uint8) done three ways:

* ``selfvae``: ``selfvae.augment.augment`` (one ``F.affine_grid`` + ``F.grid_sample``);
* ``kornia warp``: the same parameter draw from our generator, warped with
  ``kornia.geometry.transform.warp_affine`` (pixel-space matrix, normalised and inverted
  inside kornia); the outputs are compared with ours;
* ``kornia aug``: ``kornia.augmentation.RandomHorizontalFlip`` + ``RandomAffine`` (kornia
  draws from the global RNG, so a seed is taken from our generator and the global RNG is
  forked around the call, as the trainer would have to).

Prints the median time per batch of 32 uint8 images at 3x32x32 and 3x64x64.
"""
from __future__ import annotations

import argparse
import statistics
import time

import kornia
import kornia.augmentation as K
import torch

from selfvae.augment import augment, random_affine_params


def kornia_warp(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Our draw, kornia's ``warp_affine``: uint8 ``(B, C, H, W)`` -> uint8 ``(B, C, H, W)``."""
    b, _, h, w = x.shape
    prm = random_affine_params(b, generator, x.device)
    out = torch.where(prm["flip"][:, None, None, None], x.flip(-1), x)
    # augment samples the source at c + R(a) (p - c) / s + t; kornia wants the forward map
    # p = c + s R(-a) (q - c - t) in pixel coordinates (centres at integers).
    cos, sin, s = torch.cos(prm["angle"]), torch.sin(prm["angle"]), prm["scale"]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    qx, qy = cx + prm["tx"] * w, cy + prm["ty"] * h
    a, bb, c, d = s * cos, s * sin, -s * sin, s * cos  # s R(-a) = s [[cos, sin], [-sin, cos]]
    matrix = torch.stack([torch.stack([a, bb, cx - a * qx - bb * qy], 1),
                          torch.stack([c, d, cy - c * qx - d * qy], 1)], 1)
    warped = kornia.geometry.transform.warp_affine(out.float(), matrix, (h, w), mode="bilinear",
                                                   padding_mode="reflection", align_corners=False)
    return warped.round_().clamp_(0, 255).to(torch.uint8)


_PIPELINE = K.AugmentationSequential(
    K.RandomHorizontalFlip(p=0.5),
    K.RandomAffine(degrees=5.0, translate=(1 / 16, 1 / 16), scale=(0.95, 1.05), padding_mode="reflection",
                   align_corners=False, p=1.0),
)


def kornia_augmentation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """kornia.augmentation, seeded from our generator with the global RNG forked around it."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        warped = _PIPELINE(x.float())
    return warped.round_().clamp_(0, 255).to(torch.uint8)


def median_ms(fn, x: torch.Tensor, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        fn(x, generator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x, generator)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, kornia {kornia.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} calls, batch 32, CPU")
    ways = {"selfvae": augment, "kornia warp": kornia_warp, "kornia aug": kornia_augmentation}
    for size in (32, 64):
        x = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        ours = augment(x, torch.Generator().manual_seed(3))
        theirs = kornia_warp(x, torch.Generator().manual_seed(3))
        diff = (ours.int() - theirs.int()).abs()
        figures = "  ".join(f"{name} {median_ms(fn, x, args.repeats):7.3f} ms" for name, fn in ways.items())
        print(f"3x{size}x{size}: {figures}   (kornia warp vs ours: max |diff| {int(diff.max())}, "
              f"{float((diff > 0).float().mean()) * 100:.3f} % of values differ)")


if __name__ == "__main__":
    main()
