"""Writing images for people to look at: PNG files and grids."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image


def to_display(level: torch.Tensor, num_values: int = 256) -> torch.Tensor:
    """A level with values ``0..num_values-1`` -> uint8 0..255 (``bits:3`` levels are stretched)."""
    if num_values == 256:
        return level.to(torch.uint8)
    return (level.float() * (255.0 / (num_values - 1))).round().clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, pad_value: int = 255) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` (C = 1 or 3) -> one uint8 ``(3, H', W')`` grid, ``nrow`` images per row."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"make_grid expects uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    images = images.detach().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = torch.full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def upscale_nearest(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(N, C, h, w)`` -> ``(N, C, size, size)`` by pixel repetition (for showing small levels)."""
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images.float(), size=(size, size), mode="nearest").to(torch.uint8)


def save_png(image: torch.Tensor, path: str) -> str:
    """Write a uint8 ``(C, H, W)`` tensor (C = 1 or 3) as PNG, atomically; returns the path."""
    array = image.detach().cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(np.ascontiguousarray(array)).save(tmp)
    os.replace(tmp, path)
    return path


def save_grid(images: torch.Tensor, path: str, nrow: int = 8) -> str:
    """uint8 ``(N, C, H, W)`` -> PNG grid at ``path``."""
    return save_png(make_grid(images, nrow=nrow), path)


def save_rows(rows: Sequence[torch.Tensor], path: str) -> str:
    """Each element of ``rows`` is uint8 ``(N, C, H, W)`` with the same N and size; one grid row each
    (e.g. inputs above their reconstructions)."""
    n = rows[0].shape[0]
    stacked = torch.cat([r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows], dim=0)
    return save_grid(stacked, path, nrow=n)
