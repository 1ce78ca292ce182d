"""Concept vectors in u, measured: does adding a "bright" direction make held-out images brighter?

    python experiments/edit_concept.py --model runs/default/latest.pt --out runs/edit_concept

The properties need no labels. The checkpoint's test split is ranked by a measure of each image
(``luminance``: mean of 0.299 R + 0.587 G + 0.114 B, 0..255; ``warmth``: mean of R - B); the top
third has the property ("bright", "warm"), the bottom third has not. Each third is split in two
halves, alternately along the ranking: the concept vector (:func:`selfvae.edit.concept_vector`)
comes from the first halves, and the second halves, which it never saw, are edited
(:func:`selfvae.edit.edit`, most likely values, z's at their prior means for ``regenerate``).

Printed (markdown, also written to ``OUT/edit_concept.md``), per property:

* the concept: images per set, its norm, the separation of the two fitting sets along it (in
  units of their pooled spread), and the fraction of held-out images on their own side of the
  midpoint between the fitting sets (does the direction generalise?);
* per strength, the mean measure of the edited held-out images: the bottom and top thirds'
  halves, with the levels below u regenerated and kept, and, as a control, kept but moved along
  a random direction of the same norm (any change of u, not this one); last, off target, the
  other property's measure of all edited held-out images (how entangled the two are in u).

Grids ``OUT/<property>_edit_<regenerate|keep>.png``: 4 held-out images of each third, one column per
strength.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable, Dict, List, Sequence

import torch

from selfvae import cli
from selfvae.checkpoint import load_model
from selfvae.edit import Concept, concept_vector, edit, posterior_means
from selfvae.images import save_rows

from common import write_report


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Mean Rec. 601 luma of uint8 ``(N, C, H, W)`` images (C = 1 or 3): float ``(N,)`` in 0..255."""
    x = images.double()
    if x.shape[1] == 1:
        return x.mean((1, 2, 3))
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean((1, 2))


def warmth(images: torch.Tensor) -> torch.Tensor:
    """Mean red minus blue of uint8 RGB ``(N, 3, H, W)`` images: float ``(N,)`` in -255..255."""
    x = images.double()
    return (x[:, 0] - x[:, 2]).mean((1, 2))


PROPERTIES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"luminance": luminance, "warmth": warmth}
NAMES = {"luminance": ("bright", "dark"), "warmth": ("warm", "cool")}


