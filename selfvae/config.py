"""One config object per model: :class:`ModelConfig`.

It fully describes a model; it is stored inside every checkpoint and
:func:`selfvae.model.build_model` rebuilds the model from it alone. Presets are plain
dictionaries of config values; any value can be overridden (``--set width=96`` on the
command line, or keyword arguments here).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

from transforms import TransformError, parse_chain


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a selfVAE.

    image_channels, image_size: the shape of x, ``(image_channels, image_size, image_size)``.
    transform: the chain of transforms defining ``y_1..y_K`` (``"downscale:3"``, ``"sketch"``,
        ``"bits:3"``, ``"sketch,downscale:2"``); ``""`` gives K = 0, the VAE with a RealNVP prior.
    latent_channels, latent_size: every latent is ``latent_channels x s x s`` with
        ``s = min(latent_size, size of the level it is inferred from)`` (paper: 16 x 8 x 8).
    width, growth, dense_layers, blocks: network width, DenseNet growth rate, layers per
        DenseNet block, DenseNet blocks per resolution.
    components: logistic mixture components of every discretized likelihood.
    flow_couplings, flow_hidden: affine coupling layers of the RealNVP prior and the width
        of their conv nets.
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
    components: int = 10
    flow_couplings: int = 4
    flow_hidden: int = 32
    min_logvar: float = -12.0
    max_logvar: float = 6.0
    min_log_scale: float = -7.0

    def __post_init__(self) -> None:
        try:
            parse_chain(self.transform)
        except TransformError as e:
            raise ValueError(f"invalid transform in config: {e}") from None
        positive = ["image_channels", "image_size", "latent_channels", "latent_size", "width", "growth",
                    "components", "flow_couplings", "flow_hidden"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"config value {name} must be >= 1, got {getattr(self, name)}")
        if self.dense_layers < 0 or self.blocks < 0:
            raise ValueError("config values dense_layers and blocks must be >= 0")

    @property
    def levels(self) -> int:
        """K, the number of transformed levels y_1..y_K."""
        return len(parse_chain(self.transform))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "ModelConfig":
        return self.from_dict({**self.to_dict(), **changes})


PRESETS: Dict[str, Dict[str, Any]] = {
    # Sized for 2 CPU cores (see experiments/throughput.py).
    "small": dict(width=32, growth=16, dense_layers=1, blocks=1, flow_couplings=4, flow_hidden=32),
    # The paper's scale: latents 16x8x8 and 32-42 M parameters (see experiments/param_count.py).
    # Its width depends on K (PAPER_WIDTH), as the paper kept every model in that range.
    "paper": dict(dense_layers=3, blocks=2, flow_couplings=8, flow_hidden=256),
}

# Width of the `paper` preset by number of levels K (growth = width / 4), chosen so that
# the models have 32-42 M parameters like the paper's; K >= 4 uses the last entry.
PAPER_WIDTH = {0: 328, 1: 216, 2: 176, 3: 160, 4: 144}


def chain_text(transform: str, levels: int | None) -> str:
    """Combine ``--transform`` and ``--levels`` into one chain string.

    ``("downscale", 3) -> "downscale:3"``; ``(anything, 0) -> ""`` (the plain VAE);
    a full chain (``"sketch,downscale:2"``, ``"bits:3"``) is kept as is and must have
    ``levels`` levels if ``levels`` is given.
    """
    if levels == 0:
        return ""
    chain = parse_chain(transform)
    if levels is None or len(chain) == levels:
        return transform
    if len(chain) == 1 and ":" not in transform:
        return f"{transform}:{levels}" if levels > 1 else transform
    raise ValueError(f"--transform '{transform}' has {len(chain)} levels but --levels is {levels}")


def make_config(preset: str = "small", transform: str = "downscale", levels: int | None = None,
                **overrides: Any) -> ModelConfig:
    """A config from a preset name, a transform chain and overrides of any config value."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; known presets: {sorted(PRESETS)}")
    chain = chain_text(transform, levels)
    values = dict(PRESETS[preset])
    if preset == "paper":
        width = PAPER_WIDTH[min(len(parse_chain(chain)), max(PAPER_WIDTH))]
        values.update(width=width, growth=width // 4)
    values.update(overrides, transform=chain)
    return ModelConfig.from_dict(values)
