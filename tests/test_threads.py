"""vaefunc.threads: the run's intra-op thread count, chosen, overridden, recorded and restored.

No test here times anything: the auto decision is tested with a stubbed timer
whose "seconds" depend on the thread count torch is set to.
"""

from __future__ import annotations

import functools
import json
import os

import pytest
import torch

import vaefunc
from vaefunc import _launch, cli, threads
from vaefunc.config import TrainConfig


class FakeClock:
    """A timer for :func:`threads.choose`: each start/stop pair reads ``cost[torch.get_num_threads()]`` seconds."""

    def __init__(self, cost: dict[int, float]):
        self.cost, self.now, self.started, self.calls = cost, 0.0, False, []

    def __call__(self) -> float:
        if self.started:  # the stop of a timed call
            self.now += self.cost[torch.get_num_threads()]
            self.calls.append(torch.get_num_threads())
        self.started = not self.started
        return self.now


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "_chosen", {})


@pytest.mark.parametrize("cost, chosen", [({1: 1.0, 2: 0.5}, 2), ({1: 1.0, 2: 0.95}, 1), ({1: 0.5, 2: 1.0}, 1)])
def test_choose_keeps_the_faster_count_and_restores_the_callers(cost, chosen, no_env):
    """All cores only when PREFER_MANY times faster than one; torch's count is the caller's after."""
    before = torch.get_num_threads()
    clock = FakeClock(cost)
    assert threads.choose(lambda: None, 2, timer=clock, busy=lambda: 0) == chosen
    assert torch.get_num_threads() == before
    assert clock.calls == [1, 2] * (threads.PROBE_STEPS + 1)  # alternating, a warm-up each first


def test_a_collapsed_count_ends_the_timing_at_once(no_env):
    """A step at all cores that takes GIVE_UP times one thread's is not timed again: one thread."""
    clock = FakeClock({1: 1.0, 2: 1.0 + threads.GIVE_UP})
    assert threads.choose(lambda: None, 2, timer=clock, busy=lambda: 0) == 1
    assert clock.calls == [1, 2]


def test_another_running_process_means_one_thread(no_env):
    """However much faster all the cores time, another process's running thread keeps the run on one."""
    seen = iter([0, 0] + [1] * threads.CONFIRM)
    clock = FakeClock({1: 1.0, 2: 0.1})
    assert threads.choose(lambda: None, 2, timer=clock, busy=lambda: next(seen)) == 1
    assert clock.calls == [1, 2]  # it stopped timing when it saw the other process


