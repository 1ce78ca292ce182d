"""Tests of selfvae.distributions: likelihoods sum to one, are stable and exact; samplers match them."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from selfvae.distributions import DiagonalGaussian, DiscretizedLogisticMixture as DLM, bound_logvar


# ----------------------------------------------------------------------------- helpers


def make_params(C, M, H=2, W=2, B=1, kind="random", seed=0, dtype=torch.float64):
    """Parameters in DLM layout. "extreme" draws every entry from a set of hostile values:
    means far outside [-1, 1] (+-1e3) or exactly on bin centres/edges, log-scales at and
    below the clamp (-7, -50) and at +10, logits +-1e3, coupling pre-activations +-1e3."""
    g = torch.Generator().manual_seed(seed)
    P = DLM.num_params(C, M)
    p = torch.randn(B, P, H, W, generator=g, dtype=torch.float64)
    if kind == "extreme":
        K = C * (C - 1) // 2

        def pick(values, n):
            values = torch.tensor(values, dtype=torch.float64)
            return values[torch.randint(len(values), (B, n, H, W), generator=g)]

        sl = [M, C * M, C * M, K * M]
        logits, means, log_scales, coeffs = p.split(sl, dim=1)
        logits = pick([-1e3, 0.0, 1e3, 2.0], M)
        means = pick([-1e3, 1e3, -1.0, 1.0, 0.0, 1 / 255, -1 + 1 / 255, 0.3], C * M)
        log_scales = pick([-7.0, -50.0, 10.0, -3.0, 0.5], C * M)
        coeffs = pick([-1e3, 1e3, 0.0, 0.7], K * M)
        p = torch.cat([logits, means, log_scales, coeffs], dim=1)
    return p.to(dtype)


def joint_values(C, n):
    """All n^C joint values of a pixel: long (n^C, C)."""
    return torch.tensor(list(itertools.product(range(n), repeat=C)), dtype=torch.long)


def enumerate_log_probs(params, C, n, M):
    """log p of every joint value for every pixel of params (1, P, H, W): (n^C, H, W)."""
    vals = joint_values(C, n)
    N = len(vals)
    _, _, H, W = params.shape
    d = DLM(params.expand(N, -1, -1, -1).contiguous(), C, n, M)
    return d.log_prob_pixels(vals[:, :, None, None].expand(N, C, H, W).contiguous())


def total_mass_c3_n256(params, M, chunk=4):
    """Exact total probability of all 256^3 joint values of the single pixel in params (1, P, 1, 1).

    Channels 1 and 2 run over a 256x256 grid laid out as pixels, channel 0 over the batch
    (``chunk`` values per call: fewer, larger ops), so each of the 16.7M joint values is
    evaluated once. Summation is in float64 so that only the distribution's own rounding
    is under test.
    """
    n = 256
    d = DLM(params.expand(chunk, -1, n, n).contiguous(), 3, n, M)
    grid = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))[None].expand(chunk, 2, n, n)
    total = 0.0
    for start in range(0, n, chunk):
        x0 = torch.arange(start, start + chunk).view(chunk, 1, 1, 1).expand(chunk, 1, n, n)
        log_probs = d.log_prob_pixels(torch.cat([x0, grid], 1)).double()
        # values below e^-600 add nothing to the sum; clamping avoids the slow subnormal path of exp()
        total += log_probs.clamp(min=-600.0).exp().sum().item()
    return total


# ----------------------------------------------------------------------------- sums to one


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
@pytest.mark.parametrize("kind", ["random", "extreme"])
@pytest.mark.parametrize("C,n", [(1, 2), (1, 8), (1, 256), (3, 2), (3, 8)])
def test_probabilities_sum_to_one(C, n, kind, dtype, tol):
    M = 3
    params = make_params(C, M, H=3, W=3, kind=kind, seed=C * 1000 + n, dtype=dtype)
    log_probs = enumerate_log_probs(params, C, n, M)
    assert log_probs.dtype == dtype
    assert torch.isfinite(log_probs).all()  # even a bin 1e6 scales away gets log-prob ~ -1e6, not -inf
    mass = torch.logsumexp(log_probs.double(), dim=0).exp()  # (H, W)
    assert torch.allclose(mass, torch.ones_like(mass), atol=tol, rtol=0), mass


@pytest.mark.parametrize(
    "kind,dtype,M,tol", [("random", torch.float64, 1, 1e-5), ("extreme", torch.float32, 2, 1e-4)]
)
def test_probabilities_sum_to_one_rgb_256(kind, dtype, M, tol):
    """C=3 with 256 values: 256^3 = 16.7M joint values per pixel. No partial check is
    sound for a coupled joint (each (v0, v1) prefix shifts channel 2's mean), so we
    enumerate all of them for one pixel (a few seconds); the mixture over components is
    covered by the n=8 enumeration above, so the float64 case uses one component."""
    params = make_params(3, M, H=1, W=1, kind=kind, seed=7, dtype=dtype)
    if kind == "extreme":  # one sharp, coupled component next to a flat one far outside [-1, 1]
        params[0, :, 0, 0] = torch.tensor(
            [0.0, 0.0]  # logits
            + [0.3, -1e3, 1 / 255, 0.5, 1e3, -0.2]  # means (C, M)
            + [-7.0, 10.0, -7.0, -50.0, 10.0, -7.0]  # log-scales (C, M)
            + [1e3, -1e3, 0.0, 0.7, -0.4, 1e3],  # coupling pre-activations (K, M)
            dtype=dtype,
        )
    assert abs(total_mass_c3_n256(params, M) - 1.0) < tol


# ------------------------------------------------------------------------ stability


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("C,n", [(1, 2), (1, 256), (3, 8), (3, 256)])
def test_log_prob_and_gradients_finite_for_extreme_params(C, n, dtype):
    M = 4
    H = W = 6
    params = make_params(C, M, H=H, W=W, B=2, kind="extreme", seed=n, dtype=dtype).requires_grad_(True)
    # values at both edge bins and in the middle, in every pixel position
    value = torch.tensor([0, n - 1, n // 2])[torch.randint(3, (2, C, H, W), generator=torch.Generator().manual_seed(1))]
    d = DLM(params, C, n, M)
    lp = d.log_prob(value)
    assert lp.shape == (2,) and torch.isfinite(lp).all(), lp
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()


def test_bin_log_probability_matches_a_high_precision_reference():
    """float32 first, interior and last bins against log(F(x+h) - F(x-h)) in 40-digit arithmetic
    (mpmath, which torch's sympy dependency brings), over log-scales -7..60 and means far off:
    every bin to 1e-4 relative (or absolute below 1 nat; float32 rounding of x - mu at scale e^-7 alone is ~3e-5)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    n, h = 256, mpmath.mpf(1) / 255
    log_scales = torch.linspace(-7.0, 60.0, 35).tolist()
    means = torch.linspace(-3.0, 3.0, 25).tolist()
    values = [0, 1, 77, 128, 254, 255]
    rows, reference = [], []
    for ls in log_scales:
        for mu in means:
            for v in values:
                m, s = mpmath.mpf(float(torch.tensor(mu, dtype=torch.float32))), mpmath.exp(mpmath.mpf(ls))
                x = mpmath.mpf(2 * v) / 255 - 1
                cdf = lambda t: 1 / (1 + mpmath.exp(-(t - m) / s))
                sf = lambda t: 1 / (1 + mpmath.exp((t - m) / s))  # no cancellation right of the mean
                if v == 0 or v == n - 1:
                    p = cdf(x + h) if v == 0 else sf(x - h)
                else:
                    p = cdf(x + h) - cdf(x - h) if x < m else sf(x - h) - sf(x + h)
                rows.append((mu, ls, v))
                reference.append(float(mpmath.log(p)))
    mu, ls, v = (torch.tensor(c) for c in zip(*rows))
    params = torch.stack([torch.zeros_like(mu), mu, ls]).float().reshape(1, 3, -1, 1)
    got = DLM(params, 1, n, 1).log_prob_pixels(v.reshape(1, 1, -1, 1)).double().flatten()
    reference = torch.tensor(reference, dtype=torch.float64)
    error = (got - reference).abs() / reference.abs().clamp(min=1.0)
    assert error.max() < 1e-4, (error.max(), rows[int(error.argmax())])


def test_huge_log_scale_beyond_float_range_is_finite():
    """log-scale +200: 2h/s underflows in float32; the interior-bin term must stay finite."""
    C, M, n = 1, 1, 256
    params = torch.tensor([0.0, 0.1, 200.0]).view(1, 3, 1, 1).expand(1, 3, 1, 3).contiguous().requires_grad_(True)
    value = torch.tensor([0, 100, 255]).view(1, 1, 1, 3)
    lp = DLM(params, C, n, M).log_prob_pixels(value)
    assert torch.isfinite(lp).all()
    # edges hold ~1/2 each, an interior bin 2h/(4 s) = exp(log(2h) - log 4 - 200)
    expected_mid = math.log(2 / 255) - math.log(4) - 200
    assert lp[0, 0, 1].item() == pytest.approx(expected_mid, abs=1e-3)
    assert lp[0, 0, 0].item() == pytest.approx(math.log(0.5), abs=1e-3)
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()


def test_low_precision_params_are_promoted_to_float32():
    params = make_params(3, 2, kind="random", dtype=torch.float32).bfloat16().requires_grad_(True)
    value = torch.randint(256, (1, 3, 2, 2), dtype=torch.uint8)
    d = DLM(params, 3, 256, 2)
    lp = d.log_prob(value)
    assert lp.dtype == torch.float32
    ref = DLM(params.detach().float(), 3, 256, 2).log_prob(value)
    assert torch.allclose(lp, ref)
    lp.sum().backward()
    assert params.grad is not None and params.grad.dtype == torch.bfloat16


def test_log_prob_is_sum_of_pixels_and_accepts_uint8_and_long():
    params = make_params(3, 2, H=4, W=5, B=2)
    value = torch.randint(8, (2, 3, 4, 5))
    d = DLM(params, 3, 8, 2)
    assert torch.allclose(d.log_prob(value), d.log_prob_pixels(value).sum((1, 2)))
    assert torch.equal(d.log_prob(value), d.log_prob(value.to(torch.uint8)))


def test_validation_errors():
    params = make_params(3, 2)
    with pytest.raises(ValueError, match="params must have shape"):
        DLM(params, 3, 8, 3)
    with pytest.raises(ValueError, match="num_values"):
        DLM(params, 3, 1, 2)
    with pytest.raises(ValueError, match="channels"):
        DLM(params, 0, 8, 2)
    d = DLM(params, 3, 8, 2)
    with pytest.raises(ValueError, match="out of range"):
        d.log_prob(torch.full((1, 3, 2, 2), 8))
    with pytest.raises(ValueError, match="out of range"):
        d.log_prob(torch.full((1, 3, 2, 2), -1))
    with pytest.raises(ValueError, match="shape"):
        d.log_prob(torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        d.log_prob(torch.zeros(1, 3, 2, 2))


# --------------------------------------------------------- PixelCNN++ reference (C = 3)


def pixelcnnpp_log_prob_pixels(x, l, nr_mix):
    """PixelCNN++'s discretized_mix_logistic_loss (pytorch port), per pixel, channels last.

    x: (B, H, W, 3) in [-1, 1]; l: (B, H, W, 10 M). Kept verbatim, including the pdf
    approximation branch for tiny bins -- the test asserts it is not taken.
    """
    logit_probs = l[..., :nr_mix]
    l = l[..., nr_mix:].reshape(*x.shape, 3 * nr_mix)
    means = l[..., :nr_mix]
    log_scales = torch.clamp(l[..., nr_mix : 2 * nr_mix], min=-7.0)
    coeffs = torch.tanh(l[..., 2 * nr_mix : 3 * nr_mix])
    x = x.unsqueeze(-1) + torch.zeros(nr_mix, dtype=x.dtype)
    m2 = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
    m3 = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
    means = torch.cat([means[..., 0:1, :], m2.unsqueeze(-2), m3.unsqueeze(-2)], dim=-2)
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
    cdf_plus = torch.sigmoid(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / 255.0)
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    interior = (x >= -0.999) & (x <= 0.999)
    assert (cdf_delta[interior] > 1e-5).all(), "reference would use its pdf approximation"
    log_probs = torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(
            x > 0.999,
            log_one_minus_cdf_min,
            torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)), log_pdf_mid - math.log(127.5)),
        ),
    )
    log_probs = log_probs.sum(dim=-2) + torch.log_softmax(logit_probs, dim=-1)
    return torch.logsumexp(log_probs, dim=-1)


