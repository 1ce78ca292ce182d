"""Time the authors' published code (github.com/ioangatop/srVAE) the way ``benchmark.py`` times ours.

    python experiments/authors_step.py /path/to/srVAE --model VAE      # their CIFAR-10 VAE (DenseNet + RealNVP)
    python experiments/authors_step.py /path/to/srVAE --model srVAE    # their srVAE (densenet16x32 + RealNVP)

``benchmark.py --authors /path/to/srVAE`` calls this for the ``paper`` pairs (their VAE beside our K = 0, their
srVAE beside our downscale K = 1), each in its own process, and prints the rows in one table. Nothing of their
code is part of this repository: give it a clone of theirs.

Their model is built as their ``main.py`` builds it, with the configuration of their README (``--model VAE
--network densenet32 --prior RealNVP``; ``--model srVAE --network densenet16x32 --prior RealNVP``; CIFAR-10
defaults: z and u 1024-dimensional, a 10-component logistic mixture): ``nn.DataParallel``, the data-dependent
``initialize``, their ``ELBOLoss``, ``Adamax(lr=2e-3, betas=(0.9, 0.999), eps=1e-7)`` with their
``LowerBoundedExponentialLR`` schedule. One timed step is one call of their ``src.modules.train.train`` on one
batch: zero_grad, forward, their loss, ``backward(retain_graph=True)``, the optimizer step, the scheduler step
(and their per-batch statistics). The batch is fixed random CIFAR-shaped images as their loader gives them
(float32 in [0, 1] on the 1/255 grid, ``(B, 3, 32, 32)``); fp32, as their code runs.

Three things are needed to run their code under today's torch, none of which changes what it computes:

* ``torchvision`` is imported by every module (``src/__init__`` imports the data loaders), and ``srVAE.forward``
  makes its 16x16 ``y`` with ``transforms.Compose([ToPILImage(), Resize((16, 16)), ToTensor()])`` one image at a
  time. Where torchvision cannot be imported (it has no CPU build for this torch), a stand-in provides those
  three transforms through PIL as torchvision's PIL path does (float x 255 -> uint8 -> PIL bilinear resize ->
  / 255) and inert names for the data-loading classes, which are never used here.
* ``markdown`` (used only to format their logs) gets a stand-in when missing.
* Their RealNVP's ``squeeze_2x2`` ends in a ``permute``; since torch 1.5 a convolution keeps that channels-last
  layout and their coupling layer's ``s.view(B, -1)`` then raises "view size is not compatible". Their README's
  torch 1.3 returned contiguous conv outputs; ``squeeze_2x2``'s result is made contiguous here (the same values).

Prints one JSON row (the last line of stdout) in ``benchmark.py``'s format.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import sys
import time
import types

# their README's two configurations
CONFIGS = {
    "VAE": ["--model", "VAE", "--network", "densenet32", "--prior", "RealNVP"],
    "srVAE": ["--model", "srVAE", "--network", "densenet16x32", "--prior", "RealNVP"],
}
# the pair of ours each of theirs is compared with (benchmark.py's ``paper:K:32``)
OURS = {"VAE": 0, "srVAE": 1}


def _can_import(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:
        return False


class _Inert:
    """A name their data-loading or plotting modules import but this timing never uses."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, value, *args, **kwargs):
        return value


def _inert_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def attribute(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Inert  # any class or function: inert

    module.__getattr__ = attribute
    return module


def install_torchvision_standin() -> None:
    """The three transforms ``srVAE.forward`` uses, through PIL as torchvision's PIL path computes them."""
    import numpy as np
    import torch
    from PIL import Image

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, value):
            for t in self.transforms:
                value = t(value)
            return value

    class ToPILImage:
        def __call__(self, pic):  # (3, H, W) float in [0, 1] -> RGB image, as torchvision: mul(255).byte()
            if pic.is_floating_point():
                pic = pic.mul(255).byte()
            return Image.fromarray(pic.permute(1, 2, 0).contiguous().numpy(), mode="RGB")

    class Resize:
        def __init__(self, size, interpolation=Image.BILINEAR):
            self.size, self.interpolation = size, interpolation

        def __call__(self, image):
            h, w = self.size
            return image.resize((w, h), self.interpolation)

    class ToTensor:
        def __call__(self, image):  # RGB image -> (3, H, W) float in [0, 1]
            array = np.array(image, dtype=np.uint8, copy=True)
            return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)

    torchvision = _inert_module("torchvision")
    transforms = _inert_module("torchvision.transforms")
    transforms.Compose, transforms.ToPILImage, transforms.Resize, transforms.ToTensor = (
        Compose, ToPILImage, Resize, ToTensor)
    transforms.functional = _inert_module("torchvision.transforms.functional")
    torchvision.transforms = transforms
    torchvision.utils = _inert_module("torchvision.utils")
    torchvision.datasets = _inert_module("torchvision.datasets")
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": transforms.functional,
                        "torchvision.utils": torchvision.utils, "torchvision.datasets": torchvision.datasets})


