"""The compiled paths (``train --compile``, ``iw_bound(compile=True)``) and the channels-last
networks they use compute the same numbers as the eager, NCHW code, up to float rounding."""
import os
import signal

import pytest
import torch

from conftest import TINY_OVERRIDES
from selfvae.config import make_config, parse_overrides
from selfvae.evaluation import iw_bound
from selfvae.model import build_model
from selfvae.nets import WNConv2d, set_memory_format
from test_train import log_records, run_train, weights


def tiny_model(levels=1, seed=0):
    torch.manual_seed(seed)
    model = build_model(make_config("small", "downscale", levels, **parse_overrides(TINY_OVERRIDES)))
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    model.initialize(x)
    return model, x


def test_channels_last_networks_give_the_same_terms_and_gradients():
    model, x = tiny_model(levels=2)
    noise = model.sample_noise(x.shape[0], 0, 0, x.device)

    def terms_and_grads():
        model.zero_grad()
        terms = model.terms_from(model.infer(x), noise)
        sum(t.sum() for t in terms.values()).backward()
        return terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    terms, grads = terms_and_grads()
    set_memory_format(model, torch.channels_last)
    terms_cl, grads_cl = terms_and_grads()
    set_memory_format(model, torch.contiguous_format)
    assert terms.keys() == terms_cl.keys() and grads.keys() == grads_cl.keys()
    for name in terms:
        torch.testing.assert_close(terms_cl[name], terms[name], rtol=1e-5, atol=1e-3)
    for name in grads:
        torch.testing.assert_close(grads_cl[name], grads[name], rtol=1e-3, atol=1e-4)
    # the layout did change inside: a convolution's output is channels-last
    set_memory_format(model, torch.channels_last)
    conv = next(m for m in model.modules() if isinstance(m, WNConv2d))
    out = conv(torch.randn(2, conv.v.shape[1], 8, 8))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def test_compiled_importance_weighted_bound_is_the_same_bound(tmp_path, monkeypatch):
    """torch.compile'd sample terms: the same IW bound and ELBO of the same samples to float rounding
    (the same noise, the same estimator), still below that ELBO; a second call reuses the compilation
    and reads the weights afresh (no weights frozen into the graph)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model, x = tiny_model()
    eager = iw_bound(model, x[:4], 16, chunk=8, batch_size=4, progress=False)
    compiled = iw_bound(model, x[:4], 16, chunk=8, batch_size=4, progress=False, compile=True)
    assert abs(compiled["iw_bpd"] - eager["iw_bpd"]) < 1e-4
    assert abs(compiled["iw_elbo_bpd"] - eager["iw_elbo_bpd"]) < 1e-4
    assert compiled["iw_bpd"] <= compiled["iw_elbo_bpd"] + 1e-9
    with torch.no_grad():  # change the weights: the compiled path must see it
        for p in model.p_y[0].head.out.parameters():
            p.add_(0.05)
    changed_eager = iw_bound(model, x[:4], 16, chunk=8, batch_size=4, progress=False)
    changed = iw_bound(model, x[:4], 16, chunk=8, batch_size=4, progress=False, compile=True)
    assert abs(changed_eager["iw_bpd"] - eager["iw_bpd"]) > 1e-3
    assert abs(changed["iw_bpd"] - changed_eager["iw_bpd"]) < 1e-4


@pytest.mark.skipif(not os.environ.get("SELFVAE_SLOW_TESTS"),
                    reason="compiles a training step in a subprocess (~3 minutes on 2 cores); "
                           "set SELFVAE_SLOW_TESTS=1 to run it")
def test_a_compiled_run_trains_like_an_eager_one_and_resumes_without_compiling(tiny_cifar, tmp_path):
    """``train --compile``: the same per-step losses as the eager run to float rounding (the same
    latent samples from the same seed); ``--compile`` is not part of the run's config, so a compiled
    run killed after its step-3 checkpoint resumes eagerly and ends where the eager run ends."""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    eager = run_train(tmp_path / "eager", tiny_cifar)
    assert eager.returncode == 0, eager.stderr
    killed = run_train(tmp_path / "compiled", tiny_cifar, "--compile", env=env, faults={"FAULT_KILL_AT_STEP": "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_train(tmp_path / "compiled", tiny_cifar, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = ([r for r in log_records(tmp_path / name) if "bpd" in r] for name in ("eager", "compiled"))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):  # the same noise (random ops fall back to eager's generator): rounding only
        assert ra["bpd"] == pytest.approx(rb["bpd"], abs=1e-4), (ra, rb)
    mine, theirs = weights(tmp_path / "compiled"), weights(tmp_path / "eager")
    assert mine.keys() == theirs.keys()
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-3, atol=1e-4)
