"""Agreement of the torch transforms with their OpenCV references on real photographs.

    python experiments/transform_agreement.py

Images: scikit-image's bundled astronaut (512x512), coffee (400x600) and chelsea
(300x451, cropped to 296x448 so that it can be halved three times), at full size, as 64x64 and
32x32 crops (16 per image and size, fixed seed, run as one batch) and, for the
transforms that accept odd sizes, as 31x45 crops. For every chain the last level is
compared; printed per chain and image set: the fraction of pixels that are exact,
within +-1 and within +-2, and the maximum absolute difference.

The second table is the measurement behind ``downscale``'s choice of antialiasing:
torch/kornia bicubic x1/2 with and without antialias against cv2.resize INTER_CUBIC
and INTER_AREA (uint8), at full size.
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skimage import data  # noqa: E402

from transforms import parse_chain  # noqa: E402

CHAINS = ["downscale", "sketch", "bits:3", "gray", "blur", "lowpass:0.25", "lowpass:0.1",
          "sketch,downscale:2", "bits:3,downscale", "bits:3,blur", "bits:3,lowpass:0.25", "downscale:2,blur",
          "subsample", "bits:3,subsample:2"]
NEEDS_EVEN = ("downscale", "subsample")


def photos():
    """The three photographs as uint8 (3, H, W), H and W cropped to multiples of 8."""
    out = {}
    for name in ("astronaut", "coffee", "chelsea"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        out[name] = np.ascontiguousarray(img[:h - h % 8, :w - w % 8].transpose(2, 0, 1))
    return out


def crops(images, h, w, per_image=16, seed=0):
    """``per_image`` random ``h x w`` crops of each image, as one uint8 (N, 3, h, w) array."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images.values():
        _, hh, ww = img.shape
        for _ in range(per_image):
            top, left = rng.integers(0, hh - h + 1), rng.integers(0, ww - w + 1)
            out.append(img[:, top:top + h, left:left + w])
    return np.stack(out)


def compare(chain, batch):
    """Flattened |torch - reference| of the last level over a uint8 (N, C, H, W) batch."""
    ours = chain(torch.from_numpy(batch))[-1].numpy()
    refs = np.stack([chain.reference(img)[-1] for img in batch])
    assert ours.shape == refs.shape, (ours.shape, refs.shape)
    return np.abs(ours.astype(np.int64) - refs.astype(np.int64)).ravel()


def row(label, d, width=28):
    return (f"  {label:{width}s} exact {np.mean(d == 0):8.4%}  +-1 {np.mean(d <= 1):8.4%}  "
            f"+-2 {np.mean(d <= 2):8.4%}  max {d.max():3d}  ({d.size} px)")


def main():
    torch.manual_seed(0)
    images = photos()
    sets = {f"full {name} {img.shape[1]}x{img.shape[2]}": [img[None]] for name, img in images.items()}
    sets["64x64 crops (48)"] = [crops(images, 64, 64)]
    sets["32x32 crops (48)"] = [crops(images, 32, 32, seed=1)]
    odd = {"31x45 crops (48)": [crops(images, 31, 45, seed=2)]}
    print("torch transform vs OpenCV reference (last level of the chain)")
    for text in CHAINS:
        chain = parse_chain(text)
        print(f"{text}:")
        all_sets = dict(sets)
        if not any(t.name in NEEDS_EVEN for t in chain.transforms):
            all_sets.update(odd)
        total = []
        for label, batches in all_sets.items():
            d = np.concatenate([compare(chain, b) for b in batches])
            total.append(d)
            print(row(label, d))
        print(row("all", np.concatenate(total)))

    print("\ndownscale antialias choice: bicubic x1/2 vs cv2.resize (uint8), full-size photos")
    variants = {
        "torch bicubic": lambda x, s: F.interpolate(x, size=s, mode="bicubic", align_corners=False),
        "torch bicubic antialias": lambda x, s: F.interpolate(x, size=s, mode="bicubic", align_corners=False,
                                                              antialias=True),
    }
    try:
        import kornia
        variants["kornia bicubic antialias"] = lambda x, s: kornia.geometry.transform.resize(
            x, s, interpolation="bicubic", antialias=True)
    except ImportError:  # pragma: no cover
        pass
    for vname, fn in variants.items():
        for cname, flag in (("INTER_CUBIC", cv2.INTER_CUBIC), ("INTER_AREA", cv2.INTER_AREA)):
            ds = []
            for img in images.values():
                _, h, w = img.shape
                x = torch.from_numpy(img)[None].float()
                ours = fn(x, (h // 2, w // 2)).clamp(0, 255).round().to(torch.uint8)[0].numpy()
                ref = cv2.resize(img.transpose(1, 2, 0), (w // 2, h // 2), interpolation=flag).transpose(2, 0, 1)
                ds.append(np.abs(ours.astype(np.int64) - ref.astype(np.int64)).ravel())
            print(row(f"{vname} vs {cname}", np.concatenate(ds), width=40))


if __name__ == "__main__":
    main()
