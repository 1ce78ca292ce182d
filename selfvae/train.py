"""Train a selfVAE: ``python -m selfvae.train --transform downscale --levels 3``.

The story, top to bottom (:func:`train`): check the arguments and build the two configs
(:class:`~selfvae.config.ModelConfig`, :class:`~selfvae.config.TrainConfig`) -> set up the
device (and DDP under torchrun), the output folder and the data splits -> build the model,
optimiser and schedule, or restore them from ``latest.pt`` -> loop over steps (augment,
ELBO, backward, guard, clip, step, log; validate, checkpoint and draw at intervals) ->
evaluate on the test split and write ``eval.json``.

Output folder ``--out DIR``:
``latest.pt`` (everything needed to resume), ``best.pt`` (best validation ELBO),
``log.jsonl`` (one JSON object per logged step), ``samples_*.png`` /
``reconstructions_*.png``, ``eval.json`` (test split figures, the same keys as
``python -m selfvae.evaluate --json``).

Learning rate: linear warm-up over ``--warmup`` steps to ``--lr``, then a decay that
reaches ``--lr-min`` at the last step: cosine (default; measured better than exponential
on short runs) or exponential per step (``--schedule exp``, srVAE's choice).

``--resume`` continues the run in ``--out`` with the configs stored in its checkpoint;
options given on the command line must agree with them.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from . import cli, modes, runtime, shipped
from .augment import augment
from .checkpoint import CheckpointError, evaluated_weights, read_checkpoint, remove_stale_temporaries, save_checkpoint
from .config import (AUGMENTATIONS, PRECISIONS, SCHEDULES, ModelConfig, TrainConfig, make_config,
                     make_train_config, parse_overrides, MODEL_PRESETS)
from .datasets import Splits, load_splits, split_changes
from .evaluation import elbo, evaluating, format_likelihood, likelihood, write_json
from .images import save_grid, save_rows
from .model import SelfVAE, build_model, parameter_counts
from .nets import set_memory_format

RUN_FILES = ("latest.pt", "best.pt", "log.jsonl", "eval.json")
RUN_PICTURES = ("samples_", "reconstructions_")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options. Options that set a config value default to None: the preset's value
    for a new run, the checkpoint's for ``--resume``."""
    p = cli.parser("python -m selfvae.train", __doc__)
    m = p.add_argument_group("model")
    m.add_argument("--transform", default=None,
                   help="transform name or chain: downscale, sketch, bits:3, subsample (lossless coding), "
                        "sketch,downscale:2 (default downscale)")
    m.add_argument("--levels", type=cli.nonnegative_int, default=None,
                   help="K, number of levels; repeats a single transform (downscale + 3 = downscale:3); 0 = plain VAE")
    m.add_argument("--preset", default=None, choices=sorted(MODEL_PRESETS),
                   help="model size and training length: small (default on CPU) or paper (default on CUDA)")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config value, e.g. --set width=64 (repeatable)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default=None, help="default (built-in photo patches), cifar10, imagenette, celeba, "
                                                   "folder (default: default)")
    d.add_argument("--data-root", default=None, help="local folder of the dataset (not needed for default)")
    d.add_argument("--image-size", type=cli.positive_int, default=None, help="side of the square images (32)")
    d.add_argument("--augment", default=None, choices=AUGMENTATIONS,
                   help="training augmentation: flips + small random affine (nearest-neighbour resampling, so "
                        "pixels are not blurred), flips only, or none (default affine)")
    d.add_argument("--validation-fraction", type=cli.open_fraction, default=None,
                   help="fraction of the training split held out for validation / best checkpoint (0.05)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=cli.positive_int, default=None, help="training steps (1500 small, 20000 paper)")
    o.add_argument("--batch-size", type=cli.positive_int, default=None, help="global batch size, split across DDP "
                                                                            "ranks (32)")
    o.add_argument("--lr", type=cli.positive_float, default=None, help="peak AdaMax learning rate (2e-3)")
    o.add_argument("--lr-min", type=cli.positive_float, default=None, help="learning rate at the last step (1e-4)")
    o.add_argument("--warmup", type=cli.nonnegative_int, default=None, help="linear warm-up steps (100)")
    o.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="decay after warm-up to --lr-min at the last step: cosine (default) or exponential per step")
    o.add_argument("--clip", type=cli.positive_float, default=None, help="gradient-norm clipping threshold (200)")
    o.add_argument("--max-bad-steps", type=cli.positive_int, default=None,
                   help="stop after this many consecutive steps with a NaN/inf loss or gradient (20)")
    o.add_argument("--ema", type=cli.fraction_below_one, default=None,
                   help="decay of a moving average of the weights used for validation, best.pt and the final "
                        "evaluation (0 = none, the default; e.g. 0.999)")
    o.add_argument("--free-bits", type=cli.nonnegative_float, default=None, metavar="BITS",
                   help="bits per image each latent may carry at no cost in the training loss, which counts "
                        "each latent's KL as max(KL, BITS) (free bits; 0 = the negative ELBO, the default); "
                        "reported bounds are unchanged")
    o.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="bf16 autocast (default on CUDA) or fp32 (default on CPU)")
    o.add_argument("--seed", type=cli.nonnegative_int, default=None, help="seed of split, init, order, draws (0)")
    r = p.add_argument_group("intervals and final evaluation")
    r.add_argument("--log-every", type=cli.positive_int, default=None, help="steps between log lines (50)")
    r.add_argument("--eval-every", type=cli.positive_int, default=None, help="validation + best checkpoint (500)")
    r.add_argument("--checkpoint-every", type=cli.positive_int, default=None, help="latest.pt (250)")
    r.add_argument("--image-every", type=cli.positive_int, default=None, help="PNG grids (1000)")
    r.add_argument("--iw-samples", type=cli.nonnegative_int, default=None,
                   help="importance samples per test image for the final evaluation (32; paper: 512; 0 = none)")
    r.add_argument("--iw-images", type=cli.positive_int, default=None,
                   help="evaluate the IW bound on N test images spread evenly over the split (default: all)")
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    g.add_argument("--out", default=None, help="output folder (default runs/<dataset><size>-<chain>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from latest.pt")
    g.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start a new run from the weights of a checkpoint or shipped model (its model config; "
                        "fresh optimiser, schedule and step count)")
    g.add_argument("--threads", type=cli.positive_int, default=None, help="torch CPU threads")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's forward pass, networks channels-last (the same losses "
                        "up to float rounding; on 2 CPU cores ~1.4x the images/s of eager fp32 with AVX-512, "
                        "2x with --precision bf16 where oneDNN has bf16 kernels, 1.1x on AVX2; the first run on a "
                        "machine spends 2-7 minutes compiling, later runs load ~/.cache/selfvae/inductor). Not "
                        "part of the run's config: a run may resume with or without it")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p.parse_args(argv)


