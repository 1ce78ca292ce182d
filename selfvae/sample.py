"""Generate and reconstruct with a trained selfVAE, writing PNG grids:
``python -m selfvae.sample CHECKPOINT --mode MODE --out DIR``.

Modes (SPEC section 3; "inputs" are ``--images`` files or the first ``--num`` test images):

``generate``          ``--num`` samples at ``--temperature``; also every generated level y_k.
``cond-generate``     from the inputs' ``y_k = d(x)`` at ``--level k``: rows x*, y_k* (nearest-neighbour
                      upscaled), then ``--samples`` draws.
``cond-reconstruct``  from ``y_k*`` and the inferred ``z_1..z_k``: rows x*, y_k*, reconstruction.
``reconstruct1``      from ``u ~ q(u | y_K*)``: rows x*, reconstruction.
``reconstruct2``      from u and every inferred z: rows x*, reconstruction.
``superres``          from low-resolution image files (``--images``, not resized): the level k is the
                      one whose size the files have, for a chain that starts with ``downscale``
                      (16x16 -> 32x32 is k = 1 for a 32x32 model); rows input (upscaled), draws; each
                      input's first draw is also written at full size.
``interpolate``       between pairs of inputs (1st-2nd, 3rd-4th, ...) through the posterior means of u,
                      linearly and spherically, ``--steps`` points; each row x_a, path, x_b. The z's
                      below u use ``--temperature`` (default 0 here: their conditional prior means,
                      so the path is smooth).
``resample-z``        keep u (posterior mean) and draw the z's ``--samples`` times (paper Fig. 6);
                      each row x*, draws.

For the reconstruction modes, ``<stem>_levels.png`` shows the produced levels y_K .. x (one row
per level, upscaled by nearest neighbour; 3-bit levels are stretched to 0..255 for display).
Input image files are read as RGB, centre-cropped to a square and resized (Lanczos) to the
model's size when they are not at it already (a note says so). ``--decode`` sets how every level
is decoded (default: sample for generate/cond-generate/superres/resample-z, mode for the
reconstructions and interpolation). The paths written are printed, one per line.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from transforms import TransformError

from .checkpoint import CheckpointError, load_model
from .datasets import DataError, read_image_rgb
from .evaluate import EvaluationError, dataset_images, error_line, resolve_device
from .images import save_grid, save_png, save_rows, to_display, upscale_nearest
from .model import SelfVAE

MODES = ("generate", "cond-generate", "cond-reconstruct", "reconstruct1", "reconstruct2", "superres",
         "interpolate", "resample-z")
# Default decoding per mode: draws for the generative modes, the most likely value for reconstructions.
DEFAULT_DECODE = {"generate": "sample", "cond-generate": "sample", "superres": "sample", "resample-z": "sample",
                  "cond-reconstruct": "mode", "reconstruct1": "mode", "reconstruct2": "mode", "interpolate": "mode"}
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS


class SampleError(RuntimeError):
    """A problem the user must fix (bad arguments, input files that do not fit the model)."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m selfvae.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a selfvae checkpoint (.pt)")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    p.add_argument("--images", nargs="+", default=None, metavar="FILE",
                   help="input image files (default: the first --num images of the test split)")
    p.add_argument("--num", type=int, default=None,
                   help="generate: number of samples (default 64); other modes: test images used as inputs "
                        "(default 8)")
    p.add_argument("--level", type=int, default=None,
                   help="k for cond-generate/cond-reconstruct (default 1); superres: checked against the file size")
    p.add_argument("--temperature", type=float, default=None,
                   help="temperature of the sampled latents and levels (default 1; interpolate: 0)")
    p.add_argument("--decode", default=None, choices=["mode", "sample"],
                   help="decode every level by its most likely value or by a draw (default depends on the mode)")
    p.add_argument("--samples", type=int, default=None,
                   help="draws per input for cond-generate/superres (default 4) and resample-z (default 8)")
    p.add_argument("--steps", type=int, default=8, help="interpolation points, end points included (default 8)")
    p.add_argument("--nrow", type=int, default=8, help="images per row of the generate grid")
    d = p.add_argument_group("test split (when --images is not given)")
    d.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    d.add_argument("--data-root", default=None)
    d.add_argument("--split", default="test", choices=["train", "test"])
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("num", "samples", "level", "nrow"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.steps < 2:
        p.error("--steps must be >= 2")
    if args.temperature is not None and args.temperature < 0:
        p.error("--temperature must be >= 0")
    return args


# --------------------------------------------------------------------------- inputs
def fit_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> uint8 ``(3, size, size)``: the largest centred square, resized with Lanczos
    when it is not ``size`` already."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(rgb[top:top + side, left:left + side])
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), _LANCZOS))
    return np.ascontiguousarray(square.transpose(2, 0, 1))