def test_rgb_coupling_matches_pixelcnnpp():
    M, B, H, W = 3, 2, 4, 4
    g = torch.Generator().manual_seed(3)
    # PixelCNN++ layout, channels last: [logits(M) | per channel c: means(M), log_scales(M), coeffs(M)]
    logits = torch.randn(B, H, W, M, generator=g, dtype=torch.float64)
    means = torch.rand(B, H, W, 3, M, generator=g, dtype=torch.float64) * 2 - 1
    log_scales = torch.rand(B, H, W, 3, M, generator=g, dtype=torch.float64)  # wide enough: no approximation branch
    coeffs = torch.randn(B, H, W, 3, M, generator=g, dtype=torch.float64) * 2
    l = torch.cat([logits, torch.cat([means, log_scales, coeffs], dim=-1).flatten(-2)], dim=-1)
    value = torch.randint(256, (B, 3, H, W), generator=g)
    value[:, :, 0, 0] = 0  # edge bins
    value[:, :, 0, 1] = 255
    x = (value.double() / 127.5 - 1.0).permute(0, 2, 3, 1)
    expected = pixelcnnpp_log_prob_pixels(x, l, M)

    # ours: [logits | means (C, M) | log_scales (C, M) | coeffs (K, M)], channels first;
    # PixelCNN++'s coefficient index k = (G<-R, B<-R, B<-G) is ours too
    ours = torch.cat([logits, means.flatten(-2), log_scales.flatten(-2), coeffs.flatten(-2)], dim=-1)
    actual = DLM(ours.permute(0, 3, 1, 2), 3, 256, M).log_prob_pixels(value)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------- sampling


