"""Measuring a model: bits per dimension (ELBO, per-term, importance-weighted bound), the
table of generation/reconstruction modes, and generation time.

:func:`likelihood` is the one place these bpd figures are computed; training and
``python -m selfvae.evaluate`` both call it and report its keys unchanged:

``elbo_bpd``, ``terms_bpd`` (name -> bpd), ``n_images``
    the single-sample ELBO over every image (one posterior sample each) and its terms
    (bits in ``x``, each ``y_k``, each ``z_k`` and ``u``);
``iw_bpd``, ``iw_elbo_bpd``, ``iw_samples``, ``iw_n_images``
    the importance-weighted bound (Burda et al.) with ``iw_samples`` samples per image on
    ``iw_n_images`` images spread evenly over the set, and the ELBO estimated from the *same*
    samples (the mean of the same log-weights), which the IW bound never exceeds (Jensen,
    image by image). ``None`` without IW samples.

Every bpd divides by the dimensions of x only (the y levels are functions of x).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from . import modes, runtime
from .metrics import psnr, ssim
from .model import SelfVAE, nats_to_bpd

MODE_TITLES = {
    "generate": "generation",
    "cond-generate": "conditional generation",
    "cond-reconstruct": "conditional reconstruction",
    "reconstruct1": "reconstruction 1",
    "reconstruct2": "reconstruction 2",
}


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode without gradients for the block; its train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def spread_subset(images: torch.Tensor, n: Optional[int]) -> torch.Tensor:
    """``n`` images spread evenly over ``images`` (all of them when ``n`` is None or too large):
    a subset for costly figures (the IW bound) that does not favour the first source image."""
    if not n or n >= len(images):
        return images
    return images[torch.linspace(0, len(images) - 1, n).round().long()]


class _PerImage:
    """Progress adapter: ``update(n)`` of n samples for a batch of ``images`` advances ``bar`` by
    ``n * images``."""

    def __init__(self, bar: tqdm, images: int):
        self.bar, self.images = bar, images

    def update(self, n: int) -> None:
        self.bar.update(n * self.images)


# --------------------------------------------------------------------------- bits per dimension
def elbo(model: SelfVAE, images: torch.Tensor, *, batch_size: int = 64, seed: int = 0,
         device: Optional[torch.device] = None, autocast_dtype: Optional[torch.dtype] = None,
         progress: bool = True, desc: str = "ELBO") -> Dict[str, Any]:
    """Single-sample ELBO of uint8 ``images`` ``(N, C, H, W)``: ``elbo_bpd``, ``terms_bpd``, ``n_images``."""
    device = device or next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = {name: 0.0 for name in model.term_names()}
    n = images.shape[0]
    with evaluating(model), tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=True)
            with _autocast(device, autocast_dtype):
                terms = model.elbo_terms(x, generator=generator)
            for name, value in terms.items():
                sums[name] += float(value.double().sum())
            bar.update(x.shape[0])
    terms_bpd = {name: nats_to_bpd(total / n, model.x_dims) for name, total in sums.items()}
    return {"elbo_bpd": sum(terms_bpd.values()), "terms_bpd": terms_bpd, "n_images": n}


def iw_bound(model: SelfVAE, images: torch.Tensor, samples: int, *, chunk: int = 32, batch_size: int = 64,
             seed: int = 0, device: Optional[torch.device] = None, autocast_dtype: Optional[torch.dtype] = None,
             progress: bool = True, compile: bool = False) -> Dict[str, Any]:
    """Importance-weighted bound and the ELBO of the same samples on uint8 ``images`` ``(N, C, H, W)``.

    For image i with log-weights ``w_is`` (s = 1..S, :meth:`SelfVAE.log_weights`):
    ``iw_i = logmeanexp_s w_is`` and ``elbo_i = mean_s w_is``; both are averaged over images. The
    log-weights are combined in float64, so ``iw_bpd <= iw_elbo_bpd`` holds to rounding. Batch b uses
    the noise seed ``seed + start index``; samples are processed ``chunk`` at a time (memory ~
    batch * chunk) and the result does not depend on ``chunk``. ``compile``: the samples' terms through
    ``torch.compile`` (:meth:`SelfVAE.log_weights`; the same bound up to float rounding).
    """
    device = device or next(model.parameters()).device
    iw_sum = elbo_sum = 0.0
    n = images.shape[0]
    with evaluating(model), tqdm(total=n * samples, desc=f"IW bound ({samples} samples)", unit="sample",
                                 disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device)
            with _autocast(device, autocast_dtype):
                w = model.log_weights(x, samples, chunk=chunk, seed=seed + start,
                                      progress=_PerImage(bar, x.shape[0]), compile=compile).double()
            iw_sum += float((torch.logsumexp(w, dim=1) - math.log(samples)).sum())
            elbo_sum += float(w.mean(dim=1).sum())
    return {"iw_bpd": nats_to_bpd(iw_sum / n, model.x_dims), "iw_elbo_bpd": nats_to_bpd(elbo_sum / n, model.x_dims),
            "iw_samples": samples, "iw_n_images": n}


def likelihood(model: SelfVAE, images: torch.Tensor, *, iw_samples: int = 0, iw_images: Optional[int] = None,
               iw_chunk: int = 32, batch_size: int = 64, seed: int = 0, device: Optional[torch.device] = None,
               autocast_dtype: Optional[torch.dtype] = None, progress: bool = True,
               iw_compile: bool = False) -> Dict[str, Any]:
    """Every bpd figure of a set of uint8 images ``(N, C, H, W)`` (keys in the module docstring):
    the ELBO on all of them, and the IW bound with the ELBO of the same samples on ``iw_images`` of
    them spread over the set (all when None; compiled when ``iw_compile``, see :func:`iw_bound`)."""
    common = dict(batch_size=batch_size, seed=seed, device=device, autocast_dtype=autocast_dtype, progress=progress)
    result = elbo(model, images, **common)
    if iw_samples:
        result.update(iw_bound(model, spread_subset(images, iw_images), iw_samples, chunk=iw_chunk,
                               compile=iw_compile, **common))
    else:
        result.update(iw_bpd=None, iw_elbo_bpd=None, iw_samples=0, iw_n_images=0)
    return result


def format_likelihood(result: Dict[str, Any]) -> str:
    """The figures of :func:`likelihood` in two lines of text."""
    terms = ", ".join(f"{name} {value:.4f}" for name, value in result["terms_bpd"].items())
    text = (f"ELBO: {result['elbo_bpd']:.4f} bpd on {result['n_images']} images (one posterior sample each); "
            f"bits per dim of x in each term: {terms}")
    if result.get("iw_samples"):
        text += (f"\nIW bound ({result['iw_samples']} samples per image, {result['iw_n_images']} images): "
                 f"{result['iw_bpd']:.4f} bpd (ELBO of the same samples: {result['iw_elbo_bpd']:.4f} bpd)")
    return text


# --------------------------------------------------------------------------- the mode table
class _ModeStats:
    """Running sums of one row of the mode table."""

    def __init__(self, mode: str, level: Optional[int], sent: Dict[str, int], decode: str):
        self.mode, self.level, self.sent, self.decode = mode, level, dict(sent), decode
        self.bits: Dict[str, float] = {name: 0.0 for name in sent}
        self.psnr: List[torch.Tensor] = []
        self.ssim: List[torch.Tensor] = []
        self.n = 0

    def add(self, result: modes.ModeResult, original: torch.Tensor, with_ssim: bool) -> None:
        for name in self.sent:
            self.bits[name] += float(result.sent_bits[name].double().sum())
        self.n += original.shape[0]
        self.psnr.append(psnr(result.images.cpu(), original.cpu()))
        if with_ssim:
            self.ssim.append(ssim(result.images.cpu(), original.cpu()))

    def row(self, x_dims: int) -> Dict[str, Any]:
        sent_bits = {name: (value / self.n if self.n else 0.0) for name, value in self.bits.items()}
        total_bits = sum(sent_bits.values())
        p = torch.cat(self.psnr) if self.psnr else None
        s = torch.cat(self.ssim) if self.ssim else None
        return {
            "mode": self.mode, "title": MODE_TITLES[self.mode], "level": self.level, "decode": self.decode,
            "latents": LATENTS[self.mode],
            "sent": self.sent, "sent_dims": sum(self.sent.values()), "sent_bits": sent_bits,
            "bits": total_bits, "bpd": total_bits / x_dims,
            "psnr": float(p.mean()) if p is not None else None,
            "psnr_std": float(p.std()) if p is not None and p.numel() > 1 and bool(torch.isfinite(p).all()) else None,
            "ssim": float(s.mean()) if s is not None else None,
            "ssim_std": float(s.std()) if s is not None and s.numel() > 1 else None,
            "n_images": self.n,
        }


#: Grid step of the latents a reconstruction mode sends (as ``selfvae.compress --with-z`` sends them).
Z_STEP = 0.5
LATENTS = {"generate": "sampled", "cond-generate": "u or z above k: posterior sample; below: sampled",
           "cond-reconstruct": f"posterior means on a {Z_STEP} grid", "reconstruct1": "u: posterior mean; z: sampled",
           "reconstruct2": f"posterior means on a {Z_STEP} grid"}


def _mode_results(model: SelfVAE, x: torch.Tensor, rec: str, gen: str,
                  g: torch.Generator) -> Iterator[Tuple[str, Optional[int], str, modes.ModeResult]]:
    """Every mode with an original on one batch: (mode, level, decoding, result). The reconstructions
    that send z's charge them under the priors the receiver can form (its reconstructed levels)."""
    levels = model.make_levels(x)
    for k in range(1, model.levels + 1):
        yield "cond-reconstruct", k, rec, modes.cond_reconstruct(model, x, level=k, decode=rec, generator=g,
                                                                 z_step=Z_STEP)
        yield "cond-generate", k, gen, modes.cond_generate(model, levels[k], level=k, decode=gen, generator=g)
    yield "reconstruct1", None, rec, modes.reconstruct1(model, x, decode=rec, generator=g)
    yield "reconstruct2", None, rec, modes.reconstruct2(model, x, decode=rec, generator=g, z_step=Z_STEP)


