"""Output distributions of the model (paper eqs. 12-19).

* :class:`DiscretizedLogisticMixture` -- the likelihood of every discrete level
  (``x`` and every ``y_k``): a PixelCNN++-style mixture of discretized logistics with
  autoregressive coupling between channels, with as many bins as the level has values.
* :class:`DiagonalGaussian` -- every ``q`` and every ``p(z | ...)``: a diagonal
  Gaussian whose log-variance is softly bounded.

Conventions: batch first; log-probabilities are in nats and summed over every
non-batch dimension unless the name says ``_pixels``; computations run in at least
float32 (bfloat16/float16 inputs are promoted) and with autocast disabled, so a
likelihood never loses precision to mixed-precision training.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["DiscretizedLogisticMixture", "DiagonalGaussian"]


# ----------------------------------------------------------------------------- helpers


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Promote half/bfloat16 to float32; leave float32/float64 alone."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _no_autocast(device: torch.device):
    """Context that disables autocast on ``device`` (a no-op where autocast does not exist)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # device type without autocast support
        return contextlib.nullcontext()


def _random(kind: str, shape, *, generator: Optional[torch.Generator], device, dtype) -> torch.Tensor:
    """``torch.rand``/``torch.randn`` that honours a generator living on another device.

    A generator can only fill tensors on its own device, so the draw happens there and
    is moved afterwards; this keeps a CPU generator reproducible for CUDA tensors.
    """
    fn = torch.rand if kind == "uniform" else torch.randn
    if generator is None:
        return fn(shape, device=device, dtype=dtype)
    return fn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _open_uniform(shape, *, generator, device, dtype) -> torch.Tensor:
    """Uniform samples in the *open* interval (0, 1), so that log(u) and log(1-u) are finite."""
    u = _random("uniform", shape, generator=generator, device=device, dtype=dtype)
    finfo = torch.finfo(dtype)
    return u.clamp(min=finfo.tiny, max=1.0 - finfo.eps)


