"""Evaluate a trained selfVAE: ``python -m selfvae.evaluate CHECKPOINT``.

What it measures (SPEC sections 3, 4, 6), on the test split of the checkpoint's dataset
(its ``data`` entry), on ``--dataset/--data-root/--split``, or on any image folder
(``--folder DIR``):

* the ELBO in bits per dimension of x with its per-term breakdown (bits in x, each y_k,
  each z_k and u; one posterior sample per image);
* the importance-weighted bound (Burda et al.) with ``--iw-samples`` samples per image
  (paper: 512), computed per image and then averaged; alongside it, the ELBO estimated
  from the *same* samples (the mean of the same log-weights), which the IW bound can never
  exceed (Jensen's inequality, image by image);
* the table of generation / reconstruction modes (paper Fig. 5): for each mode, and each
  level k where it applies, what a receiver must be sent (dimensions and bits under the
  model) and the quality of the result against the original (PSNR, SSIM);
* parameters per component, and the time to generate a batch of 32 images;
* optionally FID between generated samples and the evaluation images (``--fid-weights``).

``--json FILE`` writes every figure (keys ``elbo_bpd``, ``iw_bpd``, ``iw_samples``,
``terms_bpd``, ``n_images``, ``iw_elbo_bpd``, ``iw_n_images``, ``modes``, ``parameters``,
``generation_time``, ``fid``, ...). Non-finite numbers (an infinite PSNR of an exact
reconstruction) are written as ``null``.

Problems the user must fix (missing or corrupt checkpoint, data that does not fit the
model, a bad folder, missing FID weights) end with one ``error: ...`` line on stderr and
exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from transforms import TransformError

from .checkpoint import CheckpointError, load_model
from .datasets import DataError, load_dataset, load_image_folder
from .evaluation import evaluate_images, spread_subset
from .metrics import MetricsError, fid_from_features, inception_features, load_inception, psnr, ssim
from .model import SelfVAE, parameter_counts

MODE_TITLES = {
    "generate": "generation",
    "cond-generate": "conditional generation",
    "cond-reconstruct": "conditional reconstruction",
    "reconstruct1": "reconstruction 1",
    "reconstruct2": "reconstruction 2",
}


class EvaluationError(RuntimeError):
    """A problem the user must fix (bad arguments, data that does not fit the model)."""


# --------------------------------------------------------------------------- arguments
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m selfvae.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a selfvae checkpoint (.pt, e.g. runs/<name>/best.pt)")
    d = p.add_argument_group("data (default: the test split of the checkpoint's dataset)")
    d.add_argument("--dataset", default=None, help="default, cifar10, imagenette, celeba, folder")
    d.add_argument("--data-root", default=None, help="local folder of --dataset")
    d.add_argument("--split", default="test", choices=["train", "test"], help="split of --dataset (default test)")
    d.add_argument("--folder", default=None, help="evaluate every image of this folder (centre crop, resize)")
    d.add_argument("--max-images", type=int, default=None, help="use the first N images only")
    e = p.add_argument_group("likelihood")
    e.add_argument("--iw-samples", type=int, default=512,
                   help="importance samples per image for the IW bound (paper: 512; 0 = skip)")
    e.add_argument("--iw-chunk", type=int, default=32, help="samples processed at once (memory ~ batch * chunk)")
    e.add_argument("--iw-images", type=int, default=None, help="IW bound on N images spread evenly over the set")
    m = p.add_argument_group("modes, timing, FID")
    m.add_argument("--modes", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the table of generation/reconstruction modes (default on)")
    m.add_argument("--mode-images", type=int, default=256, help="images used for the mode table (default 256)")
    m.add_argument("--decode", default=None, choices=["mode", "sample"],
                   help="decoding of every level in the mode table (default: sample for the generation modes, "
                        "mode for the reconstructions)")
    m.add_argument("--timing-repeats", type=int, default=5,
                   help="timed generations of a batch of 32 images (after a warm-up; 0 = skip)")
    m.add_argument("--timing-warmup", type=int, default=1, help="untimed warm-up generations")
    m.add_argument("--fid-weights", default=None,
                   help="local FID Inception weights (weights-inception-2015-12-05-6726825d.pth) to compute FID "
                        "between generated samples and the evaluation images (needs torch-fidelity)")
    m.add_argument("--fid-samples", type=int, default=None,
                   help="generated samples for FID (default: as many as evaluation images)")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    r.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    r.add_argument("--batch-size", type=int, default=64, help="images per batch")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--json", default=None, help="write the figures to this JSON file")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("batch_size", "iw_chunk", "mode_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("iw_samples", "timing_repeats", "timing_warmup"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("max_images", "iw_images", "fid_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# --------------------------------------------------------------------------- shared helpers
def resolve_device(arg: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; checks that a requested CUDA device exists."""
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(arg)
    except RuntimeError as e:
        raise EvaluationError(f"--device '{arg}': {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {arg} given but CUDA is not available")
    return device


