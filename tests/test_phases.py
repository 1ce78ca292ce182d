"""Phase autoregression (``phases = 4``, selfvae.phases): a normalised likelihood whose teacher-forced
evaluation equals coding phase by phase, exact ancestral sampling, and its place in the model."""
import itertools

import pytest
import torch

from selfvae.config import ConfigError, ModelConfig
from selfvae.distributions import DiscretizedLogisticMixture as DLM
from selfvae.model import build_model
from selfvae.phases import ORDER, PhasedMixture, PhaseRefiner, assemble, phase_of


def random_phased(channels, num_values, size=2, batch=1, components=2, offset=True, seed=0, given=None):
    g = torch.Generator().manual_seed(seed)
    P = DLM.num_params(channels, components)
    torch.manual_seed(seed)
    refiner = PhaseRefiner(channels, P, hidden=8, offset=offset)
    with torch.no_grad():
        for net in refiner.nets:  # the last conv starts at zero: make the phases depend on each other
            net[-1].weight.normal_(0.0, 0.5, generator=g)
            net[-1].bias.normal_(0.0, 0.5, generator=g)
    params = torch.randn(batch, P, size, size, generator=g, dtype=torch.float64)
    off = torch.rand(batch, channels, size, size, generator=g, dtype=torch.float64) * 2 - 1 if offset else None
    return PhasedMixture(params, refiner.double(), off, channels=channels, num_values=num_values,
                         components=components, given=given)


def all_levels(channels, num_values, size=2):
    """Every integer level (N, C, size, size) with values in 0..num_values-1."""
    values = torch.tensor(list(itertools.product(range(num_values), repeat=channels * size * size)))
    return values.view(-1, channels, size, size)


def expand(dist, batch):
    off = None if dist.offset is None else dist.offset.expand(batch, -1, -1, -1)
    given = None if dist.given is None else dist.given.expand(batch, -1, -1, -1)
    return PhasedMixture(dist.params.expand(batch, -1, -1, -1), dist.refiner, off, dist.channels,
                         dist.num_values, dist.components, given=given)


def test_phases_split_and_assemble_invert_each_other():
    level = torch.arange(2 * 3 * 4 * 6).view(2, 3, 4, 6)
    parts = [phase_of(level, i) for i in range(4)]
    assert torch.equal(assemble(parts), level)
    assert torch.equal(parts[3], level[:, :, 1::2, 1::2])
    assert sorted(ORDER) == [0, 1, 2, 3] and ORDER[0] == 0


@pytest.mark.parametrize("channels,num_values,offset", [(1, 4, True), (3, 2, True), (1, 3, False)])
def test_the_likelihood_sums_to_one_over_every_level(channels, num_values, offset):
    dist = random_phased(channels, num_values, offset=offset)
    levels = all_levels(channels, num_values)
    with torch.no_grad():
        total = torch.logsumexp(expand(dist, len(levels)).log_prob(levels), dim=0)
    assert abs(float(total)) < 1e-9


def test_teacher_forcing_is_coding_phase_by_phase_and_depends_on_earlier_phases():
    dist = random_phased(3, 256, size=6, batch=4, components=3)
    value = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    phases = dist.split(value)
    sequential = sum(dist.phase(s, phases[:s]).log_prob(phases[s]) for s in range(4))
    assert torch.allclose(dist.log_prob(value), sequential, atol=1e-9)
    assert torch.equal(dist.join(phases), value)
    # the last phase's mixture changes with the first phase's values
    other = [phases[0].flip(0)] + phases[1:3]
    assert not torch.allclose(dist.phase(3, phases[:3]).params, dist.phase(3, other).params)


def test_samples_follow_the_likelihood():
    """Phase-by-phase sampling is exact ancestral sampling: the empirical frequencies of all 81 levels
    of a 1x2x2 level with 3 values match exp(log_prob) (total variation of 20,000 draws)."""
    dist = random_phased(1, 3, components=2, seed=3)
    n = 20000
    draws = expand(dist, n).sample(generator=torch.Generator().manual_seed(0)).long()
    levels = all_levels(1, 3)
    codes = (draws.view(n, -1) * torch.tensor([27, 9, 3, 1])).sum(1)
    empirical = torch.bincount(codes, minlength=81).double() / n
    with torch.no_grad():
        exact = torch.exp(expand(dist, 81).log_prob(levels))
    assert float(0.5 * (empirical - exact).abs().sum()) < 0.04