TRAIN_OPTIONS = [f.replace("-", "_") for f in (
    "dataset", "data-root", "image-size", "validation-fraction", "augment", "steps", "batch-size", "lr", "lr-min",
    "warmup", "schedule", "clip", "max-bad-steps", "ema", "free-bits", "precision", "seed", "log-every", "eval-every",
    "checkpoint-every", "image-every", "iw-samples", "iw-images", "init-from")]


def configs_from_args(args: argparse.Namespace, cuda: bool, stored: Optional[Dict[str, Any]] = None,
                      initial: Optional[ModelConfig] = None):
    """The model and training configs of this run: from presets and the options given, or, when
    resuming, from the checkpoint's ``stored`` state with the options given checked against it.
    ``initial``: the model config of ``--init-from``'s weights, the run's model config (model
    options given as well must agree with it)."""
    given = {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
    model_given = args.transform is not None or args.levels is not None or args.preset or args.overrides
    if stored is not None:
        train_config = TrainConfig.from_dict(dict(stored["train"]))
        model_config = ModelConfig.from_dict(dict(stored["config"]))
        differences = {**train_config.difference(train_config.replace(**given))}
        if model_given:
            differences.update(model_config.difference(_model_config(args, cuda, train_config.image_size)))
        if differences:
            listed = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in differences.items())
            raise cli.UserError(f"--resume: the checkpoint in {args.out} has another config ({listed})")
        return model_config, train_config
    preset = args.preset or ("paper" if cuda else "small")
    if "precision" not in given and not cuda:  # bf16 autocast only pays on a GPU (--precision bf16 forces it)
        given["precision"] = "fp32"
    if initial is not None:
        given.setdefault("image_size", initial.image_size)
    train_config = make_train_config(preset, **given)
    if initial is None:
        return _model_config(args, cuda, train_config.image_size), train_config
    if model_given or train_config.image_size != initial.image_size:
        differences = initial.difference(_model_config(args, cuda, train_config.image_size))
        if differences:
            listed = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differences.items())
            raise cli.UserError(f"--init-from {args.init_from}: its model has another config ({listed})")
    return initial, train_config