def empirical_tv(samples_codes, log_probs, num_codes):
    counts = torch.bincount(samples_codes, minlength=num_codes).double()
    return 0.5 * (counts / counts.sum() - log_probs.double().exp()).abs().sum().item()


def test_sample_frequencies_match_probabilities_single_channel():
    C, M, n = 1, 3, 8
    params = make_params(C, M, H=1, W=1, seed=11, dtype=torch.float32)
    log_probs = enumerate_log_probs(params, C, n, M)[:, 0, 0]
    d = DLM(params.expand(1, -1, 250, 250).contiguous(), C, n, M)
    g = torch.Generator().manual_seed(0)
    samples = torch.cat([d.sample(generator=g).flatten() for _ in range(4)]).long()
    tv = empirical_tv(samples, log_probs, n)
    assert tv < 0.01, tv


def test_sample_frequencies_match_probabilities_coupled_rgb():
    """Samples condition on the earlier channels' quantised values, so they follow log_prob exactly."""
    C, M, n = 3, 2, 4
    params = make_params(C, M, H=1, W=1, seed=5, dtype=torch.float32)
    params[:, M + 2 * C * M :] *= 3  # strong coupling
    log_probs = enumerate_log_probs(params, C, n, M)[:, 0, 0]
    d = DLM(params.expand(1, -1, 250, 250).contiguous(), C, n, M)
    g = torch.Generator().manual_seed(1)
    samples = torch.cat([d.sample(generator=g).reshape(C, -1) for _ in range(4)], dim=1).long()
    codes = (samples[0] * n + samples[1]) * n + samples[2]  # same order as itertools.product
    tv = empirical_tv(codes, log_probs, n**C)
    assert tv < 0.02, tv