def mode_table(model: SelfVAE, images: torch.Tensor, batch_size: int = 64, seed: int = 0,
               decode: Optional[str] = None, device: Optional[torch.device] = None,
               progress: bool = True) -> List[Dict[str, Any]]:
    """Measure every generation/reconstruction mode (paper Fig. 5) on uint8 ``images`` ``(N, C, H, W)``.

    Rows, in this order: generation; conditional generation at k = 1..K; conditional reconstruction
    at k = 1..K; reconstruction 1; reconstruction 2. Each row holds ``sent`` (name -> dims),
    ``sent_bits`` (name -> bits per image, averaged over images: the variable's ELBO term, see
    :class:`selfvae.modes.ModeResult`), totals ``sent_dims``, ``bits``, ``bpd`` (bits / dims of x),
    ``decode`` and the mean (and std) PSNR and SSIM of the result against the original image (None
    for generation, which has no original; SSIM None for images smaller than 11x11).

    ``decode`` None uses each mode's default (sample for the generation modes, mode otherwise).
    """
    device = device or next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    with_ssim = min(model.specs[0].height, model.specs[0].width) >= 11
    gen_decode, rec_decode = decode or "sample", decode or "mode"
    rows: Dict[Tuple[str, Optional[int]], _ModeStats] = {("generate", None): _ModeStats("generate", None, {},
                                                                                        gen_decode)}
    n = images.shape[0]
    with evaluating(model), tqdm(total=n, desc="modes", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device)
            for mode, level, how, result in _mode_results(model, x, rec_decode, gen_decode, g):
                stats = rows.setdefault((mode, level), _ModeStats(mode, level, result.sent, how))
                stats.add(result, x, with_ssim)
            bar.update(x.shape[0])
    order = list(MODE_TITLES)
    keys = sorted(rows, key=lambda key: (order.index(key[0]), key[1] or 0))
    return [rows[key].row(model.x_dims) for key in keys]


