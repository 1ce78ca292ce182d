"""Generate and reconstruct with a trained selfVAE, writing PNG grids:
``python -m selfvae.sample CHECKPOINT --mode MODE --out DIR``.

Modes (paper §3.3, see :mod:`selfvae.modes`; "inputs" are ``--images`` files or the first ``--num`` test images):

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

Grids are enlarged by pixel repetition and their rows labelled. For the reconstruction modes,
``<stem>_levels.png`` shows the produced levels y_K .. x (one row per level, upscaled by nearest
neighbour; 3-bit levels are stretched to 0..255 for display). Input image files are read with
:func:`transforms.imageio.read_image` (alpha on white, 16-bit to 8-bit, gray to RGB for an RGB
model), centre-cropped to a square and resized to the model's size when they are not at it
already (a note says so). ``--decode`` sets how every level
is decoded (default: sample for generate/cond-generate/superres/resample-z, mode for the
reconstructions and interpolation). The paths written are printed, one per line.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from transforms.imageio import center_crop_resize, read_image

from . import cli, modes
from .checkpoint import load_model
from .images import save_grid, save_png, save_rows, to_display, upscale_nearest
from .model import SelfVAE

MODES = ("generate", "cond-generate", "cond-reconstruct", "reconstruct1", "reconstruct2", "superres",
         "interpolate", "resample-z")
# Default decoding per mode: draws for the generative modes, the most likely value for reconstructions.
DEFAULT_DECODE = {"generate": "sample", "cond-generate": "sample", "superres": "sample", "resample-z": "sample",
                  "cond-reconstruct": "mode", "reconstruct1": "mode", "reconstruct2": "mode", "interpolate": "mode"}
SampleError = cli.UserError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = cli.parser("python -m selfvae.sample", __doc__)
    p.add_argument("checkpoint", help="a selfvae checkpoint (.pt)")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    p.add_argument("--images", nargs="+", default=None, metavar="FILE",
                   help="input image files (default: the first --num images of the test split)")
    p.add_argument("--num", type=cli.positive_int, default=None,
                   help="generate: number of samples (default 64); other modes: test images used as inputs "
                        "(default 8)")
    p.add_argument("--level", type=cli.positive_int, default=None,
                   help="k for cond-generate/cond-reconstruct (default 1); superres: checked against the file size")
    p.add_argument("--temperature", type=cli.nonnegative_float, default=None,
                   help="temperature of the sampled latents and levels (default 1; interpolate: 0)")
    p.add_argument("--decode", default=None, choices=["mode", "sample"],
                   help="decode every level by its most likely value or by a draw (default depends on the mode)")
    p.add_argument("--samples", type=cli.positive_int, default=None,
                   help="draws per input for cond-generate/superres (default 4) and resample-z (default 8)")
    p.add_argument("--steps", type=cli.positive_int, default=8, help="interpolation points, end points included (default 8)")
    p.add_argument("--nrow", type=cli.positive_int, default=8, help="images per row of the generate grid")
    d = p.add_argument_group("test split (when --images is not given)")
    d.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    d.add_argument("--data-root", default=None)
    d.add_argument("--split", default="test", choices=["train", "validation", "test"])
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=cli.nonnegative_int, default=0)
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("argument --steps: must be >= 2")
    return args


# --------------------------------------------------------------------------- inputs
def read_inputs(paths: Sequence[str], model: SelfVAE) -> torch.Tensor:
    """Image files -> uint8 ``(N, C, H, W)`` at the model's size (centre crop + resize, with a note)."""
    spec = model.specs[0]
    out = []
    for path in paths:
        image = read_image(path, channels=spec.channels)
        h, w = image.shape[1:]
        if (h, w) != (spec.height, spec.width):
            crop = f"centre-cropped to {min(h, w)}x{min(h, w)}, " if h != w else ""
            print(f"note: {path} is {w}x{h}; {crop}resized to {spec.width}x{spec.height} (the model's size)")
            image = center_crop_resize(image, spec.height)
        out.append(torch.from_numpy(image))
    return torch.stack(out)


def input_images(args: argparse.Namespace, model: SelfVAE, state: Dict, default_num: int) -> torch.Tensor:
    """The inputs of an image mode: ``--images`` files, else the first ``--num`` images of the test split."""
    if args.images:
        return read_inputs(args.images, model)
    images, _ = cli.dataset_images(state, model, args.dataset, args.data_root, args.split, args.progress)
    return images[:args.num or default_num]


def superres_level(model: SelfVAE, height: int, width: int, requested: Optional[int]) -> int:
    """The level k whose size a low-resolution ``height x width`` file has, for a chain whose first k
    transforms are all ``downscale`` (so that y_k is x at 1/2^k)."""
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


