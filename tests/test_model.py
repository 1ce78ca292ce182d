"""The K-level selfVAE: gradients, the ELBO's terms, the importance-weighted log-weights and
partial inference from a level."""
import math

import pytest
import torch

from selfvae.config import make_config
from selfvae.model import build_model, parameter_counts

TINY = dict(width=8, growth=4, dense_layers=1, blocks=1, components=3, flow_couplings=2, flow_hidden=8,
            latent_channels=4, latent_size=4, image_size=16)


def tiny(transform: str, levels=None, **kw):
    torch.manual_seed(0)
    model = build_model(make_config("small", transform, levels, **{**TINY, **kw}))
    x = images(4, model.config.image_size)
    model.initialize(x)
    return model, x


def images(n, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images so that downscaled levels are not pure noise
    base = torch.randint(0, 256, (n, 3, size // 4, size // 4), generator=g).float()
    up = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (up + torch.randint(-8, 9, up.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


CHAINS = [("downscale", 0), ("downscale", 1), ("downscale", 3), ("sketch", 1), ("bits:3", 1), ("sketch,downscale:2", None)]


@pytest.mark.parametrize("transform,levels", CHAINS)
def test_gradients_reach_every_parameter(transform, levels):
    model, x = tiny(transform, levels)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    # One step first: zero-initialised last layers of the flow's couplings block the gradient at init.
    for _ in range(2):
        opt.zero_grad()
        loss = model.bits_per_dim(model(x))["bpd"]
        loss.backward()
        opt.step()
    opt.zero_grad()
    model.bits_per_dim(model(x))["bpd"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("transform,levels", CHAINS)
def test_terms_and_bits_per_dimension(transform, levels):
    model, x = tiny(transform, levels)
    terms = model.elbo_terms(x)
    K = model.levels
    assert list(terms) == ["x"] + [f"y{k}" for k in range(1, K + 1)] + [f"z{k}" for k in range(1, K + 1)] + ["u"]
    for name, value in terms.items():
        assert value.shape == (4,) and torch.isfinite(value).all(), name
        if name == "x" or name.startswith("y"):
            assert (value <= 0).all(), f"{name}: a log-probability of discrete data must be <= 0"
    bits = model.bits_per_dim(terms)
    # bits per dimension divide by the dimensions of x only, the y terms stay in the numerator
    expected = -sum(terms.values()).mean() / (3 * 16 * 16 * math.log(2))
    assert torch.allclose(bits["bpd"], expected, rtol=1e-5)


def test_likelihoods_follow_the_levels_alphabet():
    model, _ = tiny("bits:3", 1)
    assert model.specs[1].num_values == 8
    assert model.p_top.out.num_values == 8 and model.p_y[0].out.num_values == 256
    sketch, _ = tiny("sketch", 1)
    assert sketch.specs[1].channels == 1 and sketch.p_top.out.channels == 1


@pytest.mark.parametrize("transform,levels", [("downscale", 0), ("downscale", 2)])
def test_iw_bound_with_one_sample_is_the_elbo_for_the_same_noise(transform, levels):
    model, x = tiny(transform, levels)
    model.eval()
    with torch.no_grad():
        w = model.log_weights(x, samples=1, seed=5)
        noise = model.sample_noise(x.shape[0], 0, seed=5, device=x.device)
        elbo = sum(model.elbo_terms(x, noise=noise).values())
    assert torch.allclose(w[:, 0], elbo, atol=1e-4)


def test_iw_bound_is_above_the_average_elbo_and_chunk_invariant():
    model, x = tiny("downscale", 2)
    model.eval()
    S = 12
    with torch.no_grad():
        reference = model.log_weights(x, samples=S, chunk=S, seed=3)
        for chunk in (1, 5, 7):
            assert torch.allclose(model.log_weights(x, samples=S, chunk=chunk, seed=3), reference, atol=1e-4)
        iw = torch.logsumexp(model.log_weights(x, samples=S, chunk=5, seed=3), 1) - math.log(S)
    # log-mean-exp of the weights >= their mean, per example (Jensen), strictly unless all are equal
    assert (iw >= reference.mean(dim=1) - 1e-5).all()
    assert (iw > reference.mean(dim=1) + 1e-3).any()
    # the samples are really different: the weights vary across samples
    assert (reference.std(dim=1) > 1e-3).all()


def test_parameter_counts_add_up():
    model, _ = tiny("downscale", 2)
    counts = parameter_counts(model)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_partial_inference_from_a_level_gives_the_terms_above_it():
    """The ELBO of y_k alone (what conditional generation sends) equals the terms of the full
    ELBO at and above level k, for the same noise."""
    model, x = tiny("downscale", 3)
    model.eval()
    noise = model.sample_noise(x.shape[0], 0, seed=2, device=x.device)
    with torch.no_grad():
        full = model.elbo_terms(x, noise=noise)
        for k in range(1, 4):
            y_k = model.make_levels(x)[k]
            partial = model.terms_from(model.infer(y_k, level=k), noise=noise)
            expected = [f"y{j}" for j in range(k, 4)] + [f"z{j}" for j in range(k + 1, 4)] + ["u"]
            assert sorted(partial) == sorted(expected)
            for name in expected:
                assert torch.allclose(partial[name], full[name], atol=1e-5), (k, name)


def _dense_block_inputs(model, x):
    """(channels, spatial size) at the input of every DenseBlock of one forward pass."""
    from selfvae.nets import DenseBlock

    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[1], args[0].shape[-1])))
             for m in model.modules() if isinstance(m, DenseBlock)]
    with torch.no_grad():
        model.elbo_terms(x)
    for h in hooks:
        h.remove()
    return seen


def test_widths_halve_above_narrow_above():
    from selfvae.nets import Widths

    assert [Widths(32, 16, 0)(s) for s in (4, 32, 64)] == [(32, 16)] * 3
    assert [Widths(32, 16, 8)(s) for s in (4, 8, 16, 32, 64)] == [(32, 16), (32, 16), (16, 8), (8, 4), (8, 4)]
    assert Widths(256, 64, 8)(32) == (64, 16) and Widths(256, 64, 8)(64) == (32, 8)


@pytest.mark.parametrize("narrow_above", [0, 8])
def test_every_network_has_the_width_of_its_resolution(narrow_above):
    """Every dense block of the model (encoders, priors, decoders, at every level) sees as many
    channels as :class:`Widths` gives its spatial size: one width everywhere with 0, a quarter of
    it at 32x32 with 8. The full-resolution work shrinks accordingly."""
    from selfvae.model import widths_of
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(make_config("small", "downscale", 3, image_size=32, narrow_above=narrow_above))
    x = images(2, 32)
    model.initialize(x)
    seen = _dense_block_inputs(model, x)
    widths = widths_of(model.config)
    assert {size for _, size in seen} == {4, 8, 16, 32}
    assert all(c == widths.channels(size) for c, size in seen), seen
    assert {c for c, size in seen if size == 32} == ({32} if narrow_above == 0 else {8})
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model.elbo_terms(x)
    flops = counter.get_total_flops()
    assert (flops < 0.5 * 0.256e9 * 2) if narrow_above else (flops > 0.9 * 0.256e9 * 2)


@pytest.mark.parametrize("blocks_above", [0, 1])
def test_blocks_above_sets_the_depth_of_the_narrowed_resolutions(blocks_above):
    """With ``narrow_above = 8`` and ``blocks = 2``: every network has two dense blocks at 8x8 and
    below and ``blocks_above`` at 16x16 and 32x32 (0: only the resampling convs run there);
    ``-1`` (the default, and every config written before the key) means ``blocks`` everywhere."""
    def depth_per_size(model):
        x = images(2, 32)
        model.initialize(x)
        seen = _dense_block_inputs(model, x)
        return {size: sum(1 for _, s in seen if s == size) for size in (4, 8, 16, 32)}

    common = dict(narrow_above=8, blocks=2, width=16, growth=8)
    default = depth_per_size(build_model(make_config("small", "downscale", 1, **common)))
    changed = depth_per_size(build_model(make_config("small", "downscale", 1, blocks_above=blocks_above, **common)))
    assert default[16] > 0 and default[32] > 0
    for size in (4, 8):
        assert changed[size] == default[size]
    for size in (16, 32):
        assert changed[size] == default[size] * blocks_above // 2
    old = {k: v for k, v in make_config("small", "downscale", 1, **common).to_dict().items() if k != "blocks_above"}
    from selfvae.config import ModelConfig
    assert ModelConfig.from_dict(old).blocks_above == -1


def test_configs_saved_before_the_width_schedule_build_the_original_model():
    """A checkpoint's config written before ``narrow_above``, ``out_kernel`` and ``flow_squeezed``
    existed lacks those keys: it must rebuild the model it was trained as (one width, 3x3 output
    conv, a one-scale flow), whatever the presets say now."""
    from selfvae.config import ModelConfig

    old = {k: v for k, v in make_config("small", "downscale", 3).to_dict().items()
           if k not in ("narrow_above", "out_kernel", "flow_squeezed")}
    config = ModelConfig.from_dict(old)
    assert (config.narrow_above, config.out_kernel, config.flow_squeezed) == (0, 3, 0)
    model = build_model(config)
    assert model.p_y[0].head.out.v.shape == (100, 32, 3, 3) and len(model.p_u.squeezed_flows) == 0


def test_squeezed_flow_couplings_train_with_the_model():
    model, x = tiny("downscale", 1, flow_squeezed=2)
    assert len(model.p_u.squeezed_flows) == 2
    model.bits_per_dim(model(x))["bpd"].backward()
    for name, p in model.p_u.squeezed_flows.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # a one-pixel top latent cannot be squeezed: refused when the config is built
    from selfvae.config import ConfigError
    with pytest.raises(ConfigError, match="flow_squeezed halves the top latent u, which is 1x1"):
        make_config("small", "downscale", 4, image_size=16, flow_squeezed=1)
