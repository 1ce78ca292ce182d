"""The K-level self-supervised VAE (Gatopoulos & Tomczak 2021, eqs. 21-23).

Levels are indexed ``k = 0..K`` with ``y_0 = x`` and ``y_k = d_k(y_{k-1})``.

Generative model (eq. 21)::

    p(x, y_1:K, z_1:K, u) = p(u) p(y_K | u) p(z_K | u, y_K)
                            * prod_{k=K-1}^{1} p(z_k | y_k, z_{k+1}) p(y_k | y_{k+1}, z_{k+1})
                            * p(x | y_1, z_1)

Written uniformly: for k = K..1, ``p(z_k | y_k, h_k)`` with ``h_K = u`` and
``h_k = z_{k+1}``, and ``p(y_{k-1} | y_k, z_k)``; on top ``p(u)`` (RealNVP) and
``p(y_K | u)``.

Variational family (eq. 22): ``q(u | y_K) prod_{k=1}^{K} q(z_k | y_{k-1})``.

K = 0 is the VAE with a RealNVP prior: the top latent ``u`` plays the role of the
VAE's ``z`` and ``p(x | u)`` is its decoder.

Public boundaries take images as uint8 ``(B, C, H, W)`` in 0..255 and return
per-example quantities as float ``(B,)`` in nats unless stated otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from transforms import LevelSpec, TransformError, check_level, parse_chain

from .config import ModelConfig
from .distributions import DiagonalGaussian, DiscretizedLogisticMixture
from .nets import Branch, GaussianHead, LikelihoodHead, Shape, data_dependent_init, latent_size, to_unit
from .prior import RealNVPPrior

Terms = Dict[str, torch.Tensor]
Noise = Dict[str, torch.Tensor]


class Encoder(nn.Module):
    """``q(latent | level)``: a level (uint8 ``(B, C, H, W)``) -> a diagonal Gaussian over ``latent``."""

    def __init__(self, level: LevelSpec, latent: Shape, cfg: ModelConfig):
        super().__init__()
        self.level = level
        self.branch = Branch(level.channels, level.height, latent[1], cfg.width, cfg.growth, cfg.dense_layers,
                             cfg.blocks)
        self.head = GaussianHead(cfg.width, cfg.width, latent[0], cfg.growth, cfg.dense_layers, cfg.blocks)
        self.bounds = dict(min_logvar=cfg.min_logvar, max_logvar=cfg.max_logvar)

    def forward(self, level: torch.Tensor) -> DiagonalGaussian:
        features = self.branch(to_unit(level, self.level.num_values))
        return DiagonalGaussian.from_params(self.head(features), **self.bounds)


class ConditionalPrior(nn.Module):
    """``p(z_k | y_k, h)`` with ``h = u`` (k = K) or ``h = z_{k+1}``: a diagonal Gaussian over ``latent``.

    The ``y`` branch does not depend on the sampled latents; :meth:`condition` computes it
    once per image so that importance sampling can reuse it for every sample.
    """

    def __init__(self, level: LevelSpec, parent: Shape, latent: Shape, cfg: ModelConfig):
        super().__init__()
        self.level = level
        args = (cfg.width, cfg.growth, cfg.dense_layers, cfg.blocks)
        self.level_branch = Branch(level.channels, level.height, latent[1], *args)
        self.parent_branch = Branch(parent[0], parent[1], latent[1], *args)
        self.head = GaussianHead(2 * cfg.width, *args[:1], latent[0], *args[1:])
        self.bounds = dict(min_logvar=cfg.min_logvar, max_logvar=cfg.max_logvar)

    def condition(self, level: torch.Tensor) -> torch.Tensor:
        return self.level_branch(to_unit(level, self.level.num_values))

    def forward(self, condition: torch.Tensor, parent: torch.Tensor) -> DiagonalGaussian:
        features = torch.cat([condition, self.parent_branch(parent)], dim=1)
        return DiagonalGaussian.from_params(self.head(features), **self.bounds)


class Decoder(nn.Module):
    """``p(y_{k-1} | y_k, z_k)`` (or ``p(y_K | u)`` when ``level`` is None): a discretized
    logistic mixture over the output level ``out``, with as many bins as ``out`` has values.

    The latent is brought to the condition's resolution and merged with it there; only the
    merged features are upsampled to the output resolution (for a downscale chain that is
    one resolution up), so the costly full-resolution work is done once.

    When the condition has the output's channels (downscale, bits, blur, lowpass), the
    mixture means are predicted as a residual on top of the condition, bilinearly upsampled
    to the output's size: the network starts from "x looks like its transform" instead of
    from grey, as super-resolution networks predict a residual over the upsampled input.
    """

    def __init__(self, latent: Shape, level: Optional[LevelSpec], out: LevelSpec, cfg: ModelConfig):
        super().__init__()
        self.level, self.out, self.cfg = level, out, cfg
        args = (cfg.width, cfg.growth, cfg.dense_layers, cfg.blocks)
        merge_size = out.height if level is None else level.height
        self.latent_branch = Branch(latent[0], latent[1], merge_size, *args)
        self.level_branch = None if level is None else Branch(level.channels, level.height, merge_size, *args)
        self.residual = level is not None and level.channels == out.channels
        branches = 1 if level is None else 2
        params = DiscretizedLogisticMixture.num_params(out.channels, cfg.components)
        self.head = LikelihoodHead(branches * cfg.width, merge_size, out.height, params, *args)

    def condition(self, level: Optional[torch.Tensor]) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """The parts that depend on ``y_k`` only: its features, and the mean offset (or None)."""
        if self.level_branch is None:
            return None
        unit = to_unit(level, self.level.num_values)
        offset = None
        if self.residual:
            offset = F.interpolate(unit, size=(self.out.height, self.out.width), mode="bilinear",
                                   align_corners=False) if unit.shape[-1] != self.out.width else unit
        return self.level_branch(unit), offset

    def forward(self, condition: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]],
                latent: torch.Tensor) -> DiscretizedLogisticMixture:
        features, offset = self.latent_branch(latent), None
        if condition is not None:
            features, offset = torch.cat([condition[0], features], dim=1), condition[1]
        params = self.head(features)
        C, M = self.out.channels, self.cfg.components
        if offset is not None:  # means occupy channels M .. M + C*M, ordered (channel, component)
            means = params[:, M:M + C * M] + offset.repeat_interleave(M, dim=1)
            params = torch.cat([params[:, :M], means, params[:, M + C * M:]], dim=1)
        return DiscretizedLogisticMixture(params, channels=C, num_values=self.out.num_values, components=M,
                                          min_log_scale=self.cfg.min_log_scale)


@dataclass
class Inference:
    """Everything about one batch that does not depend on the sampled latents.

    levels: ``[x, y_1, ..., y_K]`` uint8. q_u: ``q(u | y_K)``. q_z: ``[q(z_1 | x), ..., q(z_K | y_{K-1})]``.
    lowest: the level the inference starts from (0: x; k: only the model at and above y_k, the
    entries below are None).
    prior_conditions[k-1]: ``y_k`` features of ``p(z_k | y_k, .)``; decoder_conditions[k-1]: ``y_k``
    features and mean offset of ``p(y_{k-1} | y_k, z_k)`` (see :meth:`Decoder.condition`).
    """

    levels: List[Optional[torch.Tensor]]
    q_u: DiagonalGaussian
    q_z: List[Optional[DiagonalGaussian]]
    prior_conditions: List[Optional[torch.Tensor]]
    decoder_conditions: List[Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]]
    lowest: int = 0

    def repeat(self, times: int) -> "Inference":
        """Each example repeated ``times`` times (``repeat_interleave`` order)."""
        def rep(t):
            if t is None or isinstance(t, torch.Tensor):
                return None if t is None else t.repeat_interleave(times, dim=0)
            return tuple(rep(part) for part in t)

        return Inference([rep(y) for y in self.levels], self.q_u.repeat(times),
                         [q.repeat(times) if q is not None else None for q in self.q_z],
                         [rep(c) for c in self.prior_conditions], [rep(c) for c in self.decoder_conditions],
                         self.lowest)


@dataclass
class ModeResult:
    """What a generation or reconstruction mode returns.

    images: uint8 ``(B, C, H, W)``, the shape of x, values 0..255.
    levels: the produced ``[x, y_1, ..., y_K]`` (uint8, each at its level's spec).
    sent: name -> number of dimensions a receiver must be sent (``{}`` for generation).
    sent_bits: name -> ``(B,)`` bits under the model for each sent variable: the variable's
        ELBO term (KL for latents, the ELBO of the levels at and above it for a ``y``).
    """

    images: torch.Tensor
    levels: List[torch.Tensor]
    sent: Dict[str, int] = field(default_factory=dict)
    sent_bits: Dict[str, torch.Tensor] = field(default_factory=dict)


class SelfVAE(nn.Module):
    """The K-level selfVAE; ``K = len(chain)``, with ``K = 0`` the VAE with a RealNVP prior.

    Build it with :func:`build_model`. Before the first training step call
    :meth:`initialize` on a batch (data-dependent init of the weight-normalised layers).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.chain = parse_chain(config.transform)
        x_spec = LevelSpec(config.image_channels, config.image_size, config.image_size, 256)
        try:
            self.specs: List[LevelSpec] = [x_spec] + self.chain.specs(x_spec)
        except TransformError as e:
            raise ValueError(f"config does not fit the image size: {e}") from None
        for spec in self.specs:
            if spec.height != spec.width:
                raise ValueError(f"levels must be square, got {spec}")
        K = self.levels = len(self.chain)
        L, C = config.latent_size, config.latent_channels
        self.u_shape: Shape = (C, latent_size(self.specs[K].height, L), latent_size(self.specs[K].height, L))
        # z_k is inferred from y_{k-1}; z_shapes[k-1] is the shape of z_k.
        self.z_shapes: List[Shape] = []
        for k in range(1, K + 1):
            s = latent_size(self.specs[k - 1].height, L)
            self.z_shapes.append((C, s, s))

        self.q_u = Encoder(self.specs[K], self.u_shape, config)
        self.p_u = RealNVPPrior(self.u_shape, num_couplings=config.flow_couplings, hidden_channels=config.flow_hidden)
        self.p_top = Decoder(self.u_shape, None, self.specs[K], config)
        # index k-1 holds the networks of level k
        self.q_z = nn.ModuleList(Encoder(self.specs[k - 1], self.z_shapes[k - 1], config) for k in range(1, K + 1))
        self.p_z = nn.ModuleList(
            ConditionalPrior(self.specs[k], self.u_shape if k == K else self.z_shapes[k], self.z_shapes[k - 1], config)
            for k in range(1, K + 1))
        self.p_y = nn.ModuleList(Decoder(self.z_shapes[k - 1], self.specs[k], self.specs[k - 1], config)
                                 for k in range(1, K + 1))

    # ------------------------------------------------------------------ basics
    @property
    def x_dims(self) -> int:
        """C*H*W of x: bits per dimension divide by this only (y is a function of x)."""
        return self.specs[0].dims

    def term_names(self) -> List[str]:
        """Names of the ELBO terms: ``x``, ``y1..yK``, ``z1..zK``, ``u``."""
        K = self.levels
        return ["x"] + [f"y{k}" for k in range(1, K + 1)] + [f"z{k}" for k in range(1, K + 1)] + ["u"]

    def make_levels(self, x: torch.Tensor) -> List[torch.Tensor]:
        """uint8 x ``(B, C, H, W)`` -> ``[x, y_1, ..., y_K]``; checks the shape against the config."""
        check_level(x, self.specs[0], what="model input x")
        return [x] + self.chain(x)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of every weight-normalised layer from the batch ``x``."""
        with data_dependent_init():
            self.elbo_terms(x)

    # ------------------------------------------------------------------ inference
    def infer(self, y: torch.Tensor, level: int = 0) -> Inference:
        """Posteriors and ``y``-features of a batch; nothing here depends on sampled latents.

        ``y`` is the uint8 level ``level`` (x for ``level = 0``, the usual case); for ``level = k > 0``
        only the part of the model at and above ``y_k`` is set up (the levels above are computed
        with the transforms), which gives the ELBO of ``y_k`` alone.
        """
        K = self.levels
        check_level(y, self.specs[level], what="model input x" if level == 0 else f"y_{level}")
        levels: List[Optional[torch.Tensor]] = [None] * level + [y]
        for k in range(level + 1, K + 1):
            levels.append(self.chain.transforms[k - 1](levels[k - 1], self.specs[k - 1]))
        above = range(level + 1, K + 1)  # the z_k of the (partial) model
        return Inference(
            levels=levels,
            q_u=self.q_u(levels[K]),
            q_z=[None] * level + [self.q_z[k - 1](levels[k - 1]) for k in above],
            prior_conditions=[None] * level + [self.p_z[k - 1].condition(levels[k]) for k in above],
            decoder_conditions=[None] * level + [self.p_y[k - 1].condition(levels[k]) for k in above],
            lowest=level,
        )

    def terms_from(self, inference: Inference, noise: Optional[Noise] = None,
                   generator: Optional[torch.Generator] = None) -> Terms:
        """One-sample log-weight terms (eq. 23), each ``(B,)`` in nats.

        ``x``, ``y_k``: log-likelihoods ``ln p(y_{k-1} | y_k, z_k)``, ``ln p(y_K | u)``;
        ``z_k``: ``ln p(z_k | y_k, h_k) - ln q(z_k | y_{k-1})``; ``u``: ``ln p(u) - ln q(u | y_K)``.
        Their sum is ``ln p(x, y, z, u) - ln Q(z, u | x, y)``, whose expectation is the ELBO.
        ``noise`` maps ``u``/``z{k}`` to standard-normal tensors of the latents' shapes (else drawn
        from ``generator``). For an inference from level k > 0 only the terms at and above k exist.
        """
        noise = noise or {}
        K, ys = self.levels, inference.levels
        terms: Terms = {}
        u = inference.q_u.sample(noise=noise.get("u"), generator=generator)
        terms["u"] = self.p_u.log_prob(u) - inference.q_u.log_prob(u)
        terms[f"y{K}" if K else "x"] = self.p_top(None, u).log_prob(ys[K])
        parent = u
        for k in range(K, inference.lowest, -1):
            q = inference.q_z[k - 1]
            z = q.sample(noise=noise.get(f"z{k}"), generator=generator)
            prior = self.p_z[k - 1](inference.prior_conditions[k - 1], parent)
            terms[f"z{k}"] = prior.log_prob(z) - q.log_prob(z)
            name = f"y{k - 1}" if k > 1 else "x"
            terms[name] = self.p_y[k - 1](inference.decoder_conditions[k - 1], z).log_prob(ys[k - 1])
            parent = z
        return {name: terms[name] for name in self.term_names() if name in terms}

    def elbo_terms(self, x: torch.Tensor, noise: Optional[Noise] = None,
                   generator: Optional[torch.Generator] = None) -> Terms:
        """Single-sample ELBO terms of a uint8 batch x ``(B, C, H, W)``: name -> ``(B,)`` nats."""
        return self.terms_from(self.infer(x), noise, generator)

    def forward(self, x: torch.Tensor) -> Terms:
        return self.elbo_terms(x)

    def bits_per_dim(self, terms: Terms) -> Dict[str, torch.Tensor]:
        """Per-term bits per dimension of x (scalars, batch means): ``-term / (D_x ln 2)``.
        ``bpd`` is their sum, the negative ELBO in bits per dimension."""
        scale = 1.0 / (self.x_dims * math.log(2.0))
        out = {name: -value.mean() * scale for name, value in terms.items()}
        out["bpd"] = sum(out.values())
        return out

    # ------------------------------------------------------------------ importance sampling
    def sample_noise(self, batch: int, sample_index: int, seed: int, device) -> Noise:
        """Standard-normal noise for every latent of importance sample ``sample_index``, drawn from a
        generator seeded by ``(seed, sample_index)`` so that any chunking sees the same noise."""
        g = torch.Generator(device=device)
        g.manual_seed(seed * 1_000_003 + sample_index)
        shapes = {"u": self.u_shape, **{f"z{k}": self.z_shapes[k - 1] for k in range(1, self.levels + 1)}}
        return {name: torch.randn((batch,) + shape, generator=g, device=device) for name, shape in shapes.items()}

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, samples: int, chunk: int = 64, seed: int = 0,
                    progress=None) -> torch.Tensor:
        """Log importance weights ``ln p(x, y, z_s, u_s) - ln Q(z_s, u_s | x, y)``: float ``(B, samples)``.

        Samples are processed ``chunk`` at a time (memory is bounded by ``B * chunk``); the result does
        not depend on ``chunk`` because sample ``s`` always uses the noise of :meth:`sample_noise`.
        """
        inference = self.infer(x)
        B = x.shape[0]
        out = torch.empty(B, samples, device=x.device)
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            per_sample = [self.sample_noise(B, start + i, seed, x.device) for i in range(n)]
            # (B * n) batch in repeat_interleave order: example b, samples start..start+n-1
            noise = {name: torch.stack([s[name] for s in per_sample], dim=1).flatten(0, 1) for name in per_sample[0]}
            terms = self.terms_from(inference.repeat(n), noise)
            out[:, start:start + n] = sum(terms.values()).view(B, n)
            if progress is not None:
                progress.update(n)
        return out

    def iw_log_likelihood(self, x: torch.Tensor, samples: int, chunk: int = 64, seed: int = 0) -> torch.Tensor:
        """Importance-weighted bound (Burda et al.) per example: ``logmeanexp_s`` of the log weights,
        float ``(B,)`` nats. It is a lower bound on ``ln p(x)``, tighter as ``samples`` grows."""
        w = self.log_weights(x, samples, chunk, seed)
        return torch.logsumexp(w, dim=1) - math.log(samples)

    # ------------------------------------------------------------------ generation helpers
    def _decode(self, dist: DiscretizedLogisticMixture, decode: str, temperature: float,
                generator: Optional[torch.Generator]) -> torch.Tensor:
        if decode == "mode":
            return dist.mode()
        if decode == "sample":
            return dist.sample(temperature=temperature, generator=generator)
        raise ValueError(f"decode must be 'mode' or 'sample', got '{decode}'")

    def _latent(self, dist: DiagonalGaussian, how: str, temperature: float,
                generator: Optional[torch.Generator]) -> torch.Tensor:
        if how == "mean":
            return dist.mean
        if how == "sample":
            return dist.sample(temperature=temperature, generator=generator)
        raise ValueError(f"latent choice must be 'mean' or 'sample', got '{how}'")

    def _descend(self, levels: List[Optional[torch.Tensor]], parent: torch.Tensor, start: int,
                 fixed_z: Optional[Dict[int, torch.Tensor]], decode: str, temperature: float,
                 generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        """Fill ``levels[start-1] .. levels[0]`` going down from the known ``levels[start]``.

        ``parent`` is ``h_start`` (u if start == K, else z_{start+1}). z_k is taken from ``fixed_z``
        when given there (inferred), else sampled from ``p(z_k | y_k, h_k)``.
        """
        for k in range(start, 0, -1):
            y_k = levels[k]
            if fixed_z is not None and k in fixed_z:
                z = fixed_z[k]
            else:
                prior = self.p_z[k - 1](self.p_z[k - 1].condition(y_k), parent)
                z = prior.sample(temperature=temperature, generator=generator)
            dist = self.p_y[k - 1](self.p_y[k - 1].condition(y_k), z)
            levels[k - 1] = self._decode(dist, decode, temperature, generator)
            parent = z
        return levels

    def _from_u(self, u: torch.Tensor, decode: str, temperature: float, generator, fixed_z=None):
        K = self.levels
        levels: List[Optional[torch.Tensor]] = [None] * (K + 1)
        levels[K] = self._decode(self.p_top(None, u), decode, temperature, generator)
        return self._descend(levels, u, K, fixed_z, decode, temperature, generator)

    def _sent_bits(self, terms: Terms, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Bits of each sent variable under the model, from the ELBO terms (see :class:`ModeResult`)."""
        K, out = self.levels, {}
        for name in names:
            if name.startswith("y"):
                k = int(name[1:])
                above = [f"y{j}" for j in range(k, K + 1)] + [f"z{j}" for j in range(k + 1, K + 1)] + ["u"]
                out[name] = -sum(terms[n] for n in above) / math.log(2.0)
            else:
                out[name] = -terms[name] / math.log(2.0)
        return out

    def _dims(self, name: str) -> int:
        if name == "u":
            return math.prod(self.u_shape)
        if name.startswith("z"):
            return math.prod(self.z_shapes[int(name[1:]) - 1])
        return self.specs[int(name[1:])].dims

    def _result(self, levels, inference: Inference, names: Sequence[str], generator,
                samples: int = 8) -> ModeResult:
        """A :class:`ModeResult` with the bits of the sent variables, from the mode's own inference."""
        sent_bits = {}
        if names:
            # The ELBO terms averaged over a few posterior samples (a single-sample KL is noisy).
            runs = [self.terms_from(inference, generator=generator) for _ in range(samples)]
            terms = {name: torch.stack([r[name] for r in runs]).mean(0) for name in runs[0]}
            sent_bits = self._sent_bits(terms, names)
        return ModeResult(images=levels[0], levels=levels, sent={n: self._dims(n) for n in names},
                          sent_bits=sent_bits)

    def _check_level_index(self, level: int) -> None:
        if not 1 <= level <= self.levels:
            raise ValueError(f"level must be in 1..{self.levels} for this {self.levels}-level model, got {level}")

    # ------------------------------------------------------------------ the modes (SPEC section 3)
    @torch.no_grad()
    def generate(self, num: int, temperature: float = 1.0, decode: str = "sample",
                 generator: Optional[torch.Generator] = None) -> ModeResult:
        """u ~ p(u) -> y_K ~ p(y_K | u) -> z_K ~ p(z_K | u, y_K) -> ... -> x ~ p(x | y_1, z_1). Sends nothing."""
        device = next(self.parameters()).device
        u = self.p_u.sample(num, temperature=temperature, generator=generator, device=device)
        return ModeResult(images=(levels := self._from_u(u, decode, temperature, generator))[0], levels=levels)

    @torch.no_grad()
    def cond_generate(self, y: torch.Tensor, level: int, temperature: float = 1.0, decode: str = "sample",
                      latents: str = "sample", generator: Optional[torch.Generator] = None) -> ModeResult:
        """Conditional generation from a given ``y_k*`` (uint8 at level ``k``'s spec); with a downscale
        chain this is super-resolution by 2^k. The latent above level k is inferred
        (``u ~ q(u | y_K)`` for k = K, else ``z_{k+1} ~ q(z_{k+1} | y_k*)``), the ones below are sampled.
        Sends ``y_k``."""
        self._check_level_index(level)
        inference = self.infer(y, level)  # the levels above k are functions of y_k*
        posterior = inference.q_u if level == self.levels else inference.q_z[level]
        parent = self._latent(posterior, latents, temperature, generator)
        levels = self._descend(list(inference.levels), parent, level, None, decode, temperature, generator)
        return self._result(levels, inference, [f"y{level}"], generator)

    @torch.no_grad()
    def cond_reconstruct(self, x: torch.Tensor, level: int, decode: str = "mode", latents: str = "mean",
                         generator: Optional[torch.Generator] = None) -> ModeResult:
        """Conditional reconstruction of x* from ``y_k* = d(x*)`` and ``z_1..z_k ~ q(z_j | y_{j-1}*)``:
        ``y_{j-1} ~ p(y_{j-1} | y_j, z_j)`` for j = k..1. Sends ``y_k, z_1..z_k``."""
        self._check_level_index(level)
        inference = self.infer(x)
        levels: List[Optional[torch.Tensor]] = [None] * level + inference.levels[level:]
        fixed = {j: self._latent(inference.q_z[j - 1], latents, 1.0, generator) for j in range(1, level + 1)}
        levels = self._descend(levels, None, level, fixed, decode, 1.0, generator)
        names = [f"y{level}"] + [f"z{j}" for j in range(1, level + 1)]
        return self._result(levels, inference, names, generator)

    @torch.no_grad()
    def reconstruct1(self, x: torch.Tensor, decode: str = "mode", latents: str = "mean", temperature: float = 1.0,
                     generator: Optional[torch.Generator] = None) -> ModeResult:
        """u ~ q(u | y_K*), then the generative path down to x (z's sampled). Sends ``u``."""
        inference = self.infer(x)
        u = self._latent(inference.q_u, latents, 1.0, generator)
        return self._result(self._from_u(u, decode, temperature, generator), inference, ["u"], generator)

    @torch.no_grad()
    def reconstruct2(self, x: torch.Tensor, decode: str = "mode", latents: str = "mean",
                     generator: Optional[torch.Generator] = None) -> ModeResult:
        """u ~ q(u | y_K*) -> y_K ~ p(y_K | u); every z_k ~ q(z_k | y_{k-1}*) -> y_{k-1} ~ p(y_{k-1} | y_k, z_k).
        Sends ``u, z_1..z_K``."""
        K, inference = self.levels, self.infer(x)
        u = self._latent(inference.q_u, latents, 1.0, generator)
        fixed = {k: self._latent(inference.q_z[k - 1], latents, 1.0, generator) for k in range(1, K + 1)}
        levels = self._from_u(u, decode, 1.0, generator, fixed_z=fixed)
        return self._result(levels, inference, ["u"] + [f"z{k}" for k in range(1, K + 1)], generator)

    @torch.no_grad()
    def encode_u(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of u for a uint8 batch x: float ``(B, *u_shape)``."""
        return self.q_u(self.make_levels(x)[-1]).mean

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8, method: str = "linear",
                    decode: str = "mode", temperature: float = 1.0,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Decode points between the posterior means of u for x_a and x_b (``linear`` or ``spherical``).
        Returns uint8 ``(steps, B, C, H, W)``; the z's below u are sampled at ``temperature``
        (0 takes the conditional priors' means)."""
        u_a, u_b = self.encode_u(x_a), self.encode_u(x_b)
        out = []
        for t in torch.linspace(0.0, 1.0, steps).tolist():
            u = _slerp(u_a, u_b, t) if method == "spherical" else _lerp(u_a, u_b, t, method)
            out.append(self._from_u(u, decode, temperature, generator)[0])
        return torch.stack(out)

    @torch.no_grad()
    def resample_z(self, x: torch.Tensor, num: int = 8, decode: str = "mode", temperature: float = 1.0,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Keep u at its posterior mean for x and draw the z's (and y's below u) ``num`` times
        (paper Fig. 6). Returns uint8 ``(num, B, C, H, W)``."""
        u = self.encode_u(x)
        return torch.stack([self._from_u(u, decode, temperature, generator)[0] for _ in range(num)])


def _lerp(a: torch.Tensor, b: torch.Tensor, t: float, method: str) -> torch.Tensor:
    if method != "linear":
        raise ValueError(f"interpolation method must be 'linear' or 'spherical', got '{method}'")
    return (1 - t) * a + t * b


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per example (flattened), falling back to linear for parallel vectors."""
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    linear = so.abs() < 1e-6
    wa = torch.where(linear, torch.full_like(so, 1 - t), torch.sin((1 - t) * omega) / so.where(~linear, 1.0))
    wb = torch.where(linear, torch.full_like(so, t), torch.sin(t * omega) / so.where(~linear, 1.0))
    return (wa[:, None] * fa + wb[:, None] * fb).view_as(a)


def build_model(config: ModelConfig) -> SelfVAE:
    """The one place that builds a model from a config."""
    return SelfVAE(config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: SelfVAE) -> Dict[str, int]:
    """Parameters per component (q_u, p_u, p_top, q_z{k}, p_z{k}, p_y{k}) and ``total``."""
    out = {"q_u": count_parameters(model.q_u), "p_u (RealNVP)": count_parameters(model.p_u),
           "p_top": count_parameters(model.p_top)}
    for k in range(1, model.levels + 1):
        out[f"q_z{k}"] = count_parameters(model.q_z[k - 1])
        out[f"p_z{k}"] = count_parameters(model.p_z[k - 1])
        out[f"p_y{k - 1}" if k > 1 else "p_x"] = count_parameters(model.p_y[k - 1])
    out["total"] = count_parameters(model)
    return out
