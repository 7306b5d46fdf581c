"""A whole epoch at batch 128: vaefunc.train (eager, compiled, streamed from a Dataset) against the reference loop."""

from __future__ import annotations

import pytest

from benchmarks.cases import epoch_case


@pytest.mark.parametrize("impl", ["reference", "vaefunc-eager", "vaefunc-compiled", "vaefunc-streamed"])
def test_epoch(benchmark, impl, sizes, data, device):
    if impl == "vaefunc-compiled" and not sizes.compile:
        pytest.skip("this preset does not compile")
    row = benchmark.pedantic(lambda: epoch_case(impl, data, sizes=sizes, device=device), rounds=1, iterations=1)
    benchmark.extra_info.update({k: row[k] for k in ("examples_per_s", "epoch_seconds", "wall_seconds")})
    assert row["quality_ok"], row  # the loss is finite and went down
