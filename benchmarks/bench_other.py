"""The conv model, the log-likelihood estimator and the cold start (each skipped cleanly where absent)."""

from __future__ import annotations

import pytest

from benchmarks.cases import conv_case, log_likelihood_case, subprocess_case


def test_conv_step(benchmark, sizes, data, device):
    row = benchmark.pedantic(lambda: conv_case(data, batch=128, sizes=sizes, device=device), rounds=1, iterations=1)
    if "skipped" in row:
        pytest.skip(row["skipped"])
    assert row["quality_ok"], row


@pytest.mark.parametrize("impl", ["reference", "vaefunc-eager", "vaefunc-compiled", "vaefunc-compiled-auto"])
def test_log_likelihood(benchmark, impl, sizes, data, device):
    run = lambda: log_likelihood_case(impl, data, sizes=sizes, device=device)  # noqa: E731
    row = benchmark.pedantic(run, rounds=1, iterations=1)
    if "skipped" in row:
        pytest.skip(row["skipped"])
    assert row["quality_ok"], row  # finite and negative


@pytest.mark.parametrize("mode", ["first-step-eager", "first-step-compiled", "first-step-reference"])
def test_cold_start(benchmark, mode, sizes, device, tmp_path):
    if mode == "first-step-compiled" and not sizes.compile:
        pytest.skip("this preset does not compile")
    run = lambda: subprocess_case(mode, sizes=sizes, device=device, cache_dir=str(tmp_path / "inductor"))  # noqa: E731
    row = benchmark.pedantic(run, rounds=1, iterations=1)
    assert "skipped" not in row, row
    benchmark.extra_info.update(seconds=row["seconds"], process_seconds=row["process_seconds"])
    assert row["quality_ok"], row
