"""Writing images for people to look at: PNG files and grids.

Model images are small (32x32), too small to judge at their own size, so grids are
enlarged by pixel repetition (nearest neighbour: no pixel is invented or smoothed; by
default to at least 128 pixels a tile), separated by a thin grey border; rows can
carry a label on their left ("inputs", "reconstruction 2", ...) and columns one above them.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

#: Grids enlarge tiles to at least this many pixels (an integer factor, nearest neighbour).
MIN_TILE = 128
BORDER = 2
BORDER_VALUE = 200
LABEL_PAD = 6


def to_display(level: torch.Tensor, num_values: int = 256) -> torch.Tensor:
    """A level with values ``0..num_values-1`` -> uint8 0..255 (``bits:3`` levels are stretched)."""
    if num_values == 256:
        return level.to(torch.uint8)
    return (level.float() * (255.0 / (num_values - 1))).round().clamp(0, 255).to(torch.uint8)


def upscale_nearest(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(N, C, h, w)`` -> ``(N, C, size, size)`` by pixel repetition (for showing small levels)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images.float(), size=(size, size), mode="nearest").to(torch.uint8)


def display_scale(height: int, width: int, min_tile: int = MIN_TILE) -> int:
    """The integer enlargement that brings an ``height x width`` tile to at least ``min_tile`` pixels."""
    return max(1, -(-min_tile // max(height, width)))


def make_grid(images: torch.Tensor, nrow: int = 8, scale: Optional[int] = None, border: int = BORDER,
              border_value: int = BORDER_VALUE) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` (C = 1 or 3) -> one uint8 ``(3, H', W')`` grid, ``nrow`` images per row,
    each enlarged ``scale`` times by pixel repetition (default: :func:`display_scale`)."""
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(f"make_grid expects uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    images = images.detach().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, c, h, w = images.shape
    scale = scale or display_scale(h, w)
    images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    h, w = h * scale, w * scale
    ncol = max(1, min(nrow, n))
    rows = (n + ncol - 1) // ncol
    grid = torch.full((c, rows * (h + border) + border, ncol * (w + border) + border), border_value, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = border + r * (h + border), border + col * (w + border)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def save_png(image: torch.Tensor, path: str) -> str:
    """Write a uint8 ``(C, H, W)`` tensor (C = 1 or 3) as PNG, atomically; returns the path."""
    array = image.detach().cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_grid(images: torch.Tensor, path: str, nrow: int = 8, scale: Optional[int] = None) -> str:
    """uint8 ``(N, C, H, W)`` -> PNG grid at ``path`` (enlarged, see :func:`make_grid`)."""
    return save_png(make_grid(images, nrow=nrow, scale=scale), path)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _label_column(labels: Sequence[str], row_height: int, rows: int, border: int) -> np.ndarray:
    """A white ``(H, W, 3)`` strip with each label vertically centred on its row."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [probe.textbbox((0, 0), text, font=font)[2] for text in labels]
    width = max(widths, default=0) + 2 * LABEL_PAD
    height = rows * (row_height + border) + border
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for r, text in enumerate(labels):
        box = draw.textbbox((0, 0), text, font=font)
        top = border + r * (row_height + border) + (row_height - (box[3] - box[1])) // 2 - box[1]
        draw.text((LABEL_PAD, top), text, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def _label_row(labels: Sequence[str], tile_width: int, left: int, width: int, border: int) -> np.ndarray:
    """A white ``(H, width, 3)`` strip with each label horizontally centred over its column (the
    columns start ``left`` pixels in, ``tile_width`` wide, ``border`` apart)."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), text, font=font) for text in labels]
    height = max((box[3] for box in boxes), default=0) + 2 * LABEL_PAD
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for c, (text, box) in enumerate(zip(labels, boxes)):
        x = left + border + c * (tile_width + border) + (tile_width - (box[2] - box[0])) // 2 - box[0]
        draw.text((x, LABEL_PAD), text, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def save_rows(rows: Sequence[torch.Tensor], path: str, labels: Optional[Sequence[str]] = None,
              scale: Optional[int] = None, column_labels: Optional[Sequence[str]] = None) -> str:
    """One grid row per element of ``rows`` (uint8 ``(N, C, H, W)``, same N and size; C = 1 or 3),
    e.g. inputs above their reconstructions, enlarged; ``labels`` (one per row) are written on the
    left, ``column_labels`` (one per column, N) above the grid."""
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"save_rows: {len(labels)} labels for {len(rows)} rows")
    if column_labels is not None and len(column_labels) != rows[0].shape[0]:
        raise ValueError(f"save_rows: {len(column_labels)} column labels for {rows[0].shape[0]} columns")
    n = rows[0].shape[0]
    stacked = torch.cat([r.detach().cpu().expand(-1, 3, -1, -1) if r.shape[1] == 1 else r.detach().cpu()
                         for r in rows], dim=0)
    h, w = stacked.shape[-2:]
    scale = scale or display_scale(h, w)
    grid = make_grid(stacked, nrow=n, scale=scale).numpy().transpose(1, 2, 0)
    grid_width = grid.shape[1]
    if labels:
        grid = np.concatenate([_label_column(labels, h * scale, len(rows), BORDER), grid], axis=1)
    if column_labels:
        top = _label_row(column_labels, w * scale, grid.shape[1] - grid_width, grid.shape[1], BORDER)
        grid = np.concatenate([top, grid], axis=0)
    return save_png(torch.from_numpy(np.ascontiguousarray(grid.transpose(2, 0, 1))), path)
