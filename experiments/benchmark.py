"""Speed on this machine: training images/s and 512-sample IW-bound images/s for K = 0, 1, 3
(downscale) at both presets and 32x32 / 64x64, with counted work and peak memory.

    python experiments/benchmark.py --quick            # the CPU half in a few minutes
    python experiments/benchmark.py                    # everything (on a GPU: bf16 autocast)
    python experiments/benchmark.py --device cuda --compile
    python experiments/benchmark.py --only small:3:32,paper:0:32 --original --baseline /tmp/base
                      # before/after side by side: the presets as they were (--original) and an
                      # older checkout's code (--baseline, e.g. `git worktree add /tmp/base <commit>`)
    python experiments/benchmark.py --only paper:0:32,paper:1:32 --authors /path/to/srVAE
                      # against the authors' published code (github.com/ioangatop/srVAE), side by side

Each configuration runs in a fresh subprocess, so that its peak memory (resident set on the
CPU, ``max_memory_allocated`` on CUDA) is its own. Training: forward + backward + AdaMax step
on a fixed batch, median of ``--steps`` timed steps after ``--warmup``; counted work is the
matmul/conv FLOPs of one step from ``torch.utils.flop_counter`` (forward and backward). On
CUDA it also reports achieved TFLOP/s and the fraction of the device's dense bf16 peak. IW:
the 512-sample bound (:func:`selfvae.evaluation.iw_bound`, chunk 32) on ``--iw-images``
images, reported as images/s and samples/s. Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

from common import write_report

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets
BF16_PEAK = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}


def peak_tflops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(config, batch: int, device: torch.device, bf16: bool, compile_model: bool = False,
                  generator: Optional[torch.Generator] = None):
    """``(model, x, step)``: the model of ``config`` on ``device`` (seed 0), a fixed uint8 batch ``x`` of
    random images (drawn from ``generator``, default one seeded 0) and ``step()``, one forward + backward + AdaMax step on it as ``selfvae.train``
    takes it (multi-tensor AdaMax; bf16 autocast when ``bf16``; ``torch.compile`` when asked, as ``train
    --compile`` does; ``step(eager=True)`` bypasses the compiled forward)."""
    from selfvae.model import build_model

    torch.manual_seed(0)
    model = build_model(config).to(device)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    size = config.image_size
    x = torch.randint(0, 256, (batch, config.image_channels, size, size), dtype=torch.uint8, generator=g).to(device)
    model.initialize(x)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-4, foreach=True)
    forward = model
    if compile_model:  # as `train --compile` does: channels-last networks, the persistent cache
        try:
            from selfvae.nets import set_memory_format
            from selfvae.runtime import compile as compiled
        except ImportError:  # a --baseline tree from before them
            set_memory_format, compiled = None, torch.compile
        if set_memory_format is not None:
            set_memory_format(model, torch.channels_last)
        forward = compiled(model)
    dtype = torch.bfloat16 if bf16 else None

    def step(eager: bool = False) -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.bits_per_dim((model if eager else forward)(x))["bpd"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, x, step


def one(preset: str, levels: int, size: int, batch: int, steps: int, warmup: int, iw_images: int, iw_samples: int,
        device: torch.device, bf16: bool, compile_model: bool, threads: Optional[int],
        overrides: Optional[Dict] = None, allocator: bool = True) -> Dict:
    """Measure one configuration (called in its own process)."""
    from torch.utils.flop_counter import FlopCounterMode

    from selfvae.config import make_config
    from selfvae.evaluation import iw_bound
    from selfvae.model import count_parameters
    try:
        from selfvae.runtime import reuse_large_allocations
    except ImportError:  # a --baseline tree from before selfvae.runtime existed
        allocator = False

    if threads:
        torch.set_num_threads(threads)
    if allocator:  # what every `python -m selfvae.*` command does (selfvae.runtime)
        reuse_large_allocations()
    overrides = dict(overrides or {})
    g = torch.Generator().manual_seed(0)  # the training batch, then the IW images
    model, x, step = training_step(make_config(preset, "downscale", levels, image_size=size, **overrides), batch,
                                   device, bf16, compile_model, g)
    dtype = torch.bfloat16 if bf16 else None

    sync(device)
    start = time.perf_counter()
    step()  # with --compile, the compilation (or the load of its cached result)
    sync(device)
    first_step_s = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:  # eager: a dispatch mode would recompile a compiled step
        step(eager=True)
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    row = {"preset": preset, "K": levels, "size": size, "overrides": overrides, "batch": batch, "device": str(device),
           "precision": "bf16" if bf16 else "fp32", "compiled": compile_model, "threads": torch.get_num_threads(),
           "parameters": count_parameters(model), "first_step_s": first_step_s, "step_s": median,
           "images_per_s": batch / median,
           "gflop_per_image": flops / batch / 1e9, "achieved_tflops": flops / median / 1e12}
    peak = peak_tflops(device)
    row["fraction_of_bf16_peak"] = row["achieved_tflops"] / peak if peak else None
    if device.type == "cuda":
        row["train_peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        torch.cuda.reset_peak_memory_stats(device)
    if iw_images:
        images = torch.randint(0, 256, (iw_images, 3, size, size), dtype=torch.uint8, generator=g)
        iw_bound(model, images[:1], 8, chunk=8, device=device, autocast_dtype=dtype, progress=False)  # warm-up
        iw_options = {"compile": True} if compile_model and "compile" in inspect.signature(iw_bound).parameters else {}
        if iw_options:  # compile the IW path before timing it (a cached load after the first run)
            iw_bound(model, images, 32, chunk=32, batch_size=iw_images, device=device, autocast_dtype=dtype,
                     progress=False, **iw_options)
        sync(device)
        start = time.perf_counter()
        figures = iw_bound(model, images, iw_samples, chunk=32, batch_size=iw_images, device=device,
                           autocast_dtype=dtype, progress=False, **iw_options)
        sync(device)
        elapsed = time.perf_counter() - start
        row.update(iw_samples=iw_samples, iw_images=iw_images, iw_images_per_s=iw_images / elapsed,
                   iw_samples_per_s=iw_images * iw_samples / elapsed, iw_bpd_random_images=figures["iw_bpd"])
        if device.type == "cuda":
            row["iw_peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


# The presets as they were before the networks narrowed towards full resolution (session of
# 2026-11-22): constant width at every size, a one-scale flow, independent pixels. ``--original`` measures each
# configuration this way too, side by side in the same run.
_PAPER_WIDTH_UNIFORM = {0: 328, 1: 216, 2: 176, 3: 160, 4: 144}


def original(preset: str, levels: int) -> Dict:
    values: Dict = dict(narrow_above=0, blocks_above=-1, out_kernel=3, flow_squeezed=0, phases=1)
    if preset == "paper":
        width = _PAPER_WIDTH_UNIFORM[min(levels, 4)]
        values.update(width=width, growth=width // 4)
    return values


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_config(text: str) -> Dict:
    """``preset:K:size`` with optional config overrides ``@key=value+key=value``."""
    name, _, extra = text.partition("@")
    preset, k, size = name.split(":")
    overrides = {key: _value(v) for key, v in (kv.split("=", 1) for kv in extra.split("+") if kv)}
    return dict(preset=preset, levels=int(k), size=int(size), overrides=overrides)


def plan(args: argparse.Namespace) -> List[Dict]:
    """The configurations to measure (each followed by its original form with ``--original``)."""
    if args.only:
        configs = [parse_config(c) for c in args.only.split(",")]
    elif args.quick:
        configs = [dict(preset="small", levels=k, size=s) for s in (32, 64) for k in (0, 1, 3)]
        configs += [dict(preset="paper", levels=k, size=32) for k in (0, 1, 3)]
    else:
        configs = [dict(preset=p, levels=k, size=s) for p in ("small", "paper") for s in (32, 64) for k in (0, 1, 3)]
    label = f"baseline {baseline_commit(args.baseline)}" if args.baseline else None
    out, measured = [], set()
    for config in configs:
        key = (config["preset"], config["levels"], config["size"])
        theirs = AUTHORS_PAIRS.get(key) if args.authors else None
        if theirs and ("authors",) + key not in measured:  # the authors' model this preset is compared with
            measured.add(("authors",) + key)
            out.append({**config, "overrides": {}, "authors": theirs, "tree": args.authors})
        if args.baseline and key not in measured:  # the older code, its preset as it was, once per key
            measured.add(key)
            out.append({**config, "overrides": {}, "label": label, "tree": args.baseline})
        for variant in (args.variants.split(",") if args.variants else [None]):
            out.append(config if variant is None else {**config, **parse_variant(variant)})
        if args.original:
            overrides = {**original(config["preset"], config["levels"]), **config.get("overrides", {})}
            out.append({**config, "overrides": overrides, "label": "original"})
    return out


# ``--authors``: the authors' published models (experiments/authors_step.py) and the configuration of ours each is
# compared with, as in the speed issue: their CIFAR-10 VAE <-> our paper K = 0, their srVAE <-> our downscale K = 1.
AUTHORS_PAIRS = {("paper", 0, 32): "VAE", ("paper", 1, 32): "srVAE"}


def versus_authors(rows: List[Dict]) -> str:
    """One line per row of ours that has an authors' row of the same K: the ratio of images/s."""
    theirs = {r["K"]: r for r in rows if r["preset"] == "authors"}
    lines = []
    for r in rows:
        other = theirs.get(r["K"])
        if r["preset"] != "paper" or other is None or r["size"] != other["size"]:
            continue
        variant = r.get("label") or "+".join(f"{k}={v}" for k, v in (r.get("overrides") or {}).items()) or "preset"
        lines.append(f"- paper K={r['K']} ({variant}, {r['precision']}{' compiled' if r['compiled'] else ''}): "
                     f"{r['images_per_s']:.2f} images/s = {r['images_per_s'] / other['images_per_s']:.2f}x the "
                     f"authors' {AUTHORS_PAIRS[('paper', r['K'], r['size'])]} ({other['images_per_s']:.2f}); "
                     f"{r['gflop_per_image']:.1f} vs {other['gflop_per_image']:.1f} GFLOP/image, "
                     f"{r['parameters'] / 1e6:.1f} M vs {other['parameters'] / 1e6:.1f} M parameters")
    return "\n".join(lines)


