"""Where one training step's time goes: torch.profiler over a few steps of one configuration,
the top operators by host time and by device time, and the host-device synchronisations.

    python experiments/profile_step.py --device cuda --preset small --levels 3 --precision bf16
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark import training_step  # noqa: E402
from selfvae.config import make_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="small")
    p.add_argument("--transform", default="downscale")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    device = torch.device(args.device)
    _, _, step = training_step(make_config(args.preset, args.transform, args.levels), args.batch_size, device,
                               args.precision == "bf16")
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    print(f"{args.preset} {args.transform}:{args.levels} batch {args.batch_size} {args.precision}: "
          f"{1000 * (time.perf_counter() - start) / args.steps:.1f} ms/step", flush=True)
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if device.type == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    syncs = [e for e in averages if "Synchronize" in e.key or "Memcpy" in e.key or "item" in e.key
             or "nonzero" in e.key or "local_scalar" in e.key]
    for e in syncs:
        print(f"{e.key}: {e.count // args.steps} per step, {e.cpu_time_total / args.steps / 1000:.2f} ms host per step")


if __name__ == "__main__":
    main()
