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
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from transforms import LevelSpec, check_level

from .cflow import ConditionalFlow, FlowGaussian
from .config import ModelConfig
from .distributions import DiagonalGaussian, DiscretizedLogisticMixture
from .phases import ORDER, PhasedMixture, PhaseRefiner
from .nets import Branch, GaussianHead, LikelihoodHead, Shape, Widths, data_dependent_init, latent_size, to_unit
from .prior import RealNVPPrior

Terms = Dict[str, torch.Tensor]


def nats_to_bpd(log_prob, dims: int):
    """A log-probability in nats (tensor or float) -> bits per dimension: ``-log_prob / (dims ln 2)``.
    Every bpd figure divides by the dimensions of x only: the y levels are functions of x and add
    no dimensions (paper §3, eq. 23)."""
    return -log_prob / (dims * math.log(2.0))
Noise = Dict[str, torch.Tensor]
#: What :meth:`Decoder.condition` returns: ``y_k``'s features, the mean offset (or None), and the
#: phase refiner's teacher-forced corrections of a known output level as ``(target, corrections)`` (or None).
DecoderCondition = Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Tuple[torch.Tensor, torch.Tensor]],
                         Optional[torch.Tensor]]


def widths_of(cfg: ModelConfig) -> Widths:
    """The shape of every network: channels and growth at each spatial size, depth (:class:`selfvae.nets.Widths`)."""
    return Widths(cfg.width, cfg.growth, cfg.narrow_above, cfg.dense_layers, cfg.blocks, cfg.blocks_above)


class Encoder(nn.Module):
    """``q(latent | level)``: a level (uint8 ``(B, C, H, W)``) -> a diagonal Gaussian over ``latent``."""

    def __init__(self, level: LevelSpec, latent: Shape, cfg: ModelConfig):
        super().__init__()
        self.level = level
        widths = widths_of(cfg)
        self.branch = Branch(level.channels, level.height, latent[1], widths)
        self.head = GaussianHead(widths.channels(latent[1]), latent[1], latent[0], widths)
        self.bounds = dict(min_logvar=cfg.min_logvar, max_logvar=cfg.max_logvar)

    def forward(self, level: torch.Tensor) -> DiagonalGaussian:
        features = self.branch(to_unit(level, self.level.num_values))
        return DiagonalGaussian.from_params(self.head(features), **self.bounds)