def check_images_fit(images: torch.Tensor, model: SelfVAE, what: str) -> None:
    """Raise :class:`EvaluationError` unless uint8 ``images`` ``(N, C, H, W)`` have the shape of x."""
    expected = model.specs[0].shape
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise EvaluationError(f"{what}: images have shape {tuple(images.shape[1:])}, the model expects "
                              f"{expected} (C, H, W)")
    if images.shape[0] == 0:
        raise EvaluationError(f"{what}: no images")


def dataset_images(state: Dict[str, Any], model: SelfVAE, dataset: Optional[str], data_root: Optional[str],
                   split: str) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Images of ``split`` of ``dataset`` (default: the checkpoint's ``data`` entry) at the model's size.

    Returns uint8 ``(N, C, H, W)`` and a description (dataset, root, split, seed, image_size).
    The checkpoint's root and seed (the seed fixes the train/test split) are used when the dataset is
    the checkpoint's own.
    """
    stored = state.get("data") or {}
    name = dataset or stored.get("dataset")
    if not name:
        raise EvaluationError("the checkpoint has no 'data' entry naming its dataset; pass --dataset "
                              "(with --data-root) or --folder")
    same = name == stored.get("dataset")
    root = data_root if data_root is not None else (stored.get("root") if same else None)
    seed = int(stored.get("seed", 0)) if same else 0
    size = model.config.image_size
    data = load_dataset(name, split, image_size=size, root=root, seed=seed)
    where = f"{name} ({split} split)"
    check_images_fit(data.images, model, where)
    return data.images, {"dataset": name, "root": root, "split": split, "seed": seed, "image_size": size}


def folder_images(folder: str, model: SelfVAE) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Every image under ``folder`` (recursive), centre-cropped and resized to the model's size."""
    images, _ = load_image_folder(folder, model.config.image_size)
    images = torch.from_numpy(images)
    check_images_fit(images, model, f"folder {folder}")
    return images, {"folder": os.path.abspath(folder), "image_size": model.config.image_size}


def json_safe(value: Any) -> Any:
    """Nested dicts/lists with non-finite floats replaced by None (strict JSON has no inf/NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------- likelihood
@torch.no_grad()
def iw_bound(model: SelfVAE, images: torch.Tensor, samples: int, chunk: int = 32, batch_size: int = 64,
             seed: int = 0, device: Optional[torch.device] = None, progress: bool = True) -> Dict[str, float]:
    """Importance-weighted bound and the ELBO of the same samples, in bits per dimension of x.

    images: uint8 ``(N, C, H, W)``. For image i with log-weights ``w_is`` (s = 1..S, from
    :meth:`SelfVAE.log_weights`): ``iw_i = logmeanexp_s w_is`` and ``elbo_i = mean_s w_is``; both are
    averaged over images. The log-weights are combined in float64, so ``iw_bpd <= iw_elbo_bpd`` holds to
    rounding for every set of images. Batch b uses the noise seed ``seed + start index`` (as
    :func:`selfvae.evaluation.evaluate_images`). Returns ``iw_bpd``, ``iw_elbo_bpd``, ``iw_samples``,
    ``iw_n_images``.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    scale = 1.0 / (model.x_dims * math.log(2.0))
    iw_sum = elbo_sum = 0.0
    n = images.shape[0]
    bar = tqdm(total=n * samples, desc=f"IW bound ({samples} samples)", unit="sample", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device)
            # log_weights reports samples done for the whole batch; the bar counts image-samples
            w = model.log_weights(x, samples, chunk=chunk, seed=seed + start,
                                  progress=_PerImage(bar, x.shape[0])).double()
            iw_sum += float((torch.logsumexp(w, dim=1) - math.log(samples)).sum())
            elbo_sum += float(w.mean(dim=1).sum())
    finally:
        bar.close()
        model.train(was_training)
    return {"iw_bpd": -iw_sum / n * scale, "iw_elbo_bpd": -elbo_sum / n * scale, "iw_samples": samples,
            "iw_n_images": n}


class _PerImage:
    """Progress adapter: ``update(n)`` of n samples for a batch of ``images`` advances ``bar`` by
    ``n * images``."""

    def __init__(self, bar: tqdm, images: int):
        self.bar, self.images = bar, images

    def update(self, n: int) -> None:
        self.bar.update(n * self.images)


# --------------------------------------------------------------------------- modes
class _ModeStats:
    """Running sums of one row of the mode table."""

    def __init__(self, mode: str, level: Optional[int], sent: Dict[str, int], decode: str):
        self.mode, self.level, self.sent, self.decode = mode, level, dict(sent), decode
        self.bits: Dict[str, float] = {name: 0.0 for name in sent}
        self.psnr: List[torch.Tensor] = []
        self.ssim: List[torch.Tensor] = []
        self.n = 0

    def add(self, bits: Dict[str, torch.Tensor], original: Optional[torch.Tensor], result: Optional[torch.Tensor],
            with_ssim: bool) -> None:
        """bits: name -> ``(B,)`` bits; original/result: uint8 ``(B, C, H, W)`` (None for generation)."""
        for name in self.sent:
            self.bits[name] += float(bits[name].double().sum())
        if original is not None:
            self.n += original.shape[0]
            self.psnr.append(psnr(result.cpu(), original.cpu()))
            if with_ssim:
                self.ssim.append(ssim(result.cpu(), original.cpu()))

    def row(self, x_dims: int) -> Dict[str, Any]:
        sent_bits = {name: (value / self.n if self.n else 0.0) for name, value in self.bits.items()}
        total_bits = sum(sent_bits.values())
        p = torch.cat(self.psnr) if self.psnr else None
        s = torch.cat(self.ssim) if self.ssim else None
        return {
            "mode": self.mode, "title": MODE_TITLES[self.mode], "level": self.level, "decode": self.decode,
            "sent": self.sent, "sent_dims": sum(self.sent.values()), "sent_bits": sent_bits,
            "bits": total_bits, "bpd": total_bits / x_dims,
            "psnr": float(p.mean()) if p is not None else None,
            "psnr_std": float(p.std()) if p is not None and p.numel() > 1 and bool(torch.isfinite(p).all()) else None,
            "ssim": float(s.mean()) if s is not None else None,
            "ssim_std": float(s.std()) if s is not None and s.numel() > 1 else None,
            "n_images": self.n,
        }


@torch.no_grad()
def mode_table(model: SelfVAE, images: torch.Tensor, batch_size: int = 64, seed: int = 0,
               decode: Optional[str] = None, device: Optional[torch.device] = None,
               progress: bool = True) -> List[Dict[str, Any]]:
    """Measure every generation/reconstruction mode (SPEC section 3, paper Fig. 5) on ``images``.

    images: uint8 ``(N, C, H, W)``. Rows, in this order: generation; conditional generation at
    k = 1..K; conditional reconstruction at k = 1..K; reconstruction 1; reconstruction 2. Each row
    holds ``sent`` (name -> dims), ``sent_bits`` (name -> bits per image, averaged over images: the
    variable's ELBO term, :class:`selfvae.model.ModeResult`), totals ``sent_dims``, ``bits``, ``bpd``
    (bits / dims of x) and the mean (and std) PSNR and SSIM of the result against the original image
    (None for generation, which has no original, and SSIM None for images smaller than 11x11).

    Conditional generation sends ``y_k``; its bits are those of ``y_k`` in the conditional
    reconstruction at the same level (the same quantity: the ELBO of the levels at and above k).
    ``decode`` None uses each mode's default (sample for the generation modes, mode otherwise).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    K = model.levels
    g = torch.Generator(device=device).manual_seed(seed)
    with_ssim = min(model.specs[0].height, model.specs[0].width) >= 11
    gen_decode = decode or "sample"
    rec_decode = decode or "mode"
    rows: Dict[Tuple[str, Optional[int]], _ModeStats] = {("generate", None): _ModeStats("generate", None, {},
                                                                                        gen_decode)}
    n = images.shape[0]
    bar = tqdm(total=n, desc="modes", unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device)
            levels = model.make_levels(x)
            for k in range(1, K + 1):
                rec = model.cond_reconstruct(x, level=k, decode=rec_decode, generator=g)
                _add(rows, "cond-reconstruct", k, rec, x, rec_decode, with_ssim)
                gen = model.cond_generate(levels[k], level=k, decode=gen_decode, generator=g)
                _add(rows, "cond-generate", k, gen, x, gen_decode, with_ssim)
            _add(rows, "reconstruct1", None, model.reconstruct1(x, decode=rec_decode, generator=g), x, rec_decode,
                 with_ssim)
            _add(rows, "reconstruct2", None, model.reconstruct2(x, decode=rec_decode, generator=g), x, rec_decode,
                 with_ssim)
            bar.update(x.shape[0])
    finally:
        bar.close()
        model.train(was_training)
    order = ["generate", "cond-generate", "cond-reconstruct", "reconstruct1", "reconstruct2"]
    keys = sorted(rows, key=lambda key: (order.index(key[0]), key[1] or 0))
    return [rows[key].row(model.x_dims) for key in keys]


def _add(rows, mode: str, level: Optional[int], result, x: torch.Tensor, decode: str, with_ssim: bool) -> None:
    key = (mode, level)
    if key not in rows:
        rows[key] = _ModeStats(mode, level, result.sent, decode)
    rows[key].add(result.sent_bits, x, result.images, with_ssim)


def _num(value: Optional[float], fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def format_mode_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The mode table as markdown: mode, level k, what is sent (dims and bits per variable), totals,
    bits per dimension of x, PSNR and SSIM."""
    lines = ["| mode | k | sent: variable [dims, bits] | dims | bits/image | bits/dim of x | PSNR (dB) | SSIM |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        sent = " + ".join(f"{name} [{dims}, {r['sent_bits'][name]:.1f}]" for name, dims in r["sent"].items())
        lines.append(f"| {r['title']} | {r['level'] if r['level'] is not None else '–'} | {sent or 'nothing'} | "
                     f"{r['sent_dims']} | {r['bits']:.1f} | {r['bpd']:.4f} | {_num(r['psnr'], '.2f')} | "
                     f"{_num(r['ssim'], '.4f')} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- timing, FID
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generation_time(model: SelfVAE, device: torch.device, batch: int = 32, repeats: int = 5, warmup: int = 1,
                    seed: int = 0) -> Dict[str, Any]:
    """Wall-clock seconds to generate a batch of ``batch`` images (decode=sample, temperature 1):
    ``warmup`` untimed runs, then ``repeats`` timed ones (CUDA synchronised before and after each).
    Returns median, min, max, mean, std (seconds), images per second at the median, the device,
    torch threads and version."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    try:
        for _ in range(warmup):
            model.generate(batch, generator=g)
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            model.generate(batch, generator=g)
            _sync(device)
            times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    median = statistics.median(times)
    info = {"batch": batch, "repeats": repeats, "warmup": warmup, "times_s": times, "median_s": median,
            "min_s": min(times), "max_s": max(times), "mean_s": statistics.fmean(times),
            "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
            "images_per_s": batch / median if median > 0 else None, "device": str(device),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@torch.no_grad()
def generated_images(model: SelfVAE, num: int, batch_size: int, seed: int, device: torch.device) -> torch.Tensor:
    """``num`` generated images (decode=sample, temperature 1): uint8 ``(num, C, H, W)`` on the CPU."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    try:
        for start in range(0, num, batch_size):
            out.append(model.generate(min(batch_size, num - start), generator=g).images.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------- main
def evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the evaluation described by the parsed arguments; prints a report and returns the figures."""
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, state = load_model(args.checkpoint, map_location=device)
    model.eval()
    if args.folder:
        if args.dataset:
            raise EvaluationError("give either --folder or --dataset, not both")
        images, source = folder_images(args.folder, model)
    else:
        images, source = dataset_images(state, model, args.dataset, args.data_root, args.split)
    if args.max_images:
        images = images[:args.max_images]
    inception = load_inception(args.fid_weights, device) if args.fid_weights else None  # fail before the long work

    counts = parameter_counts(model)
    K = model.levels
    where = source.get("folder") or f"{source['dataset']} ({source['split']} split)"
    print(f"checkpoint: {args.checkpoint} ({K}-level model '{model.config.transform or 'VAE'}', "
          f"{counts['total'] / 1e6:.3f} M parameters) on {device}")
    print(f"data: {where}, {images.shape[0]} images of {tuple(images.shape[1:])}")

    result: Dict[str, Any] = {"checkpoint": os.path.abspath(args.checkpoint), "config": model.config.to_dict(),
                              "step": state.get("step"), "data": source, "device": str(device), "seed": args.seed}
    elbo = evaluate_images(model, images, batch_size=args.batch_size, iw_samples=0, seed=args.seed, device=device,
                           progress=args.progress, desc="ELBO")
    result.update(elbo_bpd=elbo["elbo_bpd"], terms_bpd=elbo["terms_bpd"], n_images=elbo["n_images"])
    terms = ", ".join(f"{name} {value:.4f}" for name, value in elbo["terms_bpd"].items())
    print(f"ELBO: {elbo['elbo_bpd']:.4f} bpd (one posterior sample per image); bits per dim of x in each term: "
          f"{terms}")

    if args.iw_samples:
        iw_set = spread_subset(images, args.iw_images)
        iw = iw_bound(model, iw_set, args.iw_samples, chunk=args.iw_chunk, batch_size=args.batch_size,
                      seed=args.seed, device=device, progress=args.progress)
        result.update(iw)
        print(f"IW bound ({args.iw_samples} samples per image, {iw['iw_n_images']} images): {iw['iw_bpd']:.4f} bpd "
              f"(ELBO from the same samples: {iw['iw_elbo_bpd']:.4f} bpd)")
    else:
        result.update(iw_bpd=None, iw_elbo_bpd=None, iw_samples=0, iw_n_images=0)

    result["parameters"] = counts
    print("parameters: " + ", ".join(f"{name} {value:,}" for name, value in counts.items()))

    if args.timing_repeats:
        timing = generation_time(model, device, batch=32, repeats=args.timing_repeats, warmup=args.timing_warmup,
                                 seed=args.seed)
        result["generation_time"] = timing
        print(f"generation of {timing['batch']} images: median {timing['median_s'] * 1000:.1f} ms "
              f"(min {timing['min_s'] * 1000:.1f}, max {timing['max_s'] * 1000:.1f} ms over {timing['repeats']} "
              f"repeats after {timing['warmup']} warm-up) on {device}, {timing['torch_threads']} threads")
    else:
        result["generation_time"] = None

    if args.modes:
        mode_set = images[:args.mode_images]
        rows = mode_table(model, mode_set, batch_size=args.batch_size, seed=args.seed, decode=args.decode,
                          device=device, progress=args.progress)
        result["modes"] = rows
        result["mode_images"] = mode_set.shape[0]
        print(f"\nmodes on {mode_set.shape[0]} images (bits under the model, averaged per image; PSNR/SSIM of the "
              f"result against the original):\n")
        print(format_mode_table(rows) + "\n")
    else:
        result["modes"] = None

    if inception is not None:
        num = args.fid_samples or images.shape[0]
        fake = generated_images(model, num, args.batch_size, args.seed, device)
        value = fid_from_features(inception_features(inception, fake, args.batch_size, device),
                                  inception_features(inception, images, args.batch_size, device))
        result["fid"] = {"fid": value, "generated": num, "reference": images.shape[0],
                         "weights": os.path.abspath(args.fid_weights)}
        print(f"FID: {value:.2f} ({num} generated vs {images.shape[0]} evaluation images; small sets bias FID "
              f"upwards)")
    else:
        result["fid"] = None

    if args.json:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(json_safe(result), f, indent=2, allow_nan=False)
        except OSError as e:
            raise EvaluationError(f"cannot write --json {args.json}: {e}") from None
        print(f"wrote {args.json}")
    return result


def error_line(error: BaseException, limit: int = 2000) -> str:
    """``error: <message>`` on one line (torch's state-dict errors span many lines), at most ``limit``
    characters of message."""
    text = " ".join(str(error).split())
    return "error: " + (text if len(text) <= limit else text[:limit] + " ...")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        evaluate(args)
    except (EvaluationError, CheckpointError, DataError, TransformError, MetricsError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
