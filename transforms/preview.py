"""Preview a chain of transforms on one image.

    python -m transforms.preview IMAGE --chain CHAIN --out DIR [--size N]

Writes ``DIR/level_0.png`` (the input, after ``--size``), ``DIR/level_1.png`` ..
``DIR/level_K.png`` (each level at its own resolution, values rescaled from
``0..n-1`` to ``0..255`` for display) and ``DIR/grid.png`` (all levels side by side at
the input's size, nearest-neighbour upscaling, 4-pixel white gaps; 1-channel levels are
shown as gray RGB when the input has 3 channels). Prints each file and level spec.

IMAGE is read by ``transforms.imageio.read_image(channels=None)`` (grayscale stays one
channel, colour is RGB, alpha composited on white, 16 bits as ``v >> 8``; its docstring has
every rule), and ``--size N`` centre-crops the largest square and resizes it to ``N x N``
with ``transforms.imageio.center_crop_resize`` (Lanczos). ``--size`` is at most
:data:`MAX_SIZE` (4096): a preview is for looking at, and a larger size would allocate
gigabytes before anything is shown.

The outputs never overwrite the input: when IMAGE is one of the files the preview would
write (e.g. ``DIR/level_0.png``), it stops before writing anything. Files are written
atomically (temporary file, then rename).

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
from .imageio import ImageReadError, center_crop_resize, read_image, write_png

GAP = 4  # pixels between the levels in grid.png
MAX_SIZE = 4096  # largest --size


class PreviewError(ValueError):
    """The preview cannot be made as asked (size out of range, output would overwrite the input)."""


def to_display(level: np.ndarray, num_values: int) -> np.ndarray:
    """``(C, H, W)`` values ``0..n-1`` -> ``(C, H, W)`` uint8 ``0..255`` (``round(v * 255 / (n-1))``)."""
    v = level.astype(np.int64)
    if num_values != 256:
        v = (v * 255 + (num_values - 1) // 2) // (num_values - 1)
    return v.astype(np.uint8)


def make_grid(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """``(C, h, w)`` display images upscaled (nearest) to ``height x width``, side by side with white gaps.

    Returns uint8 ``(C, height, total width)``; C is the largest channel count (gray tiles repeated).
    """
    channels = max(im.shape[0] for im in images)
    tiles = []
    for im in images:
        tile = cv2.resize(np.ascontiguousarray(im.transpose(1, 2, 0)), (width, height),
                          interpolation=cv2.INTER_NEAREST)
        tile = (tile[:, :, None] if tile.ndim == 2 else tile).transpose(2, 0, 1)
        tiles.append(np.repeat(tile, channels // tile.shape[0], axis=0))
    gap = np.full((channels, height, GAP), 255, np.uint8)
    parts: List[np.ndarray] = []
    for i, tile in enumerate(tiles):
        parts.extend([gap, tile] if i else [tile])
    return np.concatenate(parts, axis=2)


def describe(spec: LevelSpec) -> str:
    return f"{spec.channels}x{spec.height}x{spec.width}, {spec.num_values} values"


def check_outputs(image_path: str, written: Sequence[str]) -> None:
    """Raise :class:`PreviewError` if any file in ``written`` is the input file itself."""
    for path in written:
        if os.path.exists(path) and os.path.samefile(path, image_path):
            raise PreviewError(f"'{image_path}' is the input and would be overwritten by the preview's "
                               f"{os.path.basename(path)}; choose another --out")


def preview(image_path: str, chain_text: str, out_dir: str, size: Optional[int] = None) -> List[str]:
    """Run the preview; returns the paths written. Raises PreviewError, ImageReadError or TransformError."""
    if size is not None and not 1 <= size <= MAX_SIZE:
        raise PreviewError(f"--size must be between 1 and {MAX_SIZE}, got {size}")
    chain = parse_chain(chain_text)
    x = read_image(image_path, channels=None)
    if size is not None:
        x = center_crop_resize(x, size)
    spec0 = LevelSpec(*x.shape, 256)
    specs = chain.specs(spec0)
    paths = [os.path.join(out_dir, f"level_{k}.png") for k in range(len(specs) + 1)]
    grid_path = os.path.join(out_dir, "grid.png")
    check_outputs(image_path, paths + [grid_path])
    with torch.no_grad():
        levels = [y[0].numpy() for y in chain(torch.from_numpy(x)[None])]
    os.makedirs(out_dir, exist_ok=True)
    displays = []
    for k, (level, spec, path) in enumerate(zip([x] + levels, [spec0] + specs, paths)):
        display = to_display(level, spec.num_values)
        write_png(path, display)
        name = "input" if k == 0 else str(chain.transforms[k - 1])
        print(f"level {k} ({name}): {describe(spec)} -> {path}")
        displays.append(display)
    write_png(grid_path, make_grid(displays, spec0.height, spec0.width))
    print(f"grid: {len(displays)} levels at {spec0.height}x{spec0.width} -> {grid_path}")
    return paths + [grid_path]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transforms.preview",
                                     description="Apply a chain of transforms to an image and write every level.")
    parser.add_argument("image", help="input image (PNG, JPEG, ...)")
    parser.add_argument("--chain", required=True, help="chain of transforms, e.g. 'downscale:2' or 'sketch,bits:3'")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--size", type=int, default=None,
                        help=f"centre-crop the largest square and resize it to SIZE x SIZE first (at most {MAX_SIZE})")
    args = parser.parse_args(argv)
    try:
        preview(args.image, args.chain, args.out, args.size)
    except (PreviewError, ImageReadError, TransformError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
