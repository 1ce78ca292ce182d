"""What the codec's overlapping windows buy, and the alternatives that were measured against them.

    python experiments/codec_windows.py --corpus runs/corpus --split train --crop 384 --every 4
    python experiments/codec_windows.py --corpus runs/corpus --split heldout --positions

The shipped model sees one 32x32 tile at a time. This script computes, from the model's
teacher-forced per-pixel likelihoods (latents at their prior means, as the codec codes them),

* ``--positions``: the bits of each pixel position of a tile, averaged over every tile of the
  photographs, per level: the tile's average against its central half and its border (the
  pixels the tile code predicts without their neighbours across the tile's edge);
* for each photograph (centre crop of ``--crop`` pixels, whole tiles), its bits per dimension when
  coded tile by tile, and when every level below the top is coded with windows of the tile's side
  at a stride of ``S / stride`` (``--strides``): each pixel under the window owning it (the one in
  whose central half it lies: ``core``, what :mod:`selfvae.codec.windows` codes at stride S/2), or
  under the mixture of all windows covering it, weighted by ``exp(beta * d)`` with ``d`` its distance
  in x pixels to the window's edge, capped at S/2 (``mix``; a valid code too, but its mixtures have
  as many components as windows, and the coder's time grows with them).

Choose on the training photographs, report on the held-out ones. Prints markdown tables and writes
them with the figures as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from selfvae import shipped  # noqa: E402
from selfvae.codec import bitsback  # noqa: E402
from transforms.imageio import read_image  # noqa: E402

from common import write_report  # noqa: E402


def tile_log_probs(model, tiles: torch.Tensor, batch: int = 128) -> Dict[int, torch.Tensor]:
    """Per-pixel log-likelihood (nats) of every level of each tile, latents at their prior means:
    level k -> ``(n, S / 2^k, S / 2^k)`` (a first phase known from the level above counts 0)."""
    K, out = model.levels, {}
    for start in range(0, len(tiles), batch):
        levels = bitsback.levels_from(model, tiles[start:start + batch], 0)
        latents = bitsback.prior_means(model, levels, 0)
        pixels = {K: model.p_top(None, latents[K + 1]).log_prob_pixels(levels[K])}
        for k in range(K, 0, -1):
            pixels[k - 1] = bitsback.likelihood(model, k, levels[k], latents[k]).log_prob_pixels(levels[k - 1])
        for k, v in pixels.items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def cut(image: torch.Tensor, oy: int, ox: int, S: int) -> Tuple[torch.Tensor, int, int]:
    C, H, W = image.shape
    nh, nw = (H - oy) // S, (W - ox) // S
    crop = image[:, oy:oy + nh * S, ox:ox + nw * S]
    return crop.reshape(C, nh, S, nw, S).permute(1, 3, 0, 2, 4).reshape(-1, C, S, S), nh, nw


def shifted_maps(model, image: torch.Tensor, stride: int) -> Dict[Tuple[int, int, int], torch.Tensor]:
    """``(dy, dx, k)`` -> level k's per-pixel log-likelihood under the tiling shifted by
    ``(dy, dx) * stride``, NaN where that tiling does not cover the image."""
    S = model.specs[0].height
    C, H, W = image.shape
    maps = {}
    for dy in range(S // stride):
        for dx in range(S // stride):
            tiles, nh, nw = cut(image, dy * stride, dx * stride, S)
            if not len(tiles):
                continue
            for k, lp in tile_log_probs(model, tiles).items():
                t, s = lp.shape[-1], 2 ** k
                whole = torch.full((H // s, W // s), float("nan"), dtype=lp.dtype)
                y0, x0 = dy * stride // s, dx * stride // s
                whole[y0:y0 + nh * t, x0:x0 + nw * t] = lp.reshape(nh, nw, t, t).permute(0, 2, 1, 3).reshape(nh * t, nw * t)
                maps[(dy, dx, k)] = whole
    return maps


def edge_distance(n: int, level: int, shift: int, S: int) -> torch.Tensor:
    """Each level coordinate's distance (in x pixels) to the edge of its window of a tiling shifted by
    ``shift`` x pixels."""
    s = 2 ** level
    t = S // s
    q = (torch.arange(n) - shift // s) % t
    return torch.minimum(q, t - 1 - q).float() * s


def combine(maps, level: int, shape, S: int, stride: int, mode: str, beta: float = 0.0) -> torch.Tensor:
    """Level ``level``'s per-pixel log-likelihood under the ``mode`` rule (module docstring)."""
    n = S // stride
    keys = [(dy, dx) for dy in range(n) for dx in range(n) if (dy, dx, level) in maps]
    L = torch.stack([maps[(dy, dx, level)] for dy, dx in keys])
    cover = ~torch.isnan(L)
    d = torch.stack([torch.minimum(edge_distance(shape[0], level, dy * stride, S)[:, None],
                                   edge_distance(shape[1], level, dx * stride, S)[None, :]) for dy, dx in keys])
    d = torch.where(cover, d, torch.full_like(d, -1.0))
    if mode == "core":  # the window whose centre is nearest (ties: the first tiling)
        return L.gather(0, d.argmax(0, keepdim=True))[0]
    logw = torch.where(cover, beta * d.clamp(max=S // 2), torch.full_like(d, -1e30))
    logw = logw - torch.logsumexp(logw, 0, keepdim=True)
    return torch.logsumexp(logw + torch.where(cover, L, torch.zeros_like(L)), 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint or shipped model name (default: photo)")
    p.add_argument("--corpus", default="runs/corpus")
    p.add_argument("--split", choices=("train", "heldout"), default="train")
    p.add_argument("--every", type=int, default=1, help="every N-th photograph of the split")
    p.add_argument("--crop", type=int, default=0, help="centre crop of at most N x N pixels (0: whole)")
    p.add_argument("--strides", default="2,4", help="window strides as fractions of the tile side")
    p.add_argument("--betas", default="0,0.1,0.2,0.4", help="mixture weights' slopes")
    p.add_argument("--positions", action="store_true", help="also the per-position bits of the tiles")
    p.add_argument("--out", default="runs/codec_windows")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model, _ = shipped.load(args.model)
    model.eval()
    S, K = model.specs[0].height, model.levels
    folder = os.path.join(args.corpus, args.split)
    names = sorted(os.listdir(folder))[::args.every]
    rules = [("tiles", 0, "core", 0.0)]
    for fraction in map(int, args.strides.split(",")):
        rules.append((f"core, stride S/{fraction}", S // fraction, "core", 0.0))
        rules += [(f"mix, stride S/{fraction}, beta {b}", S // fraction, "mix", float(b)) for b in args.betas.split(",")]
    totals = {r[0]: 0.0 for r in rules}
    position_sums: Dict[int, torch.Tensor] = {}
    tiles_seen, dims, rows = 0, 0, []
    for name in names:
        image = torch.from_numpy(read_image(os.path.join(folder, name), channels=None).copy())
        if image.shape[0] != model.specs[0].channels:
            continue
        C, H, W = image.shape
        if args.crop:
            h, w = min(H, args.crop), min(W, args.crop)
            image = image[:, (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]
        H, W = image.shape[1] // S * S, image.shape[2] // S * S
        image = image[:, :H, :W].contiguous()
        by_stride = {}
        row = {"photo": os.path.splitext(name)[0], "size": f"{W}x{H}"}
        for label, stride, mode, beta in rules:
            stride = stride or S
            if stride not in by_stride:
                by_stride[stride] = shifted_maps(model, image, stride)
            maps = by_stride[stride]
            nats = -maps[(0, 0, K)].sum().item()
            for k in range(K):
                nats -= combine(maps, k, (H >> k, W >> k), S, stride, mode, beta).sum().item()
            row[label] = nats / math.log(2) / image.numel()
            totals[label] += nats / math.log(2)
        if args.positions:
            tiles, _, _ = cut(image, 0, 0, S)
            for k, lp in tile_log_probs(model, tiles).items():
                position_sums[k] = position_sums.get(k, 0) - lp.sum(0) / math.log(2)
            tiles_seen += len(tiles)
        dims += image.numel()
        rows.append(row)
        print(row["photo"], " | ".join(f"{label} {row[label]:.4f}" for label, *_ in rules), flush=True)
    overall = {label: totals[label] / dims for label in totals}
    base = overall["tiles"]
    lines = [f"## Windows against tiles: {len(rows)} {args.split} photographs of {args.corpus}"
             + (f", centre crops of at most {args.crop} px" if args.crop else "") + ", bits per dimension", "",
             "| rule | bpd | vs tiles |", "|---|---:|---:|"]
    lines += [f"| {label} | {v:.4f} | {100 * (v / base - 1):+.2f} % |" for label, v in overall.items()]
    result = {"rules": overall, "photos": rows, "split": args.split, "crop": args.crop}
    if args.positions:
        lines += ["", f"## Bits per pixel position, {tiles_seen} tiles (per level: each of its pixels, all channels)", "",
                  "| level | tile average | central half | outer quarter | border (outermost 1/16) |",
                  "|---|---:|---:|---:|---:|"]
        positions = {}
        for k in sorted(position_sums, reverse=True):
            m = position_sums[k] / tiles_seen
            t = m.shape[-1]
            q, b = t // 4, max(1, t // 16)
            inner = m[q:t - q, q:t - q]
            outer = (m.sum() - inner.sum()) / (m.numel() - inner.numel())
            ring = (m.sum() - m[b:t - b, b:t - b].sum()) / (m.numel() - m[b:t - b, b:t - b].numel())
            name = "x" if k == 0 else f"y{k}"
            positions[name] = {"average": m.mean().item(), "central_half": inner.mean().item(),
                               "outer": outer.item(), "border": ring.item()}
            lines.append(f"| {name} | {m.mean():.3f} | {inner.mean():.3f} | {outer:.3f} | {ring:.3f} |")
        result["positions"] = positions
    write_report(args.out, "codec_windows", "\n".join(lines), result)


if __name__ == "__main__":
    main()
