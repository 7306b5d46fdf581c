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
from vaefunc.optim import adam
from vaefunc.step import make_ensemble_step, make_step
from vaefunc.training import setup

K_VALUES = tuple(int(k) for k in os.environ.get("VAEFUNC_BENCH_K", "1,4,16,64").split(","))
DEVICE = os.environ.get("VAEFUNC_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
COMPILE = os.environ.get("VAEFUNC_BENCH_COMPILE") == "1"
B, D, Z, H, LR = 128, 784, 20, (400,), 1e-3
ROUNDS, WARMUP = 5, 1


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


MODEL = vaefunc.VAE((D,), latent_dim=Z, hidden=H)


def _inputs(k: int):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(B, D, generator=gen) > 0.5).float().to(DEVICE)
    params = vaefunc.init_many(k, model=MODEL, seed=0, device=DEVICE)
    return params, x


def _runner(params, x, members):
    """The runner train (members None) or train_many builds, with its feed's first batch."""
    config = vaefunc.TrainConfig(batch_size=B, compile=COMPILE, progress=False, device=DEVICE, lr=LR)
    run = setup(params, x, model=MODEL, config=config, members=members)
    return run.runner, run.feed.batch(run.feed.draw(0), 0)


def _record(benchmark, k: int, kind: str) -> None:
    benchmark.extra_info.update({"k": k, "kind": kind, "device": DEVICE, "compile": COMPILE, "batch": B})
    if benchmark.stats is not None:
        per_model = benchmark.stats.stats.median / k
        benchmark.extra_info |= {"seconds_per_model_step": per_model, "examples_per_s_per_model": B / per_model,
                                 "examples_per_s_total": B * k / benchmark.stats.stats.median}  # fmt: skip


@pytest.mark.parametrize("k", K_VALUES)
def test_ensemble_step(benchmark, k):
    """K models in ONE vmapped step (shared batch and noise), as train_many runs it."""
    params, x = _inputs(k)
    runner, batch = _runner(params, x, k)

    def round_():
        metrics = runner.advance(batch)
        _sync()
        return metrics

    metrics = benchmark.pedantic(round_, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert bool(torch.isfinite(metrics["loss"]).all())
    # Quality band: member 0 of one ensemble step equals one single step.
    opt, loss = adam(LR), MODEL.loss()
    one = {k_: v[0] for k_, v in params.items()}
    args = (batch.x, batch.eps, batch.beta[0], batch.capacity[0])
    single = make_step(loss, opt)(one, opt.init(one), *args)[0]
    first = make_ensemble_step(loss, opt)(params, opt.init(params), *args[:2], batch.beta, batch.capacity)[0]
    for key in single:
        torch.testing.assert_close(first[key][0], single[key], rtol=0, atol=1e-5)
    _record(benchmark, k, "ensemble")


@pytest.mark.parametrize("k", K_VALUES)
def test_separate_steps(benchmark, k):
    """K models as K separate runs: K single-model steps one after another, as train runs them."""
    params, x = _inputs(k)
    runs = [_runner(m, x, None) for m in vaefunc.unstack(params)]

    def round_():
        for runner, batch in runs:
            metrics = runner.advance(batch)
        _sync()
        return metrics

    metrics = benchmark.pedantic(round_, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert bool(torch.isfinite(metrics["loss"]))
    _record(benchmark, k, "separate")