def parse_variant(text: str) -> Dict:
    """``fp32``, ``bf16``, ``fp32+compile``, ``bf16+compile`` -> precision and compile of one row."""
    parts = text.strip().split("+")
    if parts[0] not in ("fp32", "bf16") or any(p != "compile" for p in parts[1:]):
        raise SystemExit(f"--variants: '{text}' is not fp32 or bf16, optionally +compile")
    return {"precision": parts[0], "compile": "compile" in parts[1:]}


def baseline_commit(tree: str) -> str:
    done = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or os.path.basename(os.path.abspath(tree))


def table(rows: List[Dict]) -> str:
    lines = ["| preset | K | size | variant | params | device | precision | ms/step (batch) | images/s | GFLOP/image | "
             "TFLOP/s | of bf16 peak | IW-512 images/s | IW samples/s | peak memory (MB) |",
             "|---|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        memory = r.get("train_peak_memory_mb") or r["peak_rss_mb"]
        frac = f"{100 * r['fraction_of_bf16_peak']:.2f} %" if r.get("fraction_of_bf16_peak") else "–"
        iw = (f"{r['iw_images_per_s']:.2f} | {r['iw_samples_per_s']:.0f}" if r.get("iw_images_per_s")
              else "– | –")
        variant = r.get("label") or "+".join(f"{k}={v}" for k, v in (r.get("overrides") or {}).items()) or "preset"
        lines.append(f"| {r['preset']} | {r['K']} | {r['size']} | {variant} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r['device']} | "
                     f"{r['precision']}{' compiled' if r['compiled'] else ''} | {1000 * r['step_s']:.0f} "
                     f"({r['batch']}) | {r['images_per_s']:.1f} | {r['gflop_per_image']:.2f} | "
                     f"{r['achieved_tflops']:.3f} | {frac} | {iw} | {memory:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU half in a few minutes (fewer steps and configs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --quick 1)")
    p.add_argument("--iw-images", type=int, default=None, help="images for the IW-512 timing (default 8; --quick 2)")
    p.add_argument("--iw-samples", type=int, default=512)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="default: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (cache in ~/.cache/selfvae/inductor unless TORCHINDUCTOR_CACHE_DIR "
                        "is set: the first run on a machine compiles, later ones load)")
    p.add_argument("--variants", default=None,
                   help="measure each configuration this way, side by side: a comma list of fp32 / bf16, each "
                        "optionally +compile (e.g. fp32,fp32+compile,bf16+compile); replaces --precision and "
                        "--compile for these rows (--baseline rows keep them)")
    p.add_argument("--only", default=None, help="only these configurations, e.g. small:3:32,paper:1:32; config "
                   "overrides after @, joined by +: small:3:32@width=48+narrow_above=16")
    p.add_argument("--original", action="store_true", help="also measure each configuration as the presets were "
                   "before the networks narrowed at full resolution (constant width, one-scale flow)")
    p.add_argument("--baseline", default=None, help="a checkout of an older commit (git worktree): each "
                   "configuration is also measured with its code, its preset as it was, in the same run")
    p.add_argument("--authors", default=None, help="a clone of the authors' code (github.com/ioangatop/srVAE): "
                   "their VAE is measured beside paper:0:32 and their srVAE beside paper:1:32, in the same run, with "
                   "the same batch and steps (experiments/authors_step.py; fp32, as their code runs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/benchmark", help="folder for benchmark.md and benchmark.json")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one configuration as JSON
    args = p.parse_args()
    steps = args.steps or (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    iw_images = args.iw_images if args.iw_images is not None else (2 if args.quick else 8)
    device = torch.device(args.device)
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    if args.one:
        config = json.loads(args.one)
        row = one(config["preset"], config["levels"], config["size"], args.batch_size, steps, warmup, iw_images,
                  args.iw_samples, device, bf16, args.compile, args.threads, config.get("overrides"))
        print(json.dumps({**row, "label": config.get("label")}))
        return
    rows = []
    here = os.path.abspath(__file__)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(here)) + os.pathsep +
           os.environ.get("PYTHONPATH", "")}
    # the persistent compile cache of selfvae.runtime, also for --baseline trees that predate it
    from selfvae.runtime import COMPILE_CACHE
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", COMPILE_CACHE)
    env.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    print(f"torch {torch.__version__}, device {device}, {'bf16' if bf16 else 'fp32'}, batch {args.batch_size}, "
          f"{steps} timed steps after {warmup}; IW {args.iw_samples} samples on {iw_images} images", flush=True)
    machine = machine_line(device)
    print(machine, flush=True)
    for config in plan(args):
        argv = [sys.executable, here, "--one", json.dumps(config), "--device", args.device, "--batch-size",
                str(args.batch_size), "--steps", str(steps), "--warmup", str(warmup), "--iw-images", str(iw_images),
                "--iw-samples", str(args.iw_samples), "--precision", config.get("precision", "bf16" if bf16 else "fp32")]
        argv += (["--compile"] if config.get("compile", args.compile) else []) + (["--threads", str(args.threads)] if args.threads else [])
        tree = config.get("tree")
        run_env = env if tree is None else {**env, "PYTHONPATH": os.path.abspath(tree)}
        if config.get("authors"):
            argv = [sys.executable, os.path.join(os.path.dirname(here), "authors_step.py"), tree, "--model",
                    config["authors"], "--device", args.device, "--batch-size", str(args.batch_size), "--steps",
                    str(steps), "--warmup", str(warmup)] + (["--threads", str(args.threads)] if args.threads else [])
            run_env = env
        done = subprocess.run(argv, capture_output=True, text=True, env=run_env)
        if done.returncode:
            print(f"{config}: failed\n{done.stderr[-2000:]}", flush=True)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['preset']:5s} K={r['K']} {r['size']}px {r.get('label') or r['overrides'] or ''}: "
              f"{r['parameters'] / 1e6:.2f} M parameters, first step {r['first_step_s']:.1f} s, "
              f"{r['images_per_s']:.1f} images/s, "
              f"{r['gflop_per_image']:.2f} GFLOP/image, IW-512 {r.get('iw_images_per_s', 0):.2f} images/s", flush=True)
    text = machine + "\n\n" + table(rows)
    if args.authors:
        text += "\n\nAgainst the authors' code, same machine, batch and steps:\n\n" + versus_authors(rows)
    write_report(args.out, "benchmark", text, rows)


def machine_line(device: torch.device) -> str:
    """What the figures were measured on: the GPU's name, or the CPU's vector instructions, whether
    oneDNN has bf16 kernels for it (without them bf16 rows run several times slower than fp32) and
    the threads torch uses."""
    if device.type == "cuda":
        return f"device: {torch.cuda.get_device_name(device)}"
    from selfvae.runtime import cpu_bf16_kernels, cpu_name

    return (f"CPU: {cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, "
            f"bf16 kernels {'yes' if cpu_bf16_kernels() else 'no'}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