def build(tree: str, model_name: str, device: str):
    """Import their package from ``tree`` with the README configuration of ``model_name``; returns the module
    ``src`` (their names: ``args``, ``ELBOLoss``, ``train``, ...)."""
    if not os.path.isfile(os.path.join(tree, "src", "models", "srvae", "srvae.py")):
        raise SystemExit(f"authors_step: {tree} is not a checkout of github.com/ioangatop/srVAE "
                         "(no src/models/srvae/srvae.py)")
    # their args.py parses sys.argv when imported, and their model files pick networks at import time
    sys.argv = ["main.py", *CONFIGS[model_name], "--seed", "0", "--device", device]
    sys.path.insert(0, os.path.abspath(tree))
    sys.dont_write_bytecode = True  # leave their tree as it is
    stand_ins = []
    if not _can_import("torchvision"):
        install_torchvision_standin()
        stand_ins.append("torchvision (PIL)")
    if not _can_import("markdown"):
        sys.modules["markdown"] = _inert_module("markdown")
        stand_ins.append("markdown")
    with contextlib.redirect_stdout(io.StringIO()):
        import src  # their main.py: `from src import *`
        import src.modules.priors.realnvp.model.real_nvp as real_nvp
    squeeze = real_nvp.squeeze_2x2
    real_nvp.squeeze_2x2 = lambda *a, **k: squeeze(*a, **k).contiguous()
    return src, stand_ins


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tree", help="a clone of github.com/ioangatop/srVAE")
    p.add_argument("--model", choices=sorted(CONFIGS), required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    src, stand_ins = build(args.tree, args.model, args.device)
    import torch
    import torch.nn as nn
    from torch.utils.flop_counter import FlopCounterMode

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    src.fix_random_seed(seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch_size, 3, 32, 32), generator=g).float().div(255)  # as their loader gives
    loader = [(x, torch.zeros(args.batch_size, dtype=torch.long))]
    model = nn.DataParallel(getattr(src, args.model)((3, 32, 32)).to(device))
    with contextlib.redirect_stdout(io.StringIO()):
        model.module.initialize(loader)  # their data-dependent weight-norm init
    criterion = src.ELBOLoss()
    optimizer = torch.optim.Adamax(model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-7)
    scheduler = src.LowerBoundedExponentialLR(optimizer, gamma=0.999999, lower_bound=0.0001)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> dict:
        with contextlib.redirect_stdout(io.StringIO()):  # their per-batch progress line
            return src.train(model, criterion, optimizer, scheduler, loader)

    sync()
    start = time.perf_counter()
    first = step()
    sync()
    first_step_s = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        losses = step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    label = f"authors' {args.model} (ioangatop/srVAE)" + (f"; stand-in {', '.join(stand_ins)}" if stand_ins else "")
    row = {"preset": "authors", "K": OURS[args.model], "size": 32, "overrides": {}, "batch": args.batch_size,
           "device": str(device), "precision": "fp32", "compiled": False, "threads": torch.get_num_threads(),
           "parameters": sum(p.numel() for p in model.parameters()), "first_step_s": first_step_s,
           "step_s": median, "images_per_s": args.batch_size / median, "gflop_per_image": flops / args.batch_size / 1e9,
           "achieved_tflops": flops / median / 1e12, "fraction_of_bf16_peak": None,
           "first_bpd": float(first["bpd"]), "last_bpd": float(losses["bpd"]),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "label": label}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
