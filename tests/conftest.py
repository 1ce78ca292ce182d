"""Shared fixtures: tiny datasets in the real on-disk formats, and tiny model settings."""
import pickle
import struct
import zlib

import numpy as np
import pytest

# Config overrides that make a model small enough for CPU tests (see selfvae.config.ModelConfig).
TINY_OVERRIDES = ["width=8", "growth=4", "components=3", "flow_couplings=2", "flow_hidden=8",
                  "latent_channels=4", "latent_size=4"]


def write_cifar_batches(folder, per_batch=24, seed=0):
    """data_batch_1..5 in the CIFAR-10 python format, smooth random images (N = 5 * per_batch)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for b in range(1, 6):
        coarse = rng.integers(0, 256, size=(per_batch, 3, 4, 4)).astype(np.float64)
        images = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
        images = np.clip(images + rng.normal(0, 6, images.shape), 0, 255).astype(np.uint8)
        batch = {b"batch_label": f"training batch {b} of 5".encode(), b"labels": [0] * per_batch,
                 b"data": images.reshape(per_batch, 3072),
                 b"filenames": [f"{b}_{i}.png".encode() for i in range(per_batch)]}
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def png_claiming(path, width, height):
    """A small PNG file whose header (IHDR, valid CRC) claims ``width x height`` 8-bit RGB pixels."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * 16)  # one filtered row; far too little data
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory):
    """A folder with 120 CIFAR-format 32x32 images."""
    return write_cifar_batches(tmp_path_factory.mktemp("cifar"))