def read_inputs(paths: List[str], model: SelfVAE) -> torch.Tensor:
    """Image files -> uint8 ``(N, C, H, W)`` at the model's size (centre crop + resize, with a note)."""
    spec = model.specs[0]
    if spec.channels != 3:
        raise SampleError(f"the model takes {spec.channels}-channel images; image files are read as RGB")
    out = []
    for path in paths:
        rgb = read_image_rgb(path)
        h, w = rgb.shape[:2]
        if (h, w) != (spec.height, spec.width):
            crop = f"centre-cropped to {min(h, w)}x{min(h, w)}, " if h != w else ""
            print(f"note: {path} is {w}x{h}; {crop}resized to {spec.width}x{spec.height} (the model's size)")
        out.append(torch.from_numpy(fit_image(rgb, spec.height)))
    return torch.stack(out)


def input_images(args: argparse.Namespace, model: SelfVAE, state: Dict, default_num: int) -> torch.Tensor:
    """The inputs of an image mode: ``--images`` files, else the first ``--num`` images of the test split."""
    if args.images:
        return read_inputs(args.images, model)
    images, _ = dataset_images(state, model, args.dataset, args.data_root, args.split)
    return images[:args.num or default_num]


def superres_level(model: SelfVAE, height: int, width: int, requested: Optional[int]) -> int:
    """The level k whose size a low-resolution ``height x width`` file has, for a chain whose first k
    transforms are all ``downscale`` (so that y_k is x at 1/2^k). Raises :class:`SampleError`."""
    names = [t.name for t in model.chain.transforms]
    prefix = 0
    while prefix < len(names) and names[prefix] == "downscale":
        prefix += 1
    if prefix == 0:
        raise SampleError(f"superres needs a chain that starts with 'downscale'; this model's chain is "
                          f"'{model.config.transform or '(none: plain VAE)'}'. Use --mode cond-generate with "
                          f"images at the model's size")
    sizes = {k: (model.specs[k].height, model.specs[k].width) for k in range(1, prefix + 1)}
    accepted = ", ".join(f"{h}x{w} (k={k})" for k, (h, w) in sizes.items())
    matches = [k for k, hw in sizes.items() if hw == (height, width)]
    if not matches:
        spec = model.specs[0]
        extra = " (that is already the model's resolution)" if (height, width) == (spec.height, spec.width) else ""
        raise SampleError(f"superres: the input is {width}x{height}{extra}; this model super-resolves from "
                          f"{accepted}")
    k = matches[0]
    if requested is not None and requested != k:
        raise SampleError(f"superres: --level {requested} does not fit the input's size {width}x{height} "
                          f"(level {k}); this model super-resolves from {accepted}")
    return k


def read_lowres(paths: List[str], model: SelfVAE, requested: Optional[int]) -> Tuple[torch.Tensor, int]:
    """Low-resolution files (all the same size, not resized) -> uint8 ``(N, 3, h, w)`` and their level k."""
    arrays = [read_image_rgb(p) for p in paths]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        listed = ", ".join(f"{p}: {a.shape[1]}x{a.shape[0]}" for p, a in zip(paths, arrays))
        raise SampleError(f"superres: the input files have different sizes ({listed})")
    h, w = arrays[0].shape[:2]
    k = superres_level(model, h, w, requested)
    spec = model.specs[k]
    if spec.channels != 3 or spec.num_values != 256:
        raise SampleError(f"superres: level {k} is {spec.channels}-channel with {spec.num_values} values, "
                          f"not an RGB image")
    y = torch.stack([torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in arrays])
    return y, k


# --------------------------------------------------------------------------- pictures
def show(level: torch.Tensor, model: SelfVAE, k: int, size: int) -> torch.Tensor:
    """Level k (uint8 ``(N, C, h, w)`` at its spec) as displayable uint8 ``(N, 3, size, size)``."""
    shown = upscale_nearest(to_display(level.cpu(), model.specs[k].num_values), size)
    return shown.expand(-1, 3, -1, -1) if shown.shape[1] == 1 else shown


def save_levels(model: SelfVAE, levels: List[torch.Tensor], path: str) -> str:
    """Rows y_K, ..., y_1, x of one result (each upscaled to x's size)."""
    size = model.specs[0].height
    return save_rows([show(levels[k], model, k, size) for k in range(model.levels, -1, -1)], path)


def sequence_rows(first: torch.Tensor, middle: torch.Tensor, last: Optional[torch.Tensor], path: str) -> str:
    """One grid row per input b: ``first[b]``, ``middle[:, b]`` (``(S, B, C, H, W)``), then ``last[b]``.
    All uint8 at the same size."""
    S, B = middle.shape[:2]
    parts = [first.unsqueeze(1), middle.transpose(0, 1)] + ([last.unsqueeze(1)] if last is not None else [])
    rows = torch.cat([p.cpu() for p in parts], dim=1)  # (B, S + 1 or 2, C, H, W)
    return save_grid(rows.flatten(0, 1), path, nrow=rows.shape[1])