def _log1mexp(d: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-d))`` for ``d > 0`` given both ``d`` and ``log d``, with two transcendentals.

    ``log(-expm1(-d))`` is accurate in relative terms for small ``d`` (``expm1`` is) and in
    absolute terms, to well below float precision of the sums it enters, for large ``d``
    (where the result is ``-exp(-d)``, below 1e-7 once ``d > 16``). Only where ``d`` itself
    underflows does it fail; below ``d = 1e-30``, ``log(1 - exp(-d)) = log d - d/2 + O(d^2)``
    equals ``log d`` to every precision. So ``d`` is clamped at 1e-30 and what the clamp took
    away is added back in log space, ``min(log d - log 1e-30, 0)``: exact on both sides, finite
    everywhere, and no ``torch.where`` over a full-size mask (that alone cost as much as the
    two transcendentals on this CPU).
    """
    tiny = 1e-30
    return torch.log(-torch.expm1(-d.clamp(min=tiny))) + (log_d - math.log(tiny)).clamp(max=0.0)


# ------------------------------------------------------------------ discretized logistic


class DiscretizedLogisticMixture:
    """PixelCNN++-style discretized logistic mixture over integer images (Salimans et al. 2017).

    A value ``v`` in ``0..n-1`` (``n = num_values``) sits at ``x = 2 v / (n - 1) - 1`` in
    ``[-1, 1]``; its bin is ``[x - h, x + h]`` with half-width ``h = 1 / (n - 1)``, except
    that the first bin extends to ``-inf`` and the last to ``+inf``, so the ``n`` bin
    probabilities of a logistic sum to one exactly.

    Per pixel, with ``M`` components and ``C`` channels, the joint over the channels is

        p(v) = sum_m pi_m prod_c Logistic_bin(v_c | mu_cm + sum_{j<c} tanh(a_cjm) x_j, s_cm)

    i.e. channel ``c``'s mean is shifted by the *observed* values of the earlier
    channels. For ``C = 3`` this is exactly PixelCNN++'s RGB coupling; ``C = 1`` has none.

    Parameter layout along dim 1 of ``params`` (``P = num_params(C, M)`` channels):

    ====================  ==========  =================================================
    slice                 size        reshaped to
    ====================  ==========  =================================================
    logits                M           ``(B, M, H, W)``
    means                 C*M         ``(B, C, M, H, W)`` (channel-major)
    log-scales            C*M         ``(B, C, M, H, W)``; clamped below at ``min_log_scale``
    coupling coefficients K*M         ``(B, K, M, H, W)``, ``K = C(C-1)/2``; coefficient
                                      ``k`` couples channel ``c`` to ``j < c`` with
                                      ``k = c(c-1)/2 + j`` -- for RGB: (G<-R), (B<-R), (B<-G)
    ====================  ==========  =================================================

    Args:
        params: float ``(B, P, H, W)``, straight from a conv layer; any float dtype
            (half/bfloat16 is promoted to float32, float64 stays float64).
        channels: ``C >= 1``.
        num_values: ``n >= 2`` discrete values per channel.
        components: ``M >= 1`` mixture components.
        min_log_scale: hard lower clamp of the log-scales (PixelCNN++/srVAE: -7), which
            keeps the logistic from becoming a spike narrower than float precision.
    """

    def __init__(
        self,
        params: torch.Tensor,
        channels: int,
        num_values: int,
        components: int,
        min_log_scale: float = -7.0,
    ):
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be an integer >= 1, got {channels}")
        if int(num_values) != num_values or num_values < 2:
            raise ValueError(f"num_values must be an integer >= 2, got {num_values}")
        if int(components) != components or components < 1:
            raise ValueError(f"components must be an integer >= 1, got {components}")
        if not isinstance(params, torch.Tensor) or not params.is_floating_point():
            raise ValueError("params must be a floating-point tensor of shape (B, P, H, W)")
        expected = self.num_params(channels, components)
        if params.dim() != 4 or params.shape[1] != expected:
            raise ValueError(
                f"params must have shape (B, {expected}, H, W) for channels={channels}, "
                f"components={components}; got {tuple(params.shape)}"
            )
        self.channels = int(channels)
        self.num_values = int(num_values)
        self.components = int(components)
        self.min_log_scale = float(min_log_scale)
        self.params = _at_least_float32(params)

        B, _, H, W = self.params.shape
        C, M = self.channels, self.components
        K = C * (C - 1) // 2
        with _no_autocast(self.params.device):
            # split, not slicing: the backward of a split is one concatenation, where each slice's
            # backward would zero-fill a whole params-sized gradient
            logits, means, log_scales, coeffs = self.params.split([M, C * M, C * M, K * M], dim=1)
            self.logits = logits  # (B, M, H, W)
            self.means = means.reshape(B, C, M, H, W)
            self.log_scales = log_scales.reshape(B, C, M, H, W).clamp(min=self.min_log_scale)
            self.coeffs = torch.tanh(coeffs.reshape(B, K, M, H, W))

    @staticmethod
    def num_params(channels: int, components: int) -> int:
        """Channels of ``params`` per pixel: ``M (1 + 2C + C(C-1)/2)``; 10 M for RGB."""
        return components * (1 + 2 * channels + channels * (channels - 1) // 2)

    # --------------------------------------------------------------------- properties

    @property
    def shape(self) -> tuple:
        """Shape of one sample: ``(B, C, H, W)``."""
        B, _, H, W = self.params.shape
        return (B, self.channels, H, W)

    @property
    def half_width(self) -> float:
        """Half-width ``h = 1/(n-1)`` of an interior bin in the ``[-1, 1]`` scale."""
        return 1.0 / (self.num_values - 1)

    def _to_unit(self, value: torch.Tensor) -> torch.Tensor:
        """Integer values ``0..n-1`` -> bin centres in ``[-1, 1]`` (params' dtype)."""
        return value.to(self.params.dtype) * (2.0 / (self.num_values - 1)) - 1.0

    def _quantise(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous ``x`` -> index (long) of the bin holding it (edge bins unbounded)."""
        n = self.num_values
        return ((x.clamp(-1.0, 1.0) + 1.0) * (0.5 * (n - 1))).round().long().clamp(0, n - 1)

    def _coeff_index(self, c: int, j: int) -> int:
        return c * (c - 1) // 2 + j

    # ------------------------------------------------------------------ log-probability

    def _log_bin_prob(self, value: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """log P(bin ``value``) under one logistic; all arguments broadcast together.

        Interior bins use the exact identity (a > b)
            log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(b - a))
        with ``a - b = 2h/s``; the last term (:func:`_log1mexp`) falls back on ``log(2h) - log s``
        where ``2h/s`` underflows, so it stays finite. All three branches are finite for
        every finite input, so ``torch.where`` cannot leak NaN gradients. Seven
        transcendentals per element (this function is most of an importance-weighted bound's
        non-convolution time).
        """
        h = self.half_width
        x = self._to_unit(value)
        inv_scale = torch.exp(-log_scale)
        centered = x - mean
        plus_in = inv_scale * (centered + h)
        min_in = inv_scale * (centered - h)
        log_cdf_plus = F.logsigmoid(plus_in)  # first bin: P(X < x + h)
        log_sf_min = F.logsigmoid(-min_in)  # last bin: P(X > x - h)
        log_interior = log_cdf_plus + log_sf_min + _log1mexp(inv_scale * (2.0 * h), math.log(2.0 * h) - log_scale)
        return torch.where(
            value == 0, log_cdf_plus, torch.where(value == self.num_values - 1, log_sf_min, log_interior)
        )

    def _check_value(self, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor) or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(
                f"value must be an integer tensor (uint8 or long) in 0..{self.num_values - 1}, "
                f"got {getattr(value, 'dtype', type(value))}"
            )
        if tuple(value.shape) != self.shape:
            raise ValueError(f"value must have shape {self.shape} (B, C, H, W), got {tuple(value.shape)}")
        if value.numel() == 0 or (value.dtype == torch.uint8 and self.num_values == 256):
            return  # every uint8 is a valid 256-value bin
        if value.is_cuda:  # device-side assert: no host round trip in the training step
            torch._assert_async(((value >= 0) & (value < self.num_values)).all(),
                                f"value out of range: expected 0..{self.num_values - 1}")
            return
        if int(value.min()) < 0 or int(value.max()) > self.num_values - 1:
            raise ValueError(
                f"value out of range: expected 0..{self.num_values - 1}, "
                f"got min {int(value.min())}, max {int(value.max())}"
            )

    def log_prob_pixels(self, value: torch.Tensor) -> torch.Tensor:
        """Per-pixel joint log-probability of the channels.

        Args:
            value: integer (uint8/long) ``(B, C, H, W)`` in ``0..n-1``.
        Returns:
            float ``(B, H, W)`` in nats (float32, or float64 for float64 params).
        """
        self._check_value(value)
        with _no_autocast(self.params.device):
            value = value.to(self.params.device).long()
            x = self._to_unit(value)  # (B, C, H, W)
            log_probs = []
            # unbind, not indexing, for the same reason as the split in __init__
            means, log_scales, coeffs = self.means.unbind(1), self.log_scales.unbind(1), self.coeffs.unbind(1)
            for c in range(self.channels):
                mean = means[c]  # (B, M, H, W)
                for j in range(c):
                    mean = mean + coeffs[self._coeff_index(c, j)] * x[:, j : j + 1]
                log_probs.append(self._log_bin_prob(value[:, c : c + 1], mean, log_scales[c]))
            joint = torch.stack(log_probs, dim=0).sum(0) + F.log_softmax(self.logits, dim=1)  # (B, M, H, W)
            return torch.logsumexp(joint, dim=1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Total log-probability of each image: integer ``(B, C, H, W)`` -> float ``(B,)`` nats."""
        return self.log_prob_pixels(value).sum(dim=(1, 2))

    def channel_pmf(self, c: int, previous: Optional[torch.Tensor] = None, summed: bool = False) -> torch.Tensor:
        """The distribution of channel ``c`` over all ``n`` values at every pixel, given the values
        of the channels before it (what an entropy coder needs, channel by channel).

        The mixture weights are the posterior over components given the earlier channels:
        ``w_m ∝ pi_m prod_{j<c} P(v_j | m)``, and channel ``c``'s mean is coupled to their values.
        Computed in float64 on the parameters' device; the ``n`` probabilities of a pixel sum to one.

        Args:
            c: channel index ``0 <= c < C``.
            previous: integer ``(B, c, H, W)`` values of channels ``0..c-1`` (None for ``c = 0``).
            summed: add up the components' weighted CDFs and take the bins' differences once (about
                twice as fast); False differences each component's CDF and adds up the bins, the
                arithmetic of the codec's tile-by-tile files (their tables must not change by a rounding).
        Returns:
            float64 ``(B, H, W, n)``.
        """
        if not 0 <= c < self.channels:
            raise ValueError(f"channel {c} out of range 0..{self.channels - 1}")
        B, C, H, W = self.shape
        if c and (previous is None or tuple(previous.shape) != (B, c, H, W)):
            raise ValueError(f"previous must hold the {c} earlier channels, shape {(B, c, H, W)}")
        n, h = self.num_values, self.half_width
        with torch.no_grad(), _no_autocast(self.params.device):
            means, log_scales, coeffs = self.means.double(), self.log_scales.double(), self.coeffs.double()
            log_w = F.log_softmax(self.logits.double(), dim=1)  # (B, M, H, W)
            units = [] if not c else list((previous.to(self.params.device).double() * (2.0 / (n - 1)) - 1.0)
                                          .split(1, dim=1))
            for j in range(c):
                mean = means[:, j] + sum(coeffs[:, self._coeff_index(j, i)] * units[i] for i in range(j))
                log_w = log_w + self._log_bin_prob(previous[:, j:j + 1].to(self.params.device).long(), mean,
                                                   log_scales[:, j])
            weights = torch.softmax(log_w, dim=1)  # (B, M, H, W)
            mean_c = means[:, c] + sum(coeffs[:, self._coeff_index(c, j)] * units[j] for j in range(c))
            upper = torch.linspace(-1.0 + h, 1.0 - h, n - 1, dtype=torch.float64, device=self.params.device)
            if summed:
                cdf = torch.zeros(B, H, W, n - 1, dtype=torch.float64, device=self.params.device)
                for m in range(self.components):
                    t = (upper - mean_c[:, m, ..., None]).mul_(torch.exp(-log_scales[:, c, m, ..., None])).sigmoid_()
                    cdf.add_(t.mul_(weights[:, m, ..., None]))
                return torch.diff(cdf, dim=-1, prepend=cdf.new_zeros(B, H, W, 1), append=cdf.new_ones(B, H, W, 1))
            pmf = torch.zeros(B, H, W, n, dtype=torch.float64, device=self.params.device)
            for m in range(self.components):  # one component at a time: (B, H, W, n) at most in memory
                cdf = torch.sigmoid((upper - mean_c[:, m, ..., None]) * torch.exp(-log_scales[:, c, m, ..., None]))
                bins = torch.diff(cdf, dim=-1, prepend=cdf.new_zeros(B, H, W, 1), append=cdf.new_ones(B, H, W, 1))
                pmf += weights[:, m, ..., None] * bins
            return pmf

    # ------------------------------------------------------------------------ sampling

    def _select(self, t: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """Pick component ``component`` (long ``(B, H, W)``) from ``t`` ``(B, X, M, H, W)`` -> ``(B, X, H, W)``."""
        B, X, _, H, W = t.shape
        index = component[:, None, None].expand(B, X, 1, H, W)
        return t.gather(2, index).squeeze(2)

    def _output(self, values: list) -> torch.Tensor:
        out = torch.stack(values, dim=1)
        return out.to(torch.uint8) if self.num_values <= 256 else out

    def sample(self, temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw one image per batch element.

        The component is drawn from the mixture weights (Gumbel-max, unaffected by the
        temperature); each channel is then a logistic with scale ``temperature * s``,
        centred at its coupled mean -- coupled to the earlier channels' *quantised*
        values, exactly as :meth:`log_prob` conditions on them, so samples follow
        ``exp(log_prob)`` exactly at temperature 1 -- and quantised to its bin.
        ``temperature = 0`` gives the bin of the coupled mean of the drawn component.

        Returns:
            ``(B, C, H, W)`` uint8 in ``0..n-1`` (int64 if ``num_values > 256``).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        B, C, H, W = self.shape
        dev, dt = self.params.device, self.params.dtype
        with torch.no_grad(), _no_autocast(dev):
            u = _open_uniform((B, self.components, H, W), generator=generator, device=dev, dtype=dt)
            component = (self.logits - torch.log(-torch.log(u))).argmax(dim=1)  # Gumbel-max
            means = self._select(self.means, component)
            # e^30 is already ~1e13 bin widths; the cap only keeps exp() finite (no inf * 0)
            scales = temperature * torch.exp(self._select(self.log_scales, component).clamp(max=30.0))
            coeffs = self._select(self.coeffs, component) if C > 1 else None
            u = _open_uniform((B, C, H, W), generator=generator, device=dev, dtype=dt)
            noise = torch.log(u) - torch.log1p(-u)  # standard logistic
            values, units = [], []
            for c in range(C):
                mean = means[:, c]
                for j in range(c):
                    mean = mean + coeffs[:, self._coeff_index(c, j)] * units[j]
                v = self._quantise(mean + scales[:, c] * noise[:, c])
                values.append(v)
                units.append(self._to_unit(v))
            return self._output(values)

    def mean(self) -> torch.Tensor:
        """Deterministic "expected" image: for ``c = 0..C-1`` in order, ``v_c`` is the expected value
        of channel ``c`` under the mixture given the already chosen ``v_<c`` (:meth:`channel_pmf`,
        float64), rounded to the nearest value. With one channel this is the rounded mean of each
        pixel's distribution; unlike :meth:`mode` it never jumps to an edge bin of a broad
        distribution (the bins 0 and n-1 reach to infinity), so it is the better point estimate
        where PSNR is measured.

        Returns:
            ``(B, C, H, W)`` uint8 in ``0..n-1`` (int64 if ``num_values > 256``).
        """
        n = self.num_values
        values = []
        with torch.no_grad():
            grid = torch.arange(n, dtype=torch.float64, device=self.params.device)
            for c in range(self.channels):
                pmf = self.channel_pmf(c, torch.stack(values, dim=1) if c else None)
                values.append((pmf * grid).sum(-1).round().long().clamp(0, n - 1))
        return self._output(values)

    def mode(self) -> torch.Tensor:
        """Deterministic "most likely" image (greedy mode of the most probable component).

        Per pixel: take the component with the largest logit (ties -> lowest index); then
        for ``c = 0..C-1`` in order, ``v_c`` is the most probable bin of that component's
        logistic for channel ``c`` given the already chosen ``v_<c`` (coupled mean built
        from the chosen values). That argmax is exact, not "bin nearest the mean": the
        edge bins reach to infinity, so with a wide logistic an edge bin can beat the
        interior bin that holds the mean. For a symmetric unimodal density the best bin
        is one of {the bin holding the mean, bin 0, bin n-1}; we compare those three
        (ties -> the bin holding the mean). With one component and one channel this is
        the exact argmax of the pixel's distribution; in general it is not the joint
        mode of the mixture (which has no closed form).

        Returns:
            ``(B, C, H, W)`` uint8 in ``0..n-1`` (int64 if ``num_values > 256``).
        """
        B, C, H, W = self.shape
        n = self.num_values
        with torch.no_grad(), _no_autocast(self.params.device):
            component = self.logits.argmax(dim=1)
            means = self._select(self.means, component)
            log_scales = self._select(self.log_scales, component)
            coeffs = self._select(self.coeffs, component) if C > 1 else None
            values, units = [], []
            for c in range(C):
                mean = means[:, c]
                for j in range(c):
                    mean = mean + coeffs[:, self._coeff_index(c, j)] * units[j]
                nearest = self._quantise(mean)
                candidates = torch.stack([nearest, torch.zeros_like(nearest), torch.full_like(nearest, n - 1)])
                scores = self._log_bin_prob(candidates, mean, log_scales[:, c])  # (3, B, H, W)
                v = candidates.gather(0, scores.argmax(dim=0, keepdim=True)).squeeze(0)
                values.append(v)
                units.append(self._to_unit(v))
            return self._output(values)


# ---------------------------------------------------------------------------- Gaussian


def bound_logvar(raw: torch.Tensor, min_logvar: float, max_logvar: float) -> torch.Tensor:
    """Smooth, strictly monotone map of R onto (min_logvar, max_logvar), ~identity inside.

        f(r) = lo + softplus(r - lo) - softplus(r - hi)
             = hi - softplus(hi - r) + softplus(lo - r)      (same function, rearranged)

    ``f(r) - r = softplus(lo - r) - softplus(r - hi)``: for ``lo=-12, hi=6`` the map
    differs from the identity by < 0.02 on [-8, 2] and by 0.0025 at 0; ``f'(r) =
    sigmoid(r - lo) - sigmoid(r - hi)`` is positive and smooth everywhere. The first form
    is evaluated below the midpoint and the second above it, so the large terms never
    cancel (for ``r = 1e30`` the first form would round to ``lo``); both forms are finite
    everywhere, so the discarded one cannot produce NaN gradients.
    """
    if not min_logvar < max_logvar:
        raise ValueError(f"min_logvar ({min_logvar}) must be < max_logvar ({max_logvar})")
    lo, hi = float(min_logvar), float(max_logvar)
    below = lo + F.softplus(raw - lo) - F.softplus(raw - hi)
    above = hi - F.softplus(hi - raw) + F.softplus(lo - raw)
    # rounding can land one ulp outside; the clamp is the identity on exact arithmetic
    return torch.where(raw < 0.5 * (lo + hi), below, above).clamp(lo, hi)


class DiagonalGaussian:
    """Diagonal Gaussian ``N(mean, exp(logvar))`` with a softly bounded log-variance.

    Args:
        mean: float ``(B, ...)`` (typically ``(B, C, H, W)``).
        logvar: float, same shape; *raw* network output, mapped by :func:`bound_logvar`
            into ``(min_logvar, max_logvar)`` (smooth, gradients everywhere, ~identity on
            the typical range). The bounded value is what :attr:`logvar` returns.
        min_logvar, max_logvar: the bounds (default ``(-12, 6)``: std in ``(0.0025, 20)``).

    Half/bfloat16 inputs are promoted to float32.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, min_logvar: float = -12.0, max_logvar: float = 6.0):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}")
        if mean.dim() < 1:
            raise ValueError("mean must have a batch dimension")
        self.min_logvar = float(min_logvar)
        self.max_logvar = float(max_logvar)
        with _no_autocast(mean.device):
            self._mean = _at_least_float32(mean)
            self._logvar = bound_logvar(_at_least_float32(logvar), self.min_logvar, self.max_logvar)

    @classmethod
    def from_params(cls, params: torch.Tensor, **kw) -> "DiagonalGaussian":
        """``params`` ``(B, 2C, ...)``: first C channels the mean, last C the raw log-variance."""
        if params.dim() < 2 or params.shape[1] % 2:
            raise ValueError(f"params must have an even number of channels (B, 2C, ...), got {tuple(params.shape)}")
        mean, logvar = params.chunk(2, dim=1)
        return cls(mean, logvar, **kw)

    @classmethod
    def _from_bounded(cls, mean, logvar, min_logvar, max_logvar) -> "DiagonalGaussian":
        """Wrap an already bounded log-variance (the bound is not idempotent)."""
        g = cls.__new__(cls)
        g._mean, g._logvar = mean, logvar
        g.min_logvar, g.max_logvar = min_logvar, max_logvar
        return g

    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def logvar(self) -> torch.Tensor:
        """Bounded log-variance, in ``[min_logvar, max_logvar]``."""
        return self._logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self._logvar)

    @property
    def shape(self) -> torch.Size:
        return self._mean.shape

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], -1).sum(dim=1)

    def sample(
        self,
        noise: Optional[torch.Tensor] = None,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Reparameterised sample ``mean + temperature * std * noise``; differentiable.

        ``noise`` (mean's shape) defaults to a standard normal draw (from ``generator`` if given).
        """
        if noise is None:
            noise = _random("normal", self._mean.shape, generator=generator, device=self._mean.device, dtype=self._mean.dtype)
        elif noise.shape != self._mean.shape:
            raise ValueError(f"noise must have shape {tuple(self._mean.shape)}, got {tuple(noise.shape)}")
        with _no_autocast(self._mean.device):
            return self._mean + temperature * self.std * noise.to(self._mean)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; mean, var)`` summed over all non-batch dims: ``(B, ...)`` -> ``(B,)`` nats."""
        if z.shape != self._mean.shape:
            raise ValueError(f"z must have shape {tuple(self._mean.shape)}, got {tuple(z.shape)}")
        with _no_autocast(self._mean.device):
            z = z.to(self._mean)
            lp = -0.5 * (math.log(2 * math.pi) + self._logvar + (z - self._mean) ** 2 * torch.exp(-self._logvar))
            return self._sum(lp)

    def grid_bits(self, z: torch.Tensor, step: float) -> torch.Tensor:
        """Bits to send ``z`` on the grid of ``step``: ``-log2`` of this Gaussian's mass of each grid
        cell ``[z - step/2, z + step/2)``, summed over non-batch dims (float64 ``(B,)``)."""
        normal = torch.distributions.Normal(self._mean.double(), self.std.double())
        z = z.double()
        mass = (normal.cdf(z + step / 2) - normal.cdf(z - step / 2)).clamp_min(1e-300)
        return -torch.log2(mass).flatten(1).sum(1)

    def repeat(self, times: int) -> "DiagonalGaussian":
        """Each example repeated ``times`` times: batch ``B*times`` ordered ``x0, x0, ..., x1, x1, ...``."""
        return DiagonalGaussian._from_bounded(
            self._mean.repeat_interleave(times, dim=0),
            self._logvar.repeat_interleave(times, dim=0),
            self.min_logvar,
            self.max_logvar,
        )