def read_lowres(paths: Sequence[str], model: SelfVAE, requested: Optional[int]) -> Tuple[torch.Tensor, int]:
    """Low-resolution files (all the same size, not resized) -> uint8 ``(N, C, h, w)`` and their level k."""
    arrays = [read_image(p, channels=model.specs[0].channels) for p in paths]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        listed = ", ".join(f"{p}: {a.shape[2]}x{a.shape[1]}" for p, a in zip(paths, arrays))
        raise SampleError(f"superres: the input files have different sizes ({listed})")
    h, w = arrays[0].shape[1:]
    k = superres_level(model, h, w, requested)
    spec = model.specs[k]
    if spec.num_values != 256:
        raise SampleError(f"superres: level {k} has {spec.num_values} values, not an 8-bit image")
    return torch.stack([torch.from_numpy(a) for a in arrays]), k


# --------------------------------------------------------------------------- pictures
def show(level: torch.Tensor, model: SelfVAE, k: int, size: int) -> torch.Tensor:
    """Level k (uint8 ``(N, C, h, w)`` at its spec) as displayable uint8 ``(N, 3, size, size)``."""
    shown = upscale_nearest(to_display(level.cpu(), model.specs[k].num_values), size)
    return shown.expand(-1, 3, -1, -1) if shown.shape[1] == 1 else shown


def save_levels(model: SelfVAE, levels: List[torch.Tensor], path: str) -> str:
    """Rows y_K, ..., y_1, x of one result (each upscaled to x's size), labelled."""
    size = model.specs[0].height
    order = range(model.levels, -1, -1)
    return save_rows([show(levels[k], model, k, size) for k in order], path,
                     labels=[f"y{k}" if k else "x" for k in order])


def sequence_rows(first: torch.Tensor, middle: torch.Tensor, last: Optional[torch.Tensor], path: str) -> str:
    """One grid row per input b: ``first[b]``, ``middle[:, b]`` (``(S, B, C, H, W)``), then ``last[b]``.
    All uint8 at the same size."""
    parts = [first.unsqueeze(1), middle.transpose(0, 1)] + ([last.unsqueeze(1)] if last is not None else [])
    rows = torch.cat([p.cpu() for p in parts], dim=1)  # (B, S + 1 or 2, C, H, W)
    return save_grid(rows.flatten(0, 1), path, nrow=rows.shape[1])


# --------------------------------------------------------------------------- the modes
class Job:
    """One ``sample`` invocation: the model, its decoding settings and where the PNGs go."""

    def __init__(self, args: argparse.Namespace, model: SelfVAE, device: torch.device):
        self.args, self.model, self.device = args, model, device
        self.decode = args.decode or DEFAULT_DECODE[args.mode]
        default_t = 0.0 if args.mode == "interpolate" else 1.0
        self.temperature = args.temperature if args.temperature is not None else default_t
        self.g = torch.Generator(device=device).manual_seed(args.seed)
        self.size = model.specs[0].height
        self.written: List[str] = []

    def path(self, name: str) -> str:
        return os.path.join(self.args.out, name)

    def keep(self, path: str) -> None:
        self.written.append(path)

    def draws(self, y: torch.Tensor, level: int, default: int) -> List[modes.ModeResult]:
        return [modes.cond_generate(self.model, y, level=level, temperature=self.temperature, decode=self.decode,
                                    generator=self.g) for _ in range(self.args.samples or default)]


def run_generate(job: Job) -> None:
    model, args = job.model, job.args
    result = modes.generate(model, args.num or 64, temperature=job.temperature, decode=job.decode, generator=job.g)
    job.keep(save_grid(result.images, job.path("generate.png"), nrow=args.nrow))
    for k in range(1, model.levels + 1):
        job.keep(save_grid(to_display(result.levels[k].cpu(), model.specs[k].num_values),
                           job.path(f"generate_y{k}.png"), nrow=args.nrow))


def run_superres(job: Job) -> None:
    y, k = read_lowres(job.args.images, job.model, job.args.level)
    draws = job.draws(y.to(job.device), k, 4)
    stem = f"superres_k{k}"
    job.keep(save_rows([show(y, job.model, k, job.size)] + [d.images.cpu() for d in draws], job.path(f"{stem}.png"),
                       labels=[f"input (y{k})"] + [f"draw {i + 1}" for i in range(len(draws))]))
    for i, file in enumerate(job.args.images):
        name = os.path.splitext(os.path.basename(file))[0]
        job.keep(save_png(draws[0].images[i].cpu(), job.path(f"{stem}_{i:02d}_{name}.png")))
    job.keep(save_levels(job.model, draws[0].levels, job.path(f"{stem}_levels.png")))


