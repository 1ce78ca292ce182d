"""The two config objects: :class:`ModelConfig` (what a model is) and :class:`TrainConfig`
(how it is trained).

Both are frozen dataclasses of plain values, validated when built, stored whole inside
every checkpoint, and compared whole when a run is resumed. Presets are plain dictionaries
of values; any value can be overridden (``--set width=96`` on the command line, or keyword
arguments here). :func:`build_model` in :mod:`selfvae.model` rebuilds a model from a
:class:`ModelConfig` alone.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, Type, TypeVar

from transforms import Chain, LevelSpec, TransformError, parse_chain

C = TypeVar("C", bound="_Config")


class ConfigError(ValueError):
    """A config value that cannot work (named in the message)."""


class _Config:
    """Shared behaviour of the frozen config dataclasses: dicts in and out, replace, compare."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[C], values: Dict[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self: C, **changes: Any) -> C:
        return self.from_dict({**self.to_dict(), **changes})

    def difference(self, other: "_Config") -> Dict[str, Tuple[Any, Any]]:
        """Keys whose values differ: name -> (this config's value, the other's)."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _check_ints(config: Any, names: Iterable[str], minimum: int) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_floats(config: Any, names: Iterable[str], positive: bool = False) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")


def _power_of_two_ratio(a: int, b: int) -> bool:
    big, small = max(a, b), min(a, b)
    return big % small == 0 and (big // small) & (big // small - 1) == 0


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ModelConfig(_Config):
    """Everything that defines a selfVAE.

    image_channels, image_size: the shape of x, ``(image_channels, image_size, image_size)``.
    transform: the chain of transforms defining ``y_1..y_K`` (``"downscale:3"``, ``"sketch"``,
        ``"bits:3"``, ``"sketch,downscale:2"``); ``""`` gives K = 0, the VAE with a RealNVP prior.
    latent_channels, latent_size: every latent is ``latent_channels x s x s`` with
        ``s = min(latent_size, size of the level it is inferred from)`` (paper: 16 x 8 x 8).
    width, growth, dense_layers, blocks: network width, DenseNet growth rate, layers per
        DenseNet block, DenseNet blocks per resolution.
    narrow_above: 0 keeps ``width`` and ``growth`` at every spatial size; otherwise networks at
        sizes above it halve both with every doubling of the size (wide where features are
        small, narrow at full resolution; :class:`selfvae.nets.Widths`).
    blocks_above: DenseNet blocks per resolution at the sizes above ``narrow_above`` (``-1``: as
        many as ``blocks``; 0: only the resampling convs run there, as in the paper's decoder,
        which runs a single conv at full resolution).
    out_kernel: kernel of the last conv of every likelihood head (3, or 1: per pixel).
    phases: 1 (the paper) models the pixels of every level independently given the decoder's
        features; 4 codes each level of even size in its four 2x2 phases, one after the other,
        each given the phases before it (:mod:`selfvae.phases`).
    components: logistic mixture components of every discretized likelihood.
    flow_couplings, flow_hidden: affine coupling layers of the RealNVP prior and the width
        of their conv nets.
    flow_squeezed: further couplings of the RealNVP prior at half resolution (the latent
        squeezed to ``4C x s/2 x s/2``, RealNVP's multi-scale form; nets ``2 * flow_hidden`` wide);
        0: one scale.
    z_flow: conditional affine couplings on every conditional prior ``p(z_k | y_k, h_k)``, their
        nets seeing the features of ``y_k`` and ``h_k`` (:mod:`selfvae.cflow`; width
        ``flow_hidden``); 0: the diagonal Gaussian of the paper.
    min_logvar, max_logvar: bounds of every Gaussian's log-variance.
    min_log_scale: lower clamp of the logistic log-scales.
    """

    image_channels: int = 3
    image_size: int = 32
    transform: str = "downscale"
    latent_channels: int = 16
    latent_size: int = 8
    width: int = 32
    growth: int = 16
    dense_layers: int = 1
    blocks: int = 1
    narrow_above: int = 0
    blocks_above: int = -1
    out_kernel: int = 3
    phases: int = 1
    components: int = 10
    flow_couplings: int = 4
    flow_hidden: int = 32
    flow_squeezed: int = 0
    z_flow: int = 0
    min_logvar: float = -12.0
    max_logvar: float = 6.0
    min_log_scale: float = -7.0

    def __post_init__(self) -> None:
        _check_ints(self, ["image_channels", "image_size", "latent_channels", "latent_size", "width", "growth",
                           "components", "flow_couplings", "flow_hidden"], 1)
        _check_ints(self, ["dense_layers", "blocks", "z_flow", "narrow_above", "flow_squeezed"], 0)
        if isinstance(self.blocks_above, bool) or not isinstance(self.blocks_above, int) or self.blocks_above < -1:
            raise ConfigError(f"blocks_above must be an integer >= 0, or -1 (as many as blocks), got {self.blocks_above!r}")
        if self.out_kernel not in (1, 3, 5):
            raise ConfigError(f"out_kernel must be 1, 3 or 5, got {self.out_kernel!r}")
        if self.phases not in (1, 4) or isinstance(self.phases, bool):
            raise ConfigError(f"phases must be 1 (independent pixels) or 4 (2x2 phases in turn), got {self.phases!r}")
        if self.z_flow and self.latent_channels < 2:
            raise ConfigError(f"z_flow splits the latents' channels: latent_channels must be >= 2, got "
                              f"{self.latent_channels}")
        _check_floats(self, ["min_logvar", "max_logvar", "min_log_scale"])
        if self.min_logvar >= self.max_logvar:
            raise ConfigError(f"min_logvar ({self.min_logvar}) must be below max_logvar ({self.max_logvar})")
        if not isinstance(self.transform, str):
            raise ConfigError(f"transform must be a chain string, got {self.transform!r}")
        specs = self.level_specs()  # the chain fits the image size
        for k, spec in enumerate(specs):
            if spec.height != spec.width:
                raise ConfigError(f"level {k} is {spec.height}x{spec.width}; levels must be square")
            s = min(self.latent_size, spec.height)
            if not _power_of_two_ratio(spec.height, s):
                raise ConfigError(f"latent_size {self.latent_size} does not fit level {k} of size {spec.height}: "
                                  f"the two must differ by a power of 2 (e.g. latent_size 8 or 4)")
        u_size = min(self.latent_size, specs[-1].height)
        if self.flow_squeezed and u_size % 2:
            raise ConfigError(f"flow_squeezed halves the top latent u, which is {u_size}x{u_size} here: it needs an "
                              f"even size (set flow_squeezed=0)")

    @functools.cached_property
    def chain(self) -> Chain:
        """The parsed transform chain (parsed once per config)."""
        try:
            return parse_chain(self.transform)
        except TransformError as e:
            raise ConfigError(f"invalid transform in config: {e}") from None

    @property
    def levels(self) -> int:
        """K, the number of transformed levels y_1..y_K."""
        return len(self.chain)

    def level_specs(self) -> List[LevelSpec]:
        """``[spec of x, spec of y_1, ..., spec of y_K]`` (:class:`transforms.LevelSpec`)."""
        x = LevelSpec(self.image_channels, self.image_size, self.image_size, 256)
        try:
            return [x] + self.chain.specs(x)
        except TransformError as e:
            raise ConfigError(f"transform '{self.transform}' does not fit {self.image_channels}x{self.image_size}x"
                              f"{self.image_size} images: {e}") from None


MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    # Sized for 2 CPU cores (see experiments/benchmark.py). One width at every resolution:
    # narrow_above=8 is 1.46x the images/s but 0.08 bpd worse on the main job after the same
    # 2000 steps, and no better after the same wall time (README, "Speed").
    # Every level coded in 2x2 phases (phases=4): 0.3 bpd better on the main job's held-out photos
    # for ~15 % more time per step (README, "Phases").
    "small": dict(width=32, growth=16, dense_layers=1, blocks=1, flow_couplings=4, flow_hidden=32, phases=4),
    # The paper's scale: latents 16x8x8 and 32-42 M parameters (see experiments/param_count.py).
    # Compute where the paper spends it: wide at low resolution, narrow at full resolution; the
    # parameters a K = 0 or 1 model lacks then sit in a second, squeezed scale of the RealNVP
    # prior (4x4 positions: a quarter of the work per parameter of an 8x8 layer).
    "paper": dict(dense_layers=3, blocks=2, narrow_above=8, flow_couplings=8, flow_hidden=256),
}
PRESETS = MODEL_PRESETS

# Width of the `paper` preset (growth = width / 4) and its squeezed flow couplings by number of
# levels K, chosen so that the models have 32-42 M parameters like the paper's; K >= 4 uses the
# last entry.
PAPER_WIDTH = {0: 256, 1: 256, 2: 208, 3: 160, 4: 144}
PAPER_FLOW_SQUEEZED = {0: 7, 1: 2, 2: 1, 3: 3, 4: 1}
# DenseNet blocks at the narrowed resolutions (16x16 and up) by K: the VAE (K = 0) decodes x
# from an 8x8 latent as the paper's VAE does, with only the upsampling convs and the output conv
# above 8x8 (1.6x the images/s at no loss of held-out bpd on the main job's budget, README
# "Speed"). With K >= 1 the decoder of x sees y_1 at 16x16 through those blocks: they stay.
PAPER_BLOCKS_ABOVE = {0: 0}


def chain_text(transform: str, levels: Optional[int]) -> str:
    """Combine ``--transform`` and ``--levels`` into one chain string.

    ``("downscale", 3) -> "downscale:3"``; ``(anything, 0) -> ""`` (the plain VAE);
    a full chain (``"sketch,downscale:2"``, ``"bits:3"``) is kept as is and must have
    ``levels`` levels if ``levels`` is given.
    """
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 0):
        raise ConfigError(f"levels must be an integer >= 0, got {levels!r}")
    if levels == 0:
        return ""
    try:
        chain = parse_chain(transform)
    except TransformError as e:
        raise ConfigError(str(e)) from None
    if levels is None or len(chain) == levels:
        return transform
    if len(chain) == 1 and ":" not in transform:
        return f"{transform}:{levels}" if levels > 1 else transform
    raise ConfigError(f"--transform '{transform}' has {len(chain)} levels but --levels is {levels}")


def make_config(preset: str = "small", transform: str = "downscale", levels: Optional[int] = None,
                **overrides: Any) -> ModelConfig:
    """A model config from a preset name, a transform chain and overrides of any config value."""
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; known presets: {sorted(MODEL_PRESETS)}")
    chain = chain_text(transform, levels)
    values = dict(MODEL_PRESETS[preset])
    if preset == "paper":
        levels = min(len(parse_chain(chain)), max(PAPER_WIDTH))
        values.update(width=PAPER_WIDTH[levels], growth=PAPER_WIDTH[levels] // 4,
                      flow_squeezed=PAPER_FLOW_SQUEEZED[levels], blocks_above=PAPER_BLOCKS_ABOVE.get(levels, -1))
    values.update(overrides, transform=chain)
    return ModelConfig.from_dict(values)


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig(_Config):
    """Everything that decides what a training run computes (stored whole in its checkpoints;
    a resumed run must have the same one).

    dataset, data_root, image_size: the data (``default`` is built in; others read ``data_root``).
    validation_fraction: share of the training split held out to pick ``best.pt``.
    augment: ``affine`` (flips + small affine warp, nearest-neighbour), ``flip`` or ``none``.
    steps, batch_size: optimiser steps and the global batch (split across DDP ranks).
    lr, lr_min, warmup, schedule: AdaMax peak learning rate, the rate reached at the last step,
        linear warm-up steps, and the decay after it (``cosine`` or ``exp``).
    clip, max_bad_steps: gradient-norm clipping; stop after this many NaN/inf steps in a row.
    ema: decay of an exponential moving average of the weights (0: none). With ``ema = d`` the
        average after update ``t`` (1, 2, ...) moves towards the new weights by ``1 - min(d, (1 + t) /
        (10 + t))`` (the ramp keeps early averages from clinging to the initialisation); validation,
        ``best.pt``, the final evaluation and the pictures use the averaged weights.
    free_bits: bits per image that each latent (``u``, ``z_1..z_K``) may carry at no cost in the
        training loss (free bits, Kingma et al. 2016): the loss counts each latent's KL term, a
        batch mean, as ``max(KL, free_bits)``, so a KL below the floor gets no gradient. 0 (the
        default): the loss is the negative ELBO. Reported ELBOs, validation and evaluation are
        always the true bound; the loss itself is logged as ``loss``.
    precision: ``fp32`` or ``bf16`` (autocast; likelihoods and the flow stay in fp32).
    seed: seed of the split, the initialisation, the data order and every draw.
    log_every, eval_every, checkpoint_every, image_every: intervals in steps.
    iw_samples, iw_images: the final test evaluation's importance samples per image (0: no IW
        bound) and the number of test images it uses, spread over the split (None: all).
    init_from: a checkpoint file or shipped model name whose weights (its averaged ones when it
        has them) start the run instead of the data-dependent initialisation; its model config is
        the run's. Optimiser, schedule and step start afresh (None: a new model).
    """

    dataset: str = "default"
    data_root: Optional[str] = None
    image_size: int = 32
    validation_fraction: float = 0.05
    augment: str = "affine"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    lr_min: float = 1e-4
    warmup: int = 100
    schedule: str = "cosine"
    clip: float = 200.0
    max_bad_steps: int = 20
    ema: float = 0.0
    free_bits: float = 0.0
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 250
    image_every: int = 1000
    iw_samples: int = 32
    iw_images: Optional[int] = None
    init_from: Optional[str] = None

    def __post_init__(self) -> None:
        _check_ints(self, ["image_size", "steps", "batch_size", "max_bad_steps", "log_every", "eval_every",
                           "checkpoint_every", "image_every"], 1)
        _check_ints(self, ["warmup", "iw_samples", "seed"], 0)
        if self.iw_images is not None:
            _check_ints(self, ["iw_images"], 1)
        _check_floats(self, ["lr", "lr_min", "clip"], positive=True)
        _check_floats(self, ["validation_fraction", "ema", "free_bits"])
        if self.free_bits < 0:
            raise ConfigError(f"free_bits must be >= 0, got {self.free_bits}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.lr_min > self.lr:
            raise ConfigError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
        for name, allowed in (("augment", AUGMENTATIONS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


AUGMENTATIONS = ("affine", "flip", "none")
SCHEDULES = ("cosine", "exp")
PRECISIONS = ("fp32", "bf16")

TRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # The README's main job: ~15 minutes on 2 CPU cores (1500 steps: 16.8 min, test ELBO 4.990 bpd
    # on the unseen photographs; 2000 steps: 21.5 min, 4.813 -- README, "Quick start").
    "small": dict(steps=1500, precision="fp32"),
    # A GPU run at the paper's scale (bf16 autocast; `python -m selfvae.train` trains in fp32 on a
    # CPU unless --precision bf16 is given: CPUs without bf16 units run autocast far slower).
    "paper": dict(steps=20000, precision="bf16"),
}


def make_train_config(preset: str = "small", **overrides: Any) -> TrainConfig:
    """A training config from a preset name and overrides (``None`` values keep the preset's)."""
    if preset not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; known presets: {sorted(TRAIN_PRESETS)}")
    values = {**TRAIN_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict(values)


# --------------------------------------------------------------------------- --set KEY=VALUE
def _typed(field: dataclasses.Field, text: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if "Optional" in kind and text.lower() in ("none", "null", ""):
        return None
    for name, cast in (("int", int), ("float", float), ("str", str)):
        if name in kind:
            return cast(text)
    return text


def parse_overrides(items: Iterable[str], config_class: Type[_Config] = ModelConfig,
                    forbidden: Iterable[str] = ("transform", "image_size")) -> Dict[str, Any]:
    """``["width=64", "min_logvar=-8"]`` -> ``{"width": 64, "min_logvar": -8.0}``, typed by the
    fields of ``config_class``. Raises :class:`ConfigError` naming a malformed item, an unknown key
    (listing the known ones), a forbidden key or a value of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ConfigError(f"--set: unknown config key '{key}'; known keys: {sorted(fields)}")
        if key in forbidden:
            raise ConfigError(f"--set {key}=... is not allowed; use --{key.replace('_', '-')}")
        try:
            out[key] = _typed(fields[key], value.strip())
        except ValueError:
            raise ConfigError(f"--set {key}: '{value}' is not a valid {fields[key].type}") from None
    return out


def config_difference(a: _Config, b: _Config) -> Dict[str, Tuple[Any, Any]]:
    """Keys whose values differ between two configs: name -> (a's value, b's value)."""
    return a.difference(b)
