"""selfvae.runtime: the allocator setting keeps large freed blocks for reuse, so the big tensors
of the next IW chunk are not page-faulted in again, and it changes no number."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    if sys.argv[1] == "on":
        from selfvae.runtime import reuse_large_allocations
        assert reuse_large_allocations() and reuse_large_allocations()  # idempotent
    from selfvae.config import make_config
    from selfvae.model import build_model
    torch.manual_seed(0)
    model = build_model(make_config("small", "downscale", 1, image_size=32, narrow_above=0, out_kernel=3)).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    model.initialize(x)
    with torch.no_grad():
        model.log_weights(x, 64, chunk=64)  # warm: a (128, 100, 32, 32) float tensor is 52 MB
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            w = model.log_weights(x, 64, chunk=64)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, repr(w.double().sum().item()))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_are_reused_and_the_numbers_stay():
    out = {}
    for mode in ("off", "on"):
        done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        faults, total = done.stdout.split()
        out[mode] = (int(faults), total)
    assert out["on"][1] == out["off"][1]  # bit-identical log-weights
    # without it every large tensor is a fresh mmap, faulted in 4 KiB at a time; with it heap blocks are reused
    # (a residue of a few thousand faults either way comes from the small tensors)
    assert out["off"][0] > 30_000 and out["on"][0] < out["off"][0] / 3, out