def run_on_inputs(job: Job, x: torch.Tensor, level: int) -> None:
    """The modes that start from input images x (uint8 ``(N, C, H, W)`` on the device)."""
    model, mode, args = job.model, job.args.mode, job.args
    if mode == "cond-generate":
        y = model.make_levels(x)[level]
        draws = job.draws(y, level, 4)
        stem = f"cond-generate_k{level}"
        job.keep(save_rows([x.cpu(), show(y, model, level, job.size)] + [d.images.cpu() for d in draws],
                           job.path(f"{stem}.png"),
                           labels=["inputs", f"y{level}"] + [f"draw {i + 1}" for i in range(len(draws))]))
        job.keep(save_levels(model, draws[0].levels, job.path(f"{stem}_levels.png")))
    elif mode == "cond-reconstruct":
        y = model.make_levels(x)[level]
        result = modes.cond_reconstruct(model, x, level=level, decode=job.decode, generator=job.g)
        stem = f"cond-reconstruct_k{level}"
        job.keep(save_rows([x.cpu(), show(y, model, level, job.size), result.images.cpu()], job.path(f"{stem}.png"),
                           labels=["inputs", f"y{level}", f"cond. reconstruction k={level}"]))
        job.keep(save_levels(model, result.levels, job.path(f"{stem}_levels.png")))
    elif mode in ("reconstruct1", "reconstruct2"):
        if mode == "reconstruct1":
            result = modes.reconstruct1(model, x, decode=job.decode, temperature=job.temperature, generator=job.g)
        else:
            result = modes.reconstruct2(model, x, decode=job.decode, generator=job.g)
        job.keep(save_rows([x.cpu(), result.images.cpu()], job.path(f"{mode}.png"),
                           labels=["inputs", "reconstruction " + mode[-1]]))
        job.keep(save_levels(model, result.levels, job.path(f"{mode}_levels.png")))
    elif mode == "interpolate":
        run_interpolate(job, x)
    elif mode == "resample-z":
        draws = modes.resample_z(model, x, num=args.samples or 8, decode=job.decode, temperature=job.temperature,
                                 generator=job.g)
        job.keep(sequence_rows(x, draws, None, job.path("resample-z.png")))


def run_interpolate(job: Job, x: torch.Tensor) -> None:
    if x.shape[0] < 2:
        raise SampleError("interpolate needs two images (--images A B) or --num >= 2")
    if x.shape[0] % 2:
        print(f"note: {x.shape[0]} inputs; interpolating between pairs, the last one is left out")
    pairs = x.shape[0] // 2
    x_a, x_b = x[0:2 * pairs:2], x[1:2 * pairs:2]
    for method in ("linear", "spherical"):
        path = modes.interpolate(job.model, x_a, x_b, steps=job.args.steps, method=method, decode=job.decode,
                                 temperature=job.temperature, generator=job.g)
        job.keep(sequence_rows(x_a, path, x_b, job.path(f"interpolate_{method}.png")))


def check_arguments(args: argparse.Namespace, levels: int) -> int:
    """The level of a conditional mode (1 by default) after checking the options fit the mode and model."""
    mode = args.mode
    if mode in ("cond-generate", "cond-reconstruct"):
        if levels == 0:
            raise SampleError(f"--mode {mode} needs a model with levels; this one is the plain VAE (K = 0)")
        level = args.level or 1
        if not 1 <= level <= levels:
            raise SampleError(f"--level must be in 1..{levels} for this {levels}-level model, got {level}")
        return level
    if args.level is not None and mode != "superres":
        raise SampleError(f"--level applies to cond-generate, cond-reconstruct and superres, not {mode}")
    if mode == "generate" and args.images:
        raise SampleError("--images does not apply to --mode generate (it takes no inputs)")
    if mode == "superres" and not args.images:
        raise SampleError("superres reads low-resolution image files: pass --images LOWRES.png ...; to "
                          "super-resolve test images use --mode cond-generate")
    return 0


# --------------------------------------------------------------------------- main
@torch.no_grad()
def run(args: argparse.Namespace) -> List[str]:
    """Execute one mode; returns the paths written."""
    cli.check_output_folder(args.out)
    if args.images:
        cli.check_input_files(args.images, "--images")
    device = cli.resolve_device(args.device)
    model, state = load_model(args.checkpoint, map_location=device)
    level = check_arguments(args, model.levels)
    job = Job(args, model, device)
    if args.mode == "generate":
        run_generate(job)
    elif args.mode == "superres":
        run_superres(job)
    else:
        x = input_images(args, model, state, default_num=8).to(device)
        model.make_levels(x)  # checks the shape against the model, naming the problem
        run_on_inputs(job, x, level)
    return job.written


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    written: List[str] = []

    def command() -> None:
        try:
            written.extend(run(args))
        except OSError as e:  # the output folder cannot be written
            raise cli.UserError(f"cannot write to --out {args.out}: {e}") from None

    status = cli.run(command)
    for path in written:
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