# --------------------------------------------------------------------------- main
@torch.no_grad()
def run(args: argparse.Namespace) -> List[str]:
    """Execute one mode; returns the paths written."""
    device = resolve_device(args.device)
    model, state = load_model(args.checkpoint, map_location=device)
    model.eval()
    K, mode = model.levels, args.mode
    decode = args.decode or DEFAULT_DECODE[mode]
    temperature = args.temperature if args.temperature is not None else (0.0 if mode == "interpolate" else 1.0)
    g = torch.Generator(device=device).manual_seed(args.seed)
    size = model.specs[0].height
    out = args.out
    written: List[str] = []

    def path(name: str) -> str:
        return os.path.join(out, name)

    if mode in ("cond-generate", "cond-reconstruct"):
        if K == 0:
            raise SampleError(f"--mode {mode} needs a model with levels; this one is the plain VAE (K = 0)")
        level = args.level or 1
        if not 1 <= level <= K:
            raise SampleError(f"--level must be in 1..{K} for this {K}-level model, got {level}")
    elif args.level is not None and mode != "superres":
        raise SampleError(f"--level applies to cond-generate, cond-reconstruct and superres, not {mode}")

    if mode == "generate":
        if args.images:
            raise SampleError("--images does not apply to --mode generate (it takes no inputs)")
        result = model.generate(args.num or 64, temperature=temperature, decode=decode, generator=g)
        written.append(save_grid(result.images, path("generate.png"), nrow=args.nrow))
        for k in range(1, K + 1):
            written.append(save_grid(to_display(result.levels[k].cpu(), model.specs[k].num_values),
                                     path(f"generate_y{k}.png"), nrow=args.nrow))
        return written

    if mode == "superres":
        if not args.images:
            raise SampleError("superres reads low-resolution image files: pass --images LOWRES.png ...; to "
                              "super-resolve test images use --mode cond-generate")
        y, k = read_lowres(args.images, model, args.level)
        y = y.to(device)
        draws = [model.cond_generate(y, level=k, temperature=temperature, decode=decode, generator=g)
                 for _ in range(args.samples or 4)]
        stem = f"superres_k{k}"
        written.append(save_rows([show(y, model, k, size)] + [d.images.cpu() for d in draws], path(f"{stem}.png")))
        for i, file in enumerate(args.images):
            name = os.path.splitext(os.path.basename(file))[0]
            written.append(save_png(draws[0].images[i].cpu(), path(f"{stem}_{i:02d}_{name}.png")))
        written.append(save_levels(model, draws[0].levels, path(f"{stem}_levels.png")))
        return written

    x = input_images(args, model, state, default_num=8).to(device)
    model.make_levels(x)  # checks the shape against the model, naming the problem

    if mode == "cond-generate":
        y = model.make_levels(x)[level]
        draws = [model.cond_generate(y, level=level, temperature=temperature, decode=decode, generator=g)
                 for _ in range(args.samples or 4)]
        stem = f"cond-generate_k{level}"
        written.append(save_rows([x.cpu(), show(y, model, level, size)] + [d.images.cpu() for d in draws],
                                 path(f"{stem}.png")))
        written.append(save_levels(model, draws[0].levels, path(f"{stem}_levels.png")))
    elif mode == "cond-reconstruct":
        y = model.make_levels(x)[level]
        result = model.cond_reconstruct(x, level=level, decode=decode, generator=g)
        stem = f"cond-reconstruct_k{level}"
        written.append(save_rows([x.cpu(), show(y, model, level, size), result.images.cpu()], path(f"{stem}.png")))
        written.append(save_levels(model, result.levels, path(f"{stem}_levels.png")))
    elif mode in ("reconstruct1", "reconstruct2"):
        if mode == "reconstruct1":
            result = model.reconstruct1(x, decode=decode, temperature=temperature, generator=g)
        else:
            result = model.reconstruct2(x, decode=decode, generator=g)
        written.append(save_rows([x.cpu(), result.images.cpu()], path(f"{mode}.png")))
        written.append(save_levels(model, result.levels, path(f"{mode}_levels.png")))
    elif mode == "interpolate":
        if x.shape[0] < 2:
            raise SampleError("interpolate needs two images (--images A B) or --num >= 2")
        if x.shape[0] % 2:
            print(f"note: {x.shape[0]} inputs; interpolating between pairs, the last one is left out")
        pairs = x.shape[0] // 2
        x_a, x_b = x[0:2 * pairs:2], x[1:2 * pairs:2]
        for method in ("linear", "spherical"):
            paths_ = model.interpolate(x_a, x_b, steps=args.steps, method=method, decode=decode,
                                       temperature=temperature, generator=g)
            written.append(sequence_rows(x_a, paths_, x_b, path(f"interpolate_{method}.png")))
    elif mode == "resample-z":
        draws = model.resample_z(x, num=args.samples or 8, decode=decode, temperature=temperature, generator=g)
        written.append(sequence_rows(x, draws, None, path("resample-z.png")))
    return written


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        paths = run(args)
    except (SampleError, EvaluationError, CheckpointError, DataError, TransformError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except OSError as e:  # the output folder cannot be written
        print(error_line(f"cannot write to --out {args.out}: {e}"), file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