def _num(value: Optional[float], fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def format_mode_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The mode table as markdown: mode, level k, what is sent (dims and bits per variable), totals,
    bits per dimension of x, PSNR and SSIM, and whether the outputs were decoded as the most likely
    value (mode) or a sample, and where the latents came from (posterior mean or a sample)."""
    lines = ["| mode | k | sent: variable [dims, bits] | dims | bits/image | bits/dim of x | PSNR (dB) | SSIM "
             "| levels decoded | latents |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        sent = " + ".join(f"{name} [{dims}, {r['sent_bits'][name]:.1f}]" for name, dims in r["sent"].items())
        lines.append(f"| {r['title']} | {r['level'] if r['level'] is not None else '–'} | {sent or 'nothing'} | "
                     f"{r['sent_dims']} | {r['bits']:.1f} | {r['bpd']:.4f} | {_num(r['psnr'], '.2f')} | "
                     f"{_num(r['ssim'], '.4f')} | {r['decode']} | {r['latents']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generation_time(model: SelfVAE, device: torch.device, batch: int = 32, repeats: int = 5, warmup: int = 1,
                    seed: int = 0) -> Dict[str, Any]:
    """Wall-clock seconds to generate a batch of ``batch`` images (decode=sample, temperature 1):
    ``warmup`` untimed runs, then ``repeats`` timed ones (CUDA synchronised before and after each).
    Returns median, min, max, mean, std (seconds), images per second at the median, the device,
    torch threads and version."""
    g = torch.Generator(device=device).manual_seed(seed)
    times = []
    with evaluating(model):
        for _ in range(warmup):
            modes.generate(model, batch, generator=g)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            modes.generate(model, batch, generator=g)
            _sync(device)
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    info = {"batch": batch, "repeats": repeats, "warmup": warmup, "times_s": times, "median_s": median,
            "min_s": min(times), "max_s": max(times), "mean_s": statistics.fmean(times),
            "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
            "images_per_s": batch / median if median > 0 else None, "device": str(device),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": runtime.cpu_name()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def generated_images(model: SelfVAE, num: int, batch_size: int, seed: int, device: torch.device) -> torch.Tensor:
    """``num`` generated images (decode=sample, temperature 1): uint8 ``(num, C, H, W)`` on the CPU."""
    g = torch.Generator(device=device).manual_seed(seed)
    with evaluating(model):
        return torch.cat([modes.generate(model, min(batch_size, num - start), generator=g).images.cpu()
                          for start in range(0, num, batch_size)])


# --------------------------------------------------------------------------- models side by side
COMPARISON_COLUMNS = ("model", "chain", "z_flow", "parameters (M)", "test ELBO bpd", "IW bpd (samples)",
                      "ms per 32 samples (device)", "FID", "1 / (FID x M params)")


def parameter_efficiency(fid: Optional[float], parameters: int) -> Optional[float]:
    """``1 / (FID x parameters in millions)`` (higher is better); None without a finite positive FID."""
    if fid is None or not math.isfinite(fid) or fid <= 0 or parameters <= 0:
        return None
    return 1.0 / (fid * parameters / 1e6)


def comparison_header() -> str:
    return "| " + " | ".join(COMPARISON_COLUMNS) + " |\n|" + "---|" * 2 + "---:|" * (len(COMPARISON_COLUMNS) - 2)


def comparison_row(name: str, figures: Dict[str, Any]) -> str:
    """One markdown row of :data:`COMPARISON_COLUMNS` from an evaluation's figures (the dict
    ``python -m selfvae.evaluate`` returns): models evaluated separately line up in one table."""
    config, total = figures["config"], figures["parameters"]["total"]
    timing, fid = figures.get("generation_time"), (figures.get("fid") or {}).get("fid")
    efficiency = parameter_efficiency(fid, total)
    iw = f"{figures['iw_bpd']:.3f} ({figures['iw_samples']})" if figures.get("iw_bpd") is not None else "–"
    ms = f"{timing['median_s'] * 1000 * 32 / timing['batch']:.0f} ({timing['device']})" if timing else "–"
    cells = [name, config.get("transform") or "(VAE)", str(config.get("z_flow", 0)), f"{total / 1e6:.3f}",
             f"{figures['elbo_bpd']:.3f}", iw, ms, f"{fid:.2f}" if fid is not None else "–",
             f"{efficiency:.4f}" if efficiency is not None else "–"]
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------- writing figures
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


def write_json(figures: Dict[str, Any], path: str) -> str:
    """Write ``figures`` as strict JSON (non-finite numbers as null), atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with open(tmp, "w") as f:
        json.dump(json_safe(figures), f, indent=2, allow_nan=False)
    os.replace(tmp, path)
    return path