class ConditionalPrior(nn.Module):
    """``p(z_k | y_k, h)`` with ``h = u`` (k = K) or ``h = z_{k+1}``: a diagonal Gaussian over ``latent``,
    or with ``z_flow`` that Gaussian through a conditional flow (:mod:`selfvae.cflow`).

    The ``y`` branch does not depend on the sampled latents; :meth:`condition` computes it
    once per image so that importance sampling can reuse it for every sample.
    """

    def __init__(self, level: LevelSpec, parent: Shape, latent: Shape, cfg: ModelConfig):
        super().__init__()
        self.level = level
        widths = widths_of(cfg)
        features = 2 * widths.channels(latent[1])
        self.level_branch = Branch(level.channels, level.height, latent[1], widths)
        self.parent_branch = Branch(parent[0], parent[1], latent[1], widths)
        self.head = GaussianHead(features, latent[1], latent[0], widths)
        self.bounds = dict(min_logvar=cfg.min_logvar, max_logvar=cfg.max_logvar)
        self.flow = ConditionalFlow(latent, features, cfg.z_flow, cfg.flow_hidden) if cfg.z_flow else None

    def condition(self, level: torch.Tensor) -> torch.Tensor:
        return self.level_branch(to_unit(level, self.level.num_values))

    def forward(self, condition: torch.Tensor, parent: torch.Tensor) -> Union[DiagonalGaussian, FlowGaussian]:
        """The prior given ``condition`` (:meth:`condition` of y_k) and the parent latent; with
        ``z_flow`` the Gaussian is pushed through the conditional flow, context the same features."""
        features = torch.cat([condition, self.parent_branch(parent)], dim=1)
        base = DiagonalGaussian.from_params(self.head(features), **self.bounds)
        return base if self.flow is None else FlowGaussian(base, self.flow, features)


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

    With ``cfg.phases == 4`` and an output of even size the likelihood is a
    :class:`~selfvae.phases.PhasedMixture`: the same parameters, coded in 2x2 phases with the
    corrections of :attr:`refiner`. When, besides, ``y_k`` is the output's first phase itself
    (``kept_phase``, from the transform: ``subsample``), that phase is known and only the other
    three are coded (:attr:`given_first`).
    """

    def __init__(self, latent: Shape, level: Optional[LevelSpec], out: LevelSpec, cfg: ModelConfig,
                 kept_phase: Optional[int] = None):
        super().__init__()
        self.level, self.out, self.cfg = level, out, cfg
        widths = widths_of(cfg)
        merge_size = out.height if level is None else level.height
        self.latent_branch = Branch(latent[0], latent[1], merge_size, widths)
        self.level_branch = None if level is None else Branch(level.channels, level.height, merge_size, widths)
        self.residual = level is not None and level.channels == out.channels
        branches = 1 if level is None else 2
        params = DiscretizedLogisticMixture.num_params(out.channels, cfg.components)
        self.head = LikelihoodHead(branches * widths.channels(merge_size), merge_size, out.height, params, widths,
                                   out_kernel=cfg.out_kernel)
        phased = cfg.phases == 4 and out.height % 2 == 0 and out.width % 2 == 0
        self.refiner = PhaseRefiner(out.channels, params, widths.channels(out.height // 2),
                                    offset=self.residual) if phased else None
        self.given_first = (phased and kept_phase == ORDER[0] and level.channels == out.channels
                            and level.num_values == out.num_values)

    def condition(self, level: Optional[torch.Tensor],
                  target: Optional[torch.Tensor] = None) -> Optional[DecoderCondition]:
        """The parts that depend on data only: ``y_k``'s features, the mean offset (or None) and,
        given the output level ``target`` (integer ``(B, C, H, W)``) with phases, the refiner's
        corrections for it (:meth:`PhaseRefiner.teacher_forced`), so that many latent samples
        scoring the same ``target`` share them; and ``y_k`` itself when it is the output's known
        first phase (:attr:`given_first`), else None."""
        if self.level_branch is None:
            return None
        unit = to_unit(level, self.level.num_values)
        offset = None
        if self.residual:
            offset = F.interpolate(unit, size=(self.out.height, self.out.width), mode="bilinear",
                                   align_corners=False) if unit.shape[-1] != self.out.width else unit
        forced = None
        if target is not None and self.refiner is not None:
            forced = (target, self.refiner.teacher_forced(target, self.out.num_values, offset))
        return self.level_branch(unit), offset, forced, (level if self.given_first else None)

    def forward(self, condition: Optional[DecoderCondition],
                latent: torch.Tensor) -> Union[DiscretizedLogisticMixture, PhasedMixture]:
        features, offset, forced, given = self.latent_branch(latent), None, None, None
        if condition is not None:
            features, offset, forced, given = torch.cat([condition[0], features], dim=1), *condition[1:]
        params = self.head(features)
        C, M = self.out.channels, self.cfg.components
        if offset is not None:  # means occupy channels M .. M + C*M, ordered (channel, component)
            logits, means, rest = params.split([M, C * M, params.shape[1] - M - C * M], dim=1)
            params = torch.cat([logits, means + offset.repeat_interleave(M, dim=1), rest], dim=1)
        if self.refiner is not None:
            return PhasedMixture(params, self.refiner, offset, channels=C, num_values=self.out.num_values,
                                 components=M, min_log_scale=self.cfg.min_log_scale, forced=forced, given=given)
        return DiscretizedLogisticMixture(params, channels=C, num_values=self.out.num_values, components=M,
                                          min_log_scale=self.cfg.min_log_scale)


@dataclass
class Inference:
    """Everything about one batch that does not depend on the sampled latents.

    levels: ``[x, y_1, ..., y_K]`` uint8. q_u: ``q(u | y_K)``. q_z: ``[q(z_1 | x), ..., q(z_K | y_{K-1})]``.
    lowest: the level the inference starts from (0: x; k: only the model at and above y_k, the
    entries below are None).
    prior_conditions[k-1]: ``y_k`` features of ``p(z_k | y_k, .)``; decoder_conditions[k-1]: ``y_k``
    features, mean offset and (with phases) the refiner's corrections for ``y_{k-1}`` of
    ``p(y_{k-1} | y_k, z_k)`` (see :meth:`Decoder.condition`).
    """

    levels: List[Optional[torch.Tensor]]
    q_u: DiagonalGaussian
    q_z: List[Optional[DiagonalGaussian]]
    prior_conditions: List[Optional[torch.Tensor]]
    decoder_conditions: List[Optional[DecoderCondition]]
    lowest: int = 0

    def repeat(self, times: int) -> "Inference":
        """Each example repeated ``times`` times (``repeat_interleave`` order). A tensor held in two
        places (a level and the target of a decoder's corrections) is repeated once and stays shared;
        the phase corrections themselves are not repeated (the likelihood broadcasts them)."""
        done: Dict[int, torch.Tensor] = {}

        def rep(t):
            if t is None:
                return None
            if isinstance(t, torch.Tensor):
                if id(t) not in done:
                    done[id(t)] = t.repeat_interleave(times, dim=0)
                return done[id(t)]
            return tuple(rep(part) for part in t)

        def rep_decoder(c):
            if c is None:
                return None
            features, offset, forced, given = c
            # the corrections stay per image: PhasedMixture broadcasts them over each image's samples
            return rep(features), rep(offset), None if forced is None else (rep(forced[0]), forced[1]), rep(given)

        return Inference([rep(y) for y in self.levels], self.q_u.repeat(times),
                         [q.repeat(times) if q is not None else None for q in self.q_z],
                         [rep(c) for c in self.prior_conditions], [rep_decoder(c) for c in self.decoder_conditions],
                         self.lowest)


class SelfVAE(nn.Module):
    """The K-level selfVAE; ``K = len(chain)``, with ``K = 0`` the VAE with a RealNVP prior.

    Build it with :func:`build_model`. Before the first training step call
    :meth:`initialize` on a batch (data-dependent init of the weight-normalised layers).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.chain = config.chain  # parsed once, by the config
        self.specs: List[LevelSpec] = config.level_specs()
        K = self.levels = len(self.chain)
        L, C = config.latent_size, config.latent_channels
        self.u_shape: Shape = (C, latent_size(self.specs[K].height, L), latent_size(self.specs[K].height, L))
        # z_k is inferred from y_{k-1}; z_shapes[k-1] is the shape of z_k.
        self.z_shapes: List[Shape] = []
        for k in range(1, K + 1):
            s = latent_size(self.specs[k - 1].height, L)
            self.z_shapes.append((C, s, s))

        self.q_u = Encoder(self.specs[K], self.u_shape, config)
        self.p_u = RealNVPPrior(self.u_shape, num_couplings=config.flow_couplings, hidden_channels=config.flow_hidden,
                                squeezed_couplings=config.flow_squeezed)
        self.p_top = Decoder(self.u_shape, None, self.specs[K], config)
        # index k-1 holds the networks of level k
        self.q_z = nn.ModuleList(Encoder(self.specs[k - 1], self.z_shapes[k - 1], config) for k in range(1, K + 1))
        self.p_z = nn.ModuleList(
            ConditionalPrior(self.specs[k], self.u_shape if k == K else self.z_shapes[k], self.z_shapes[k - 1], config)
            for k in range(1, K + 1))
        self.p_y = nn.ModuleList(Decoder(self.z_shapes[k - 1], self.specs[k], self.specs[k - 1], config,
                                         kept_phase=self.chain.transforms[k - 1].kept_phase)
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

    def latent_names(self) -> List[str]:
        """Names of the latents, top first: ``u``, ``z1..zK`` (also their KL terms' names)."""
        return ["u"] + [f"z{k}" for k in range(1, self.levels + 1)]

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
            decoder_conditions=[None] * level + [self.p_y[k - 1].condition(levels[k], levels[k - 1]) for k in above],
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
        """Per-term bits per dimension of x (scalars, batch means) of single-sample ELBO terms.
        ``bpd`` is their sum, the negative ELBO in bits per dimension (the training loss)."""
        out = {name: nats_to_bpd(value.mean(), self.x_dims) for name, value in terms.items()}
        out["bpd"] = sum(out.values())
        return out

    # ------------------------------------------------------------------ importance sampling
    def sample_noise(self, batch: int, sample_index: int, seed: int, device) -> Noise:
        """Standard-normal noise for every latent of importance sample ``sample_index``, drawn from a
        generator seeded by ``(seed, sample_index)`` so that any chunking sees the same noise."""
        g = torch.Generator(device=device)
        g.manual_seed(seed * 1_000_003 + sample_index)
        shapes = dict(zip(self.latent_names(), [self.u_shape] + list(self.z_shapes)))
        return {name: torch.randn((batch,) + shape, generator=g, device=device) for name, shape in shapes.items()}

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, samples: int, chunk: int = 64, seed: int = 0,
                    progress=None, compile: bool = False) -> torch.Tensor:
        """Log importance weights ``ln p(x, y, z_s, u_s) - ln Q(z_s, u_s | x, y)``: float ``(B, samples)``.

        Samples are processed ``chunk`` at a time (memory is bounded by ``B * chunk``); the result does
        not depend on ``chunk`` because sample ``s`` always uses the noise of :meth:`sample_noise`.
        ``compile``: the per-chunk terms through ``torch.compile`` (:func:`selfvae.runtime.compile`), the
        networks channels-last (:func:`selfvae.nets.set_memory_format`, left set): the same weights up to
        float rounding, no weights frozen into the graph (a model that trains on is read afresh).
        """
        terms_from = self.terms_from
        if compile:
            from . import runtime
            from .nets import set_memory_format

            set_memory_format(self, torch.channels_last)
            terms_from = runtime.compile(self.terms_from)
        inference = self.infer(x)
        B = x.shape[0]
        out = torch.empty(B, samples, device=x.device)
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            per_sample = [self.sample_noise(B, start + i, seed, x.device) for i in range(n)]
            # (B * n) batch in repeat_interleave order: example b, samples start..start+n-1
            noise = {name: torch.stack([s[name] for s in per_sample], dim=1).flatten(0, 1) for name in per_sample[0]}
            terms = terms_from(inference.repeat(n), noise)
            out[:, start:start + n] = sum(terms.values()).view(B, n)
            if progress is not None:
                progress.update(n)
        return out


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