def _model_config(args: argparse.Namespace, cuda: bool, image_size: int) -> ModelConfig:
    preset = args.preset or ("paper" if cuda else "small")
    return make_config(preset, args.transform or "downscale", args.levels, image_size=image_size,
                       **parse_overrides(args.overrides))


# --------------------------------------------------------------------------- the pieces of a run
class Distributed:
    """Rank/world information; a no-op wrapper when not launched by torchrun."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda" and device.index is None:  # set_device needs an index
            device = torch.device(f"cuda:{self.local_rank if self.world > 1 else torch.cuda.current_device()}")
        self.device = device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if self.world > 1:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t / self.world
        return t

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``lr`` at ``step``: linear warm-up, then cosine or exponential decay to ``lr_min``."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
    floor = config.lr_min / config.lr
    if config.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor ** progress


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the global batch at ``step``: epochs are seeded permutations, so the order is a
    pure function of (seed, step) and a resumed run sees exactly the batches it would have seen."""
    epoch, position = divmod(step, n // batch_size)
    return _epoch_permutation(n, seed, epoch)[position * batch_size:(position + 1) * batch_size]


def compute_loss(net: torch.nn.Module, model: SelfVAE, x: torch.Tensor,
                 autocast_dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
    """The training loss of one batch: per-term bpd of the single-sample ELBO, ``bpd`` their sum.
    (Also the seam where the tests inject faults: a NaN loss, a SIGKILL.)"""
    with torch.autocast(device_type=x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        terms = net(x)
    return model.bits_per_dim(terms)


def training_objective(model: SelfVAE, bits: Dict[str, torch.Tensor], free_bits: float) -> torch.Tensor:
    """The loss minimised: ``bits["bpd"]`` (the negative ELBO, bits per dim) with each latent's KL
    term raised to at least ``free_bits`` bits per image (``free_bits / x_dims`` bits per dim). Written
    as ``bpd + sum(max(KL, floor) - KL)`` so that a non-finite ``bpd`` stays non-finite."""
    if free_bits <= 0:
        return bits["bpd"]
    floor = free_bits / model.x_dims
    return bits["bpd"] + sum(torch.clamp(bits[name], min=floor) - bits[name] for name in model.latent_names())


@dataclass
class Run:
    """Everything a training run holds between steps."""

    model_config: ModelConfig
    config: TrainConfig
    out: str
    ddp: Distributed
    splits: Splits
    train_images: torch.Tensor
    model: SelfVAE
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    aug_generator: torch.Generator
    progress: bool
    ema: Optional["WeightAverage"] = None
    step: int = 0
    best_val: float = math.inf
    skipped: int = 0
    bad_in_row: int = 0

    @property
    def device(self) -> torch.device:
        return self.ddp.device

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return torch.bfloat16 if self.config.precision == "bf16" else None


def check_out_folder(out: str, resume: bool) -> None:
    """A new run refuses a folder that holds any earlier run's files; ``--resume`` needs latest.pt.
    Temporary files of a checkpoint write that was killed are removed either way."""
    cli.check_output_folder(out)
    if not os.path.isdir(out):
        return
    remove_stale_temporaries(out)
    if resume:
        return
    earlier = sorted(name for name in os.listdir(out)
                     if name in RUN_FILES or (name.endswith(".png") and name.startswith(RUN_PICTURES)))
    if earlier:
        raise cli.UserError(f"{out} already holds a run ({', '.join(earlier[:4])}); pass --resume to continue it "
                            f"or choose another --out")


def set_up(args: argparse.Namespace) -> Run:
    """Configs, device, output folder, data, model, optimiser and schedule of a new or resumed run."""
    device = cli.resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    stored = None
    if args.resume:
        if args.out is None:
            raise cli.UserError("--resume needs --out, the folder of the run to continue")
        stored = read_checkpoint(os.path.join(args.out, "latest.pt"))
    source = None
    if stored is None and args.init_from is not None:
        try:
            source, _ = shipped.load(args.init_from)
        except CheckpointError as e:
            raise cli.UserError(f"--init-from: {e}") from None
    model_config, config = configs_from_args(args, cuda, stored, None if source is None else source.config)
    out = os.path.abspath(args.out or default_out(config, model_config))
    check_out_folder(out, args.resume)
    ddp = Distributed(device)
    warning = precision_warning(device, config.precision)
    if warning and ddp.main:
        print(f"selfvae: warning: {warning}", file=sys.stderr, flush=True)
    if config.batch_size % ddp.world:
        raise cli.UserError(f"--batch-size {config.batch_size} is not divisible by the {ddp.world} DDP ranks")

    splits = load_splits(config.dataset, config.image_size, config.data_root, seed=config.seed,
                         validation_fraction=config.validation_fraction, progress=args.progress and ddp.main)
    if stored is not None and stored.get("split") is not None:
        changes = split_changes(stored["split"], splits.record)
        if changes:
            raise cli.UserError("--resume: the data changed since the checkpoint: " + "; ".join(changes))
    shape = tuple(splits.train.images.shape[1:])
    if shape != model_config.level_specs()[0].shape:
        raise cli.UserError(f"dataset images have shape {shape}, the model expects {model_config.level_specs()[0].shape}")
    if len(splits.train) < config.batch_size:
        raise cli.UserError(f"--batch-size {config.batch_size} is larger than the training split "
                            f"({len(splits.train)} images)")
    train_images = splits.train.images.to(device) if cuda else splits.train.images  # batches stay on the GPU

    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    # foreach: one multi-tensor op per update instead of a loop over ~700 parameter tensors
    # (the loop was ~7 % of a small-preset step on the CPU; on CUDA torch picks foreach anyway)
    optimizer = torch.optim.Adamax(model.parameters(), lr=config.lr, foreach=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(learning_rate_factor, config=config))
    aug_generator = torch.Generator(device=device)
    aug_generator.manual_seed(config.seed * 1000 + ddp.rank)
    run = Run(model_config, config, out, ddp, splits, train_images, model, model, optimizer, schedule, aug_generator,
              args.progress)
    if stored is not None:
        restore(run, stored)
    else:
        if source is not None:
            model.load_state_dict(source.state_dict())
        else:  # data-dependent init on the first global batch: identical on every rank
            first = train_images[batch_indices(0, len(train_images), config.batch_size, config.seed).to(device)]
            model.initialize(first.to(device))
        torch.manual_seed(config.seed * 1000 + ddp.rank)
        if config.ema:
            run.ema = WeightAverage(model, config.ema)
    if ddp.world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if getattr(args, "compile", False):
        set_memory_format(model, torch.channels_last)
        run.net = runtime.compile(run.net)
    return run


def precision_warning(device: torch.device, precision: str) -> Optional[str]:
    """Why ``precision`` is a poor choice on ``device``, or None: bf16 autocast on a CPU for which
    oneDNN has no bf16 kernels (:func:`selfvae.runtime.cpu_bf16_kernels`) runs several times slower
    than fp32. A warning, not an error: the figures are still right."""
    if precision != "bf16" or device.type != "cpu" or runtime.cpu_bf16_kernels():
        return None
    return ("--precision bf16 on a CPU without bf16 kernels (no AVX-512): autocast runs several times "
            "slower than fp32 here (7x for the small preset on 2 AVX2 cores); --precision fp32 is the "
            "faster choice on this machine")


def default_out(config: TrainConfig, model_config: ModelConfig) -> str:
    chain = model_config.transform.replace(",", "+").replace(":", "") or "vae"
    return os.path.join("runs", f"{config.dataset}{config.image_size}-{chain}")


# --------------------------------------------------------------------------- checkpoints
def rng_state(run: Run) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "augment": run.aug_generator.get_state()}
    if run.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(run.device)
    return state


def checkpoint_state(run: Run) -> Dict[str, Any]:
    """Everything needed to resume (tensors and plain values only). Collective under DDP."""
    rngs: List[Any] = [None] * run.ddp.world
    if run.ddp.world > 1:
        dist.all_gather_object(rngs, rng_state(run))
    else:
        rngs = [rng_state(run)]
    state = {"config": run.model_config.to_dict(), "train": run.config.to_dict(), "split": run.splits.record,
             "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.schedule.state_dict(), "step": run.step, "best_val": run.best_val,
             "skipped": run.skipped, "rng": rngs}
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    return state


def restore(run: Run, state: Dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimiser, schedule, counters and RNG streams; log lines
    written after the checkpoint (by a run that was then killed) are dropped, as those steps rerun."""
    if len(state["rng"]) != run.ddp.world:
        raise cli.UserError(f"--resume: the run used {len(state['rng'])} processes, now {run.ddp.world}")
    run.model.load_state_dict(state["model"])
    if run.config.ema:
        if "ema" not in state:
            raise cli.UserError("--resume: the checkpoint has no weight average although its config sets ema")
        run.ema = WeightAverage(run.model, run.config.ema)
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["scheduler"])
    run.step, run.best_val, run.skipped = int(state["step"]), float(state["best_val"]), int(state["skipped"])
    mine = state["rng"][run.ddp.rank]
    torch.set_rng_state(mine["torch"])
    run.aug_generator.set_state(mine["augment"])
    if run.device.type == "cuda" and "cuda" in mine:
        torch.cuda.set_rng_state(mine["cuda"], run.device)
    if run.ddp.main:
        truncate_log(os.path.join(run.out, "log.jsonl"), run.step)


def truncate_log(path: str, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to ``step`` (and any unreadable tail is dropped)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                break
            if record.get("step", 0) <= step:
                kept.append(json.dumps(record))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the loop
def train_step(run: Run) -> Dict[str, torch.Tensor]:
    """One optimiser step on the batch of ``run.step``; a NaN/inf loss or gradient skips the update."""
    config, ddp = run.config, run.ddp
    local = config.batch_size // ddp.world
    idx = batch_indices(run.step, len(run.train_images), config.batch_size, config.seed)
    x = run.train_images[idx[ddp.rank * local:(ddp.rank + 1) * local].to(run.train_images.device)]
    x = x.to(run.device, non_blocking=True)
    if config.augment == "affine":
        x = augment(x, run.aug_generator, mode="nearest")
    elif config.augment == "flip":
        x = augment(x, run.aug_generator, max_translate=0.0, max_rotate_deg=0.0, scale_range=(1.0, 1.0))
    bits = compute_loss(run.net, run.model, x, run.autocast_dtype)
    loss = training_objective(run.model, bits, config.free_bits)  # per rank: its batch's KL means
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.clip)
    # DDP has averaged the gradients, so every rank takes the same decision here.
    if torch.isfinite(grad_norm) and torch.isfinite(loss):
        run.optimizer.step()
        if run.ema is not None:
            run.ema.update(run.model)
        run.bad_in_row = 0
    else:
        run.skipped += 1
        run.bad_in_row += 1
        if run.bad_in_row >= config.max_bad_steps:
            raise cli.UserError(f"{run.bad_in_row} consecutive steps had a NaN/inf loss or gradient (last at step "
                                f"{run.step}); lower --lr or --clip, or check the data")
    run.schedule.step()
    run.step += 1
    if config.free_bits > 0:
        bits = {**bits, "loss": loss.detach()}
    return {**bits, "grad_norm": grad_norm.detach()}


def log_record(run: Run, bits: Dict[str, torch.Tensor], images_per_s: float) -> Dict[str, Any]:
    """The averaged figures of the last step as one log.jsonl record."""
    names = [k for k in bits if k != "grad_norm"]
    values = run.ddp.all_reduce_mean(torch.stack([bits[k].detach().float() for k in names])).tolist()
    record: Dict[str, Any] = dict(zip(names, values))
    record.update(step=run.step, lr=run.schedule.get_last_lr()[0], grad_norm=float(bits["grad_norm"]),
                  skipped=run.skipped, images_per_s=images_per_s)
    return record


def validate_and_checkpoint(run: Run, validate: bool, log) -> None:
    """Validation ELBO (best.pt when it improves) and latest.pt. Collective under DDP."""
    state = checkpoint_state(run)
    if not run.ddp.main:
        return
    # fork_rng: validation must not move the training RNG streams
    # (the state's tensors are the model's own: the average is swapped in for validation only, and the
    # raw weights are back in place before anything is saved)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        if validate:
            with averaged(run):
                val = elbo(run.model, run.splits.validation.images, batch_size=64, seed=run.config.seed,
                           device=run.device, autocast_dtype=run.autocast_dtype, progress=False)["elbo_bpd"]
            log.write(json.dumps({"step": run.step, "validation_bpd": val}) + "\n")
            log.flush()
            if val < run.best_val:
                run.best_val = state["best_val"] = val
                # best.pt: the weights that were validated (the average when there is one)
                best = state if run.ema is None else {**state, "model": evaluated_weights(state)}
                save_checkpoint(best, os.path.join(run.out, "best.pt"))
        save_checkpoint(state, os.path.join(run.out, "latest.pt"))


def write_images(model: SelfVAE, x: torch.Tensor, out: str, tag: str, seed: int) -> List[str]:
    """Samples (generation) and reconstructions: rows inputs, reconstruction 2 and, for K >= 1,
    conditional reconstruction at level 1 — enlarged and labelled."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    with evaluating(model), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        paths = [save_grid(modes.generate(model, 64, generator=g).images, os.path.join(out, f"samples_{tag}.png"))]
        rows, labels = [x, modes.reconstruct2(model, x, generator=g).images], ["inputs", "reconstruction 2"]
        if model.levels >= 1:
            rows.append(modes.cond_reconstruct(model, x, level=1, generator=g).images)
            labels.append("cond. reconstruction k=1")
        paths.append(save_rows(rows, os.path.join(out, f"reconstructions_{tag}.png"), labels=labels))
    return paths


def loop(run: Run) -> None:
    """Steps until ``config.steps``: train, log, validate/checkpoint and draw at their intervals."""
    config, ddp = run.config, run.ddp
    log = open(os.path.join(run.out, "log.jsonl"), "a") if ddp.main else None
    bar = tqdm(total=config.steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (run.progress and ddp.main))
    window_start, window_images = time.perf_counter(), 0
    run.model.train()
    try:
        while run.step < config.steps:
            bits = train_step(run)
            window_images += config.batch_size
            bar.update(1)
            step, last = run.step, run.step == config.steps
            if step % config.log_every == 0 or last:
                record = log_record(run, bits, window_images / max(time.perf_counter() - window_start, 1e-9))
                window_start, window_images = time.perf_counter(), 0
                bar.set_postfix({"bpd": f"{record['bpd']:.3f}",
                                 **{k: f"{record[k]:.2f}" for k in run.model.term_names()}})
                if log:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            validate = step % config.eval_every == 0 or last
            if validate or step % config.checkpoint_every == 0:
                validate_and_checkpoint(run, validate, log)
            if ddp.main and (step % config.image_every == 0 or last):
                with averaged(run):
                    write_images(run.model, run.splits.validation.images[:8].to(run.device), run.out, f"{step:06d}",
                                 config.seed)
    finally:
        bar.close()
        if log:
            log.close()


# --------------------------------------------------------------------------- the end
def final_evaluation(run: Run, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Test-split figures (the keys of :func:`selfvae.evaluation.likelihood`, as ``python -m
    selfvae.evaluate --json`` writes them) and ``extra``, written to eval.json."""
    config, model = run.config, run.model
    test = run.splits.test.images
    write_images(model, test[:8].to(run.device), run.out, "final", config.seed)
    figures = likelihood(model, test, iw_samples=config.iw_samples, iw_images=config.iw_images, batch_size=64,
                         seed=config.seed, device=run.device, autocast_dtype=run.autocast_dtype,
                         progress=run.progress)
    result = {"checkpoint": os.path.join(run.out, "latest.pt"), "config": run.model_config.to_dict(),
              "train": config.to_dict(), "data": run.splits.record, "step": run.step, "device": str(run.device),
              "seed": config.seed, **figures, "parameters": parameter_counts(model), "skipped_steps": run.skipped,
              "best_validation_bpd": run.best_val, **extra}
    write_json(result, os.path.join(run.out, "eval.json"))
    print(f"test split:\n{format_likelihood(figures)}", flush=True)
    return result


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers (``--ema``).

    ``update`` after each optimiser step: ``avg += (1 - min(decay, (1 + t) / (10 + t))) * (w - avg)``
    for update ``t = 1, 2, ...``. Its ``state_dict`` (the averaged tensors by name, and ``t``) is
    stored in the checkpoint as ``ema``; :func:`selfvae.checkpoint.load_model` loads those weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        state = model.state_dict()
        self.names = [n for n, t in state.items() if t.is_floating_point()]
        # the model's own tensors: optimiser steps and load_state_dict update them in place, so the
        # training step need not rebuild a state dict to read them
        self.live = [state[n].detach() for n in self.names]
        self.average = {n: t.clone() for n, t in zip(self.names, self.live)}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_([self.average[n] for n in self.names], self.live, weight)

    def state_dict(self) -> Dict[str, Any]:
        return {"tensors": {n: t.clone() for n, t in self.average.items()}, "updates": self.updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        missing = set(self.names) - set(state["tensors"])
        if missing:
            raise cli.UserError(f"--resume: the checkpoint's weight average lacks {sorted(missing)[:3]}")
        self.average = {n: state["tensors"][n].to(self.average[n].device).clone() for n in self.names}
        self.updates = int(state["updates"])

    def weights(self, model: torch.nn.Module) -> Dict[str, torch.Tensor]:
        """A full state dict of ``model`` with the averaged tensors in place of its own."""
        return {**model.state_dict(), **self.average}


@contextlib.contextmanager
def averaged(run: Run) -> Iterator[None]:
    """Within the block, ``run.model`` holds the averaged weights (when ``--ema`` is on); restored after."""
    if run.ema is None:
        yield
        return
    own = {n: t.detach().clone() for n, t in run.model.state_dict().items()}
    run.model.load_state_dict(run.ema.weights(run.model))
    try:
        yield
    finally:
        run.model.load_state_dict(own)


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """A whole run: set up (or restore), train, evaluate on the test split. Returns eval.json's figures."""
    run = set_up(args)
    try:
        if run.ddp.main:
            os.makedirs(run.out, exist_ok=True)
            print(f"selfvae: {run.model.levels}-level model '{run.model_config.transform or 'VAE'}' "
                  f"({parameter_counts(run.model)['total'] / 1e6:.2f} M parameters) on {run.device}, "
                  f"{run.config.precision}; {len(run.splits.train)} train / {len(run.splits.validation)} validation / "
                  f"{len(run.splits.test)} test images; {run.config.steps} steps -> {run.out}", flush=True)
        loop(run)
        extra = {"replica_max_abs_diff": replica_difference(run.model)} if run.ddp.world > 1 else {}
        if run.ema is not None:
            extra["weights"] = f"moving average (ema {run.config.ema})"
        with averaged(run):
            result = final_evaluation(run, extra) if run.ddp.main else extra
        # the ranks leave together: a rank that tears its process group down while rank 0 still
        # evaluates was seen to abort in gloo ("terminate called without an active exception")
        run.ddp.barrier()
        return result
    finally:
        run.ddp.close()


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
    return cli.run(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
