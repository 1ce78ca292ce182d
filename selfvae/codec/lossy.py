"""Lossy operating points: conditional reconstruction as a code.

A lossy file at level k sends ``y_k`` losslessly under the part of the model at and above
level k (bits-back, :mod:`.bitsback`, which also leaves the receiver the latent ``h_k`` above
it: ``z_{k+1}`` or ``u``), and optionally ``z_k, ..., z_1``. The receiver then goes down:

    for j = k..1:  z_j = received, or the mean of p(z_j | y_j^, h_j)
                   y_{j-1}^ = the rounded expected value of p(y_{j-1} | y_j^, z_j) (``decode="mean"``,
                              what files are written with), or its most likely value (``"mode"``,
                              the only choice of format version 1)

Every sent ``z_j`` is the posterior mean ``E q(z_j | y_{j-1}*)`` (computed by the sender from
the true level) rounded to a grid of step ``z_step``, and coded under the prior the receiver
can form: ``p(z_j | y_j^, h_j)`` with its *reconstructed* ``y_j^`` (exact only for j = k),
quantised to the same grid. The ``z``'s travel in a second stream with no bits-back: the
receiver pops ``z_k`` first, so the sender pushes ``z_1`` first.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np
import torch

from ..model import SelfVAE
from .ans import Stack, grid_limit
from .bitsback import likelihood, prior_z
from .container import DECODES

ChooseZ = Callable[[int, object], torch.Tensor]


def descend(model: SelfVAE, y_k: torch.Tensor, parent: torch.Tensor, level: int, choose_z: ChooseZ,
            decode: str = "mean") -> torch.Tensor:
    """From the received ``y_k`` and ``h_k`` down to x^ (uint8 ``(B, C, H, W)``); ``choose_z(j, prior)``
    gives ``z_j``; ``decode``: ``"mean"`` or ``"mode"`` of each level's likelihood."""
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
    y = y_k
    for j in range(level, 0, -1):
        z = choose_z(j, prior_z(model, j, y, parent))
        y = getattr(likelihood(model, j, y, z), decode)()  # .mean() or .mode()
        parent = z
    return y


@torch.no_grad()
def encode_chunk(model: SelfVAE, levels: List[torch.Tensor], parent: torch.Tensor, level: int, with_z: bool,
                 z_step: float, decode: str = "mean") -> Tuple[torch.Tensor, List[Tuple[np.ndarray, object]]]:
    """The receiver's reconstruction of one chunk and, with ``with_z``, the ``z`` symbols to send with
    their priors, in the receiver's order (z_k first)."""
    sent: List[Tuple[np.ndarray, object]] = []

    def choose(j: int, prior) -> torch.Tensor:
        if not with_z:
            return prior.mean
        mean = model.q_z[j - 1](levels[j - 1]).mean  # the sender knows the true y_{j-1}
        symbols = torch.round(mean.double() / z_step).clamp(-grid_limit(z_step), grid_limit(z_step))
        sent.append((symbols.reshape(-1).numpy().astype(np.int32), prior))
        return (symbols * z_step).float()

    return descend(model, levels[level], parent, level, choose, decode), sent


def push_z(stack: Stack, sent: List[List[Tuple[np.ndarray, object]]], z_step: float) -> None:
    """Push every chunk's ``z``'s so that the receiver pops chunk 0's ``z_k`` first."""
    for chunk in reversed(sent):
        for symbols, prior in reversed(chunk):
            stack.push_latent(symbols, prior.mean, prior.std, z_step)


@torch.no_grad()
def decode_chunk(model: SelfVAE, stack: Stack, y_k: torch.Tensor, parent: torch.Tensor, level: int, with_z: bool,
                 z_step: float, decode: str = "mean") -> torch.Tensor:
    def choose(j: int, prior) -> torch.Tensor:
        if not with_z:
            return prior.mean
        symbols = stack.pop_latent(prior.mean, prior.std, z_step)
        return torch.from_numpy(symbols.astype(np.float64) * z_step).float().reshape(prior.mean.shape)

    return descend(model, y_k, parent, level, choose, decode)
