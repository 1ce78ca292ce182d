"""Evaluate a trained selfVAE: ``python -m selfvae.evaluate CHECKPOINT``.

What it measures, on the test split of the checkpoint's dataset (the split recorded in
the checkpoint), on ``--dataset/--data-root/--split``, or on any image folder
(``--folder DIR``):

* the ELBO in bits per dimension of x with its per-term breakdown (bits in x, each y_k,
  each z_k and u; one posterior sample per image);
* the importance-weighted bound (Burda et al.) with ``--iw-samples`` samples per image
  (paper: 512), computed per image and then averaged; beside it the ELBO estimated from the
  *same* samples, which the IW bound can never exceed (Jensen's inequality, image by image);
* the table of generation / reconstruction modes (paper Fig. 5): for each mode, and each
  level k where it applies, what a receiver must be sent (dimensions and bits under the
  model) and the quality of the result against the original (PSNR, SSIM);
* parameters per component, and the time to generate a batch of 32 images;
* optionally FID between generated samples and the evaluation images (``--fid-weights``), and
  then the parameter efficiency ``1 / (FID x parameters in millions)``;
* one markdown row (model, chain, parameters, ELBO, IW, sampling time per 32 images, FID,
  efficiency) that ``--table FILE`` appends to a table, so models evaluated one by one are
  compared on one table.

``--json FILE`` writes every figure with the keys of :func:`selfvae.evaluation.likelihood`
(the same keys as the trainer's ``eval.json``) and ``modes``, ``parameters``,
``generation_time``, ``fid``, .... Non-finite numbers are written as ``null``.

Problems the user must fix (missing or corrupt checkpoint, data that does not fit the
model, a bad folder, missing FID weights, an unwritable ``--json``) end with one
``error: ...`` line on stderr and exit code 2, before the long work where they can be seen.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

import torch

from . import cli, modes, shipped
from .checkpoint import load_model
from .evaluation import (comparison_header, comparison_row, format_likelihood, format_mode_table, generated_images,
                         generation_time, likelihood, mode_table, parameter_efficiency, write_json)
from .metrics import fid_from_features, inception_features, load_inception
from .model import SelfVAE, parameter_counts


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = cli.parser("python -m selfvae.evaluate", __doc__)
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="a selfvae checkpoint (.pt, e.g. runs/<name>/best.pt) or a shipped model name "
                        "(default: photo, evaluated on the built-in test photographs)")
    d = p.add_argument_group("data (default: the test split of the checkpoint's dataset)")
    d.add_argument("--dataset", default=None, help="default, cifar10, imagenette, celeba, folder")
    d.add_argument("--data-root", default=None, help="local folder of --dataset")
    d.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="split of --dataset (default test)")
    d.add_argument("--folder", default=None, help="evaluate every image of this folder (centre crop, resize)")
    d.add_argument("--max-images", type=cli.positive_int, default=None, help="use the first N images only")
    e = p.add_argument_group("likelihood")
    e.add_argument("--iw-samples", type=cli.nonnegative_int, default=512,
                   help="importance samples per image for the IW bound (paper: 512; 0 = skip)")
    e.add_argument("--iw-chunk", type=cli.positive_int, default=32,
                   help="samples processed at once (memory ~ batch * chunk)")
    e.add_argument("--iw-images", type=cli.positive_int, default=None,
                   help="IW bound on N images spread evenly over the set")
    e.add_argument("--compile", action="store_true",
                   help="torch.compile the IW bound's per-sample terms, networks channels-last: the same bound "
                        "to float rounding, 1.5x the samples/s of eager on the 2-core CPU (README, Speed); the "
                        "first run on a machine spends a minute or two compiling, later runs load "
                        "~/.cache/selfvae/inductor")
    m = p.add_argument_group("modes, timing, FID")
    m.add_argument("--modes", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the table of generation/reconstruction modes (default on)")
    m.add_argument("--mode-images", type=cli.positive_int, default=256, help="images used for the mode table (256)")
    m.add_argument("--decode", default=None, choices=modes.DECODES,
                   help="decoding of every level in the mode table (default: sample for the generation modes, "
                        "mode for the reconstructions)")
    m.add_argument("--timing-repeats", type=cli.nonnegative_int, default=5,
                   help="timed generations of a batch of 32 images (after a warm-up; 0 = skip)")
    m.add_argument("--timing-warmup", type=cli.nonnegative_int, default=1, help="untimed warm-up generations")
    m.add_argument("--fid-weights", default=None,
                   help="local FID Inception weights (weights-inception-2015-12-05-6726825d.pth) to compute FID "
                        "between generated samples and the evaluation images (needs torch-fidelity)")
    m.add_argument("--fid-samples", type=cli.positive_int, default=None,
                   help="generated samples for FID (default: as many as evaluation images)")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    r.add_argument("--seed", type=cli.nonnegative_int, default=0, help="seed of every random draw")
    r.add_argument("--batch-size", type=cli.positive_int, default=64, help="images per batch")
    r.add_argument("--threads", type=cli.positive_int, default=None, help="torch CPU threads")
    r.add_argument("--json", default=None, help="write the figures to this JSON file")
    r.add_argument("--table", default=None, help="append this model's comparison row to a markdown file "
                                                  "(header written when the file is new)")
    r.add_argument("--name", default=None, help="the model's name in the comparison row (default: the "
                                                 "checkpoint's folder and file)")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the report
def evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the evaluation described by the parsed arguments; prints a report and returns the figures."""
    if args.folder and args.dataset:
        raise cli.UserError("give either --folder or --dataset, not both")
    json_path = cli.check_output_file(args.json, "--json") if args.json else None  # before the long work
    table_path = _check_table(args.table) if args.table else None
    device = cli.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.checkpoint, shipped_name = shipped.resolve(args.checkpoint)
    model, state = load_model(args.checkpoint, map_location=device)
    if args.folder:
        images, source = cli.folder_images(args.folder, model, args.progress)
    else:
        images, source = cli.dataset_images(state, model, args.dataset, args.data_root, args.split, args.progress)
    images = images[:args.max_images] if args.max_images else images
    inception = load_inception(args.fid_weights, device) if args.fid_weights else None  # fail before the long work

    counts = parameter_counts(model)
    where = source.get("folder") or f"{source['dataset']} ({source['split']} split)"
    print(f"checkpoint: {args.checkpoint} ({model.levels}-level model '{model.config.transform or 'VAE'}', "
          f"{counts['total'] / 1e6:.3f} M parameters) on {device}")
    print(f"data: {where}, {images.shape[0]} images of {tuple(images.shape[1:])}")
    result: Dict[str, Any] = {"checkpoint": os.path.abspath(args.checkpoint), "config": model.config.to_dict(),
                              "shipped": shipped_name, "step": state.get("step"), "data": source, "device": str(device), "seed": args.seed}
    result.update(likelihood(model, images, iw_samples=args.iw_samples, iw_images=args.iw_images,
                             iw_chunk=args.iw_chunk, batch_size=args.batch_size, seed=args.seed, device=device,
                             progress=args.progress, iw_compile=args.compile))
    print(format_likelihood(result))
    result["parameters"] = counts
    print("parameters: " + ", ".join(f"{name} {value:,}" for name, value in counts.items()))
    result["generation_time"] = _timing(model, device, args) if args.timing_repeats else None
    result["modes"] = _modes(model, images[:args.mode_images], device, args) if args.modes else None
    result["mode_images"] = min(args.mode_images, images.shape[0]) if args.modes else 0
    result["fid"] = _fid(model, images, inception, device, args) if inception is not None else None
    result["parameter_efficiency"] = parameter_efficiency((result["fid"] or {}).get("fid"), counts["total"])
    name = args.name or shipped_name or os.path.join(os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint))),
                                     os.path.basename(args.checkpoint))
    result["comparison_row"] = comparison_row(name, result)
    print(f"\ncomparison row:\n{comparison_header()}\n{result['comparison_row']}")
    if table_path:
        _append_row(table_path, result["comparison_row"])
        print(f"appended to {table_path}")
    if json_path:
        try:
            write_json(result, json_path)
        except OSError as e:
            raise cli.UserError(f"cannot write --json {json_path}: {e}") from None
        print(f"wrote {json_path}")
    return result


