"""Train a selfVAE: ``python -m selfvae.train --transform downscale --levels 3``.

The story, top to bottom: parse arguments -> set up devices (and DDP under torchrun)
-> load data -> build (or resume) the model, optimiser and schedule -> loop over steps
(augment, ELBO, backward, guard, clip, step, log) -> validate and checkpoint at
intervals -> evaluate on the test split and write ``eval.json``.

Output folder ``--out DIR``:
``latest.pt`` (everything needed to resume), ``best.pt`` (best validation ELBO),
``log.jsonl`` (one JSON object per logged step), ``samples_*.png`` /
``reconstructions_*.png``, ``eval.json`` (test split figures).

Learning rate: linear warm-up over ``--warmup`` steps to ``--lr``, then a decay that
reaches ``--lr-min`` at the last step: cosine (default; measured better than exponential
on short runs) or exponential per step (``--schedule exp``, srVAE's choice).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from transforms import TransformError

from .augment import augment
from .checkpoint import CheckpointError, config_difference, read_checkpoint, save_checkpoint
from .config import PRESETS, ModelConfig, make_config
from .datasets import DataError, load_dataset
from .evaluation import evaluate_images, spread_subset
from .images import save_grid, save_rows
from .model import SelfVAE, build_model, count_parameters

# Training arguments that change the result; they must match when resuming.
RESUME_MUST_MATCH = ("dataset", "data_root", "image_size", "batch_size", "lr", "lr_min", "warmup", "schedule", "steps",
                     "seed", "clip", "augment", "validation_fraction")


class TrainingError(RuntimeError):
    """A problem the user must fix (bad arguments, an existing run, a mismatching checkpoint)."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m selfvae.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--transform", default="downscale",
                   help="transform name or chain: downscale, sketch, bits:3, sketch,downscale:2 (default downscale)")
    m.add_argument("--levels", type=int, default=None,
                   help="K, number of levels; repeats a single transform (downscale + 3 = downscale:3); 0 = plain VAE")
    m.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="model size: small (default on CPU) or paper (default on CUDA)")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set width=64 (repeatable)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="default",
                   help="default (built-in photo patches), cifar10, imagenette, celeba, folder")
    d.add_argument("--data-root", default=None, help="local folder of the dataset (not needed for default)")
    d.add_argument("--image-size", type=int, default=32, help="side of the square images (default 32)")
    d.add_argument("--augment", default="affine", choices=["affine", "flip", "none"],
                   help="training augmentation: flips + small random affine (nearest-neighbour resampling, so "
                        "pixels are not blurred), flips only, or none (default affine)")
    d.add_argument("--validation-fraction", type=float, default=0.05,
                   help="fraction of the training split held out for validation / best checkpoint")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=None, help="training steps (default: 2000 on CPU, 20000 on CUDA)")
    o.add_argument("--batch-size", type=int, default=32, help="global batch size (split across DDP ranks)")
    o.add_argument("--lr", type=float, default=2e-3, help="peak AdaMax learning rate")
    o.add_argument("--lr-min", type=float, default=1e-4, help="learning rate reached at the last step")
    o.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    o.add_argument("--schedule", default="cosine", choices=["cosine", "exp"],
                   help="decay after warm-up to --lr-min at the last step: cosine (default) or exponential per step")
    o.add_argument("--clip", type=float, default=200.0, help="gradient-norm clipping threshold")
    o.add_argument("--max-bad-steps", type=int, default=20,
                   help="stop after this many consecutive steps with a NaN/inf loss or gradient")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16 autocast (default on CUDA) or fp32 (default on CPU)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default=None, help="output folder (default runs/<dataset><size>-<chain>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from latest.pt")
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--eval-every", type=int, default=500, help="validation + best checkpoint interval")
    r.add_argument("--checkpoint-every", type=int, default=250)
    r.add_argument("--image-every", type=int, default=1000, help="PNG grids of samples and reconstructions")
    r.add_argument("--iw-samples", type=int, default=32,
                   help="importance samples per test image for the final evaluation (paper: 512)")
    r.add_argument("--iw-images", type=int, default=None,
                   help="evaluate the IW bound on N test images spread evenly over the split (default: all); "
                        "eval.json then also holds the ELBO of that subset (iw_subset_elbo_bpd)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--no-progress", dest="progress", action="store_false")
    r.add_argument("--kill-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests: SIGKILL self
    r.add_argument("--poison-steps", default="", help=argparse.SUPPRESS)  # tests: steps whose loss is NaN
    return p.parse_args(argv)


# --------------------------------------------------------------------------- setup
def parse_overrides(items: List[str]) -> Dict[str, Any]:
    """``["width=64", "min_logvar=-8"]`` -> typed values, using the config field types."""
    fields = ModelConfig().to_dict()
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TrainingError(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        if key not in fields:
            raise TrainingError(f"--set: unknown config key '{key}'; known keys: {sorted(fields)}")
        if key in ("transform",):
            raise TrainingError("--set transform=... is not allowed; use --transform/--levels")
        try:
            out[key] = type(fields[key])(value)
        except ValueError:
            raise TrainingError(f"--set {key}: '{value}' is not a valid {type(fields[key]).__name__}") from None
    return out


class Distributed:
    """Rank/world information; a no-op wrapper when not launched by torchrun."""

    def __init__(self, device_arg: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg == "auto":
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        if device_arg == "cuda" and self.world > 1:
            device_arg = f"cuda:{self.local_rank}"
        self.device = torch.device(device_arg)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise TrainingError("--device cuda given but CUDA is not available")
            torch.cuda.set_device(self.device)
        if self.world > 1:
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t / self.world
        return t

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def learning_rate_factor(step: int, args: argparse.Namespace) -> float:
    """Multiplier of ``--lr`` at ``step``: linear warm-up, then exponential decay to ``--lr-min``."""
    if step < args.warmup:
        return (step + 1) / args.warmup
    progress = (step - args.warmup) / max(args.steps - args.warmup, 1)
    if args.schedule == "cosine":
        floor = args.lr_min / args.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return (args.lr_min / args.lr) ** progress


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the global batch at ``step``: epochs are seeded permutations, so the order is a
    pure function of (seed, step) and a resumed run sees exactly the batches it would have seen."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise TrainingError(f"batch size {batch_size} is larger than the training set ({n} images)")
    epoch, position = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[position * batch_size:(position + 1) * batch_size]


def rng_state(aug_generator: torch.Generator, device: torch.device) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "augment": aug_generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], aug_generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    aug_generator.set_state(state["augment"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def default_out(args: argparse.Namespace, config: ModelConfig) -> str:
    chain = config.transform.replace(",", "+").replace(":", "") or "vae"
    return os.path.join("runs", f"{args.dataset}{args.image_size}-{chain}")


# --------------------------------------------------------------------------- pictures
@torch.no_grad()
def write_images(model: SelfVAE, x: torch.Tensor, out: str, tag: str, seed: int) -> List[str]:
    """Samples (generation) and reconstructions (inputs above reconstruction 2 and, for K >= 1,
    conditional reconstruction at level 1)."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    paths = [save_grid(model.generate(min(64, 8 * 8), generator=g).images, os.path.join(out, f"samples_{tag}.png"))]
    rows = [x, model.reconstruct2(x, generator=g).images]
    if model.levels >= 1:
        rows.append(model.cond_reconstruct(x, level=1, generator=g).images)
    paths.append(save_rows(rows, os.path.join(out, f"reconstructions_{tag}.png")))
    model.train(was_training)
    return paths


# --------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> Dict[str, Any]:
    ddp = Distributed(args.device)
    device = ddp.device
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    preset = args.preset or ("paper" if cuda else "small")
    if args.steps is None:
        args.steps = 20000 if cuda else 2000
    try:
        config = make_config(preset, args.transform, args.levels, image_size=args.image_size,
                             **parse_overrides(args.overrides))
    except (ValueError, TransformError) as e:
        raise TrainingError(str(e)) from None
    out = args.out or default_out(args, config)
    args.out = out
    latest, best = os.path.join(out, "latest.pt"), os.path.join(out, "best.pt")

    # ---- resume or refuse to overwrite
    resume_state = None
    if args.resume:
        resume_state = read_checkpoint(latest)
        stored = ModelConfig.from_dict(resume_state["config"])
        diff = config_difference(stored, config)
        if diff:
            raise TrainingError(f"--resume: the checkpoint in {out} has another config; differences "
                                f"(checkpoint vs now): {diff}")
        for key in RESUME_MUST_MATCH:
            then, now = resume_state["train"].get(key), getattr(args, key)
            if then != now:
                raise TrainingError(f"--resume: '{key}' was {then!r} in the checkpoint, now {now!r}")
    elif os.path.exists(latest) or os.path.exists(os.path.join(out, "eval.json")):
        raise TrainingError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    # ---- data
    data = load_dataset(args.dataset, "train", image_size=args.image_size, root=args.data_root, seed=args.seed)
    test = load_dataset(args.dataset, "test", image_size=args.image_size, root=args.data_root, seed=args.seed)
    if data.images.shape[1:] != (config.image_channels, config.image_size, config.image_size):
        raise TrainingError(f"dataset images have shape {tuple(data.images.shape[1:])}, the model expects "
                            f"({config.image_channels}, {config.image_size}, {config.image_size})")
    # Validation: a seeded slice of the training split (the test split is kept for the final figures).
    perm = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(args.seed + 1))
    n_val = max(1, int(round(args.validation_fraction * len(perm))))
    validation, train_images = data.images[perm[:n_val]], data.images[perm[n_val:]]
    if cuda:  # the whole (uint8) training set on the GPU: batches never cross the host boundary
        train_images = train_images.to(device)
    if args.batch_size % ddp.world:
        raise TrainingError(f"--batch-size {args.batch_size} is not divisible by the {ddp.world} DDP ranks")
    local_batch = args.batch_size // ddp.world

    # ---- model, optimiser, schedule
    torch.manual_seed(args.seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adamax(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, args))
    aug_generator = torch.Generator(device=device)
    aug_generator.manual_seed(args.seed * 1000 + ddp.rank)
    step, best_val, bad_in_row, skipped = 0, math.inf, 0, 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        schedule.load_state_dict(resume_state["scheduler"])
        step, best_val, skipped = resume_state["step"], resume_state["best_val"], resume_state["skipped"]
        if len(resume_state["rng"]) != ddp.world:
            raise TrainingError(f"--resume: the run used {len(resume_state['rng'])} processes, now {ddp.world}")
        set_rng_state(resume_state["rng"][ddp.rank], aug_generator, device)
    else:
        # Data-dependent init on the first global batch: identical on every rank.
        first = train_images[batch_indices(0, len(train_images), args.batch_size, args.seed).to(train_images.device)]
        model.initialize(first.to(device))
        torch.manual_seed(args.seed * 1000 + ddp.rank)
    net = model
    if ddp.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)

    if ddp.main:
        os.makedirs(out, exist_ok=True)
        n_params = count_parameters(model)
        print(f"selfvae: {config.levels}-level model '{config.transform or 'VAE'}' ({preset} preset, "
              f"{n_params / 1e6:.2f} M parameters) on {device}, {precision}; {len(train_images)} train / "
              f"{len(validation)} validation / {len(test)} test images; {args.steps} steps -> {out}", flush=True)
    poison = {int(s) for s in args.poison_steps.split(",") if s}

    def checkpoint_state() -> Dict[str, Any]:
        rngs = [None] * ddp.world
        mine = rng_state(aug_generator, device)
        if ddp.world > 1:
            dist.all_gather_object(rngs, mine)
        else:
            rngs = [mine]
        return {"config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(), "step": step, "best_val": best_val, "skipped": skipped,
                "rng": rngs, "train": {k: getattr(args, k) for k in RESUME_MUST_MATCH},
                "data": {"dataset": args.dataset, "root": args.data_root, "image_size": args.image_size,
                         "seed": args.seed}}

    log = open(os.path.join(out, "log.jsonl"), "a") if ddp.main else None
    bar = tqdm(total=args.steps, initial=step, desc="train", unit="step", disable=not (args.progress and ddp.main),
               dynamic_ncols=True)
    window_start, window_images = time.perf_counter(), 0
    model.train()
    while step < args.steps:
        idx = batch_indices(step, len(train_images), args.batch_size, args.seed)
        x = train_images[idx[ddp.rank * local_batch:(ddp.rank + 1) * local_batch].to(train_images.device)]
        x = x.to(device, non_blocking=True)
        if args.augment == "affine":
            x = augment(x, aug_generator, mode="nearest")
        elif args.augment == "flip":
            x = augment(x, aug_generator, max_translate=0.0, max_rotate_deg=0.0, scale_range=(1.0, 1.0))
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            terms = net(x)
        bits = model.bits_per_dim(terms)
        loss = bits["bpd"]
        if step in poison:
            loss = loss * float("nan")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        # DDP has averaged the gradients, so every rank takes the same decision here.
        if torch.isfinite(grad_norm) and torch.isfinite(loss):
            optimizer.step()
            bad_in_row = 0
        else:
            skipped += 1
            bad_in_row += 1
            if bad_in_row >= args.max_bad_steps:
                raise TrainingError(f"{bad_in_row} consecutive steps had a NaN/inf loss or gradient (last at step "
                                    f"{step}); lower --lr or --clip, or check the data")
        schedule.step()
        step += 1
        window_images += x.shape[0] * ddp.world
        bar.update(1)

        if step % args.log_every == 0 or step == args.steps:
            values = torch.stack([v.detach().float() for v in bits.values()])
            values = ddp.all_reduce_mean(values).tolist()
            record = dict(zip(bits.keys(), values))
            elapsed = time.perf_counter() - window_start
            record.update(step=step, lr=schedule.get_last_lr()[0], grad_norm=float(grad_norm), skipped=skipped,
                          images_per_s=window_images / max(elapsed, 1e-9))
            window_start, window_images = time.perf_counter(), 0
            bar.set_postfix({"bpd": f"{record['bpd']:.3f}", **{k: f"{record[k]:.2f}" for k in model.term_names()}})
            if log:
                log.write(json.dumps(record) + "\n")
                log.flush()
        validate = step % args.eval_every == 0 or step == args.steps
        if validate or step % args.checkpoint_every == 0:
            state = checkpoint_state()  # collective under DDP: every rank takes part
            if ddp.main:
                # fork_rng: pictures and validation must not move the training RNG streams
                with torch.random.fork_rng(devices=[device] if cuda else []):
                    if validate:
                        val = evaluate_images(model, validation, batch_size=64, device=device,
                                              autocast_dtype=autocast_dtype, progress=False, seed=args.seed)
                        log.write(json.dumps({"step": step, "validation_bpd": val["elbo_bpd"]}) + "\n")
                        log.flush()
                        if val["elbo_bpd"] < best_val:
                            best_val = state["best_val"] = val["elbo_bpd"]
                            save_checkpoint(state, best)
                    save_checkpoint(state, latest)
        if ddp.main and (step % args.image_every == 0 or step == args.steps):
            with torch.random.fork_rng(devices=[device] if cuda else []):
                write_images(model, validation[:8].to(device), out, f"{step:06d}", args.seed)
        if args.kill_at_step is not None and step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()

    # ---- final evaluation on the test split
    result: Dict[str, Any] = {}
    if ddp.world > 1:
        result["replica_max_abs_diff"] = replica_difference(model)
    if ddp.main:
        write_images(model, test.images[:8].to(device), out, "final", args.seed)
        elbo = evaluate_images(model, test.images, batch_size=64, device=device, autocast_dtype=autocast_dtype,
                               progress=args.progress, desc="test ELBO", seed=args.seed)
        iw_set = spread_subset(test.images, args.iw_images)
        iw = evaluate_images(model, iw_set, batch_size=64, iw_samples=args.iw_samples, device=device,
                             autocast_dtype=autocast_dtype, progress=args.progress, desc="test IW bound",
                             seed=args.seed) if args.iw_samples else {"iw_bpd": None, "n_images": 0}
        result.update(
            elbo_bpd=elbo["elbo_bpd"], terms_bpd=elbo["terms_bpd"], n_images=elbo["n_images"],
            iw_bpd=iw["iw_bpd"], iw_samples=args.iw_samples, iw_n_images=iw["n_images"],
            iw_subset_elbo_bpd=iw.get("elbo_bpd"),
            steps=step, skipped_steps=skipped, best_validation_bpd=best_val, parameters=count_parameters(model),
            config=config.to_dict(), dataset=args.dataset, image_size=args.image_size, seed=args.seed,
            device=str(device), precision=precision)
        with open(os.path.join(out, "eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        iw_text = f", IW bound ({args.iw_samples} samples) {result['iw_bpd']:.4f} bpd" if args.iw_samples else ""
        print(f"test: ELBO {result['elbo_bpd']:.4f} bpd{iw_text} on {result['n_images']} images; "
              f"terms: " + ", ".join(f"{k} {v:.3f}" for k, v in result["terms_bpd"].items()), flush=True)
    if log:
        log.close()
    ddp.close()
    return result


@torch.no_grad()
def replica_difference(model: torch.nn.Module) -> float:
    """Largest absolute difference between this rank's parameters and rank 0's (0.0 = identical)."""
    worst = torch.zeros((), device=next(model.parameters()).device)
    for p in model.parameters():
        reference = p.detach().clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (reference - p.detach()).abs().max())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except (TrainingError, CheckpointError, DataError, TransformError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
