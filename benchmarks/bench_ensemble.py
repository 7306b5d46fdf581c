"""Throughput of K VAEs trained at once (one vmapped step) against K separate runs.

For K in (1, 4, 16, 64): one step of K stacked 784-400-20 models as
``train_many`` runs it, against K single-model steps one after another as
``train`` runs them (what K separate runs do); both update their own copies
of the state in place (eager on a CPU, with the fused Adam update). Both train the same K models on the same batch of 128 with
Adam; a round is one ensemble step, or K single steps. The reported per-model
cost is a round's time / K; examples/s per model is 128 / that.

    python -m pytest benchmarks/bench_ensemble.py -o python_files='bench_*.py' -p no:cacheprovider

Environment: ``VAEFUNC_BENCH_DEVICE`` (default: cuda when available, else cpu),
``VAEFUNC_BENCH_COMPILE=1`` to time ``torch.compile(fullgraph=True)`` steps
(the compile happens in the warm-up round, not timed), ``VAEFUNC_BENCH_K`` to
pick the Ks (e.g. ``1,4``). Quality band: the ensemble's member 0 equals the
single step within float tolerance, and the losses are finite.
"""

from __future__ import annotations

import os

import pytest
import torch

import vaefunc
from vaefunc.donate import owned
from vaefunc.ensemble import loop_step, make_ensemble_step
from vaefunc.losses import make_elbo_loss
from vaefunc.optim import adam
from vaefunc.step import make_step
from vaefunc.train import loop_step as train_loop_step

K_VALUES = tuple(int(k) for k in os.environ.get("VAEFUNC_BENCH_K", "1,4,16,64").split(","))
DEVICE = os.environ.get("VAEFUNC_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
COMPILE = os.environ.get("VAEFUNC_BENCH_COMPILE") == "1"
B, D, Z, H, LR = 128, 784, 20, (400,), 1e-3
ROUNDS, WARMUP = 5, 1


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _inputs(k: int):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(B, D, generator=gen) > 0.5).float().to(DEVICE)
    eps = torch.randn(B, Z, generator=gen).to(DEVICE)
    params = vaefunc.init_many(k, (D,), latent_dim=Z, hidden=H, seed=0, device=DEVICE)
    return params, x, eps, torch.ones(k, device=DEVICE)


def _record(benchmark, k: int, kind: str) -> None:
    benchmark.extra_info.update({"k": k, "kind": kind, "device": DEVICE, "compile": COMPILE, "batch": B})
    if benchmark.stats is not None:
        per_model = benchmark.stats.stats.median / k
        benchmark.extra_info |= {"seconds_per_model_step": per_model, "examples_per_s_per_model": B / per_model,
                                 "examples_per_s_total": B * k / benchmark.stats.stats.median}  # fmt: skip


@pytest.mark.parametrize("k", K_VALUES)
def test_ensemble_step(benchmark, k):
    """K models in ONE vmapped step (shared batch and noise)."""
    params, x, eps, beta = _inputs(k)
    opt = adam(LR)
    # The step train_many runs: its own copies of the state, advanced in place.
    step = loop_step(make_elbo_loss(), opt, shared_data=True, compiled=COMPILE, device_type=torch.device(DEVICE).type)
    state = owned((params, opt.init(params)))

    def round_():
        *_, metrics = step(*state, x, eps, beta)
        _sync()
        return metrics

    metrics = benchmark.pedantic(round_, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert bool(torch.isfinite(metrics["loss"]).all())
    # Quality band: member 0 of one ensemble step equals one single step.
    one = {k_: v[0] for k_, v in params.items()}
    single = make_step(make_elbo_loss(), opt)(one, opt.init(one), x, eps, beta[0])[0]
    first = make_ensemble_step(make_elbo_loss(), opt)(params, opt.init(params), x, eps, beta)[0]
    for key in single:
        torch.testing.assert_close(first[key][0], single[key], rtol=0, atol=1e-5)
    _record(benchmark, k, "ensemble")


@pytest.mark.parametrize("k", K_VALUES)
def test_separate_steps(benchmark, k):
    """K models as K separate runs: K single-model steps one after another."""
    params, x, eps, beta = _inputs(k)
    opt = adam(LR)
    # The step train runs, on state each run owns.
    _, advance = train_loop_step(make_elbo_loss(), compiled=COMPILE, device_type=torch.device(DEVICE).type)
    runs = [owned((m, opt.init(m))) for m in vaefunc.unstack(params)]

    def round_():
        for run in runs:
            metrics = advance(*run, x, eps, beta[0])
        _sync()
        return metrics

    metrics = benchmark.pedantic(round_, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert bool(torch.isfinite(metrics["loss"]))
    _record(benchmark, k, "separate")