def test_sample_dtype_range_shape_and_reproducibility():
    for C, n in [(1, 2), (3, 256), (2, 5)]:
        M = 2
        params = make_params(C, M, H=5, W=3, B=4, kind="extreme", seed=n)
        d = DLM(params, C, n, M)
        s = d.sample(generator=torch.Generator().manual_seed(3))
        assert s.shape == (4, C, 5, 3) and s.dtype == torch.uint8
        assert int(s.min()) >= 0 and int(s.max()) <= n - 1
        assert torch.equal(s, d.sample(generator=torch.Generator().manual_seed(3)))
        assert d.sample(temperature=0.0, generator=torch.Generator().manual_seed(3)).dtype == torch.uint8


def test_temperature_zero_single_component_is_bin_of_mean():
    n = 8
    means = torch.tensor([-2.0, -1.0, -0.5, 0.1, 0.3, 0.99, 5.0])
    params = torch.stack([torch.zeros(7), means, torch.full((7,), 3.0)]).view(1, 3, 1, 7)
    s = DLM(params, 1, n, 1).sample(temperature=0.0)
    expected = ((means.clamp(-1, 1) + 1) * (n - 1) / 2).round()
    assert torch.equal(s.flatten().long(), expected.long())


# ----------------------------------------------------------------------------- mode


