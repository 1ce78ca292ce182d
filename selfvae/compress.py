"""Compress images with a selfVAE: ``python -m selfvae.compress INPUT... -o FILE [--model CKPT]``.

The model defaults to ``photo``, the codec model shipped inside the package (:mod:`selfvae.shipped`).

Lossless by default: coding through the whole hierarchy gives the exact pixels back
(``python -m selfvae.decompress``); the latents are coded by bits-back or fixed at their prior
means, whichever gives the shorter file (``--latents``); with prior-mean latents and a model whose
transforms subsample (the shipped ``photo``), every level below the top is coded in overlapping
windows over the whole image, so that pixels see their neighbours across the tiles' edges
(``--windows``; each pixel under the mixture of the windows covering it, ``--window-rule``).
``--level k`` writes a lossy file that sends ``y_k`` (losslessly) and reconstructs x from it; ``--with-z`` also sends ``z_k..z_1``.

Inputs are image files of any size that Pillow or OpenCV read (PNG, JPEG, WebP, BMP,
TIFF, ...), read as 8-bit (16-bit reduced by ``v >> 8``) gray or RGB (alpha composited on
white); each is cut into the model's tiles (edges padded by repetition) and its size,
channels and base name are recorded. A gray image given to an RGB model is coded as three
equal channels and decoded back to gray. The file format is documented in
:mod:`selfvae.codec.container` and the README.
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

from transforms.imageio import read_image

from . import cli, codec
from . import shipped


def parse_args(argv: Optional[List[str]] = None):
    p = cli.parser("python -m selfvae.compress", __doc__)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files")
    p.add_argument("-o", "--output", required=True, help="the compressed file to write (.svae)")
    p.add_argument("--model", default=None, help="the model to code with, the decoder needs the same: a checkpoint "
                   "file or the name of a shipped model (default: photo, shipped with selfvae)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lossless", action="store_true", help="exact pixels back (the default)")
    mode.add_argument("--level", type=cli.positive_int, default=None,
                      help="lossy: send y_k for this level k and reconstruct x from it")
    p.add_argument("--with-z", action="store_true", help="lossy: also send z_k..z_1 (sharper, more bytes)")
    p.add_argument("--decode", choices=codec.container.DECODES, default=None,
                   help="lossy: the receiver reconstructs each level below y_k as its rounded expected value "
                        "(mean, the default: sharper in PSNR) or its most likely value (mode)")
    p.add_argument("--chunk", type=cli.positive_int, default=codec.DEFAULT_CHUNK, help="tiles coded together (32)")
    p.add_argument("--latents", choices=codec.LATENTS, default="auto",
                   help="how the latents are coded: bits-back (the file costs about the negative ELBO plus the "
                        "initial bits of its first pops), prior-mean (fixed at their prior means: no latents sent, "
                        "no initial bits; as short as the ELBO when the latents carry little), or auto (the default: "
                        "the prior-mean code, and the bits-back one too when the ELBO says it may be shorter by "
                        "1 %%; the shorter file is kept)")
    p.add_argument("--windows", choices=("auto", "on", "off"), default="auto",
                   help="lossless, prior-mean latents: code the levels below the top in overlapping windows over the "
                        "whole image (on), tile by tile (off), or in windows where the model allows it and an image "
                        "is larger than a tile (auto, the default)")
    p.add_argument("--window-rule", choices=("auto",) + codec.windows.RULES, default="auto",
                   help="in windows: code each pixel under the mixture of the windows covering it (mixture: ~1 %% "
                        "shorter, ~3x slower), under the window in whose central half it lies (owner), or the "
                        "mixture where the images have at most 2^21 pixels, else owner (auto, the default)")
    p.add_argument("--latent-bits", type=cli.positive_int, default=codec.DEFAULT_LATENT_BITS,
                   help="bits-back: latents coded on a grid of step 2^-B within +-8 (6)")
    p.add_argument("--z-step-exponent", type=int, default=codec.DEFAULT_Z_STEP,
                   help="lossy z's rounded to a grid of step 2^E (-1)")
    p.add_argument("--no-store", dest="store_fallback", action="store_false",
                   help="lossless: always write the model's code, even where storing the pixels would be smaller "
                        "(to measure the model)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = p.parse_args(argv)
    if args.with_z and args.level is None:
        p.error("--with-z applies to a lossy file: give --level k")
    if args.decode is not None and args.level is None:
        p.error("--decode applies to a lossy file: give --level k")
    args.decode = args.decode or "mean"
    return args


def unique_names(paths: List[str]) -> List[str]:
    """Base names without extension, made unique with a numeric suffix where two inputs share one."""
    names, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(stem if count == 0 else f"{stem}-{count + 1}")
    return names


def compress(args) -> dict:
    cli.check_input_files(args.inputs, "INPUT")
    output = cli.check_output_file(args.output, "-o")
    if os.path.exists(output) and not args.force:
        raise cli.UserError(f"-o {output} exists; pass --force to overwrite it")
    model, _ = shipped.load(args.model)
    images = [read_image(path, channels=None) for path in args.inputs]
    start = time.perf_counter()
    data = codec.encode(model, images, unique_names(args.inputs), level=args.level, with_z=args.with_z,
                        chunk=args.chunk, latent_bits=args.latent_bits, z_step_exponent=args.z_step_exponent,
                        store_fallback=args.store_fallback, decode=args.decode, latents=args.latents,
                        windows={"auto": None, "on": True, "off": False}[args.windows], window_rule=args.window_rule)
    seconds = time.perf_counter() - start
    tmp = f"{output}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, output)
    pixels = sum(im.shape[1] * im.shape[2] for im in images)
    dims = sum(im.size for im in images)
    kind = "lossless" if args.level is None else (f"lossy, level {args.level}" + (" with z" if args.with_z else "")
                                                  + f", decoded to the {args.decode}")
    header = codec.container.read(data)[0]
    if header.mode == "stored":
        kind = "stored: the model's code would have been larger than the pixels"
    else:
        kind += f"; latents {header.latents}" + (
            f"; in windows ({'mixture' if header.window_mixture else 'owner'})" if header.windows else "")
    print(f"{output}: {len(images)} images, {len(data):,} bytes ({kind}); {8 * len(data) / pixels:.3f} bits per pixel, "
          f"{8 * len(data) / dims:.3f} bits per dimension; {seconds:.1f} s")
    return {"bytes": len(data), "pixels": pixels, "seconds": seconds}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: compress(args))


if __name__ == "__main__":
    sys.exit(main())
