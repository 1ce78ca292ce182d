"""The config objects: presets, validation with messages that name the value, --set parsing."""
import math

import pytest

from selfvae.config import (ConfigError, ModelConfig, TrainConfig, make_config, make_train_config,
                            parse_overrides)
from selfvae.model import build_model


def test_config_validation_and_presets():
    assert make_config("small", "downscale", 3).transform == "downscale:3"
    assert make_config("small", "downscale", 0).levels == 0
    assert make_config("small", "sketch,downscale:2").levels == 3
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="levels"):
        make_config("small", "bits:3", 2)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"wdith": 3})
    with pytest.raises(ConfigError, match="cannot halve"):
        make_config("small", "downscale", 3, image_size=12)


@pytest.mark.parametrize("levels,overrides,message", [
    (10, {}, "does not fit 3x32x32"),                       # more levels than halvings of 32
    (3, {"image_size": 33}, "cannot halve a 33x33"),
    (3, {"latent_size": 3}, "latent_size 3 does not fit"),
    (3, {"min_logvar": math.nan}, "min_logvar must be a finite number"),
    (3, {"min_logvar": 7.0}, "must be below max_logvar"),
    (3, {"width": 0}, "width must be an integer >= 1"),
    (3, {"components": 2.5}, "components must be an integer"),
    (3, {"narrow_above": -8}, "narrow_above must be an integer >= 0"),
    (3, {"out_kernel": 2}, "out_kernel must be 1, 3 or 5"),
    (3, {"flow_squeezed": -1}, "flow_squeezed must be an integer >= 0"),
    (3, {"blocks_above": -2}, "blocks_above must be an integer >= 0, or -1"),
    (3, {"blocks_above": 1.5}, "blocks_above must be an integer >= 0, or -1"),
    (-1, {}, "levels must be an integer >= 0"),
])
def test_model_configs_that_cannot_work_are_refused_when_built(levels, overrides, message):
    """Before: these passed the config and ended in a traceback deep in the model (or, for
    levels=-1, silently trained a 1-level model)."""
    with pytest.raises(ConfigError, match=message):
        make_config("small", "downscale", levels, **overrides)


def test_every_valid_preset_config_builds():
    for preset in ("small", "paper"):
        for transform, levels in [("downscale", 0), ("downscale", 3), ("sketch", 1), ("bits:3", 1)]:
            config = make_config(preset, transform, levels)
            assert config.level_specs()[0].shape == (3, 32, 32)
    build_model(make_config("small", "downscale", 3))


@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_size": -4}, "batch_size must be an integer >= 1"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"lr": math.nan}, "lr must be a finite number"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"lr_min": 1.0}, "lr_min .* must not exceed lr"),
    ({"eval_every": 0}, "eval_every must be an integer >= 1"),
    ({"iw_samples": -1}, "iw_samples must be an integer >= 0"),
    ({"iw_images": 0}, "iw_images must be an integer >= 1"),
    ({"validation_fraction": 0.0}, r"validation_fraction must be in \(0, 1\)"),
    ({"validation_fraction": 1.5}, r"validation_fraction must be in \(0, 1\)"),
    ({"augment": "rotate"}, "augment must be one of"),
    ({"precision": "fp16"}, "precision must be one of"),
])
def test_training_configs_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_train_config("small", **overrides)


def test_train_presets_and_comparison():
    small, paper = make_train_config("small"), make_train_config("paper")
    assert small.steps == 1500 and small.precision == "fp32"
    assert paper.steps == 20000 and paper.precision == "bf16"
    assert make_train_config("small", steps=None).steps == 1500  # None keeps the preset's value
    assert small.difference(small.replace(lr=1e-3)) == {"lr": (2e-3, 1e-3)}
    assert TrainConfig.from_dict(small.to_dict()) == small


def test_set_overrides_are_typed_and_checked():
    assert parse_overrides(["width=64", "min_logvar=-8"]) == {"width": 64, "min_logvar": -8.0}
    assert parse_overrides(["iw_images=none", "lr=1e-3"], TrainConfig) == {"iw_images": None, "lr": 1e-3}
    with pytest.raises(ConfigError, match="unknown config key 'wdith'"):
        parse_overrides(["wdith=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["width"])
    with pytest.raises(ConfigError, match="not a valid int"):
        parse_overrides(["width=wide"])
    with pytest.raises(ConfigError, match="use --transform"):
        parse_overrides(["transform=sketch"])


