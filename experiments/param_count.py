"""Parameter counts of the presets, per component, for the paper's model types.

    python experiments/param_count.py
"""
from __future__ import annotations

from selfvae.config import make_config
from selfvae.model import build_model, parameter_counts

MODELS = [("VAE (K=0)", "downscale", 0), ("selfVAE-downscale (K=1)", "downscale", 1),
          ("selfVAE-sketch (K=1)", "sketch", 1), ("selfVAE-downscale-3lvl (K=3)", "downscale", 3)]


def main() -> None:
    print("| preset | model | 32x32 | 64x64 |")
    print("|---|---|---|---|")
    for preset in ("small", "paper"):
        for name, transform, levels in MODELS:
            counts = [parameter_counts(build_model(make_config(preset, transform, levels, image_size=s)))
                      for s in (32, 64)]
            print(f"| {preset} | {name} | {counts[0]['total'] / 1e6:.2f} M | {counts[1]['total'] / 1e6:.2f} M |",
                  flush=True)
    print()
    counts = parameter_counts(build_model(make_config("paper", "downscale", 3, image_size=64)))
    print("paper preset, downscale:3 at 64x64, per component:")
    for key, value in counts.items():
        print(f"  {key:16s} {value / 1e6:8.2f} M")


if __name__ == "__main__":
    main()
