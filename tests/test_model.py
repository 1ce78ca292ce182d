"""The K-level selfVAE: gradients, the ELBO's terms, the importance-weighted bound, the modes,
and rebuilding from a config or a checkpoint."""
import math

import pytest
import torch

from selfvae.checkpoint import CheckpointError, load_model, save_checkpoint
from selfvae.config import ModelConfig, make_config
from selfvae.model import build_model, parameter_counts
from transforms import TransformError

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
        iw1 = model.iw_log_likelihood(x, samples=1, seed=5)
    assert torch.allclose(w[:, 0], elbo, atol=1e-4)
    assert torch.allclose(iw1, elbo, atol=1e-4)


def test_iw_bound_is_above_the_average_elbo_and_chunk_invariant():
    model, x = tiny("downscale", 2)
    model.eval()
    S = 12
    with torch.no_grad():
        reference = model.log_weights(x, samples=S, chunk=S, seed=3)
        for chunk in (1, 5, 7):
            assert torch.allclose(model.log_weights(x, samples=S, chunk=chunk, seed=3), reference, atol=1e-4)
        iw = model.iw_log_likelihood(x, samples=S, chunk=5, seed=3)
    # log-mean-exp of the weights >= their mean, per example (Jensen), strictly unless all are equal
    assert (iw >= reference.mean(dim=1) - 1e-5).all()
    assert (iw > reference.mean(dim=1) + 1e-3).any()
    # the samples are really different: the weights vary across samples
    assert (reference.std(dim=1) > 1e-3).all()
    # per example: logmeanexp over its own samples
    assert torch.allclose(iw, torch.logsumexp(reference, 1) - math.log(S), atol=1e-4)


@pytest.mark.parametrize("levels", [1, 3])
def test_modes_return_valid_images(levels):
    model, x = tiny("downscale", levels)
    model.eval()
    g = torch.Generator().manual_seed(0)
    K, shape = model.levels, x.shape

    def check(result, sent):
        assert result.images.dtype == torch.uint8 and result.images.shape == shape
        assert len(result.levels) == K + 1
        for level, spec in zip(result.levels, model.specs):
            assert level.dtype == torch.uint8 and tuple(level.shape[1:]) == spec.shape
            assert int(level.max()) < spec.num_values
        assert set(result.sent) == set(sent)
        for name, bits in result.sent_bits.items():
            assert bits.shape == (shape[0],) and torch.isfinite(bits).all(), name
            if name.startswith("y"):
                assert (bits > 0).all(), name

    check(model.generate(4, generator=g), [])
    for k in range(1, K + 1):
        y_k = model.make_levels(x)[k]
        res = model.cond_generate(y_k, level=k, generator=g)
        check(res, [f"y{k}"])
        assert torch.equal(res.levels[k], y_k)
        res = model.cond_reconstruct(x, level=k, generator=g)
        check(res, [f"y{k}"] + [f"z{j}" for j in range(1, k + 1)])
        assert res.sent[f"y{k}"] == model.specs[k].dims
    res = model.reconstruct1(x, generator=g)
    check(res, ["u"])
    assert res.sent["u"] == math.prod(model.u_shape)
    check(model.reconstruct2(x, generator=g), ["u"] + [f"z{k}" for k in range(1, K + 1)])
    for method in ("linear", "spherical"):
        path = model.interpolate(x[:2], x[2:], steps=5, method=method, temperature=0.0)
        assert path.shape == (5, 2) + tuple(shape[1:]) and path.dtype == torch.uint8
        # the end points are the reconstructions through u (z's at their prior means)
        assert torch.equal(path[0], model.reconstruct1(x[:2], temperature=0.0).images)
        assert torch.equal(path[-1], model.reconstruct1(x[2:], temperature=0.0).images)
    draws = model.resample_z(x[:2], num=3, generator=g)
    assert draws.shape == (3, 2) + tuple(shape[1:])


def test_mode_errors_name_the_problem():
    model, x = tiny("downscale", 2)
    with pytest.raises(ValueError, match="level must be in 1..2"):
        model.cond_reconstruct(x, level=3)
    with pytest.raises(TransformError, match="y_1"):
        model.cond_generate(x, level=1)  # x is not at level 1's size
    with pytest.raises(TransformError, match="model input x"):
        model.elbo_terms(x[:, :, :8, :8])
    with pytest.raises(TransformError, match="uint8"):
        model.elbo_terms(x.float())


def test_model_rebuilt_from_config_and_checkpoint_computes_the_same_numbers(tmp_path):
    model, x = tiny("downscale", 2)
    model.eval()
    noise = model.sample_noise(x.shape[0], 0, seed=1, device=x.device)
    with torch.no_grad():
        expected = model.elbo_terms(x, noise=noise)
    clone = build_model(ModelConfig.from_dict(model.config.to_dict()))
    clone.load_state_dict(model.state_dict())
    clone.eval()
    path = tmp_path / "model.pt"
    save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(path))
    loaded, _ = load_model(str(path))
    loaded.eval()
    with torch.no_grad():
        for other in (clone, loaded):
            got = other.elbo_terms(x, noise=noise)
            for name in expected:
                assert torch.equal(got[name], expected[name]), name
    # a reloaded model is already initialised: data-dependent init must not run again
    assert all(bool(m.initialized) for m in loaded.modules() if hasattr(m, "initialized"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    broken = tmp_path / "broken.pt"
    model, _ = tiny("downscale", 1)
    save_checkpoint({"config": model.config.to_dict(), "model": model.state_dict()}, str(broken))
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(str(broken))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a selfvae checkpoint"):
        load_model(str(foreign))
    other = tmp_path / "other.pt"
    save_checkpoint({"config": model.config.replace(width=16).to_dict(), "model": model.state_dict()}, str(other))
    with pytest.raises(CheckpointError, match="do not match its config"):
        load_model(str(other))


def test_config_validation_and_presets():
    assert make_config("small", "downscale", 3).transform == "downscale:3"
    assert make_config("small", "downscale", 0).levels == 0
    assert make_config("small", "sketch,downscale:2").levels == 3
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="levels"):
        make_config("small", "bits:3", 2)
    with pytest.raises(ValueError, match="unknown config keys"):
        ModelConfig.from_dict({"wdith": 3})
    with pytest.raises(ValueError, match="cannot"):
        build_model(make_config("small", "downscale", 3, image_size=12))


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
