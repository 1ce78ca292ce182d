"""The transform interface, the registry and the chain.

A transform ``d`` is deterministic, non-learnable and discrete: it maps an integer
image to an integer image, ``y_k = d_k(y_{k-1})`` with ``y_0 = x``.

Convention for every level (x included):

* a level is a ``torch.uint8`` tensor of shape ``(B, C, H, W)``;
* it holds integers in ``0 .. num_values - 1`` (``x`` has 256 values; ``bits:3``
  has 8, so its values are 0..7, not multiples of 32);
* :class:`LevelSpec` declares ``channels, height, width, num_values``; the model
  builds each level's likelihood from that spec.

Adding a transform is one file that subclasses :class:`Transform` and decorates
the class with :func:`register`, plus one import line in ``transforms/__init__.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Type

import numpy as np
import torch


class TransformError(ValueError):
    """Raised for unknown transforms, malformed or meaningless chains and bad input."""


@dataclass(frozen=True)
class LevelSpec:
    """Shape and alphabet of one level: ``(channels, height, width)``, values in ``0..num_values-1``."""

    channels: int
    height: int
    width: int
    num_values: int = 256

    @property
    def shape(self) -> tuple:
        return (self.channels, self.height, self.width)

    @property
    def dims(self) -> int:
        return self.channels * self.height * self.width


class Transform:
    """One deterministic discrete transform.

    Subclasses set ``name`` (the registry key), optionally parse an argument in
    ``__init__(arg: Optional[str])``, and implement:

    * :meth:`output_spec` -- the spec of the output given the input's spec; raises
      :class:`TransformError` when the input cannot be transformed (odd size, ...);
    * :meth:`apply` -- batched torch implementation on the input's device,
      ``(B, C, H, W)`` uint8 in ``0..n-1`` -> ``(B, C', H', W')`` uint8;
    * :meth:`reference` -- OpenCV/numpy reference of one image,
      ``(C, H, W)`` uint8 numpy -> ``(C', H', W')`` uint8 numpy, used by tests.

    ``repeatable = False`` marks transforms whose repetition adds nothing
    (a sketch of a sketch); the chain parser rejects chains where such a transform
    appears more than once. ``takes_argument = True`` makes the parser pass the text
    after ``':'`` to ``__init__`` (``bits:3``) instead of reading it as a repeat count;
    such a transform raises :class:`TransformError` when the argument is missing or
    malformed.

    ``kept_phase``: for a transform whose output is exactly one 2x2 phase of its input
    (``out == y[:, :, dy::2, dx::2]``, same values), that phase's index ``dy * 2 + dx``; else
    None. A phased likelihood (``selfvae.phases``) then knows that phase of the level below
    from the level above and codes only the other three.
    """

    name: str = ""
    repeatable: bool = True
    takes_argument: bool = False
    kept_phase: Optional[int] = None

    def __init__(self, arg: Optional[str] = None):
        if arg is not None:
            raise TransformError(f"transform '{self.name}' takes no argument, got '{self.name}:{arg}'")

    def output_spec(self, spec: LevelSpec) -> LevelSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, y: torch.Tensor, spec: LevelSpec) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reference(self, y: np.ndarray, spec: LevelSpec) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, y: torch.Tensor, spec: Optional[LevelSpec] = None) -> torch.Tensor:
        spec = spec or spec_of(y)
        check_level(y, spec, what=f"input of '{self}'")
        out_spec = self.output_spec(spec)  # raises on impossible input
        out = self.apply(y, spec)
        check_level(out, out_spec, what=f"output of '{self}'")
        return out

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


_REGISTRY: Dict[str, Type[Transform]] = {}


def register(cls: Type[Transform]) -> Type[Transform]:
    """Class decorator: make ``cls`` available under ``cls.name`` in chains."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"transform name '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def halved_spec(name: str, spec: LevelSpec) -> LevelSpec:
    """The spec of a 2x smaller level (same channels and values); :class:`TransformError` naming
    transform ``name`` unless height and width are even and at least 2."""
    if spec.height % 2 or spec.width % 2 or spec.height < 2 or spec.width < 2:
        raise TransformError(f"'{name}' cannot halve a {spec.height}x{spec.width} image: "
                             f"height and width must be even and at least 2")
    return LevelSpec(spec.channels, spec.height // 2, spec.width // 2, spec.num_values)


def available() -> List[str]:
    """Names of all registered transforms, sorted."""
    return sorted(_REGISTRY)


def spec_of(y: torch.Tensor, num_values: int = 256) -> LevelSpec:
    """The :class:`LevelSpec` of a ``(B, C, H, W)`` uint8 tensor."""
    check_level(y, None)
    return LevelSpec(y.shape[1], y.shape[2], y.shape[3], num_values)


def check_level(y: torch.Tensor, spec: Optional[LevelSpec], what: str = "image batch") -> None:
    """Raise :class:`TransformError` unless ``y`` is a uint8 ``(B, C, H, W)`` tensor matching ``spec``."""
    if not isinstance(y, torch.Tensor):
        raise TransformError(f"{what}: expected a torch.Tensor, got {type(y).__name__}")
    if y.dtype != torch.uint8:
        raise TransformError(f"{what}: expected dtype torch.uint8 with values 0..255, got {y.dtype}")
    if y.dim() != 4:
        raise TransformError(f"{what}: expected shape (B, C, H, W), got {tuple(y.shape)} (rank {y.dim()})")
    if spec is not None and tuple(y.shape[1:]) != spec.shape:
        raise TransformError(f"{what}: expected (B, {spec.channels}, {spec.height}, {spec.width}), got {tuple(y.shape)}")


class Chain:
    """A sequence of transforms ``d_1..d_K`` applied one after the other.

    ``chain(x)`` maps ``x`` (uint8, ``(B, C, H, W)``, 0..255) to the list of levels
    ``[y_1, ..., y_K]``; :meth:`specs` gives their declared specs.
    """

    def __init__(self, transforms: Sequence[Transform], text: str = ""):
        self.transforms = list(transforms)
        self.text = text or ",".join(str(t) for t in self.transforms)
        seen = set()
        for i, t in enumerate(self.transforms):
            if not t.repeatable and t.name in seen:
                if self.transforms[i - 1].name == t.name:
                    raise TransformError(f"chain '{self.text}': '{t.name}' of a '{t.name}' adds nothing; "
                                         f"'{t.name}' cannot follow itself")
                raise TransformError(f"chain '{self.text}': '{t.name}' of a '{t.name}' adds nothing, even with "
                                     f"other transforms in between; '{t.name}' may appear only once")
            seen.add(t.name)

    def __len__(self) -> int:
        return len(self.transforms)

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def specs(self, input_spec: LevelSpec) -> List[LevelSpec]:
        """Specs of ``y_1..y_K`` for an input of ``input_spec``; raises if impossible."""
        out, spec = [], input_spec
        for i, t in enumerate(self.transforms):
            try:
                spec = t.output_spec(spec)
            except TransformError as e:
                raise TransformError(f"chain '{self.text}', step {i + 1} ('{t}') on input "
                                     f"{input_spec.channels}x{input_spec.height}x{input_spec.width}: {e}") from None
            out.append(spec)
        return out

    def __call__(self, x: torch.Tensor, num_values: int = 256) -> List[torch.Tensor]:
        check_level(x, None, what="chain input")
        spec = LevelSpec(x.shape[1], x.shape[2], x.shape[3], num_values)
        specs = self.specs(spec)
        ys, y = [], x
        for i, (t, out_spec) in enumerate(zip(self.transforms, specs)):
            y = t.apply(y, spec)
            check_level(y, out_spec, what=f"output of step {i + 1} ('{t}') of chain '{self.text}'")
            ys.append(y)
            spec = out_spec
        return ys

    def reference(self, x: np.ndarray, num_values: int = 256) -> List[np.ndarray]:
        """OpenCV reference of the chain on one ``(C, H, W)`` uint8 image."""
        spec = LevelSpec(x.shape[0], x.shape[1], x.shape[2], num_values)
        specs = self.specs(spec)
        ys, y = [], x
        for t, out_spec in zip(self.transforms, specs):
            y = t.reference(y, spec)
            ys.append(y)
            spec = out_spec
        return ys


_ITEM = re.compile(r"^([a-z_][a-z0-9_]*)(?::([^,:\s]+))?$")


def parse_chain(text: str) -> Chain:
    """Parse a chain string such as ``"downscale:3"``, ``"bits:3"``, ``"sketch,downscale:2"``.

    Items are separated by commas. ``name:N`` repeats a transform N times when the
    transform takes no argument (``downscale:3``); for transforms with an argument it
    is the argument (``bits:3``, ``lowpass:0.25``). An empty string is the empty chain.
    """
    if not isinstance(text, str):
        raise TransformError(f"chain must be a string, got {type(text).__name__}")
    text = text.strip()
    if text == "":
        return Chain([], "")
    transforms: List[Transform] = []
    for raw in text.split(","):
        item = raw.strip()
        m = _ITEM.match(item)
        if not m:
            raise TransformError(f"malformed chain '{text}': item '{item}' is not 'name' or 'name:arg' "
                                 f"(known transforms: {', '.join(available())})")
        name, arg = m.group(1), m.group(2)
        if name not in _REGISTRY:
            raise TransformError(f"unknown transform '{name}' in chain '{text}'; known transforms: "
                                 f"{', '.join(available())}")
        cls = _REGISTRY[name]
        if getattr(cls, "takes_argument", False):
            transforms.append(cls(arg))
        else:
            repeat = 1
            if arg is not None:
                if not arg.isdigit() or int(arg) < 1:
                    raise TransformError(f"malformed chain '{text}': in '{item}', the count after ':' must be "
                                         f"a positive integer")
                repeat = int(arg)
            transforms.extend(cls() for _ in range(repeat))
    return Chain(transforms, text)
