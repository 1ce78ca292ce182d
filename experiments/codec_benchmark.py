"""The codec measured against PNG, WebP, JPEG 2000, JPEG-XL (lossless) and JPEG, WebP,
JPEG-XL, AVIF (lossy), side by side in one run.

    python experiments/codec_benchmark.py --out runs/codec_benchmark            # the shipped model "photo"
    python experiments/codec_benchmark.py --model runs/default/latest.pt --out DIR --corpus runs/corpus

Lossless, on the test patches of the checkpoint's dataset (the built-in test photographs for the
shipped model; each baseline patch its own file; ours one file of all patches, and single-patch
files) and on whole held-out photographs (photos bundled with installed packages that no
training patch comes from, and with ``--corpus`` the first ``--corpus-photos`` of the corpus's
held-out photographs):
bits per dimension from file bytes, beside the model's -ELBO and IW bound on the same
images, exact round trips checked. Lossy, on the whole photographs: bits per pixel against
PSNR and MS-SSIM for our operating points (send y_k, with and without z) and a quality
sweep of each baseline, BD-rate where the curves overlap, and a plot. Encode and decode
speed and the process's peak memory. Needs the ``experiments`` extra
(``pip install -e ".[experiments]"``: imagecodecs, pytorch-msssim, bjontegaard, matplotlib).
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from tqdm import tqdm

import imagecodecs
from pytorch_msssim import ms_ssim

from selfvae import cli, codec, shipped
from selfvae.evaluation import likelihood, spread_subset
from selfvae.metrics import psnr, ssim
from transforms.imageio import read_image

from common import write_report

# Whole photographs bundled with installed packages and not among the built-in dataset's sources.
HELD_OUT = {
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),  # US Navy photo, public domain
    "motorcycle": ("skimage", "data/motorcycle_left.png"),  # Middlebury stereo 2014, scikit-image sample data
    "camera": ("skimage", "data/camera.png"),  # gray; scikit-image sample data (public domain)
    "brick": ("skimage", "data/brick.png"),  # gray texture; scikit-image sample data (CC0)
}


def package_file(package: str, relative: str) -> str:
    module = __import__(package)
    return os.path.join(os.path.dirname(module.__file__), relative)


# --------------------------------------------------------------------------- baselines
def hwc(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(1, 2, 0)[:, :, 0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def chw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def rgb_if_gray(array: np.ndarray) -> np.ndarray:
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


LOSSLESS: Dict[str, Callable[[np.ndarray], bytes]] = {
    "PNG (level 9)": lambda a: imagecodecs.png_encode(a, level=9),
    "WebP lossless": lambda a: imagecodecs.webp_encode(rgb_if_gray(a), lossless=True, level=100, method=6),
    "JPEG 2000 lossless": lambda a: imagecodecs.jpeg2k_encode(a, reversible=True),
    "JPEG-XL lossless (effort 9)": lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=9),
}
DECODERS = {"PNG (level 9)": imagecodecs.png_decode, "WebP lossless": imagecodecs.webp_decode,
            "JPEG 2000 lossless": imagecodecs.jpeg2k_decode, "JPEG-XL lossless (effort 9)": imagecodecs.jpegxl_decode}

LOSSY: Dict[str, Tuple[Callable, Callable, List]] = {
    "JPEG": (lambda a, q: imagecodecs.jpeg8_encode(a, level=q, optimize=True), imagecodecs.jpeg8_decode,
             [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
    "WebP": (lambda a, q: imagecodecs.webp_encode(rgb_if_gray(a), level=q, lossless=False, method=6),
             imagecodecs.webp_decode, [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
    "JPEG-XL": (lambda a, d: imagecodecs.jpegxl_encode(a, distance=d, effort=7), imagecodecs.jpegxl_decode,
                [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]),
    "AVIF": (lambda a, q: imagecodecs.avif_encode(rgb_if_gray(a), level=q, speed=6), imagecodecs.avif_decode,
             [10, 20, 30, 40, 50, 60, 70, 80, 90]),
}


def lossless_bytes(name: str, image: np.ndarray) -> int:
    data = LOSSLESS[name](hwc(image))
    back = chw(np.asarray(DECODERS[name](data)))
    if back.shape[0] != image.shape[0]:
        back = back[:1]
    if not np.array_equal(back, image):
        raise RuntimeError(f"{name} round trip is not lossless")
    return len(data)


# --------------------------------------------------------------------------- quality
def quality(original: np.ndarray, decoded: np.ndarray) -> Tuple[float, float, float]:
    """PSNR (dB), SSIM and MS-SSIM (None where the image is too small for 5 scales) of uint8 (C, H, W)."""
    a, b = torch.from_numpy(np.array(original[None])), torch.from_numpy(np.array(decoded[None]))  # decoders may return read-only views
    p, s = float(psnr(b, a)[0]), float(ssim(b, a)[0])
    ms = None
    if min(original.shape[1:]) > 160:
        ms = float(ms_ssim(b.double(), a.double(), data_range=255, size_average=True))
    return p, s, ms


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- the runs
def lossless_patches(model, patches: torch.Tensor, args) -> Dict:
    images = [p.numpy() for p in patches]
    n, dims = len(images), patches.numel()
    start = time.perf_counter()
    data = codec.encode(model, images)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    out = codec.decode(model, data)
    decode_s = time.perf_counter() - start
    assert all(np.array_equal(a, b) for a, b in zip(out.images, images)), "lossless round trip failed"
    header, words, _ = codec.container.read(data)
    # Patches one per file pay a header each and code no context across patches: measured on the first
    # N patches, beside a single file of the same N (the file of all patches above is not comparable).
    subset = images[:args.single_files]
    singles = [len(codec.encode(model, [im])) for im in subset]
    subset_file = len(codec.encode(model, subset))
    figures = likelihood(model, patches, iw_samples=args.iw_samples, iw_images=args.iw_images, progress=False)
    row = {"images": n, "file_bytes": len(data), "bpd_file": 8 * len(data) / dims,
           "bpd_stream": 32 * len(words) / dims, "latents": header.latents, "bpd_single_file": 8 * np.mean(singles) / images[0].size,
           "single_files": len(subset), "bpd_subset_file": 8 * subset_file / (len(subset) * images[0].size),
           "elbo_bpd": figures["elbo_bpd"], "iw_bpd": figures["iw_bpd"], "iw_elbo_bpd": figures["iw_elbo_bpd"],
           "iw_samples": figures["iw_samples"], "iw_n_images": figures["iw_n_images"],
           "encode_images_per_s": n / encode_s, "decode_images_per_s": n / decode_s,
           "preview_bytes": {f"y{k}": 4 * w for k, w in enumerate(header.preview_words)},
           "baselines": {name: 8 * sum(lossless_bytes(name, im) for im in images) / dims for name in LOSSLESS}}
    return row


def lossless_photos(model, photos: Dict[str, np.ndarray]) -> Dict:
    rows = {}
    for name, image in photos.items():
        start = time.perf_counter()
        data = codec.encode(model, [image], [name], store_fallback=False)  # the model's own code
        encode_s = time.perf_counter() - start
        header, words, extra = codec.container.read(data)
        # the file compress writes: the same, or the pixels stored where the code is longer than them
        stored_bytes = len(data) - 4 * (len(words) + len(extra)) + 4 * -(-image.size // 4)
        start = time.perf_counter()
        out = codec.decode(model, data)
        decode_s = time.perf_counter() - start
        assert np.array_equal(out.images[0], image), f"{name}: lossless round trip failed"
        # the same code tile by tile, where the file was coded in windows (side by side: what the windows pay)
        bpd_tiles = (8 * len(codec.encode(model, [image], [name], store_fallback=False, windows=False)) / image.size
                     if header.windows else None)
        # and each pixel under the window owning it, where the file mixed the windows (what the mixture pays)
        bpd_owner = (8 * len(codec.encode(model, [image], [name], store_fallback=False, window_rule="owner"))
                     / image.size if header.window_mixture else None)
        tiles = codec._tiles(model, [image])
        elbo_bits = likelihood(model, tiles, progress=False)["elbo_bpd"] * tiles[0].numel() * len(tiles)
        rows[name] = {"shape": list(image.shape), "bpd_code": 8 * len(data) / image.size, "latents": header.latents,
                      "windows": header.windows, "window_mixture": header.window_mixture, "bpd_tiles": bpd_tiles,
                      "bpd_owner": bpd_owner,
                      "bpd_file": 8 * min(len(data), stored_bytes) / image.size, "stored": stored_bytes < len(data),
                      "elbo_bpd_of_its_tiles": elbo_bits / image.size, "encode_s": encode_s, "decode_s": decode_s,
                      "baselines": {b: 8 * lossless_bytes(b, image) / image.size for b in LOSSLESS}}
        print(f"  {name}: ours {rows[name]['bpd_code']:.3f} bpd, file {rows[name]['bpd_file']:.3f} "
              f"(latents {header.latents}, windows {header.windows}, mixture {header.window_mixture}: owner rule "
              f"{'%.3f' % bpd_owner if bpd_owner else '-'}, tile by tile {'%.3f' % bpd_tiles if bpd_tiles else '-'}; "
              f"{encode_s:.0f} s / {decode_s:.0f} s)", flush=True)
    return rows


def corpus_bounds(model, folder: str) -> Dict:
    """Every held-out photograph of the corpus: the model's -ELBO of its tiles (the bits the codec's
    stream tracks to ~1 %, see the patch table) against the whole-photo lossless baselines."""
    rows = {}
    for name in sorted(os.listdir(folder)):
        image = read_image(os.path.join(folder, name), channels=None)
        rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 and model.specs[0].channels == 3 else image
        tiles = codec._tiles(model, [rgb])
        bits = likelihood(model, tiles, progress=False)["elbo_bpd"] * tiles[0].numel() * len(tiles)
        rows[os.path.splitext(name)[0]] = {
            "shape": list(image.shape), "elbo_bpd": bits / rgb.size,
            "baselines": {b: 8 * lossless_bytes(b, image) / image.size for b in LOSSLESS}}
        print(f"  corpus {name}: -ELBO {rows[os.path.splitext(name)[0]]['elbo_bpd']:.3f} bpd", flush=True)
    return rows


def lossy_points(model, photos: Dict[str, np.ndarray]) -> Dict[str, List[Dict]]:
    """Rate and distortion per operating point, averaged over the photos (bits per pixel of all)."""
    curves: Dict[str, List[Dict]] = {}

    def add(curve: str, setting, encoded: List[bytes], decoded: List[np.ndarray]) -> None:
        pixels = sum(im.shape[1] * im.shape[2] for im in photos.values())
        q = [quality(o, d) for o, d in zip(photos.values(), decoded)]
        curves.setdefault(curve, []).append({
            "setting": setting, "bpp": 8 * sum(map(len, encoded)) / pixels, "psnr": float(np.mean([x[0] for x in q])),
            "ssim": float(np.mean([x[1] for x in q])),
            "ms_ssim": float(np.mean([x[2] for x in q])) if all(x[2] is not None for x in q) else None})

    points = [(level, with_z, decode) for level in range(1, model.levels + 1) for with_z in (False, True)
              for decode in ("mean", "mode")]  # the file's reconstruction: expected or most likely values
    for level, with_z, decode in tqdm(points, desc="selfVAE lossy points", unit="point"):
        files = [codec.encode(model, [im], level=level, with_z=with_z, decode=decode) for im in photos.values()]
        decoded = [codec.decode(model, f).images[0] for f in files]
        name = "selfVAE (y_k + z)" if with_z else "selfVAE (y_k)"
        add(name if decode == "mean" else f"{name}, most likely", level, files, decoded)
    for name, (encode, decode, settings) in LOSSY.items():
        for setting in settings:
            files = [encode(hwc(im), setting) for im in photos.values()]
            decoded = []
            for f, im in zip(files, photos.values()):
                back = chw(np.asarray(decode(f)))
                decoded.append(back[:1] if back.shape[0] != im.shape[0] else back)
            add(name, setting, files, decoded)
    return curves


def monotone(rows: List[Dict], metric: str) -> List[Dict]:
    """The points of a curve that beat every cheaper point in ``metric`` (BD-rate interpolates rate as a
    function of quality, which must increase with rate)."""
    out: List[Dict] = []
    for r in sorted(rows, key=lambda r: r["bpp"]):
        if r[metric] is not None and (not out or r[metric] > out[-1][metric]):
            out.append(r)
    return out


def bd_rates(curves: Dict[str, List[Dict]], metric: str) -> Dict[str, Dict[str, Dict]]:
    """BD-rate (%) of each of our curves against each baseline over the quality range where both
    curves have points (``bjontegaard``, piecewise cubic Hermite interpolation, which needs 3 points
    per curve rather than the 4 of the classic cubic fit)."""
    import warnings

    import bjontegaard as bd

    out: Dict[str, Dict[str, Dict]] = {}
    for ours in [name for name in curves if name.startswith("selfVAE")]:
        test = monotone(curves.get(ours, []), metric)
        if len(test) < 3:
            continue
        for name in LOSSY:
            anchor = monotone(curves[name], metric)
            lo = max(test[0][metric], anchor[0][metric])
            hi = min(test[-1][metric], anchor[-1][metric])
            row = {"overlap": [lo, hi] if hi > lo else None, "bd_rate_percent": None}
            if hi > lo and len(anchor) >= 3:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = bd.bd_rate([r["bpp"] for r in anchor], [r[metric] for r in anchor],
                                       [r["bpp"] for r in test], [r[metric] for r in test], method="pchip",
                                       require_matching_points=False, min_overlap=0)
                row["bd_rate_percent"] = float(value) if math.isfinite(value) else None
            out.setdefault(ours, {})[name] = row
    return out


def plot(curves: Dict[str, List[Dict]], path: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["bpp"])
        style = "o-" if name.startswith("selfVAE") else ".--"
        axes[0].plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], style, label=name)
        if all(r["ms_ssim"] is not None for r in rows):
            axes[1].plot([r["bpp"] for r in rows], [r["ms_ssim"] for r in rows], style, label=name)
    for ax, label in zip(axes, ("PSNR (dB)", "MS-SSIM")):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- report
def lossless_report(result: Dict) -> List[str]:
    p = result["patches"]
    where = result["data"].get("dataset")
    lines = [f"## Lossless, {p['images']} test patches ({result['patch_shape']}) of the {where} test split, "
             "bits per dimension", "",
             "| coder | bpd |", "|---|---:|",
             f"| selfVAE file of all patches (latents {p.get('latents', 'bits-back')}) | {p['bpd_file']:.3f} |",
             f"| selfVAE, one patch per file (first {p.get('single_files', '?')} patches) | {p['bpd_single_file']:.3f} |"]
    if "bpd_subset_file" in p:
        lines.append(f"| selfVAE, the same {p['single_files']} patches in one file | {p['bpd_subset_file']:.3f} |")
    lines.append(f"| model -ELBO (all patches) | {p['elbo_bpd']:.3f} |")
    if p["iw_bpd"] is not None:
        lines.append(f"| model IW bound, {p['iw_samples']} samples ({p['iw_n_images']} patches) | {p['iw_bpd']:.3f} |")
    lines += [f"| {name}, one file per patch | {value:.3f} |" for name, value in p["baselines"].items()]
    lines += ["", f"File of all patches vs -ELBO: {100 * (p['bpd_file'] / p['elbo_bpd'] - 1):+.2f} % "
              f"(stream alone {100 * (p['bpd_stream'] / p['elbo_bpd'] - 1):+.2f} %). Encode "
              f"{p['encode_images_per_s']:.1f} patches/s, decode {p['decode_images_per_s']:.1f} patches/s "
              f"({result.get('threads')} CPU threads). Bytes a decoder reads for each level: " +
              ", ".join(f"{k} {v:,}" for k, v in reversed(list(p["preview_bytes"].items()))) + ".", ""]
    photos = result["photos"]
    names = list(LOSSLESS)
    lines += ["## Lossless, whole held-out photographs, bits per dimension", "",
              "| photo | size | selfVAE file | its model code | owner windows | same code tile by tile | "
              "model -ELBO of its tiles | " + " | ".join(names) + " |",
              "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(names)]
    for name, r in photos.items():
        c, h, w = r["shape"]
        stored = " (stored)" if r["stored"] else ""
        tiled = f"{r['bpd_tiles']:.3f}" if r.get("bpd_tiles") else "–"
        owner = f"{r['bpd_owner']:.3f}" if r.get("bpd_owner") else "–"
        lines.append(f"| {name} | {w}x{h}x{c} | {r['bpd_file']:.3f}{stored} | {r['bpd_code']:.3f} | {owner} | {tiled} | "
                     f"{r['elbo_bpd_of_its_tiles']:.3f} | " +
                     " | ".join(f"{r['baselines'][b]:.3f}" for b in names) + " |")
    if result.get("corpus_bounds"):
        rows = result["corpus_bounds"]
        # the selfVAE file where the photo was also coded (--corpus-photos), else only the model's -ELBO
        files = {n: photos[f"corpus: {n}"]["bpd_file"] for n in rows if f"corpus: {n}" in photos}
        tiled = {n: photos[f"corpus: {n}"].get("bpd_tiles") or photos[f"corpus: {n}"]["bpd_file"]
                 for n in rows if f"corpus: {n}" in photos}
        owner = {n: photos[f"corpus: {n}"].get("bpd_owner") or photos[f"corpus: {n}"]["bpd_file"]
                 for n in rows if f"corpus: {n}" in photos}
        coded = len(files) == len(rows)
        lines += ["", f"## Lossless, all {len(rows)} held-out photographs of the corpus: " +
                  ("selfVAE files" if coded else "model -ELBO of the tiles") +
                  " vs whole-photo files, bits per dimension", "",
                  "| photo | size | " + ("selfVAE file | owner windows | tile by tile | " if coded else "") +
                  "model -ELBO | " + " | ".join(names) + " |",
                  "|---|---|" + ("---:|---:|---:|" if coded else "") + "---:|" + "---:|" * len(names)]
        for name, r in rows.items():
            c, h, w = r["shape"]
            lines.append(f"| {name} | {w}x{h}x{c} | " +
                         (f"{files[name]:.3f} | {owner[name]:.3f} | {tiled[name]:.3f} | " if coded else "") +
                         f"{r['elbo_bpd']:.3f} | " + " | ".join(f"{r['baselines'][b]:.3f}" for b in names) + " |")
        dims = {n: float(np.prod(r["shape"])) for n, r in rows.items()}
        total = sum(dims.values())
        mean = {b: sum(r["baselines"][b] * dims[n] for n, r in rows.items()) / total for b in names}
        lines.append("| **all (pixel-weighted)** | | " +
                     ("**{:.3f}** | {:.3f} | {:.3f} | ".format(sum(files[n] * dims[n] for n in rows) / total,
                                                             sum(owner[n] * dims[n] for n in rows) / total,
                                                             sum(tiled[n] * dims[n] for n in rows) / total)
                      if coded else "") +
                     "**{:.3f}** | ".format(sum(r["elbo_bpd"] * dims[n] for n, r in rows.items()) / total) +
                     " | ".join(f"**{mean[b]:.3f}**" for b in names) + " |")
    return lines


def report(result: Dict) -> str:
    lines = [f"Model: {result['model']} (step {result['step']}).", ""]
    if "patches" in result:
        lines += lossless_report(result)
    if "lossy" not in result:
        return "\n".join(lines + ["", f"Peak memory of the process: {result['peak_memory_mb']:.0f} MB."])
    lines += ["", "## Lossy, the four package photographs (bits per pixel over all of them; mean PSNR, MS-SSIM)", "",
              "grace_hopper is stored as a JPEG: re-encoding it as JPEG near its original quality flatters JPEG "
              "(the jump at quality 80).", "",
              "| coder | setting | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---:|---:|---:|"]
    for name, rows in result["lossy"].items():
        for r in sorted(rows, key=lambda r: r["bpp"]):
            ms = f"{r['ms_ssim']:.4f}" if r["ms_ssim"] is not None else "–"
            lines.append(f"| {name} | {r['setting']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {ms} |")
    for metric, table in result["bd_rate"].items():
        lines += ["", f"BD-rate ({metric}, % bits vs the baseline at equal quality; negative = fewer bits):", ""]
        digits = 1 if metric == "psnr" else 4
        for ours, row in table.items():
            lines.append(f"- {ours}: " + ", ".join(
                f"{b} {v['bd_rate_percent']:+.1f} % (over {v['overlap'][0]:.{digits}f}..{v['overlap'][1]:.{digits}f})"
                if v["bd_rate_percent"] is not None else f"{b} no overlap" for b, v in row.items()))
    lines += ["", f"Peak memory of the process: {result['peak_memory_mb']:.0f} MB."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint or shipped model name (default: photo)")
    p.add_argument("--out", default="runs/codec_benchmark")
    p.add_argument("--patches", type=int, default=None, help="use N test patches spread over the split (default all)")
    p.add_argument("--corpus", default=None, help="the photograph corpus: add its held-out photographs")
    p.add_argument("--corpus-photos", type=int, default=1,
                   help="how many of them are also coded to files (sorted by name; default 1; all of them put the "
                        "selfVAE files in the corpus table)")
    p.add_argument("--single-files", type=int, default=32, help="patches coded one per file")
    p.add_argument("--iw-samples", type=int, default=64)
    p.add_argument("--iw-images", type=int, default=64)
    p.add_argument("--photos", nargs="*", default=list(HELD_OUT), help="held-out photographs to use")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lossy-only", action="store_true", help="only the lossy operating points (rate-distortion, BD-rates)")
    p.add_argument("--lossless-only", action="store_true", help="only the lossless tables")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, state = shipped.load(args.model)
    patches, source = cli.dataset_images(state, model, None, None, "test", progress=False)
    patches = spread_subset(patches, args.patches)
    photos = {name: read_image(package_file(*HELD_OUT[name]), channels=None) for name in args.photos}
    lossy_photos = dict(photos)
    if args.corpus:
        folder = os.path.join(args.corpus, "heldout")
        for name in sorted(os.listdir(folder))[:args.corpus_photos]:
            photos[f"corpus: {os.path.splitext(name)[0]}"] = read_image(os.path.join(folder, name), channels=None)
    os.makedirs(args.out, exist_ok=True)
    print(f"model {args.model or shipped.DEFAULT_MODEL}: {model.config.transform}; {len(patches)} test patches; photos "
          f"{', '.join(f'{n} {im.shape}' for n, im in photos.items())}", flush=True)
    result = {"model": args.model or shipped.DEFAULT_MODEL, "step": state.get("step"), "threads": args.threads,
              "patch_shape": "x".join(map(str, patches.shape[1:])), "data": source}
    if not args.lossy_only:
        result["patches"] = lossless_patches(model, patches, args)
        print("lossless patches done", flush=True)
        result["photos"] = lossless_photos(model, photos)
        if args.corpus:
            result["corpus_bounds"] = corpus_bounds(model, os.path.join(args.corpus, "heldout"))
    if not args.lossless_only:
        result["lossy"] = lossy_points(model, lossy_photos)
        result["bd_rate"] = {metric: bd_rates(result["lossy"], metric) for metric in ("psnr", "ms_ssim")}
        result["plot"] = plot(result["lossy"], os.path.join(args.out, "rate_distortion.png"))
    result["peak_memory_mb"] = peak_memory_mb()
    text = report(result)
    write_report(args.out, "codec_benchmark", text, result)


if __name__ == "__main__":
    sys.exit(main())
