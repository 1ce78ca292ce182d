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

:func:`compile`: ``torch.compile`` with its caches in a folder kept across runs
(``~/.cache/selfvae/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so that a machine pays
the compilation's minutes once: on the 2-core CPU the small preset's training step compiled in
115-180 s the first time and loaded in 24-30 s in later processes (``experiments/benchmark.py
--compile``).

:func:`cpu_name` and :func:`cpu_bf16_kernels`: what a timed run records of the CPU, and whether
bf16 autocast pays on it (``train`` warns where it does not).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
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


COMPILE_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "selfvae", "inductor")


def persistent_compile_cache() -> str:
    """Keep torch.compile's caches (inductor's compiled graphs, AOT autograd's) in
    ``TORCHINDUCTOR_CACHE_DIR``, set to :data:`COMPILE_CACHE` unless already set; returns the folder."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", COMPILE_CACHE)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._functorch.config as functorch_config  # they read the variables above at import
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def compile(fn):  # noqa: A001 - the one entry point for torch.compile in this project
    """``torch.compile(fn)`` with the persistent cache of :func:`persistent_compile_cache`, drawing
    random numbers as eager mode does (the same seed gives the same samples compiled or not)."""
    import torch

    import torch._inductor.config as inductor_config

    persistent_compile_cache()
    # random ops (the latents' noise) through aten, as in eager mode: a compiled run draws the same
    # samples from the same seed (inductor's own generator would draw others)
    inductor_config.fallback_random = True
    return torch.compile(fn)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name`` on Linux; elsewhere what
    :func:`platform.processor` knows, else the architecture), for the records of timed runs."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_kernels() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU: AVX-512 (natively with its BF16
    instructions or AMX; emulated with plain AVX-512), as ``torch.ops.mkldnn._is_mkldnn_bf16_supported``.

    Without them (AVX2 CPUs), bf16 autocast converts operands to and from float32 outside the
    kernels and runs far slower than fp32: on 2 AMD EPYC AVX2 cores the small preset's compiled training step ran
    at 6.9 images/s in bf16 against 51.0 in fp32 (``experiments/benchmark.py``, 2026-12-06)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the query: the same condition, asked directly
        return bool(getattr(torch.cpu, "_is_avx512_supported", lambda: False)())
