"""The ``.svae`` file format: a checked header, then the coded streams.

All integers little-endian. Version 5 (version 4, written before windows files could mix the
windows covering a pixel, is read as version 5 with flag bit 5 clear; version 3, written before
lossless files could be coded in overlapping windows, as version 4 with flag bit 4 clear; version 2, written
before files could fix their latents at the prior means, as version 3 with flag bit 3 clear;
version 1, written before lossy files could decode to the expected value, as version 2 with
flag bit 2 clear):

======================  ======  ==========================================================
field                   type    meaning
======================  ======  ==========================================================
magic                   4 B     ``b"SVAE"``
version                 u8      5
mode                    u8      0 lossless (coded through the hierarchy), 1 lossy, 2 stored
                                (lossless, the raw pixels: written when the model would
                                spend more than 8 bits per pixel value)
level                   u8      lossy: the level k whose ``y_k`` is sent; lossless: 0
flags                   u8      bit 0: lossy file also sends ``z_1..z_k``; bit 1: the tiles of
                                gray images (channels 1 below) send one channel at every level;
                                bit 2: a lossy file's levels below ``y_k`` are reconstructed as
                                their rounded expected values (``mean``; clear: the most likely
                                values, ``mode``); bit 3: the latents are fixed at their prior
                                means (no bits-back: no latents on the stream, no seed; clear:
                                bits-back coding of the latents); bit 4: a lossless file with
                                prior-mean latents codes every level below ``y_K`` in
                                overlapping windows over each whole image, its padding not
                                coded (:mod:`.windows`; clear: tile by tile); bit 5: with bit 4,
                                each pixel under the mixture of the windows covering it
                                (``mixture`` rule; clear: the window owning it)
model fingerprint       32 B    SHA-256 of the model's config and weights
latent_bits             u8      latents are coded on a grid of step ``2**-latent_bits``
z_step_exponent         i8      lossy ``z`` is quantised with step ``2**z_step_exponent``
tile                    u16     the model's image side S: images are cut into S x S tiles
chunk                   u16     at most this many tiles coded together (bits-back: batches 1, 2, 3, 5,
                                ... up to it; prior-mean latents: batches of ``chunk``)
seed_words              u32     length of the pseudo-random seed the stream started from
kept_seed_words         u32     its bottom words that no pop reached (not stored; rebuilt)
images                  u32     number of images N
levels                  u8      K + 1
preview_words           u32 x (K+1)  stream words a decoder reads to reach level k
                                     (0 where the level is not sent)
level_checksums         8 B x (K+1)  SHA-256 (first 8 bytes) of every tile of level k, in
                                     order: entry 0 checks the decoded images (the exact
                                     pixels, or the lossy reconstruction), entry k > 0 a
                                     preview (zeros where a level is not sent)
per image, N times:     channels u8, height u16, width u16, name length u8, name (UTF-8)
stream_words            u32     words of the main stream (bits-back part)
extra_words             u32     words of the second stream (lossy ``z``'s; 0 otherwise)
header CRC-32           u32     of every byte above
payload                 4 B x (stream_words + extra_words)
payload CRC-32          u32     of the payload
======================  ======  ==========================================================

Reading checks each field against its limits and both CRCs before anything is decoded,
so a truncated, extended or corrupted file, a future version or a file made with another
model is a :class:`CodecError` naming the problem.
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch

MAGIC = b"SVAE"
VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
LATENTS = ("bits-back", "prior-mean")  # how a file codes its latents (flag bit 3)
DECODES = ("mode", "mean")  # a lossy file's reconstruction of the levels below y_k (flag bit 2)
MODES = {0: "lossless", 1: "lossy", 2: "stored"}
MAX_IMAGES = 1 << 20
MAX_SIDE = (1 << 16) - 1
MAX_PIXELS = 1 << 28
MAX_NAME = 255
MAX_LEVELS = 16
MAX_WORDS = 1 << 28


#: ModelConfig keys added since the format's fingerprints were defined, with the value that keeps
#: the older model (left out of the fingerprint at that value).
ADDED_CONFIG_KEYS = {"blocks_above": -1}


class CodecError(ValueError):
    """A file that cannot be decoded (as it is, or with this model), or input the codec refuses."""


@dataclass
class ImageEntry:
    """One image of a file: its channels (1 or 3), size and base name (may be empty)."""

    channels: int
    height: int
    width: int
    name: str


@dataclass
class Header:
    mode: str
    level: int
    with_z: bool
    fingerprint: bytes
    latent_bits: int
    z_step_exponent: int
    tile: int
    chunk: int
    seed_words: int
    kept_seed_words: int
    preview_words: List[int]
    level_checksums: List[bytes]
    images: List[ImageEntry] = field(default_factory=list)
    gray: bool = False  # tiles of gray images coded as one channel
    decode: str = "mode"  # lossy: how the levels below y_k are reconstructed (DECODES)
    latents: str = "bits-back"  # LATENTS: bits-back, or fixed at their prior means (flag bit 3)
    windows: bool = False  # levels below y_K coded in overlapping windows (flag bit 4)
    window_mixture: bool = False  # with windows: each pixel under the mixture of its windows (flag bit 5)


def model_fingerprint(model: torch.nn.Module) -> bytes:
    """SHA-256 over the model's config (canonical JSON) and every tensor of its state dict.

    Config keys added after files were first written are left out while they hold the value that
    builds the model those files were made with (:data:`ADDED_CONFIG_KEYS`), so a model's files
    keep decoding when a release adds a key."""
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ADDED_CONFIG_KEYS or v != ADDED_CONFIG_KEYS[k]}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


def tiles_checksum(tiles: torch.Tensor) -> bytes:
    """First 8 bytes of the SHA-256 of a stack of uint8 tiles (shape and values)."""
    return pixel_checksum(tiles.cpu().numpy())


def pixel_checksum(image: np.ndarray) -> bytes:
    """First 8 bytes of the SHA-256 of an image's shape and uint8 pixels."""
    return hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).digest()[:8]


