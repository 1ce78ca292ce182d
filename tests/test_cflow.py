"""Conditional flows on the priors p(z_k | y_k, h_k) (``z_flow``): an exact, normalised, invertible
density; a z_flow model starts as the model without it, trains its flow, keeps the IW bound, and
works in every mode."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from selfvae import codec, modes
from selfvae.cflow import ConditionalFlow, FlowGaussian
from selfvae.config import ConfigError, make_config
from selfvae.distributions import DiagonalGaussian
from selfvae.evaluation import mode_table
from selfvae.model import build_model

TINY = dict(width=8, growth=4, dense_layers=1, blocks=1, components=3, flow_couplings=2, flow_hidden=8,
            latent_channels=4, latent_size=4)


def perturbed_flow(shape, context_channels, couplings=3, scale=0.3, seed=0):
    torch.manual_seed(seed)
    flow = ConditionalFlow(shape, context_channels, couplings, hidden=6).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def flow_gaussian(shape, batch, seed=0, **kw):
    g = torch.Generator().manual_seed(seed + 1)
    context = torch.randn(batch, 5, *shape[1:], generator=g, dtype=torch.float64)
    base = DiagonalGaussian(0.5 * torch.randn(batch, *shape, generator=g, dtype=torch.float64),
                            0.5 * torch.randn(batch, *shape, generator=g, dtype=torch.float64))
    return FlowGaussian(base, perturbed_flow(shape, 5, seed=seed, **kw), context)


def test_log_density_is_the_brute_force_change_of_variables():
    shape = (3, 2, 2)
    p = flow_gaussian(shape, 3)
    z = torch.randn(3, *shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    log_prob = p.log_prob(z)
    for i in range(3):
        def inverse(flat, i=i):
            return p.flow.inverse(flat.view(1, *shape), p.context[i:i + 1])[0].flatten()
        J = jacobian(inverse, z[i].flatten())
        _, logabsdet = torch.linalg.slogdet(J)
        assert abs(logabsdet.item()) > 0.1  # the flow is far from the identity
        w = inverse(z[i].flatten()).view(1, *shape)
        base = DiagonalGaussian._from_bounded(p.base.mean[i:i + 1], p.base.logvar[i:i + 1], -12.0, 6.0)
        assert log_prob[i].item() == pytest.approx((base.log_prob(w)[0] + logabsdet).item(), abs=1e-9)


def test_density_integrates_to_one_and_the_flow_inverts():
    shape = (2, 1, 1)
    p = flow_gaussian(shape, 1, seed=3, scale=0.5)
    step = 0.04
    axis = torch.arange(-10, 10, step, dtype=torch.float64) + step / 2
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([a.flatten(), b.flatten()], dim=1).view(-1, 2, 1, 1)
    n = grid.shape[0]
    repeated = FlowGaussian(DiagonalGaussian._from_bounded(p.base.mean.expand(n, -1, -1, -1),
                                                           p.base.logvar.expand(n, -1, -1, -1), -12.0, 6.0),
                            p.flow, p.context.expand(n, -1, -1, -1))
    total = torch.exp(repeated.log_prob(grid)).sum().item() * step ** 2
    assert total == pytest.approx(1.0, abs=2e-3)
    w = torch.randn(4, *shape, dtype=torch.float64)
    z, forward_log_det = p.flow(w, p.context.expand(4, -1, -1, -1))
    back, inverse_log_det = p.flow.inverse(z, p.context.expand(4, -1, -1, -1))
    assert torch.allclose(back, w, atol=1e-12) and torch.allclose(forward_log_det, -inverse_log_det, atol=1e-12)
    assert not torch.allclose(z, w)


def tiny(z_flow, levels=2, seed=0):
    torch.manual_seed(seed)
    return build_model(make_config("small", "downscale", levels, image_size=16, z_flow=z_flow, **TINY))


def test_a_new_flow_is_the_identity_and_then_trains():
    plain, flowing = tiny(0), tiny(2)
    missing, unexpected = flowing.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(".flow." in name for name in missing) and not unexpected
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    t0 = plain.elbo_terms(x, generator=torch.Generator().manual_seed(1))
    t1 = flowing.elbo_terms(x, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(t0[k], t1[k]) for k in t0)
    loss = flowing.bits_per_dim(flowing.elbo_terms(x))["bpd"]
    loss.backward()
    grads = [p.grad for name, p in flowing.named_parameters() if ".flow." in name]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_z_flow_needs_two_latent_channels():
    with pytest.raises(ConfigError, match="latent_channels"):
        make_config("small", "downscale", 1, image_size=16, z_flow=2, **{**TINY, "latent_channels": 1})
    with pytest.raises(ConfigError, match="z_flow"):
        make_config("small", "downscale", 1, image_size=16, z_flow=-1, **TINY)


def perturbed_model(levels=2):
    model = tiny(2, levels)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".flow." in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_importance_weighted_bound_holds_example_by_example():
    model = perturbed_model()
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    w = model.log_weights(x, samples=16, chunk=5)
    assert torch.isfinite(w).all()
    iw = torch.logsumexp(w, dim=1) - math.log(16)
    assert (iw >= w.mean(dim=1)).all()  # Jensen, per example: the IW bound is tighter than the ELBO
    assert torch.allclose(w, model.log_weights(x, samples=16, chunk=16), atol=1e-4)  # independent of chunking


def test_every_mode_works_with_flow_priors():
    model = perturbed_model(levels=2)
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    results = [modes.generate(model, 2, generator=g),
               modes.cond_generate(model, model.make_levels(x)[1], level=1, generator=g),
               modes.cond_reconstruct(model, x, level=2, generator=g, z_step=0.5),
               modes.reconstruct1(model, x, generator=g), modes.reconstruct2(model, x, generator=g)]
    for r in results:
        assert r.images.dtype == torch.uint8 and r.images.shape == x.shape
        assert all(torch.isfinite(b).all() for b in r.sent_bits.values())
    path = modes.interpolate(model, x[:1], x[1:], steps=3, method="spherical", generator=g)
    assert path.dtype == torch.uint8 and path.shape[:2] == (3, 1)
    assert modes.resample_z(model, x, num=2, generator=g).dtype == torch.uint8
    rows = mode_table(model, x, progress=False)
    assert rows and all(r["bits"] is None or math.isfinite(r["bits"]) for r in rows)


def test_flow_grid_bits_agree_with_the_exact_gaussian_mass_when_the_flow_is_the_identity():
    """Density x cell volume (the flow's charge) against the Gaussian CDF mass (the exact charge)."""
    flow = ConditionalFlow((2, 2, 2), 3, 2, hidden=4).double()  # zero-initialised: the identity
    base = DiagonalGaussian(torch.zeros(2, 2, 2, 2, dtype=torch.float64), torch.zeros(2, 2, 2, 2, dtype=torch.float64))
    z = torch.round(torch.randn(2, 2, 2, 2, dtype=torch.float64) * 64) / 64
    approx = modes.grid_bits(FlowGaussian(base, flow, torch.zeros(2, 3, 2, 2, dtype=torch.float64)), z, 2 ** -6)
    exact = modes.grid_bits(base, z, 2 ** -6)
    assert torch.allclose(approx, exact, atol=1e-3)


def test_the_codec_names_what_it_cannot_code():
    with pytest.raises(codec.CodecError, match="z_flow=2"):
        codec.encode(tiny(2), torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8))
