"""Images of any size to the model's square tiles and back.

An image ``(C, H, W)`` is padded on the right and bottom by repeating its last row and
column up to multiples of the tile side S, then cut into ``ceil(H/S) * ceil(W/S)`` tiles in
row-major order. A gray image given to an RGB model is repeated to three equal channels
(and decoded back to one); its tiles then send channel 0 alone at every level whose channels
stay equal (see :func:`selfvae.codec.bitsback.push_level`). An RGB image cannot go through a
one-channel model.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import cv2
import numpy as np
import torch

from .container import CodecError


def grid(height: int, width: int, tile: int) -> Tuple[int, int]:
    """Rows and columns of tiles of an ``height x width`` image."""
    return math.ceil(height / tile), math.ceil(width / tile)


def to_tiles(image: np.ndarray, tile: int, channels: int) -> torch.Tensor:
    """uint8 ``(C, H, W)`` -> uint8 ``(rows * cols, channels, tile, tile)``."""
    c, h, w = image.shape
    if c != channels:
        if c == 1 and channels == 3:
            image = np.repeat(image, 3, axis=0)
        else:
            raise CodecError(f"the model codes {channels}-channel images; this image has {c} channels")
    rows, cols = grid(h, w, tile)
    padded = np.pad(image, ((0, 0), (0, rows * tile - h), (0, cols * tile - w)), mode="edge")
    tiles = padded.reshape(channels, rows, tile, cols, tile).transpose(1, 3, 0, 2, 4)
    return torch.from_numpy(np.ascontiguousarray(tiles.reshape(rows * cols, channels, tile, tile)))


def from_tiles(tiles: torch.Tensor, height: int, width: int, tile: int) -> np.ndarray:
    """Tiles ``(rows * cols, C, t, t)`` of an image of ``height x width`` (in x's pixels; a level's tile
    side ``t`` may be smaller, as ``y_k`` of a downscale chain) -> uint8 ``(C, h, w)`` with the image's
    size scaled by ``t / tile`` (rounded up)."""
    rows, cols = grid(height, width, tile)
    n, c, t, _ = tiles.shape
    array = tiles.cpu().numpy().reshape(rows, cols, c, t, t).transpose(2, 0, 3, 1, 4).reshape(c, rows * t, cols * t)
    return np.ascontiguousarray(array[:, :math.ceil(height * t / tile), :math.ceil(width * t / tile)])


def to_original_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A decoded ``(C, H, W)`` image in the file's recorded channel count: a gray image coded as three
    equal channels comes back as one (luminance, ITU-R 601, for a lossy reconstruction)."""
    if image.shape[0] == channels:
        return image
    if channels == 1 and image.shape[0] == 3:
        if np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2]):
            return image[:1].copy()
        return cv2.cvtColor(np.ascontiguousarray(image.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)[None]
    raise CodecError(f"cannot turn a {image.shape[0]}-channel result into {channels} channels")


def tile_counts(shapes: List[Tuple[int, int]], tile: int) -> List[int]:
    return [math.prod(grid(h, w, tile)) for h, w in shapes]
