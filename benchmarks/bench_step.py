"""Train-step throughput, vaefunc (eager, compiled) against the reference, with the roofline share."""

from __future__ import annotations

import pytest

from benchmarks import roofline
from benchmarks.cases import StepRunner, base_hidden, sync

IMPLS = ("reference", "vaefunc-eager", "vaefunc-compiled")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [32, 128, 1024])
def test_step(benchmark, impl, batch, sizes, data, device):
    if impl == "vaefunc-compiled" and not sizes.compile:
        pytest.skip("this preset does not compile")
    hidden = base_hidden(sizes)
    runner = StepRunner(impl, data, batch=batch, hidden=hidden, sizes=sizes, device=device)

    def run():
        runner.run_round()
        sync(device)

    benchmark.pedantic(run, rounds=sizes.rounds, warmup_rounds=1)
    layers = roofline.mlp_layers(sizes.d, (hidden,), sizes.latent)
    gemm = roofline.gemm_rate(batch, layers, device=device, min_seconds=0.2)
    per_step = benchmark.stats.stats.median / runner.steps
    benchmark.extra_info.update(examples_per_s=batch / per_step, roofline_share=gemm["seconds"] / per_step)
    q = runner.quality()
    assert q["quality_ok"], q  # the loss is finite and went down
