"""Preview a chain of transforms on one image.

    python -m transforms.preview IMAGE --chain CHAIN --out DIR [--size N]

Writes ``DIR/level_0.png`` (the input, after ``--size``), ``DIR/level_1.png`` ..
``DIR/level_K.png`` (each level at its own resolution, values rescaled from
``0..n-1`` to ``0..255`` for display) and ``DIR/grid.png`` (all levels side by side at
the input's size, nearest-neighbour upscaling, 4-pixel white gaps; 1-channel levels are
shown as gray RGB when the input has 3 channels). Prints each file and level spec.

Reading IMAGE (anything OpenCV decodes, e.g. PNG/JPEG, else Pillow):

* grayscale stays one channel; colour is converted to RGB;
* an alpha channel is dropped (RGBA -> RGB, gray+alpha -> gray), not composited;
* 16-bit images are converted to 8 bits as ``round(v / 257)`` (65535 -> 255);
  other sample types (float, 32-bit) are rejected;
* ``--size N`` centre-crops the largest square and resizes it to ``N x N``
  (``INTER_AREA`` when shrinking, ``INTER_CUBIC`` when enlarging).

Errors (missing or unreadable file, unknown transform, a chain the image cannot go
through) print one ``error: ...`` line to stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

from . import LevelSpec, TransformError, parse_chain

GAP = 4  # pixels between the levels in grid.png


class ImageError(Exception):
    """The image file cannot be read or converted."""


def read_image(path: str) -> np.ndarray:
    """Read an image file as uint8 ``(C, H, W)``, ``C`` = 3 (RGB) or 1 (gray). See the module docstring."""
    if not os.path.exists(path):
        raise ImageError(f"cannot read image '{path}': no such file")
    if os.path.isdir(path):
        raise ImageError(f"cannot read image '{path}': it is a directory")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    from_pil = False
    if img is None:
        try:
            from PIL import Image
            with Image.open(path) as pil:
                pil = pil if pil.mode in ("L", "RGB", "RGBA", "LA", "I;16") else pil.convert("RGB")
                img = np.array(pil)
                from_pil = True
        except Exception as e:  # any decoder failure is an unreadable file
            raise ImageError(f"cannot read image '{path}': not an image format OpenCV or Pillow can decode "
                             f"({type(e).__name__})") from None
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"cannot read image '{path}': unsupported sample type {img.dtype} "
                         f"(8-bit and 16-bit images are supported)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"cannot read image '{path}': unsupported shape {img.shape}")
    if img.shape[2] == 2:                       # gray + alpha: drop alpha
        img = img[:, :, :1]
    elif img.shape[2] >= 3:                     # colour (+ alpha): drop alpha, to RGB
        img = img[:, :, :3] if from_pil else cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def center_crop_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop the largest square of a ``(C, H, W)`` uint8 image and resize it to ``(C, size, size)``."""
    _, h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(img[:, top:top + side, left:left + side].transpose(1, 2, 0))
    interp = cv2.INTER_AREA if size < side else cv2.INTER_CUBIC
    out = cv2.resize(crop, (size, size), interpolation=interp)
    return (out[:, :, None] if out.ndim == 2 else out).transpose(2, 0, 1).copy()


def to_display(level: np.ndarray, num_values: int) -> np.ndarray:
    """``(C, H, W)`` values ``0..n-1`` -> ``(H, W, C)`` uint8 ``0..255`` (``round(v * 255 / (n-1))``)."""
    v = level.astype(np.int64)
    if num_values != 256:
        v = (v * 255 + (num_values - 1) // 2) // (num_values - 1)
    return np.ascontiguousarray(v.astype(np.uint8).transpose(1, 2, 0))


def make_grid(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Display images ``(h, w, c)`` upscaled (nearest) to ``height x width``, side by side with white gaps."""
    channels = max(im.shape[2] for im in images)
    tiles = []
    for im in images:
        tile = cv2.resize(im, (width, height), interpolation=cv2.INTER_NEAREST)
        tile = tile[:, :, None] if tile.ndim == 2 else tile
        if tile.shape[2] != channels:
            tile = np.repeat(tile, channels, axis=2)
        tiles.append(tile)
    gap = np.full((height, GAP, channels), 255, np.uint8)
    parts: List[np.ndarray] = []
    for i, tile in enumerate(tiles):
        parts.extend([gap, tile] if i else [tile])
    return np.concatenate(parts, axis=1)


def write_png(path: str, image: np.ndarray) -> None:
    """Write an ``(H, W, 1 or 3)`` RGB/gray uint8 image as PNG."""
    bgr = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, bgr):
        raise ImageError(f"cannot write '{path}'")


def describe(spec: LevelSpec) -> str:
    return f"{spec.channels}x{spec.height}x{spec.width}, {spec.num_values} values"


def preview(image_path: str, chain_text: str, out_dir: str, size: Optional[int] = None) -> List[str]:
    """Run the preview; returns the paths written. Raises ImageError or TransformError."""
    chain = parse_chain(chain_text)
    x = read_image(image_path)
    if size is not None:
        x = center_crop_resize(x, size)
    spec0 = LevelSpec(*x.shape, 256)
    specs = chain.specs(spec0)
    with torch.no_grad():
        levels = [y[0].numpy() for y in chain(torch.from_numpy(x)[None])]
    os.makedirs(out_dir, exist_ok=True)
    displays, written = [], []
    for k, (level, spec) in enumerate(zip([x] + levels, [spec0] + specs)):
        display = to_display(level, spec.num_values)
        path = os.path.join(out_dir, f"level_{k}.png")
        write_png(path, display)
        name = "input" if k == 0 else str(chain.transforms[k - 1])
        print(f"level {k} ({name}): {describe(spec)} -> {path}")
        displays.append(display)
        written.append(path)
    grid = make_grid(displays, spec0.height, spec0.width)
    path = os.path.join(out_dir, "grid.png")
    write_png(path, grid)
    print(f"grid: {len(displays)} levels at {spec0.height}x{spec0.width} -> {path}")
    written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transforms.preview",
                                     description="Apply a chain of transforms to an image and write every level.")
    parser.add_argument("image", help="input image (PNG, JPEG, ...)")
    parser.add_argument("--chain", required=True, help="chain of transforms, e.g. 'downscale:2' or 'sketch,bits:3'")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--size", type=int, default=None,
                        help="centre-crop the largest square and resize it to SIZE x SIZE first")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 1:
        parser.error(f"--size must be a positive integer, got {args.size}")
    try:
        preview(args.image, args.chain, args.out, args.size)
    except (ImageError, TransformError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