@pytest.mark.parametrize("n", [2, 8, 256])
def test_mode_is_argmax_bin_single_component_single_channel(n):
    g = torch.Generator().manual_seed(n)
    H, W = 8, 8
    means = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64) * 3 - 1.5
    log_scales = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64) * 9 - 7  # sharp ... very wide
    params = torch.cat([torch.zeros(1, 1, H, W, dtype=torch.float64), means, log_scales], dim=1)
    # the trap: a wide logistic whose mean is just inside bin 1 -- bin 0 (reaching to -inf) wins
    params[0, 1, 0, 0], params[0, 2, 0, 0] = -1 + 1.01 / (n - 1), 2.0
    params[0, 1, 0, 1], params[0, 2, 0, 1] = 1 - 1.01 / (n - 1), 2.0
    expected = enumerate_log_probs(params, 1, n, 1).argmax(dim=0)
    mode = DLM(params, 1, n, 1).mode()
    assert mode.dtype == torch.uint8 and mode.shape == (1, 1, H, W)
    assert torch.equal(mode[0, 0].long(), expected)
    if n > 2:
        assert expected[0, 0] == 0 and expected[0, 1] == n - 1


def test_mode_is_greedy_channel_argmax_of_top_component():
    """C=3: mode = argmax v0 of the marginal, then v1 given v0, then v2 given (v0, v1),
    of the component with the largest logit (the other components' logits are lower)."""
    C, n, M = 3, 8, 2
    params = make_params(C, M, H=3, W=3, seed=2)
    params[:, 1:M] = params[:, 0:1] - 1.0  # component 0 is the most probable
    params[:, M + C * M : M + 2 * C * M] = params[:, M + C * M : M + 2 * C * M].clamp(-3, 1)
    mode = DLM(params, C, n, M).mode().long()
    # single-component model of component 0: the layout's component axis is innermost
    K = C * (C - 1) // 2
    logits, means, log_scales, coeffs = params.split([M, C * M, C * M, K * M], dim=1)
    pick0 = lambda t: t.view(1, -1, M, 3, 3)[:, :, 0]
    single = torch.cat([logits[:, :1], pick0(means), pick0(log_scales), pick0(coeffs)], dim=1)
    joint = enumerate_log_probs(single, C, n, 1).exp().view(n, n, n, 3, 3)
    for i, j in itertools.product(range(3), range(3)):
        p = joint[..., i, j]
        v0 = p.sum((1, 2)).argmax()
        v1 = p[v0].sum(1).argmax()
        v2 = p[v0, v1].argmax()
        assert mode[0, :, i, j].tolist() == [v0.item(), v1.item(), v2.item()]


