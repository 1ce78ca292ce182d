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
``edit``              add ``s`` times a concept vector to each input's u (posterior mean) for every
                      ``s`` in ``--strengths`` (default -2 -1 0 1 2): the vector is the mean u of the
                      images in ``--with-folder`` minus that of ``--without-folder`` (see
                      :mod:`selfvae.edit`). ``edit_regenerate.png``: the levels below u regenerated
                      (z's at their prior means at the default ``--temperature`` 0);
                      ``edit_keep.png``: the input's own z's kept. Each row x*, one column per
                      strength. The vector is saved to ``concept.pt`` for reuse.
``inpaint``           fill the pixels a ``--mask`` file marks (nonzero = to fill, as ``cv2.inpaint``;
                      one mask for every input or one per input) by ``--iterations`` sweeps of
                      pseudo-Gibbs imputation through the levels (see :mod:`selfvae.inpaint`);
                      rows: input with the hole grey, mask, ours, ``cv2.inpaint`` Telea, original.
                      With ``--images`` a mask is required and each result is also written at the
                      model's size; on test images the default mask is the centred square.

Grids are enlarged by pixel repetition and their rows labelled. For the reconstruction modes,
``<stem>_levels.png`` shows the produced levels y_K .. x (one row per level, upscaled by nearest
neighbour; 3-bit levels are stretched to 0..255 for display). Input image files are read with
:func:`transforms.imageio.read_image` (alpha on white, 16-bit to 8-bit, gray to RGB for an RGB
model), centre-cropped to a square and resized to the model's size when they are not at it
already (a note says so). ``--decode`` sets how every level
is decoded (default: sample for generate/cond-generate/superres/resample-z, mode for the
reconstructions, interpolation, edit and inpaint's last sweep). The paths written are printed, one
per line.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from transforms.imageio import ImageReadError, center_crop_resize, read_image

from . import cli, modes
from .checkpoint import load_model
from .datasets import DataError
from .edit import concept_vector, edit, save_concept
from .images import save_grid, save_png, save_rows, to_display, upscale_nearest
from .inpaint import DEFAULT_ITERATIONS, classical_inpaint, inpaint, mask_image, read_mask, show_hole, standard_masks
from .model import SelfVAE

MODES = ("generate", "cond-generate", "cond-reconstruct", "reconstruct1", "reconstruct2", "superres",
         "interpolate", "resample-z", "edit", "inpaint")
# Default decoding per mode: draws for the generative modes, the most likely value for reconstructions.
DEFAULT_DECODE = {"generate": "sample", "cond-generate": "sample", "superres": "sample", "resample-z": "sample",
                  "cond-reconstruct": "mode", "reconstruct1": "mode", "reconstruct2": "mode", "interpolate": "mode",
                  "edit": "mode", "inpaint": "mode"}
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
                   help="temperature of the sampled latents and levels (default 1; interpolate, edit: 0)")
    p.add_argument("--decode", default=None, choices=modes.DECODES,
                   help="decode every level by its most likely value, its rounded expected value or a draw (default depends on the mode)")
    p.add_argument("--samples", type=cli.positive_int, default=None,
                   help="draws per input for cond-generate/superres (default 4) and resample-z (default 8)")
    p.add_argument("--steps", type=cli.positive_int, default=8, help="interpolation points, end points included (default 8)")
    p.add_argument("--nrow", type=cli.positive_int, default=8, help="images per row of the generate grid")
    e = p.add_argument_group("edit (a concept vector in u)")
    e.add_argument("--with-folder", default=None, metavar="DIR", help="images with the property (searched recursively)")
    e.add_argument("--without-folder", default=None, metavar="DIR", help="images without the property")
    e.add_argument("--strengths", nargs="+", type=cli.finite_float, default=None, metavar="S",
                   help="multiples of the concept vector added to u, one column each (default -2 -1 0 1 2)")
    i = p.add_argument_group("inpaint")
    i.add_argument("--mask", nargs="+", default=None, metavar="FILE",
                   help="mask image(s), nonzero = pixel to fill: one for every input or one per input "
                        "(required with --images; default on test images: the centred square)")
    i.add_argument("--iterations", type=cli.positive_int, default=None,
                   help=f"sweeps through the hierarchy (default {DEFAULT_ITERATIONS})")
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
        default_t = 0.0 if args.mode in ("interpolate", "edit") else 1.0
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
    elif mode == "edit":
        run_edit(job, x)
    elif mode == "inpaint":
        run_inpaint(job, x)


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


DEFAULT_STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def read_folder(option: str, folder: str, model: SelfVAE, progress: bool) -> torch.Tensor:
    """Every image under the folder of ``option``, at the model's size: uint8 ``(N, C, H, W)``."""
    try:
        return cli.folder_images(folder, model, progress)[0]
    except DataError as e:  # no images there, or one that cannot be read: say which option
        raise SampleError(f"{option}: {e}") from None


def run_edit(job: Job, x: torch.Tensor) -> None:
    """The concept vector from the two folders, then every input edited at every strength, with the
    levels below u regenerated and kept (one grid each: rows the inputs, columns the strengths)."""
    args, model = job.args, job.model
    with_images = read_folder("--with-folder", args.with_folder, model, args.progress)
    without_images = read_folder("--without-folder", args.without_folder, model, args.progress)
    concept = concept_vector(model, with_images, without_images)
    print(f"note: concept vector from {concept.num_with} images with the property and {concept.num_without} "
          f"without: norm {concept.norm:.4g}, the sets {concept.separation:.3g} spreads apart along it")
    strengths = args.strengths or DEFAULT_STRENGTHS
    names = ([os.path.basename(p) for p in args.images] if args.images
             else [f"{args.split} {i}" for i in range(len(x))])
    columns = ["input"] + [f"s = {s:g}" for s in strengths]
    for lower in ("regenerate", "keep"):
        edited = edit(model, x, concept, strengths, lower=lower, decode=job.decode, temperature=job.temperature,
                      generator=job.g).cpu()  # (S, B, C, H, W)
        rows = [torch.cat([x[b:b + 1].cpu(), edited[:, b]]) for b in range(len(x))]
        job.keep(save_rows(rows, job.path(f"edit_{lower}.png"), labels=names, column_labels=columns))
    job.keep(save_concept(concept, job.path("concept.pt"), checkpoint=os.path.abspath(args.checkpoint),
                          with_folder=os.path.abspath(args.with_folder),
                          without_folder=os.path.abspath(args.without_folder)))


def check_edit_arguments(args: argparse.Namespace) -> None:
    """The edit options are given with --mode edit only, and its two folders exist."""
    options = {"--with-folder": args.with_folder, "--without-folder": args.without_folder,
               "--strengths": args.strengths}
    if args.mode != "edit":
        given = [option for option, value in options.items() if value is not None]
        if given:
            raise SampleError(f"{given[0]} applies to --mode edit only, not {args.mode}")
        return
    if args.with_folder is None or args.without_folder is None:
        raise SampleError("--mode edit needs --with-folder DIR and --without-folder DIR (images with and "
                          "without the property)")
    for option in ("--with-folder", "--without-folder"):
        folder = options[option]
        if not os.path.exists(folder):
            raise SampleError(f"{option} {folder}: no such folder")
        if not os.path.isdir(folder):
            raise SampleError(f"{option} {folder} is a file, not a folder")


def read_masks(args: argparse.Namespace, model: SelfVAE, num: int) -> torch.Tensor:
    """The masks of inpaint for ``num`` inputs: bool ``(num, 1, H, W)``, True = to fill (``--mask``
    files fitted to the model's size, see :func:`selfvae.inpaint.read_mask`; default: the centred
    square). Each must leave something to fill and something known."""
    size = model.specs[0].height
    if not args.mask:
        return standard_masks(size, size)["centre"][None].expand(num, -1, -1, -1)
    if len(args.mask) not in (1, num):
        raise SampleError(f"--mask: {len(args.mask)} masks for {num} images; give one mask for every image "
                          f"or one per image")
    masks = []
    for path in args.mask:
        try:
            mask, (height, width) = read_mask(path, size)
        except ImageReadError as e:
            raise SampleError(f"--mask {e}") from None
        resized = "" if (height, width) == (size, size) else f" once fitted to the model's {size}x{size}"
        if not mask.any():
            raise SampleError(f"--mask {path}: no pixel to fill{resized} (pixels to fill are nonzero, as in "
                              f"cv2.inpaint)")
        if mask.all():
            raise SampleError(f"--mask {path}: every pixel is to be filled{resized}, nothing is known to fill "
                              f"them from (pixels to fill are nonzero, as in cv2.inpaint; is the mask inverted?)")
        if resized:
            print(f"note: --mask {path} fitted to {size}x{size} like the images; {int(mask.sum())} pixels to fill")
        masks.append(mask)
    return torch.stack(masks).expand(num, -1, -1, -1)


def run_inpaint(job: Job, x: torch.Tensor) -> None:
    """Fill the masked pixels of each input; rows: input with the hole grey, mask, ours, Telea,
    original. With ``--images`` each result is also written at the model's size."""
    args = job.args
    missing = read_masks(args, job.model, len(x)).to(x.device)
    result = inpaint(job.model, x, missing, iterations=args.iterations or DEFAULT_ITERATIONS, decode=job.decode,
                     temperature=job.temperature, generator=job.g)
    rows = [show_hole(x, missing), mask_image(missing), result.images, classical_inpaint(x, missing), x]
    job.keep(save_rows([r.cpu() for r in rows], job.path("inpaint.png"),
                       labels=["input (hole grey)", "mask", "selfVAE", "cv2.inpaint Telea", "original"]))
    for i, file in enumerate(args.images or []):
        name = os.path.splitext(os.path.basename(file))[0]
        job.keep(save_png(result.images[i].cpu(), job.path(f"inpaint_{i:02d}_{name}.png")))


def check_inpaint_arguments(args: argparse.Namespace) -> None:
    """--mask and --iterations go with --mode inpaint only; with --images a mask is required; the mask
    files exist (their number and content are checked by :func:`read_masks`)."""
    if args.mode != "inpaint":
        given = [option for option, value in (("--mask", args.mask), ("--iterations", args.iterations))
                 if value is not None]
        if given:
            raise SampleError(f"{given[0]} applies to --mode inpaint only, not {args.mode}")
        return
    if args.images and not args.mask:
        raise SampleError("--mode inpaint with --images needs --mask FILE (nonzero pixels are filled; one mask "
                          "for every image or one per image)")
    if args.mask:
        cli.check_input_files(args.mask, "--mask")


def check_arguments(args: argparse.Namespace, levels: int) -> int:
    """The level of a conditional mode (1 by default) after checking the options fit the mode and model."""
    check_edit_arguments(args)
    check_inpaint_arguments(args)
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
