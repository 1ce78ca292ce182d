"""Editing images with concept vectors in u, the top latent.

Two sets of images, one with a property and one without, define a *concept vector*: the mean
over the first set of the posterior means ``E q(u | y_K)`` minus the same mean over the second
(:func:`concept_vector`). An edit adds ``s`` times it to an image's posterior mean of u and decodes
(:func:`edit`). A strength is a multiple of the vector itself: ``s = 1`` moves u by the whole
difference between the two sets' means, ``s = 0`` leaves it where it is, ``s < 0`` moves it away
from the property. :attr:`Concept.separation` says how far apart the two sets are along the vector,
in units of their spread: near 0, the property is hardly in u and no strength will show it.

What lies below u is chosen by ``lower``:

``"regenerate"``  the generative path from the edited u: ``y_K ~ p(y_K | u')``, every z at its
                  conditional prior mean (``temperature`` 0) or drawn, and every y below decoded
                  from them. Shows what the model puts in u alone: the image's own details, which
                  the z's hold, are replaced by typical ones (``s = 0`` is :func:`~selfvae.modes.reconstruct1`).
``"keep"``        the image's own z's, the posterior means of ``q(z_k | y_{k-1}*)``, are kept while
                  the y's are decoded from the edited u through them. Shows the edit applied to
                  this image, its details kept (``s = 0`` is :func:`~selfvae.modes.reconstruct2`
                  with the posterior means).

Images enter as uint8 ``(B, C, H, W)`` in 0..255 at x's spec and leave the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import modes
from .checkpoint import atomic_save
from .evaluation import evaluating
from .model import SelfVAE

LOWER = ("regenerate", "keep")


@dataclass
class Concept:
    """A direction in u and how it was found.

    vector: float ``(*u_shape)`` on the CPU: mean of ``E q(u | y_K)`` over the images with the
        property minus the same over the images without it.
    num_with, num_without: the number of images in each set.
    spread: the pooled within-set standard deviation of the posterior means projected on the
        vector's direction (``nan`` when it is undefined: a zero vector, or one image per set).
    """

    vector: torch.Tensor
    num_with: int
    num_without: int
    spread: float

    @property
    def norm(self) -> float:
        """Euclidean length of the vector (u's units)."""
        return float(self.vector.norm())

    @property
    def separation(self) -> float:
        """Distance between the two sets' means along the vector, in units of their spread."""
        return self.norm / self.spread if self.spread > 0 else math.nan

    def to_dict(self) -> Dict:
        """Plain values for ``torch.save`` (loadable with ``weights_only=True``)."""
        return {"vector": self.vector, "num_with": self.num_with, "num_without": self.num_without,
                "spread": self.spread, "norm": self.norm, "separation": self.separation}

    @classmethod
    def from_dict(cls, d: Dict) -> "Concept":
        return cls(vector=d["vector"], num_with=int(d["num_with"]), num_without=int(d["num_without"]),
                   spread=float(d["spread"]))


def posterior_means(model: SelfVAE, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``E q(u | y_K)`` of uint8 images ``(N, C, H, W)`` at x's spec, in batches (eval mode, no
    gradients): float ``(N, *u_shape)`` on the CPU."""
    device = next(model.parameters()).device
    with evaluating(model):
        return torch.cat([modes.encode_u(model, images[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(images), batch_size)])


def concept_vector(model: SelfVAE, with_images: torch.Tensor, without_images: torch.Tensor,
                   batch_size: int = 64) -> Concept:
    """The concept vector of a property from uint8 images ``(N, C, H, W)`` with it and ``(M, C, H, W)``
    without it (both at x's spec, N, M >= 1): see :class:`Concept`."""
    for name, images in (("with", with_images), ("without", without_images)):
        if len(images) == 0:
            raise ValueError(f"concept_vector: no images {name} the property")
    means_with = posterior_means(model, with_images, batch_size).double()
    means_without = posterior_means(model, without_images, batch_size).double()
    vector = means_with.mean(0) - means_without.mean(0)
    return Concept(vector=vector.float(), num_with=len(with_images), num_without=len(without_images),
                   spread=pooled_spread(means_with, means_without, vector))


def pooled_spread(a: torch.Tensor, b: torch.Tensor, vector: torch.Tensor) -> float:
    """Pooled standard deviation of the rows of ``a`` and ``b`` (``(N, ...)``, ``(M, ...)``) projected on
    ``vector``'s direction, each set about its own mean."""
    norm = vector.norm()
    dof = len(a) + len(b) - 2
    if norm == 0 or dof <= 0:
        return math.nan
    direction = (vector / norm).flatten()
    pa, pb = a.flatten(1) @ direction, b.flatten(1) @ direction
    squares = ((pa - pa.mean()) ** 2).sum() + ((pb - pb.mean()) ** 2).sum()
    return float((squares / dof).sqrt())


@torch.no_grad()
def edit(model: SelfVAE, x: torch.Tensor, concept: Concept, strengths: Sequence[float], lower: str = "regenerate",
         decode: str = "mode", temperature: float = 0.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Decode ``u' = E q(u | y_K(x)) + s * concept.vector`` for each strength ``s``.

    x: uint8 ``(B, C, H, W)`` at x's spec. ``lower``: ``"regenerate"`` or ``"keep"`` (see the module
    docstring). ``decode``: every level's most likely value (``mode``) or a draw (``sample``);
    ``temperature``: of the drawn z's (``regenerate``; 0 takes their conditional prior means) and
    drawn levels. With a ``generator``, every strength uses the same draws, so that the columns
    differ by the edit alone. Returns uint8 ``(S, B, C, H, W)``.
    """
    if lower not in LOWER:
        raise ValueError(f"lower must be one of {', '.join(LOWER)}, got '{lower}'")
    if tuple(concept.vector.shape) != tuple(model.u_shape):
        raise ValueError(f"the concept vector has shape {tuple(concept.vector.shape)}, this model's u has "
                         f"{tuple(model.u_shape)}")
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ValueError("edit needs at least one strength")
    with evaluating(model):
        inference = model.infer(x)
        u = inference.q_u.mean
        fixed = ({k: inference.q_z[k - 1].mean for k in range(1, model.levels + 1)} if lower == "keep" else None)
        vector = concept.vector.to(u)
        start = generator.get_state() if generator is not None else None
        edited = []
        for s in strengths:
            if start is not None:
                generator.set_state(start)
            edited.append(modes.from_u(model, u + s * vector, decode, temperature, generator, fixed_z=fixed)[0])
    return torch.stack(edited)


def save_concept(concept: Concept, path: str, **record) -> str:
    """Write a concept (with ``record``: where it came from, e.g. the folders) to ``path`` with
    ``torch.save``, atomically; returns the path. Read it back with :func:`load_concept`."""
    atomic_save({**record, **concept.to_dict()}, path)
    return path


def load_concept(path: str) -> Tuple[Concept, Dict]:
    """A concept written by :func:`save_concept` and everything stored with it."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    return Concept.from_dict(stored), stored