def write(header: Header, stream: np.ndarray, extra: np.ndarray, version: int = VERSION) -> bytes:
    """The file's bytes (``version`` 1: the format older readers know, for files that decode the
    same under both)."""
    if version not in READABLE_VERSIONS or header.decode not in DECODES or header.latents not in LATENTS:
        raise CodecError(f"cannot write format version {version} with decode '{header.decode}' and latents "
                         f"'{header.latents}'")
    if header.decode == "mean" and (version < 2 or header.mode != "lossy"):
        raise CodecError("only a lossy file of version 2 or later can decode its levels to their expected values")
    if header.latents == "prior-mean" and (version < 3 or header.mode == "stored"):
        raise CodecError("only a coded file of version 3 or later can fix its latents at their prior means")
    if header.windows and (version < 4 or header.mode != "lossless" or header.latents != "prior-mean"):
        raise CodecError("only a lossless file of version 4 or later with prior-mean latents can be coded in windows")
    if header.window_mixture and (version < 5 or not header.windows):
        raise CodecError("only a file coded in windows, of version 5 or later, can mix its windows")
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(struct.pack("<BBBB", version, {v: k for k, v in MODES.items()}[header.mode], header.level,
                          int(header.with_z) | int(header.gray) << 1 | int(header.decode == "mean") << 2
                          | int(header.latents == "prior-mean") << 3 | int(header.windows) << 4
                          | int(header.window_mixture) << 5))
    out.write(header.fingerprint)
    out.write(struct.pack("<BbHHIIIB", header.latent_bits, header.z_step_exponent, header.tile, header.chunk,
                          header.seed_words, header.kept_seed_words, len(header.images), len(header.preview_words)))
    out.write(struct.pack(f"<{len(header.preview_words)}I", *header.preview_words))
    out.write(b"".join(header.level_checksums))
    for image in header.images:
        name = image.name.encode("utf-8")[:MAX_NAME]
        out.write(struct.pack("<BHHB", image.channels, image.height, image.width, len(name)))
        out.write(name)
    out.write(struct.pack("<II", len(stream), len(extra)))
    head = out.getvalue()
    payload = stream.astype("<u4").tobytes() + extra.astype("<u4").tobytes()
    return head + struct.pack("<I", zlib.crc32(head)) + payload + struct.pack("<I", zlib.crc32(payload))


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CodecError(f"the file is truncated (it ends inside the {what})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CodecError(f"corrupt header: {message}")


def read(data: bytes):
    """Parse and check a file: returns ``(header, stream, extra)`` (uint32 word arrays)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    r = _Reader(data)
    if r.take(4, "magic number") != MAGIC:
        raise CodecError("not a selfvae compressed file (no 'SVAE' magic number)")
    version, mode, level, flags = r.unpack("<BBBB", "header")
    if version not in READABLE_VERSIONS:
        newer = "a newer" if version > VERSION else "an unknown"
        raise CodecError(f"the file was written by {newer} selfvae (format version {version}); this one reads "
                         f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    _check(mode in MODES, f"unknown mode {mode}")
    _check(flags < (64 if version >= 5 else 32 if version >= 4 else 16 if version >= 3 else 8 if version >= 2 else 4),
           f"unknown flags {flags}")
    _check(not flags & 4 or mode == 1, f"flag 'mean' on a {MODES[mode]} file")
    _check(not flags & 8 or mode != 2, "flag 'prior-mean latents' on a stored file")
    _check(not flags & 16 or mode == 0 and flags & 8, "flag 'windows' on a file that is not lossless with prior-mean "
                                                      "latents")
    _check(not flags & 32 or flags & 16, "flag 'window mixture' on a file not coded in windows")
    fingerprint = r.take(32, "model fingerprint")
    latent_bits, z_exp, tile, chunk, seed, kept, n_images, n_levels = r.unpack("<BbHHIIIB", "header")
    _check(2 <= latent_bits <= 16, f"latent grid 2^-{latent_bits}")
    _check(-8 <= z_exp <= 8, f"z step 2^{z_exp}")
    _check(1 <= tile <= 4096 and 1 <= chunk <= 4096, f"tile {tile} / chunk {chunk}")
    _check(kept <= seed <= MAX_WORDS, f"seed words {kept} of {seed}")
    _check(1 <= n_images <= MAX_IMAGES, f"{n_images} images")
    _check(1 <= n_levels <= MAX_LEVELS, f"{n_levels} levels")
    _check(mode in (0, 2) and level == 0 or mode == 1 and 1 <= level < n_levels, f"level {level} for this mode")
    preview = list(r.unpack(f"<{n_levels}I", "header"))
    level_checksums = [r.take(8, "level checksums") for _ in range(n_levels)]
    images = []
    for i in range(n_images):
        channels, height, width, name_len = r.unpack("<BHHB", f"entry of image {i}")
        _check(channels in (1, 3), f"image {i} has {channels} channels")
        _check(1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS,
               f"image {i} is {width}x{height}")
        _check(name_len <= MAX_NAME, f"image {i} has a {name_len}-byte name")
        try:
            name = r.take(name_len, f"name of image {i}").decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError(f"corrupt header: the name of image {i} is not UTF-8") from None
        images.append(ImageEntry(channels, height, width, name))
    stream_words, extra_words = r.unpack("<II", "header")
    _check(stream_words <= MAX_WORDS and extra_words <= MAX_WORDS, "stream lengths")
    head_end = r.pos
    (head_crc,) = r.unpack("<I", "header checksum")
    if zlib.crc32(data[:head_end]) != head_crc:
        raise CodecError("corrupt header: its CRC-32 does not match (the file is damaged)")
    expected = r.pos + 4 * (stream_words + extra_words) + 4
    if len(data) < expected:
        raise CodecError(f"the file is truncated: {len(data)} bytes, its header announces {expected}")
    if len(data) > expected:
        raise CodecError(f"the file has {len(data) - expected} unexpected bytes after its end")
    payload = r.take(4 * (stream_words + extra_words), "payload")
    (payload_crc,) = r.unpack("<I", "payload checksum")
    if zlib.crc32(payload) != payload_crc:
        raise CodecError("corrupt data: the payload's CRC-32 does not match (the file is damaged)")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    header = Header(MODES[mode], level, bool(flags & 1), fingerprint, latent_bits, z_exp, tile, chunk, seed, kept,
                    preview, level_checksums, images, bool(flags & 2), DECODES[bool(flags & 4)],
                    LATENTS[bool(flags & 8)], bool(flags & 16), bool(flags & 32))
    return header, words[:stream_words], words[stream_words:]