def _check_table(path: str) -> str:
    """``--table``: an existing markdown file is appended to only if it is a comparison table."""
    if os.path.exists(path):
        try:
            with open(path) as f:
                first = f.readline().rstrip("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise cli.UserError(f"cannot read --table {path}: {e}") from None
        if first != comparison_header().split("\n")[0]:
            raise cli.UserError(f"--table {path} exists and is not a selfvae comparison table (its first line "
                                f"differs); give a new file or one this option wrote")
        if not os.access(path, os.W_OK):
            raise cli.UserError(f"cannot write --table {path}")
        return path
    return cli.check_output_file(path, "--table")


def _append_row(path: str, row: str) -> None:
    new = not os.path.exists(path)
    try:
        with open(path, "a") as f:
            f.write((comparison_header() + "\n" if new else "") + row + "\n")
    except OSError as e:
        raise cli.UserError(f"cannot write --table {path}: {e}") from None


def _timing(model: SelfVAE, device: torch.device, args: argparse.Namespace) -> Dict[str, Any]:
    timing = generation_time(model, device, batch=32, repeats=args.timing_repeats, warmup=args.timing_warmup,
                             seed=args.seed)
    print(f"generation of {timing['batch']} images: median {timing['median_s'] * 1000:.1f} ms "
          f"(min {timing['min_s'] * 1000:.1f}, max {timing['max_s'] * 1000:.1f} ms over {timing['repeats']} "
          f"repeats after {timing['warmup']} warm-up) on {device}, {timing['torch_threads']} threads")
    return timing


def _modes(model: SelfVAE, images: torch.Tensor, device: torch.device, args: argparse.Namespace) -> List[Dict]:
    rows = mode_table(model, images, batch_size=args.batch_size, seed=args.seed, decode=args.decode, device=device,
                      progress=args.progress)
    print(f"\nmodes on {images.shape[0]} images (bits under the model, averaged per image; PSNR/SSIM of the "
          f"result against the original):\n\n{format_mode_table(rows)}\n")
    return rows


def _fid(model: SelfVAE, images: torch.Tensor, inception, device: torch.device,
         args: argparse.Namespace) -> Dict[str, Any]:
    num = args.fid_samples or images.shape[0]
    fake = generated_images(model, num, args.batch_size, args.seed, device)
    value = fid_from_features(inception_features(inception, fake, args.batch_size, device),
                              inception_features(inception, images, args.batch_size, device))
    print(f"FID: {value:.2f} ({num} generated vs {images.shape[0]} evaluation images; small sets bias FID upwards)")
    return {"fid": value, "generated": num, "reference": images.shape[0], "weights": os.path.abspath(args.fid_weights)}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: evaluate(args))


if __name__ == "__main__":
    sys.exit(main())