def test_gaussian_log_prob_matches_torch():
    g = torch.Generator().manual_seed(0)
    mean, raw, z = (torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    q = DiagonalGaussian(mean, raw)
    ref = torch.distributions.Normal(mean, q.std).log_prob(z).sum((1, 2, 3))
    assert torch.allclose(q.log_prob(z), ref, atol=1e-10)
    assert torch.allclose(q.std, torch.exp(0.5 * q.logvar))


def test_logvar_bound_holds_and_is_smooth():
    lo, hi = -12.0, 6.0
    raw = torch.tensor(
        [-1e30, -1e6, -100.0, -13.0, -12.0, -8.0, -3.0, 0.0, 2.0, 6.0, 7.0, 100.0, 1e6, 1e30], requires_grad=True
    )
    for dtype in (torch.float32, torch.float64):
        r = raw.detach().to(dtype).requires_grad_(True)
        lv = DiagonalGaussian(torch.zeros_like(r), r, lo, hi).logvar
        assert (lv >= lo).all() and (lv <= hi).all()
        assert (lv[1:] >= lv[:-1]).all()  # monotone
        assert lv[0].item() == lo and lv[-1].item() == hi
        lv.sum().backward()
        assert torch.isfinite(r.grad).all() and (r.grad >= 0).all()
        # f'(r) = sigmoid(r - lo) - sigmoid(r - hi) (and no kink where the two forms switch)
        assert torch.allclose(r.grad, torch.sigmoid(r.detach() - lo) - torch.sigmoid(r.detach() - hi), atol=1e-6)
    # ~ identity on the typical range; continuous at the switch point (lo + hi) / 2
    mid = torch.linspace(-8, 2, 101, dtype=torch.float64)
    assert (bound_logvar(mid, lo, hi) - mid).abs().max() < 0.02
    c = torch.tensor([-3.0 - 1e-9, -3.0 + 1e-9], dtype=torch.float64)
    f = bound_logvar(c, lo, hi)
    assert abs(f[1] - f[0]) < 1e-8
    with pytest.raises(ValueError):
        DiagonalGaussian(torch.zeros(1), torch.zeros(1), 1.0, 1.0)


def test_gaussian_sample_with_noise_is_exact_and_differentiable():
    mean = torch.randn(2, 4, 3, 3, requires_grad=True)
    raw = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = DiagonalGaussian(mean, raw)
    noise = torch.randn(2, 4, 3, 3)
    z = q.sample(noise=noise, temperature=0.7)
    assert torch.equal(z, mean + 0.7 * q.std * noise)
    z.sum().backward()
    assert mean.grad is not None and raw.grad is not None
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(q.sample(generator=g1), q.sample(generator=g2))
    assert torch.equal(q.sample(temperature=0.0), q.mean)
    with pytest.raises(ValueError):
        q.sample(noise=torch.randn(2, 4, 3))


def test_gaussian_from_params_repeat_and_dtype():
    params = torch.randn(3, 8, 2, 2)
    q = DiagonalGaussian.from_params(params, min_logvar=-5.0, max_logvar=1.0)
    assert torch.equal(q.mean, params[:, :4])
    assert torch.allclose(q.logvar, bound_logvar(params[:, 4:], -5.0, 1.0))
    r = q.repeat(2)
    assert r.mean.shape == (6, 4, 2, 2)
    assert torch.equal(r.mean, q.mean.repeat_interleave(2, 0))
    assert torch.equal(r.logvar, q.logvar.repeat_interleave(2, 0))  # not bounded a second time
    with pytest.raises(ValueError):
        DiagonalGaussian.from_params(torch.randn(3, 7, 2, 2))
    qb = DiagonalGaussian.from_params(params.bfloat16())
    assert qb.mean.dtype == torch.float32 and qb.log_prob(torch.zeros(3, 4, 2, 2)).dtype == torch.float32
