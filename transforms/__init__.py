"""Deterministic, discrete image transforms that define the observed levels y_1..y_K.

>>> from transforms import parse_chain
>>> chain = parse_chain("downscale:2")       # y_1 = x at 1/2, y_2 = x at 1/4
>>> ys = chain(x)                            # x: uint8 (B, C, H, W), 0..255
>>> specs = chain.specs(LevelSpec(3, 32, 32))

See ``transforms/base.py`` for the conventions every level follows.
"""
from .base import (Chain, LevelSpec, Transform, TransformError, available, check_level, parse_chain,
                   register, spec_of)

# One import per transform file; importing registers it.
from . import bits, blur, downscale, gray, lowpass, sketch, subsample  # noqa: F401,E402

__all__ = ["Chain", "LevelSpec", "Transform", "TransformError", "available", "check_level",
           "parse_chain", "register", "spec_of"]