def split_thirds(measure: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Indices of the top and bottom thirds by ``measure``, each split alternately along the ranking
    into a fitting half and a held-out half."""
    order = torch.argsort(measure)
    third = len(order) // 3
    low, high = order[:third], order.flip(0)[:third]
    return {"fit_high": high[0::2], "held_high": high[1::2], "fit_low": low[0::2], "held_low": low[1::2]}


def held_out_accuracy(model, images: torch.Tensor, groups: Dict[str, torch.Tensor], concept: Concept) -> float:
    """Fraction of held-out images whose posterior mean of u, projected on the concept's direction,
    lies on their own side of the midpoint between the fitting sets' mean projections."""
    direction = (concept.vector / concept.vector.norm()).flatten().double()

    def projections(key: str) -> torch.Tensor:
        return posterior_means(model, images[groups[key]]).flatten(1).double() @ direction

    midpoint = (projections("fit_high").mean() + projections("fit_low").mean()) / 2
    right = (projections("held_high") > midpoint).sum() + (projections("held_low") < midpoint).sum()
    return float(right) / (len(groups["held_high"]) + len(groups["held_low"]))


def mean_measure(model, images: torch.Tensor, concept: Concept, strengths: Sequence[float], lower: str,
                 measure: Callable[[torch.Tensor], torch.Tensor], batch: int = 64) -> List[float]:
    """Mean ``measure`` of the edited ``images`` at each strength."""
    edited = torch.cat([edit(model, images[i:i + batch], concept, strengths, lower=lower)
                        for i in range(0, len(images), batch)], dim=1)  # (S, N, C, H, W)
    return [float(measure(e).mean()) for e in edited]


def run_property(model, images: torch.Tensor, name: str, strengths: Sequence[float], out: str,
                 seed: int) -> List[str]:
    """One property: its concept, the table lines, the grids."""
    measure = PROPERTIES[name]
    with_name, without_name = NAMES[name]
    groups = split_thirds(measure(images))
    concept = concept_vector(model, images[groups["fit_high"]], images[groups["fit_low"]])
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(concept.vector.shape, generator=g)
    control = Concept(vector=direction * (concept.norm / float(direction.norm())), num_with=0, num_without=0,
                      spread=float("nan"))
    held_high, held_low = images[groups["held_high"]], images[groups["held_low"]]
    held_both = torch.cat([held_low, held_high])
    columns = {
        f"regenerate, held-out {without_name}": mean_measure(model, held_low, concept, strengths, "regenerate", measure),
        f"regenerate, held-out {with_name}": mean_measure(model, held_high, concept, strengths, "regenerate", measure),
        f"keep, held-out {without_name}": mean_measure(model, held_low, concept, strengths, "keep", measure),
        f"keep, held-out {with_name}": mean_measure(model, held_high, concept, strengths, "keep", measure),
        "keep, random direction, all held-out": mean_measure(model, held_both, control, strengths, "keep", measure),
    }
    # off target: how the other properties move along this concept (entanglement)
    others = {f"keep, all held-out: {other}": mean_measure(model, held_both, concept, strengths, "keep", PROPERTIES[other])
              for other in PROPERTIES if other != name}
    lines = [f"### {name}: {with_name} (top third) minus {without_name} (bottom third)", "",
             f"Concept from {concept.num_with} {with_name} and {concept.num_without} {without_name} test images; "
             f"edited: the other {len(held_high)} and {len(held_low)}. |v| = {concept.norm:.3f} "
             f"(u has {concept.vector.numel()} dimensions); the fitting sets are {concept.separation:.2f} pooled "
             f"spreads apart along v; {100 * held_out_accuracy(model, images, groups, concept):.1f}% of the held-out "
             f"images lie on their own side of the midpoint.", "",
             f"Mean {name} of the originals: held-out {without_name} {float(measure(held_low).mean()):.1f}, held-out "
             f"{with_name} {float(measure(held_high).mean()):.1f}. Edited, per strength s (u + s v):", "",
             "| s | " + " | ".join(list(columns) + list(others)) + " |",
             "|---:|" + "---:|" * (len(columns) + len(others))]
    for i, s in enumerate(strengths):
        values = list(columns.values()) + list(others.values())
        lines.append(f"| {s:g} | " + " | ".join(f"{v[i]:.1f}" for v in values) + " |")
    shown = torch.cat([held_low[:4], held_high[:4]])
    labels = [f"{without_name} {i}" for i in range(len(held_low[:4]))] + [f"{with_name} {i}" for i in range(len(held_high[:4]))]
    for lower in ("regenerate", "keep"):
        edited = edit(model, shown, concept, strengths, lower=lower)
        rows = [torch.cat([shown[b:b + 1], edited[:, b]]) for b in range(len(shown))]
        path = save_rows(rows, os.path.join(out, f"{name}_edit_{lower}.png"), labels=labels,
                         column_labels=["input"] + [f"s = {s:g}" for s in strengths])
        print(f"wrote {path}", flush=True)
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a selfvae checkpoint")
    p.add_argument("--out", default="runs/edit_concept")
    p.add_argument("--properties", nargs="+", default=list(PROPERTIES), choices=list(PROPERTIES))
    p.add_argument("--strengths", nargs="+", type=float, default=[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    p.add_argument("--seed", type=int, default=0, help="seed of the random control direction")
    args = p.parse_args()

    model, state = load_model(args.model, map_location="cpu")
    model.eval()
    images, source = cli.dataset_images(state, model, None, None, "test", progress=False)
    os.makedirs(args.out, exist_ok=True)
    lines = [f"Model {args.model} ({model.config.transform or 'plain VAE'}, K = {model.levels}); "
             f"{len(images)} test images of '{source['dataset']}'. Most likely values; for 'regenerate' the z's "
             f"at their conditional prior means, for 'keep' the image's own posterior means.", ""]
    for name in args.properties:
        lines += run_property(model, images, name, args.strengths, args.out, args.seed)
    text = "\n".join(lines).rstrip()
    write_report(args.out, "edit_concept", text)


if __name__ == "__main__":
    main()
