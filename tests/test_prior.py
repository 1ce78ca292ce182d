"""Tests of selfvae.prior.RealNVPPrior: an exact, invertible, normalised density with reproducible sampling."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from selfvae.prior import RealNVPPrior

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def perturbed_prior(shape, seed=0, scale=0.1, dtype=torch.float64, **kw):
    """A prior moved away from its identity initialisation (the last convs start at zero).

    Every weight gets N(0, scale^2) added; 0.1 already gives log-dets of several nats,
    larger scales make the float32 flow ill-conditioned (round trips lose digits)."""
    torch.manual_seed(seed)
    prior = RealNVPPrior(shape, **{"num_couplings": 4, "hidden_channels": 8, **kw}).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=dtype))
    return prior


@pytest.mark.parametrize("squeezed", [0, 2])
def test_identity_at_initialisation(squeezed):
    prior = RealNVPPrior((4, 2, 2), num_couplings=4, hidden_channels=8, squeezed_couplings=squeezed)
    u = torch.randn(5, 4, 2, 2)
    assert torch.allclose(prior.log_prob(u), prior.base_log_prob(u))
    v = torch.randn(5, 4, 2, 2)
    assert torch.equal(prior.sample(noise=v), v)


@pytest.mark.parametrize("squeezed", [0, 3])
def test_log_prob_matches_brute_force_change_of_variables(squeezed):
    """log p(u) = log N(v; 0, I) + log|det dv/du| with the full 8x8 Jacobian from autograd
    (also with couplings at the squeezed half resolution of the multi-scale form)."""
    shape = (2, 2, 2)
    prior = perturbed_prior(shape, scale=0.3, squeezed_couplings=squeezed)
    assert len(prior.squeezed_flows) == squeezed
    assert set(prior.split_modes) == {"checkerboard", "checkerboard_inv", "channel", "channel_inv"}
    u = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_prob = prior.log_prob(u)
    v, log_det = prior.inverse(u)
    for i in range(len(u)):
        J = jacobian(lambda x: prior.inverse(x.view(1, *shape))[0].flatten(), u[i].flatten())
        sign, logabsdet = torch.linalg.slogdet(J)
        assert abs(logabsdet.item()) > 0.1  # the perturbation made the flow non-trivial
        expected = -0.5 * (v[i] ** 2).sum() - 4 * math.log(2 * math.pi) + logabsdet
        assert log_prob[i].item() == pytest.approx(expected.item(), abs=1e-9)
        assert log_det[i].item() == pytest.approx(logabsdet.item(), abs=1e-9)


@pytest.mark.parametrize("squeezed", [0, 4])
@pytest.mark.parametrize("device", DEVICES)
def test_sample_inverse_roundtrip_and_log_det_consistency(device, squeezed):
    shape = (4, 4, 4)
    prior = perturbed_prior(shape, seed=2, dtype=torch.float32, squeezed_couplings=squeezed).to(device)
    assert set(prior.squeezed_modes) == ({"channel", "channel_inv", "checkerboard", "checkerboard_inv"}
                                         if squeezed else set())
    noise = torch.randn(6, *shape, generator=torch.Generator().manual_seed(3)).to(device)
    u = prior.sample(noise=noise)
    assert u.shape == (6, *shape) and u.device.type == device and u.dtype == torch.float32
    v, inv_log_det = prior.inverse(u)
    assert torch.allclose(v, noise, atol=1e-5)
    u2, fwd_log_det = prior.forward_flow(noise)
    assert torch.allclose(u2, u)
    assert torch.allclose(inv_log_det, -fwd_log_det, atol=1e-4)
    assert torch.allclose(prior.log_prob(u), prior.base_log_prob(noise) - fwd_log_det, atol=1e-4)
    assert fwd_log_det.abs().max() > 1.0  # not the identity


def test_density_integrates_to_one_in_2d():
    """Shape (2, 1, 1): a 2-D density we can integrate on a grid (channel splits only)."""
    prior = perturbed_prior((2, 1, 1), seed=4, scale=0.2, hidden_channels=16)
    assert set(prior.split_modes) == {"channel", "channel_inv"}
    L, N = 12.0, 241  # samples of this prior stay within |u| < 7; cell 0.1
    t = torch.linspace(-L, L, N, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).view(-1, 2, 1, 1)
    with torch.no_grad():
        density = prior.log_prob(grid).exp()
    cell = (t[1] - t[0]) ** 2
    mass = (density.sum() * cell).item()
    assert mass == pytest.approx(1.0, abs=1e-4)
    # and it is not the base density
    base = prior.base_log_prob(grid).exp()
    assert 0.5 * ((density - base).abs().sum() * cell).item() > 0.05


def test_gradients_reach_every_parameter():
    prior = perturbed_prior((4, 2, 2), seed=5, dtype=torch.float32, num_couplings=4, coupling_layers=2)
    u = torch.randn(16, 4, 2, 2, generator=torch.Generator().manual_seed(6))
    loss = -prior.log_prob(u).mean()
    loss.backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_sampling_is_reproducible_and_temperature_scales_noise():
    shape = (2, 2, 4)
    prior = perturbed_prior(shape, seed=7, dtype=torch.float32)
    a = prior.sample(5, generator=torch.Generator().manual_seed(11))
    b = prior.sample(5, generator=torch.Generator().manual_seed(11))
    c = prior.sample(5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    zero_image, _ = prior.forward_flow(torch.zeros(1, *shape))
    t0 = prior.sample(3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(t0, zero_image.expand(3, *shape), atol=1e-5)
    noise = torch.randn(4, *shape)
    assert torch.allclose(prior.sample(noise=noise, temperature=0.5), prior.forward_flow(0.5 * noise)[0])
    with pytest.raises(ValueError):
        prior.sample()
    with pytest.raises(ValueError):
        prior.sample(3, noise=noise)
    with pytest.raises(ValueError):
        prior.sample(noise=torch.randn(4, 2, 2, 2))


def test_log_prob_stays_float32_under_bfloat16_autocast():
    prior = perturbed_prior((4, 2, 2), seed=8, dtype=torch.float32)
    u = torch.randn(3, 4, 2, 2)
    ref = prior.log_prob(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = prior.log_prob(u.bfloat16())
        out = prior(u)
    assert lp.dtype == torch.float32 and out.dtype == torch.float32
    assert torch.allclose(out, ref)
    assert torch.allclose(lp, prior.log_prob(u.bfloat16().float()))


@pytest.mark.parametrize("shape,modes", [((1, 4, 4), {"checkerboard", "checkerboard_inv"}), ((3, 2, 3), {"channel", "channel_inv"})])
def test_split_modes_follow_the_shape(shape, modes):
    """One channel: checkerboard only; odd width: channel splits only (odd C splits unevenly)."""
    prior = perturbed_prior(shape, seed=9)
    assert set(prior.split_modes) == modes
    u = torch.randn(4, *shape, dtype=torch.float64)
    v, log_det = prior.inverse(u)
    u2, fwd = prior.forward_flow(v)
    assert torch.allclose(u2, u, atol=1e-10) and torch.allclose(fwd, -log_det, atol=1e-10)


def test_unsplittable_shape_is_rejected():
    with pytest.raises(ValueError, match="split"):
        RealNVPPrior((1, 3, 3))
    with pytest.raises(ValueError):
        RealNVPPrior((4, 2, 2)).log_prob(torch.randn(2, 4, 2, 3))


@pytest.mark.parametrize("mode", ["checkerboard", "checkerboard_inv", "channel", "channel_inv"])
@pytest.mark.parametrize("shape", [(3, 4, 6), (4, 2, 2), (1, 3, 8)])
def test_split_and_merge_are_normflows_entry_for_entry(mode, shape):
    """The flow's split / merge (a fixed gather for checkerboards) select exactly the entries, in
    exactly the order, of normflows' Split / Merge, in both directions; merge inverts split."""
    import normflows as nf

    from selfvae.prior import _Merge, _Split

    if (mode.startswith("checkerboard") and shape[2] % 2) or (mode.startswith("channel") and shape[0] < 2):
        pytest.skip("a shape this mode cannot split (_split_modes never picks it)")
    z = torch.randn((5,) + shape)
    ours, theirs = _Split(mode, shape), nf.flows.Split(mode)
    (a1, a2), _ = ours(z)
    (b1, b2), _ = theirs(z)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert torch.equal(ours.inverse([a1, a2])[0], theirs.inverse([b1, b2])[0])
    assert torch.equal(ours.inverse([a1, a2])[0], z)
    merge, their_merge = _Merge(mode, shape), nf.flows.Merge(mode)
    assert torch.equal(merge([a1, a2])[0], their_merge([b1, b2])[0])
    assert all(torch.equal(p, q) for p, q in zip(merge.inverse(z)[0], their_merge.inverse(z)[0]))
    assert not list(ours.state_dict())  # nothing new in checkpoints
