"""Phase autoregression of a level's pixels: ``phases = 4`` in :class:`selfvae.config.ModelConfig`.

The paper's likelihoods ``p(y_{k-1} | y_k, z_k)`` are independent across pixels given the
condition: every pixel of x is predicted from the half-size image alone, never from its
neighbours, and that term carries most of the bits. With ``phases = 4`` a level of even size is
split into its four 2x2 phases (the pixels at ``(2i + dy, 2j + dx)`` for one ``(dy, dx)``) and
coded one phase after the other, each given the phases before it::

    p(v | features) = p(v_a | .) p(v_b | v_a, .) p(v_c | v_a, v_b, .) p(v_d | v_a, v_b, v_c, .)

in the order ``a = (0, 0), b = (1, 1), c = (0, 1), d = (1, 0)`` (:data:`ORDER`): the second phase
sees four diagonal neighbours, the last two see all four direct neighbours. Each phase is a
discretized logistic mixture (:class:`selfvae.distributions.DiscretizedLogisticMixture`): the
decoder's parameters at that phase's pixels plus a correction from a small conv net
(:class:`PhaseRefiner`) that sees the phases already known (at half resolution), so the
likelihood stays exactly normalised and ``phases = 4`` adds ~2 % of the network's work. In
training all four phases are evaluated at once from the true pixels (teacher forcing): one
mixture over the whole level. Sampling, the most likely value and the codec go phase by phase.

When the transform that made the level above copies this level's first phase (``subsample``:
``y_k = y_{k-1}[:, :, ::2, ::2]``, ``Transform.kept_phase``), that phase is *given*: it costs no
bits, only the other three phases are coded, and a level whose first phase disagrees with the
level above has probability zero (``PhasedMixture(given=...)``).

Phase tensors are ``(B, C, H/2, W/2)``; a level is ``(B, C, H, W)``, H and W even.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributions import DiscretizedLogisticMixture
from .nets import conv3x3, to_unit

#: Coding order of the phases, as indices ``dy * 2 + dx`` (``pixel_unshuffle`` order).
ORDER = (0, 3, 1, 2)
PHASES = len(ORDER)


def phase_of(level: torch.Tensor, index: int) -> torch.Tensor:
    """The pixels of phase ``index`` (``dy * 2 + dx``): ``(B, X, H, W) -> (B, X, H/2, W/2)``."""
    dy, dx = divmod(index, 2)
    return level[:, :, dy::2, dx::2]


def assemble(parts: List[torch.Tensor]) -> torch.Tensor:
    """Four phases ``(B, X, H/2, W/2)`` in index order ``dy * 2 + dx`` -> the level ``(B, X, H, W)``."""
    B, X, h, w = parts[0].shape
    return F.pixel_shuffle(torch.stack(parts, dim=2).reshape(B, X * PHASES, h, w), 2)


class PhaseRefiner(nn.Module):
    """The corrections of phases 2..4 of :data:`ORDER`: for step ``s``, a conv net on the ``s`` known
    phases (in ``[-1, 1]``, minus the decoder's mean offset where it has one) and the offset's four
    phases, giving ``params`` channels added to the decoder's parameters of phase ``ORDER[s]``.

    Each net: 3x3 conv -> ELU -> 3x3 conv -> ELU -> 1x1 conv, ``hidden`` wide, at half the level's
    resolution; its last conv starts at zero, so a new model starts as the decoder alone.
    """

    def __init__(self, channels: int, params: int, hidden: int, offset: bool):
        super().__init__()
        self.channels, self.offset = channels, offset
        extra = PHASES * channels if offset else 0
        self.nets = nn.ModuleList()
        for s in range(1, PHASES):
            last = nn.Conv2d(hidden, params, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.nets.append(nn.Sequential(conv3x3(s * channels + extra, hidden), nn.ELU(inplace=True),
                                           conv3x3(hidden, hidden), nn.ELU(inplace=True), last))

    def forward(self, step: int, known: List[torch.Tensor], offset: Optional[torch.Tensor]) -> torch.Tensor:
        """The correction of phase ``ORDER[step]`` (``1 <= step < 4``) from ``known``: the unit-scale
        values of phases ``ORDER[:step]``; ``offset``: the decoder's mean offset ``(B, C, H, W)`` or None."""
        inputs = list(known)
        if self.offset:
            offsets = [phase_of(offset, i) for i in range(PHASES)]
            inputs = [k - offsets[i] for k, i in zip(known, ORDER)] + offsets
        return self.nets[step - 1](torch.cat(inputs, dim=1))

    def teacher_forced(self, value: torch.Tensor, num_values: int, offset: Optional[torch.Tensor]) -> torch.Tensor:
        """The corrections of every phase given the true earlier phases of the integer level ``value``
        ``(B, C, H, W)``, put in place: ``(B, params, H, W)``, zero at the first phase. They depend on
        the data only (the level and the offset from the level above), never on a latent: an
        importance-weighted bound computes them once per image instead of once per sample
        (:class:`PhasedMixture`'s ``forced``)."""
        dtype = self.nets[0][-1].weight.dtype
        known = [to_unit(phase_of(value, i), num_values).to(dtype) for i in ORDER]
        corrections = [self(step, known[:step], offset) for step in range(1, PHASES)]
        parts = [None] * PHASES
        parts[ORDER[0]] = torch.zeros_like(corrections[0])
        for index, correction in zip(ORDER[1:], corrections):
            parts[index] = correction
        return assemble(parts)


class PhasedMixture:
    """A level's likelihood coded phase by phase (module docstring); the same interface as
    :class:`~selfvae.distributions.DiscretizedLogisticMixture` where the two agree (``shape``,
    ``log_prob``, ``log_prob_pixels``, ``sample``, ``mode``) and :meth:`phase` for coders.

    Args:
        params: float ``(B, P, H, W)``, the decoder's mixture parameters (mean offset included).
        refiner: the :class:`PhaseRefiner` of the decoder.
        offset: the decoder's mean offset ``(B, C, H, W)`` in ``[-1, 1]`` units, or None.
        channels, num_values, components, min_log_scale: as for the mixture.
        forced: optional ``(target, corrections)``: an integer level ``(B, C, H, W)`` and its
            :meth:`PhaseRefiner.teacher_forced` corrections ``(B, P, H, W)``, precomputed (the
            refiner sees data only); or the corrections of ``B / n`` images whose ``n`` samples
            each are consecutive in ``target`` (``repeat_interleave`` order), broadcast over them.
            The log-probability of ``target`` then reuses them; of any other value it computes its own.
        given: optional integer ``(B, C, H/2, W/2)``: the first phase (``ORDER[0]``) known exactly, the
            level above when its transform keeps that phase (``Transform.kept_phase``, e.g.
            ``subsample``). It is then not coded: the log-probability of a value whose first phase
            equals ``given`` is that of its other three phases, of any other value ``-inf``; the
            coders start at :attr:`first_step`, and sampling and the decodes take it as it is.
    """

    def __init__(self, params: torch.Tensor, refiner: PhaseRefiner, offset: Optional[torch.Tensor], channels: int,
                 num_values: int, components: int, min_log_scale: float = -7.0,
                 forced: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, given: Optional[torch.Tensor] = None):
        H, W = params.shape[-2:]
        if H % 2 or W % 2:
            raise ValueError(f"phases need an even level size, got {H}x{W}")
        if given is not None and tuple(given.shape) != (params.shape[0], channels, H // 2, W // 2):
            raise ValueError(f"the known first phase must have shape {(params.shape[0], channels, H // 2, W // 2)}, "
                             f"got {tuple(given.shape)}")
        self.params, self.refiner, self.offset, self.forced = params, refiner, offset, forced
        self.given = given
        self.channels, self.num_values, self.components = channels, num_values, components
        self.min_log_scale = min_log_scale

    @property
    def shape(self) -> tuple:
        B, _, H, W = self.params.shape
        return (B, self.channels, H, W)

    @property
    def first_step(self) -> int:
        """The first coded step: 1 when the first phase is :attr:`given`, else 0."""
        return 0 if self.given is None else 1

    def _mixture(self, params: torch.Tensor) -> DiscretizedLogisticMixture:
        return DiscretizedLogisticMixture(params, channels=self.channels, num_values=self.num_values,
                                          components=self.components, min_log_scale=self.min_log_scale)

    def _unit(self, value: torch.Tensor) -> torch.Tensor:
        return to_unit(value, self.num_values).to(self.params.dtype)

    def _phase_params(self, step: int, known: List[torch.Tensor]) -> torch.Tensor:
        params = phase_of(self.params, ORDER[step])
        if step == 0:
            return params
        return params + self.refiner(step, [self._unit(k) for k in known], self.offset)

    def phase(self, step: int, known: List[torch.Tensor]) -> DiscretizedLogisticMixture:
        """The mixture of phase ``ORDER[step]`` given ``known``: the integer values of phases
        ``ORDER[:step]``, each ``(B, C, H/2, W/2)``. What a coder pushes and pops, step by step."""
        if len(known) != step:
            raise ValueError(f"phase step {step} needs the {step} phases before it, got {len(known)}")
        return self._mixture(self._phase_params(step, known))

    def split(self, value: torch.Tensor) -> List[torch.Tensor]:
        """A level ``(B, C, H, W)`` -> its phases in coding order, each ``(B, C, H/2, W/2)``."""
        return [phase_of(value, i) for i in ORDER]

    def join(self, phases: List[torch.Tensor]) -> torch.Tensor:
        """Phases in coding order -> the level (inverse of :meth:`split`)."""
        parts = [None] * PHASES
        for i, part in zip(ORDER, phases):
            parts[i] = part
        return assemble(parts)

    def teacher_forced(self, value: torch.Tensor) -> DiscretizedLogisticMixture:
        """One mixture over the whole level whose every phase is conditioned on the true earlier
        phases of ``value``: its ``log_prob(value)`` is the phased log-likelihood of ``value``."""
        corrections = None
        if self.forced is not None:
            target, precomputed = self.forced
            if value is target or (value.shape == target.shape and value.dtype == target.dtype
                                   and torch.equal(value, target.to(value.device))):
                corrections = precomputed
        if corrections is None:
            corrections = self.refiner.teacher_forced(value, self.num_values, self.offset)
        # per-image corrections, each image's n >= 1 samples next to each other (repeat_interleave order)
        B = corrections.shape[0]
        params = self.params.view(B, -1, *self.params.shape[1:]) + corrections.to(self.params.dtype).unsqueeze(1)
        return self._mixture(params.view(self.params.shape))

    def log_prob_pixels(self, value: torch.Tensor) -> torch.Tensor:
        """Per-pixel log-probability of integer ``(B, C, H, W)`` given the earlier phases: ``(B, H, W)`` nats."""
        if tuple(value.shape) != self.shape:
            raise ValueError(f"value must have shape {self.shape} (B, C, H, W), got {tuple(value.shape)}")
        log_prob = self.teacher_forced(value).log_prob_pixels(value)
        if self.given is None:
            return log_prob
        # the first phase is certain where it equals the known one, impossible elsewhere
        first = ORDER[0]
        agrees = (phase_of(value, first) == self.given.to(value.dtype)).all(dim=1)
        agrees = agrees.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        H, W = log_prob.shape[-2:]
        is_first = torch.zeros(H, W, dtype=torch.bool, device=log_prob.device)
        is_first[first // 2::2, first % 2::2] = True
        known = torch.zeros((), dtype=log_prob.dtype, device=log_prob.device)
        impossible = torch.full((), float("-inf"), dtype=log_prob.dtype, device=log_prob.device)
        return torch.where(is_first, torch.where(agrees, known, impossible), log_prob)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Total log-probability of each image: integer ``(B, C, H, W)`` -> float ``(B,)`` nats."""
        return self.log_prob_pixels(value).sum(dim=(1, 2))

    def _sequential(self, draw, known: Optional[torch.Tensor], missing: Optional[torch.Tensor]) -> torch.Tensor:
        if (known is None) != (missing is None):
            raise ValueError("known and missing go together")
        phases: List[torch.Tensor] = []
        with torch.no_grad():
            for step, index in enumerate(ORDER):
                if step < self.first_step:  # the known first phase, whatever is missing
                    phases.append(self.given.to(torch.uint8))
                    continue
                value = draw(self.phase(step, phases))
                if known is not None:  # known pixels stay, and later phases are conditioned on them
                    value = torch.where(phase_of(missing, index), value, phase_of(known, index).to(value.dtype))
                phases.append(value)
        return self.join(phases)

    def sample(self, temperature: float = 1.0, generator: Optional[torch.Generator] = None,
               known: Optional[torch.Tensor] = None, missing: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One draw, phase by phase (each phase drawn given the drawn phases before it): exact
        ancestral sampling of this likelihood at temperature 1. ``(B, C, H, W)`` uint8.

        With ``known`` (integer ``(B, C, H, W)``) and ``missing`` (bool, broadcastable to it), only the
        missing pixels are drawn; the known ones are kept and condition the phases after them."""
        return self._sequential(lambda d: d.sample(temperature=temperature, generator=generator), known, missing)

    def mode(self, known: Optional[torch.Tensor] = None, missing: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Greedy most likely value, phase by phase: each phase the mixture's
        :meth:`~selfvae.distributions.DiscretizedLogisticMixture.mode` given the phases chosen
        before it. ``(B, C, H, W)`` uint8; ``known``/``missing`` as for :meth:`sample`."""
        return self._sequential(lambda d: d.mode(), known, missing)

    def mean(self, known: Optional[torch.Tensor] = None, missing: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Phase by phase, each phase the mixture's rounded conditional expectation
        (:meth:`~selfvae.distributions.DiscretizedLogisticMixture.mean`) given the phases chosen
        before it. ``(B, C, H, W)`` uint8; ``known``/``missing`` as for :meth:`sample`."""
        return self._sequential(lambda d: d.mean(), known, missing)
