"""Decompress a selfVAE file: ``python -m selfvae.decompress FILE -o DIR --model CKPT``.

Writes each image as ``DIR/<name>.png`` (its original base name, size and channels;
``image0000.png``, ... for images encoded without a name).
``--up-to-level k`` decodes only ``y_K..y_k`` — a thumbnail, then sharper previews — and
writes ``DIR/<name>_y<k>.png`` (levels with fewer than 256 values stretched to 0..255 for
display) without decoding the rest. A file made with another model, a damaged or
truncated file, or one from a newer selfvae is a one-line error; no output is written then.
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import torch

from transforms.imageio import write_png

from . import cli, codec
from . import shipped
from .images import to_display


def parse_args(argv: Optional[List[str]] = None):
    p = cli.parser("python -m selfvae.decompress", __doc__)
    p.add_argument("file", help="a .svae file written by python -m selfvae.compress")
    p.add_argument("-o", "--output", required=True, help="folder for the decoded PNG files")
    p.add_argument("--model", default=None, help="the model the file was made with: a checkpoint file or a shipped "
                   "model name (default: photo)")
    p.add_argument("--up-to-level", type=cli.nonnegative_int, default=0,
                   help="decode only down to level k (previews y_k); 0 = the images (default)")
    p.add_argument("--force", action="store_true", help="overwrite existing PNG files")
    return p.parse_args(argv)


def decompress(args) -> List[str]:
    cli.check_input_files([args.file], "FILE")
    out = cli.check_output_folder(args.output, "-o")
    model, _ = shipped.load(args.model)
    with open(args.file, "rb") as f:
        data = f.read()
    start = time.perf_counter()
    result = codec.decode(model, data, up_to_level=args.up_to_level)
    seconds = time.perf_counter() - start
    suffix = f"_y{result.level}" if result.level else ""
    names = [name or f"image{i:04d}" for i, name in enumerate(result.names)]
    paths = [os.path.join(out, f"{name}{suffix}.png") for name in names]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not args.force:
        raise cli.UserError(f"{existing[0]} exists ({len(existing)} of the outputs do); pass --force to overwrite")
    os.makedirs(out, exist_ok=True)
    for image, path in zip(result.images, paths):
        write_png(path, to_display(torch.from_numpy(image), result.num_values).numpy())
    what = "images" if result.level == 0 else f"previews of level {result.level}"
    print(f"{args.file}: {len(paths)} {what} -> {out} ({seconds:.1f} s)")
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: decompress(args))


if __name__ == "__main__":
    sys.exit(main())