@pytest.mark.parametrize("blips, chosen", [(1, 2), (threads.CONFIRM // 2, 2), (threads.CONFIRM // 2 + 1, 1)])
def test_a_process_seen_for_a_moment_is_not_a_busy_core(blips, chosen, no_env):
    """A reading of another running thread is taken again: a majority of CONFIRM readings means busy."""
    seen = iter([0, 0] + [1] * blips + [0] * 100)
    readings = []

    def busy():
        readings.append(next(seen))
        return readings[-1]

    clock = FakeClock({1: 1.0, 2: 0.1})
    assert threads.choose(lambda: None, 2, timer=clock, busy=busy) == chosen
    assert len(readings) == (2 * (threads.PROBE_STEPS + 1) + threads.CONFIRM - 1 if chosen == 2 else 2 + threads.CONFIRM)


def test_others_running_reads_this_machine():
    n = threads.others_running()
    assert n is None or (isinstance(n, int) and n >= 0)


def test_the_choice_is_cached_per_key(no_env):
    assert threads.choose(lambda: None, 2, key="step", timer=FakeClock({1: 1.0, 2: 0.1}), busy=lambda: 0) == 2
    slower = FakeClock({1: 0.1, 2: 1.0})
    assert threads.choose(lambda: None, 2, key="step", timer=slower, busy=lambda: 0) == 2 and slower.calls == []
    assert threads.choose(lambda: None, 2, key="other", timer=slower, busy=lambda: 0) == 1


def test_resolve_override_environment_device_and_short_runs(monkeypatch, no_env):
    cpu, probe = torch.device("cpu"), lambda: pytest.fail("no timing expected")
    assert threads.resolve(3, device=cpu, total_steps=10**6, probe=probe) == 3  # named: no timing
    monkeypatch.setattr(threads, "caller_count", lambda: 2)
    assert threads.resolve(None, device=cpu, total_steps=threads.PROBE_MIN_STEPS - 1, probe=probe) == 1
    assert threads.resolve(None, device=torch.device("cuda"), total_steps=10**6, probe=probe) == torch.get_num_threads()
    assert threads.resolve(None, device=cpu, total_steps=10**6, distributed=True, probe=probe) == torch.get_num_threads()
    monkeypatch.setenv(threads.ENV, "2")
    assert threads.resolve(None, device=cpu, total_steps=10**6, probe=probe) == 2
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="VAEFUNC_THREADS must be an int >= 0"):
        threads.resolve(None, device=cpu, total_steps=10**6, probe=probe)
    monkeypatch.setattr(threads, "caller_count", lambda: 1)
    monkeypatch.delenv(threads.ENV)
    assert threads.resolve(None, device=cpu, total_steps=10**6, probe=probe) == 1


def test_train_config_threads():
    assert TrainConfig(threads=0).threads is None and TrainConfig().threads is None
    assert TrainConfig(threads=2).threads == 2 and TrainConfig(threads=2).to_dict()["threads"] == 2
    assert "threads" not in TrainConfig().to_dict()  # older runs' settings read the same
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads must be an int >= 0"):
            TrainConfig(threads=bad)


def _data(n=256, d=16):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(0))


def test_train_runs_on_the_named_count_and_restores_the_callers():
    """threads=N: the steps run on N threads (history says so); the caller's count is back after; the same
    seed and count repeat bit for bit."""
    before = torch.get_num_threads()
    params = vaefunc.VAE((16,), latent_dim=2, hidden=(8,)).init(seed=0)
    runs = [vaefunc.train(params, _data(), epochs=2, batch_size=32, compile=False, progress=False, threads=n)
            for n in (2, 1, 2)]  # fmt: skip
    assert [r.history[-1]["threads"] for r in runs] == [2, 1, 2]
    assert torch.get_num_threads() == before
    assert all(torch.equal(runs[0].params[k], runs[2].params[k]) for k in params)


def test_train_auto_times_its_step_and_records_the_choice(monkeypatch, no_env):
    """Auto on a 2-core count: the stubbed timer says 2 threads run the step 10x faster, so the run takes 2,
    on copies of the state (the result equals a threads=2 run's, bit for bit)."""
    monkeypatch.setattr(threads, "caller_count", lambda: 2)
    clock = FakeClock({1: 1.0, 2: 0.1})
    monkeypatch.setattr(threads, "choose", functools.partial(threads.choose, timer=clock, busy=lambda: 0))
    before = torch.get_num_threads()
    params = vaefunc.VAE((16,), latent_dim=2, hidden=(8,)).init(seed=0)
    kw = dict(epochs=8, batch_size=32, compile=False, progress=False)  # 64 steps: over PROBE_MIN_STEPS
    auto = vaefunc.train(params, _data(), **kw)
    assert clock.calls and auto.history[-1]["threads"] == 2 and torch.get_num_threads() == before
    named = vaefunc.train(params, _data(), threads=2, **kw)
    assert all(torch.equal(auto.params[k], named.params[k]) for k in params)
    clock.cost = {1: 0.1, 2: 1.0}
    assert vaefunc.train(params, _data(), **kw).history[-1]["threads"] == 2  # cached for this step: no new timing


def test_cli_threads_in_the_summary_metrics_and_restored(tmp_path, capsys, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    flags = ["--data", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--limit", "200",
             "--batch-size", "32", "--progress", "never"]  # fmt: skip
    assert cli.main(["train", *flags, "--threads", "2", "--out", "two"]) == 0
    assert "(eager, cpu, 2 threads;" in capsys.readouterr().out
    assert torch.get_num_threads() == before
    row = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["threads"] == 2 and json.loads((tmp_path / "two" / "config.json").read_text())["train"]["threads"] == 2
    assert cli.main(["train", *flags, "--out", "auto"]) == 0
    assert "(eager, cpu, auto: 1 thread;" in capsys.readouterr().out  # 6 steps: too short to time
    assert cli.main(["train", "--out", "auto", "--resume", "--epochs", "2", "--threads", "2", "--progress", "never"]) == 0
    assert "cpu, 2 threads;" in capsys.readouterr().out  # the count is not part of what a run is


def test_the_command_makes_openmp_threads_wait_passively(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _launch.passive_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _launch.passive_wait_policy()  # the user's choice stays
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_log_likelihood_runs_on_the_named_count_and_restores_the_callers(monkeypatch):
    """log_likelihood(threads=N) runs its chunks on N threads; the caller's count is back after; the same
    seed and count repeat bit for bit; a bad count is refused before any work."""
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    params, x = model.init(seed=0), _data()[:8]
    seen = []
    real = vaefunc.estimators.chunk_log_mean_exp
    monkeypatch.setattr(vaefunc.estimators, "chunk_log_mean_exp",
                        lambda *a: seen.append(torch.get_num_threads()) or real(*a))  # fmt: skip
    before = torch.get_num_threads()
    one = model.log_likelihood(params, x, k=20, chunk=10, progress=False, compile=False, threads=1)
    assert set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    again = model.log_likelihood(params, x, k=20, chunk=10, progress=False, compile=False, threads=1)
    assert torch.equal(one, again)
    seen.clear()
    two = model.log_likelihood(params, x, k=20, chunk=10, progress=False, compile=False, threads=2)
    assert set(seen) == {2} and torch.get_num_threads() == before
    torch.testing.assert_close(one, two)
    with pytest.raises(ValueError, match="threads"):
        model.log_likelihood(params, x, k=20, progress=False, threads=-1)


def test_log_likelihood_auto_times_a_chunk(monkeypatch, no_env):
    """Auto: the stubbed timer says 2 threads run a chunk 10x faster, so the estimate runs on 2 (with
    enough chunks to be worth timing); the timing draws no noise, so the numbers equal a threads=2 run's."""
    monkeypatch.setattr(threads, "caller_count", lambda: 2)
    clock = FakeClock({1: 1.0, 2: 0.1})
    monkeypatch.setattr(threads, "choose", functools.partial(threads.choose, timer=clock, busy=lambda: 0))
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    params, x = model.init(seed=0), _data()[:8]
    kw = dict(k=60, chunk=1, progress=False, compile=False)  # 60 chunks: over PROBE_MIN_STEPS
    auto = model.log_likelihood(params, x, **kw)
    assert clock.calls and set(clock.calls) == {1, 2}
    assert torch.equal(auto, model.log_likelihood(params, x, threads=2, **kw))
