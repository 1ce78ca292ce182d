"""Training throughput of a preset: images/s for full training steps (forward, backward,
AdaMax step) on random uint8 images, after warm-up. Prints one line per configuration.

    python experiments/throughput.py --preset small --transforms downscale:3 "" sketch --batch-size 32
"""
from __future__ import annotations

import argparse
import time

import torch

from selfvae.config import make_config
from selfvae.model import build_model, count_parameters


def measure(preset: str, transform: str, image_size: int, batch_size: int, steps: int, warmup: int,
            device: torch.device, bf16: bool) -> float:
    config = make_config(preset, transform, image_size=image_size)
    model = build_model(config).to(device)
    x = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=device)
    model.initialize(x)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.bits_per_dim(model(x))["bpd"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    rate = steps * batch_size / elapsed
    print(f"preset={preset:6s} transform={transform or 'VAE':20s} size={image_size} batch={batch_size} "
          f"params={count_parameters(model) / 1e6:7.2f}M device={device} bf16={bf16}: {rate:8.1f} images/s "
          f"({elapsed / steps * 1000:.1f} ms/step)", flush=True)
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--transforms", nargs="+", default=["downscale:3", "", "downscale", "sketch"])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for t in args.transforms:
        measure(args.preset, t, args.image_size, args.batch_size, args.steps, args.warmup, torch.device(args.device),
                args.bf16)


if __name__ == "__main__":
    main()
