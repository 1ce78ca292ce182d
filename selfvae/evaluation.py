"""Evaluating a model on a set of images: ELBO and importance-weighted bits per dimension.

All figures are in bits per dimension of x (``C*H*W`` of x only; the ``y`` levels are
functions of x and add no dimensions, SPEC section 2).
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, Optional

import torch
from tqdm import tqdm

from .model import SelfVAE


@torch.no_grad()
def evaluate_images(model: SelfVAE, images: torch.Tensor, batch_size: int = 64, iw_samples: int = 0,
                    iw_chunk: int = 32, seed: int = 0, device: Optional[torch.device] = None,
                    autocast_dtype: Optional[torch.dtype] = None, progress: bool = True,
                    desc: str = "evaluate") -> Dict[str, object]:
    """ELBO bpd (one posterior sample per image), per-term bpd, and, when ``iw_samples > 0``,
    the importance-weighted bound in bpd with ``iw_samples`` samples per image.

    images: uint8 ``(N, C, H, W)`` in 0..255 (CPU or device). Returns a dict with keys
    ``elbo_bpd``, ``terms_bpd`` (name -> bpd), ``iw_bpd`` (None without IW), ``iw_samples``,
    ``n_images``. The IW log-likelihood is computed per example (log-mean-exp over its own
    samples) and then averaged over examples.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    scale = 1.0 / (model.x_dims * math.log(2.0))
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    n = images.shape[0]
    term_sums = {name: 0.0 for name in model.term_names()}
    iw_sum = 0.0
    total = n * max(iw_samples, 1)
    bar = tqdm(total=total, desc=desc, unit="img" if not iw_samples else "sample", disable=not progress,
               leave=False)
    autocast = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    try:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=True)
            with autocast:
                terms = model.elbo_terms(x, generator=generator)
                for name, value in terms.items():
                    term_sums[name] += float(value.double().sum())
                if iw_samples:
                    ll = model.iw_log_likelihood(x, iw_samples, chunk=iw_chunk, seed=seed + start)
                    iw_sum += float(ll.double().sum())
            bar.update(x.shape[0] * max(iw_samples, 1))
    finally:
        bar.close()
        model.train(was_training)
    terms_bpd = {name: -value / n * scale for name, value in term_sums.items()}
    return {
        "elbo_bpd": sum(terms_bpd.values()),
        "terms_bpd": terms_bpd,
        "iw_bpd": (-iw_sum / n * scale) if iw_samples else None,
        "iw_samples": iw_samples,
        "n_images": n,
    }


def spread_subset(images: torch.Tensor, n: int | None) -> torch.Tensor:
    """``n`` images spread evenly over ``images`` (all of them when ``n`` is None or too large):
    a subset for costly figures (the IW bound) that does not favour the first source image."""
    if not n or n >= len(images):
        return images
    return images[torch.linspace(0, len(images) - 1, n).round().long()]