def test_the_mode_is_each_phase_mode_given_the_chosen_phases():
    dist = random_phased(3, 256, size=4, batch=2)
    mode = dist.mode()
    phases = dist.split(mode)
    for s in range(4):
        assert torch.equal(phases[s], dist.phase(s, phases[:s]).mode())


def test_the_model_codes_even_levels_in_phases_and_trains_them():
    cfg = ModelConfig(image_size=24, transform="downscale:3", width=8, growth=4, components=2, latent_channels=4,
                      latent_size=3, flow_couplings=2, flow_hidden=8, phases=4)
    model = build_model(cfg)
    # x 24x24, y_1 12x12 and y_2 6x6 are even: phased; y_3 3x3 is odd: one mixture
    assert all(decoder.refiner is not None for decoder in model.p_y) and model.p_top.refiner is None
    x = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    model.initialize(x)
    bpd = model.bits_per_dim(model(x))["bpd"]
    bpd.backward()
    for decoder in model.p_y:
        for net in decoder.refiner.nets:
            assert net[-1].weight.grad is not None and net[-1].weight.grad.abs().sum() > 0
    # a new model starts as the decoder alone: the corrections are zero
    fresh = build_model(cfg)
    fresh.initialize(x)
    inf = fresh.infer(x)
    z = inf.q_z[0].mean
    dist = fresh.p_y[0](inf.decoder_conditions[0], z)
    assert torch.allclose(dist.teacher_forced(x).params, dist.params)


def test_old_configs_have_independent_pixels_and_phases_are_one_or_four():
    assert ModelConfig.from_dict({"transform": "downscale:3"}).phases == 1
    assert build_model(ModelConfig(transform="downscale:3")).p_y[0].refiner is None
    with pytest.raises(ConfigError, match="phases must be 1"):
        ModelConfig(phases=2)


def test_filling_keeps_known_pixels_and_conditions_later_phases_on_them():
    """Inpainting decodes only the missing pixels; the phases after a known pixel see its true value."""
    dist = random_phased(3, 256, size=4, batch=2)
    known = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    missing = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    missing[:, :, 1::2, 0::2] = True  # the last phase of ORDER, (1, 0)
    filled = dist.mode(known=known, missing=missing)
    assert torch.equal(filled[~missing], known[~missing])
    phases = dist.split(known)
    assert torch.equal(dist.split(filled)[3], dist.phase(3, phases[:3]).mode())
    drawn = dist.sample(generator=torch.Generator().manual_seed(1), known=known, missing=torch.zeros_like(missing))
    assert torch.equal(drawn, known)


def test_the_mean_decode_is_the_rounded_expectation_and_never_an_edge_bin_of_a_broad_pixel():
    g = torch.Generator().manual_seed(4)
    params = torch.randn(2, DLM.num_params(1, 3), 3, 3, generator=g, dtype=torch.float64)
    params[:, 3 + 3:] += 3.0  # log-scales ~3: logistics much wider than [-1, 1]
    dist = DLM(params, channels=1, num_values=256, components=3)
    values = torch.arange(256).view(1, 256, 1, 1).expand(2, 256, 3, 3)
    probs = torch.stack([torch.exp(dist.log_prob_pixels(values[:, v:v + 1])) for v in range(256)], dim=-1)
    expected = (probs * torch.arange(256, dtype=torch.float64)).sum(-1).round()
    assert torch.equal(dist.mean()[:, 0].double(), expected)
    assert bool(((dist.mode() == 0) | (dist.mode() == 255)).all())  # broad: the argmax is an edge bin
    assert bool(((dist.mean() > 0) & (dist.mean() < 255)).all())
    phased = random_phased(3, 256, size=4, batch=2)
    chosen = phased.split(phased.mean())
    for s in range(4):
        assert torch.equal(chosen[s], phased.phase(s, chosen[:s]).mean())


