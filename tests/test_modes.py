"""The generation and reconstruction modes (selfvae.modes): valid images at every level, what
each mode sends, and errors that name the problem."""
import math

import pytest
import torch

from selfvae import modes
from transforms import TransformError

from test_model import tiny


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

    check(modes.generate(model, 4, generator=g), [])
    for k in range(1, K + 1):
        y_k = model.make_levels(x)[k]
        res = modes.cond_generate(model, y_k, level=k, generator=g)
        check(res, [f"y{k}"])
        assert torch.equal(res.levels[k], y_k)
        res = modes.cond_reconstruct(model, x, level=k, generator=g)
        check(res, [f"y{k}"] + [f"z{j}" for j in range(1, k + 1)])
        assert res.sent[f"y{k}"] == model.specs[k].dims
    res = modes.reconstruct1(model, x, generator=g)
    check(res, ["u"])
    assert res.sent["u"] == math.prod(model.u_shape)
    check(modes.reconstruct2(model, x, generator=g), ["u"] + [f"z{k}" for k in range(1, K + 1)])
    for method in ("linear", "spherical"):
        path = modes.interpolate(model, x[:2], x[2:], steps=5, method=method, temperature=0.0)
        assert path.shape == (5, 2) + tuple(shape[1:]) and path.dtype == torch.uint8
        # the end points are the reconstructions through u (z's at their prior means)
        assert torch.equal(path[0], modes.reconstruct1(model, x[:2], temperature=0.0).images)
        assert torch.equal(path[-1], modes.reconstruct1(model, x[2:], temperature=0.0).images)
    draws = modes.resample_z(model, x[:2], num=3, generator=g)
    assert draws.shape == (3, 2) + tuple(shape[1:])


def test_mode_errors_name_the_problem():
    model, x = tiny("downscale", 2)
    with pytest.raises(ValueError, match="level must be in 1..2"):
        modes.cond_reconstruct(model, x, level=3)
    with pytest.raises(TransformError, match="y_1"):
        modes.cond_generate(model, x, level=1)  # x is not at level 1's size
    with pytest.raises(TransformError, match="model input x"):
        model.elbo_terms(x[:, :, :8, :8])
    with pytest.raises(TransformError, match="uint8"):
        model.elbo_terms(x.float())




def test_sent_latents_are_charged_under_the_priors_the_receiver_can_form():
    """Before: z_j was charged under p(z_j | y_j*, ...) with the true y_j*, which a receiver of a
    conditional reconstruction at k >= 2 does not have. Now: under p(z_j | y_j^, z_{j+1}^) with the
    reconstructed y_j^, for the z's rounded to the grid that are actually sent."""
    model, x = tiny("downscale", 2)
    model.eval()
    step = 0.5
    res = modes.cond_reconstruct(model, x, level=2, z_step=step)
    inference = model.infer(x)
    z2 = modes.quantise(inference.q_z[1].mean, step)
    z1 = modes.quantise(inference.q_z[0].mean, step)
    with torch.no_grad():
        prior2 = model.p_z[1](model.p_z[1].condition(inference.levels[2]), inference.q_u.mean)
        y1_hat = model.p_y[1](model.p_y[1].condition(inference.levels[2]), z2).mode()
        prior1 = model.p_z[0](model.p_z[0].condition(y1_hat), z2)
    assert torch.allclose(res.sent_bits["z2"].double(), modes.grid_bits(prior2, z2, step), rtol=1e-5)
    assert torch.allclose(res.sent_bits["z1"].double(), modes.grid_bits(prior1, z1, step), rtol=1e-5)
    assert torch.equal(res.levels[1], y1_hat)
    assert not torch.equal(y1_hat, inference.levels[1])  # the receiver's y_1 is not the true one
    # a grid cell's mass is at most 1: every sent latent costs >= 0 bits
    assert (res.sent_bits["z1"] >= 0).all() and (res.sent_bits["z2"] >= 0).all()
