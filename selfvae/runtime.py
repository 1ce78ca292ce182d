"""Process-wide settings that make the CPU path faster without changing any number.

:func:`reuse_large_allocations`: glibc's ``malloc`` serves blocks above its mmap threshold
(at most 32 MiB) with fresh ``mmap`` calls and unmaps them when freed, so every large tensor
of a step (the mixture parameters of a 512-sample IW chunk are ~100 MiB) is page-faulted in
anew, 4 KiB at a time, on every use. Raising the mmap and trim thresholds lets ``free`` keep
those blocks in the heap for the next allocation of the same size. Measured on the 2-core CPU
(small preset, 8 images x 64 samples in chunks of 32, the same log-weights bit for bit): with
one thread 135-141 samples/s against 95 without (590,000 page faults per pass -> under 1,000);
with two threads glibc's own threshold adapts after the first passes and the gain shrinks to
0-25 %. ``tests/test_runtime.py`` checks the faults and the numbers. The cost is that a process keeps
its peak heap instead of returning it to the system until it exits. Every ``python -m
selfvae.*`` command calls it; a library user may call it too. A no-op (returning False)
where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: every tensor of a step comes from the heap

_applied = False


def reuse_large_allocations() -> bool:
    """Keep freed large blocks in the heap for reuse (glibc ``mallopt``); True if applied."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _applied