def test_corrections_computed_once_per_image_serve_only_their_own_level():
    """The refiner sees data only, so an inference computes its corrections once per image
    (``Decoder.condition(level, target)``) and every latent sample scoring that target reuses
    them: the same log-likelihoods and importance weights as recomputing them per sample. A
    different value is never scored with another level's corrections."""
    cfg = ModelConfig(image_size=16, transform="downscale:2", width=8, growth=4, components=2, latent_channels=4,
                      latent_size=4, flow_couplings=2, flow_hidden=8, phases=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    model.initialize(x)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for decoder in model.p_y:
            for net in decoder.refiner.nets:
                net[-1].weight.normal_(0.0, 0.05, generator=g)
    model.eval()
    with torch.no_grad():
        inf = model.infer(x)
        features, offset, forced, given = inf.decoder_conditions[0]
        assert given is None  # downscale keeps no phase
        assert forced is not None and forced[0] is x and forced[1].shape == (3, DLM.num_params(3, 2), 16, 16)
        z = inf.q_z[0].mean
        reused = model.p_y[0](inf.decoder_conditions[0], z)
        fresh = model.p_y[0]((features, offset, None, None), z)
        assert torch.allclose(reused.log_prob(x), fresh.log_prob(x), rtol=1e-6, atol=1e-4)
        other = x.flip(-1).contiguous()
        assert torch.allclose(reused.log_prob(other), fresh.log_prob(other), rtol=1e-6, atol=1e-4)
        assert not torch.allclose(fresh.log_prob(other), fresh._mixture(fresh.params + forced[1]).log_prob(other))

        weights = model.log_weights(x, samples=5, chunk=2, seed=3)
        plain = inf.__class__(inf.levels, inf.q_u, inf.q_z, inf.prior_conditions,
                              [None if c is None else (c[0], c[1], None, c[3]) for c in inf.decoder_conditions])
        for s in range(5):
            terms = model.terms_from(plain, model.sample_noise(3, s, 3, x.device))
            assert torch.allclose(weights[:, s], sum(terms.values()), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("channels,num_values", [(1, 4), (3, 2)])
def test_a_known_first_phase_costs_nothing_and_the_rest_still_sums_to_one(channels, num_values):
    """With the first phase given (the level above, when ``subsample`` made it) the likelihood puts all
    its mass on levels with that first phase: it sums to one over them, is -inf elsewhere, equals the
    other three phases' likelihood, and sampling and the decodes keep the given phase."""
    given = torch.randint(0, num_values, (1, channels, 1, 1), generator=torch.Generator().manual_seed(2))
    dist = random_phased(channels, num_values, given=given)
    free = random_phased(channels, num_values)  # the same parameters, the first phase coded too
    levels = all_levels(channels, num_values)
    agrees = (levels[:, :, 0, 0] == given[:, :, 0, 0]).all(dim=1)
    with torch.no_grad():
        log_prob = expand(dist, len(levels)).log_prob(levels)
        assert abs(float(torch.logsumexp(log_prob[agrees], dim=0))) < 1e-9
        assert bool(torch.isneginf(log_prob[~agrees]).all())
        phases = free.split(levels[agrees])
        rest = expand(free, int(agrees.sum()))
        three = sum(rest.phase(s, phases[:s]).log_prob(phases[s]) for s in range(1, 4))
        assert torch.allclose(log_prob[agrees], three, atol=1e-9)
    assert dist.first_step == 1 and free.first_step == 0
    big = random_phased(3, 256, size=4, batch=2, given=torch.randint(0, 256, (2, 3, 2, 2), dtype=torch.uint8))
    for decoded in (big.sample(generator=torch.Generator().manual_seed(0)), big.mode(), big.mean()):
        assert torch.equal(big.split(decoded)[0], big.given)
    with pytest.raises(ValueError, match="known first phase must have shape"):
        random_phased(1, 4, given=torch.zeros(1, 1, 2, 2, dtype=torch.long))


def test_a_subsample_model_gives_its_copied_pixels_zero_bits_and_trains():
    cfg = ModelConfig(image_size=16, transform="subsample:2", width=8, growth=4, components=2, latent_channels=4,
                      latent_size=4, flow_couplings=2, flow_hidden=8, phases=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert all(decoder.given_first for decoder in model.p_y) and not model.p_top.given_first
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    model.initialize(x)
    inf = model.infer(x)
    assert inf.decoder_conditions[0][3] is inf.levels[1]
    likelihood = model.p_y[0](inf.decoder_conditions[0], inf.q_z[0].mean)
    pixels = likelihood.log_prob_pixels(x)
    assert bool((pixels[:, 0::2, 0::2] == 0).all()) and bool((pixels[:, 1::2, :] < 0).all())
    bpd = model.bits_per_dim(model(x))["bpd"]
    assert torch.isfinite(bpd)
    bpd.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    # the same config with downscale codes all four phases
    other = build_model(ModelConfig(**{**cfg.to_dict(), "transform": "downscale:2"}))
    assert not any(decoder.given_first for decoder in other.p_y)
