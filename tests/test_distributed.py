"""vaefunc.distributed: 2 gloo processes on loopback equal one process, and a dead rank stops the other."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaefunc

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
sys.path.insert(0, str(WORKER.parent))
import distributed_worker as W  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, out: Path, *, timeout: float = 60.0, env: dict | None = None, wait_for=(0, 1)):
    """Run 2 ranks of the worker as torchrun would; kill them all past ``timeout``.

    Returns the exit codes and outputs of the ranks in ``wait_for``; the others
    are killed once those have finished.
    """
    port = _free_port()
    procs = []
    for rank in range(2):
        rank_env = os.environ | (env or {}) | {
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(out)], env=rank_env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
    deadline, outputs = time.monotonic() + timeout, []
    try:
        for r in wait_for:
            outputs.append(procs[r].communicate(timeout=max(deadline - time.monotonic(), 0.1))[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank(s) {list(wait_for)} did not finish within {timeout} s: a hang")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [procs[r].returncode for r in wait_for], outputs


@pytest.mark.compile
def test_two_ranks_equal_single_process_training_on_the_same_global_batches(tmp_path):
    codes, outputs = _launch("train", tmp_path, env={"COMPILE": "1"}, timeout=120)
    assert codes == [0, 0], "\n".join(outputs)
    ranks = [load_file(tmp_path / f"float64_rank{r}.safetensors") for r in range(2)]
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), "the ranks' params diverged"
    single = vaefunc.train(W.params(torch.float64), W.data(torch.float64), compile=False, **W.CONFIG)
    # The same global batches and eps: only the order of the gradient sum differs.
    for k in single.params:
        torch.testing.assert_close(ranks[0][k], single.params[k], rtol=0, atol=1e-13)
    assert max((ranks[0][k] - W.params(torch.float64)[k]).abs().max().item() for k in ranks[0]) > 1e-3  # it trained
    # Only rank 0 calls on_epoch; the reported loss is the global batch's, equal on both ranks.
    logs = [(tmp_path / f"on_epoch_rank{r}.txt").read_text().split() for r in range(2)]
    assert logs[0][0] == str(W.CONFIG["epochs"]) and logs[1][0] == "0"
    assert logs[0][1] == logs[1][1]
    assert logs[0][2:] == logs[1][2:] == ["True", "3"]  # should_stop on one rank stops both at the same step
    assert float(logs[0][1]) == pytest.approx(single.history[-1]["loss"], rel=1e-12)
    # Compiled (the functional all_reduce inside one fullgraph graph), float32.
    compiled = [load_file(tmp_path / f"float32_rank{r}.safetensors") for r in range(2)]
    single32 = vaefunc.train(W.params(torch.float32), W.data(torch.float32), compile=False, **W.CONFIG)
    for k in single32.params:
        assert torch.equal(compiled[0][k], compiled[1][k])
        torch.testing.assert_close(compiled[0][k], single32.params[k], rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["die", "stall"])
def test_a_dead_or_stalled_rank_stops_the_other_with_a_clear_error(tmp_path, mode):
    """Rank 1 leaves after one epoch: it exits ("die": the connection resets at
    once) or goes silent ("stall": rank 0's collective times out after the 3 s
    process-group timeout set by setup(timeout=...))."""
    wait_for = (0,) if mode == "stall" else (0, 1)
    codes, outputs = _launch(mode, tmp_path, timeout=60, env={"TEST_TIMEOUT": "3"}, wait_for=wait_for)
    assert codes[0] == 17, outputs[0]  # rank 0 raised DistributedError instead of hanging or finishing
    assert "DistributedError: rank 0 of 2: the gradient all_reduce failed" in outputs[0]
    assert ("Connection" if mode == "die" else "Timed out") in outputs[0]
    if mode == "die":
        assert codes[1] == 3


def test_batch_size_must_split_evenly_across_ranks():
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        vaefunc.distributed.make_data_parallel_step(None, None, rank=0, world_size=2, batch_size=15)


def test_distributed_without_a_launcher_says_how_to_launch(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="launch with torchrun"):
        vaefunc.train(W.params(torch.float32), W.data(torch.float32), epochs=1, batch_size=16, distributed=True)


def test_one_all_reduce_per_step_and_a_world_of_one_equals_train(monkeypatch):
    """In this process, a gloo group of 1: count the collectives of a run."""
    import vaefunc.distributed as dp

    calls = []
    real = dp.funcol.all_reduce
    monkeypatch.setattr(dp.funcol, "all_reduce", lambda *a, **k: calls.append(a[0].numel()) or real(*a, **k))
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    try:
        kw = dict(W.CONFIG, epochs=1)
        result = vaefunc.train(W.params(torch.float64), W.data(torch.float64), compile=False, distributed=True, **kw)
    finally:
        torch.distributed.destroy_process_group()
    steps = W.N // W.CONFIG["batch_size"]
    n_params = sum(v.numel() for v in W.params(torch.float64).values())
    assert calls == [n_params + 4] * steps  # one buffer per step: every gradient and the 4 metrics
    # The distributed step applies the pure adam; so does train with an explicit
    # optimizer (train's own eager CPU loop uses the fused kernel, equal to rounding).
    lr = kw.get("lr", 1e-3)
    own = {k: v for k, v in kw.items() if k != "lr"}  # the optimizer holds the lr (a config lr beside it is refused)
    single = vaefunc.train(W.params(torch.float64), W.data(torch.float64), compile=False, optimizer=vaefunc.adam(lr),
                           **own)  # fmt: skip
    default = vaefunc.train(W.params(torch.float64), W.data(torch.float64), compile=False, **kw)
    for k in single.params:
        assert torch.equal(result.params[k], single.params[k])
        torch.testing.assert_close(result.params[k], default.params[k], rtol=1e-12, atol=1e-14)


def test_an_ensemble_trains_data_parallel_as_in_one_process(monkeypatch):
    """train_many(..., distributed=True) in a gloo group of 1: the vmapped members' gradients are
    all-reduced as one buffer, and the run equals the same train_many in one process
    (to rounding: the distributed step applies the pure adam, train_many the fused kernel)."""
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    stacked = vaefunc.init_many(3, W.SHAPE, latent_dim=W.LATENT, hidden=W.HIDDEN, seed=3, dtype=torch.float64)
    kw = dict(W.CONFIG, epochs=1, compile=False)
    try:
        result = vaefunc.train_many(stacked, W.data(torch.float64), distributed=True, **kw)
    finally:
        torch.distributed.destroy_process_group()
    single = vaefunc.train_many(stacked, W.data(torch.float64), **kw)
    assert len(result.history) == 3  # one history per member
    assert [h[-1]["loss"] for h in result.history] == pytest.approx([h[-1]["loss"] for h in single.history], rel=1e-12)
    for k in single.params:
        assert result.params[k].shape[0] == 3
        torch.testing.assert_close(result.params[k], single.params[k], rtol=1e-12, atol=1e-14)
    assert not torch.equal(result.params["encoder.0.weight"], stacked["encoder.0.weight"])  # it trained


def test_each_rank_takes_its_rows_of_the_batch_axis_for_elbo_and_iwae_eps(monkeypatch):
    """Rank 1 of 2 differentiates rows 8:16 of x and of eps's batch axis, (b, z) or (k, b, z)."""
    import vaefunc.distributed as dp

    monkeypatch.setattr(dp.funcol, "all_reduce", lambda t, op, group: 2 * t)  # two ranks that agree
    seen = []

    def loss_fn(params, x, eps, beta):
        seen.append((x, eps))
        return (params["w"] * x.sum()).sum() + 0 * eps.sum(), {}

    opt = vaefunc.sgd(1.0)
    step = dp.make_data_parallel_step(loss_fn, opt, rank=1, world_size=2, batch_size=16)
    x = torch.arange(16.0)[:, None].expand(16, 3)
    for eps in (torch.randn(16, 2), torch.randn(5, 16, 2)):
        params, _, _ = step({"w": torch.zeros(())}, opt.init({"w": torch.zeros(())}), x, eps, torch.tensor(1.0))
        assert torch.equal(seen[-1][0], x[8:16]) and torch.equal(seen[-1][1], eps[..., 8:16, :])
        assert params["w"] == -x[8:16].sum()  # sum over 2 ranks / 2 = this rank's gradient


@pytest.mark.parametrize("schedule", [vaefunc.free_bits(0.5), vaefunc.capacity_annealing(5.0, 100)])
def test_kl_schedules_nonlinear_in_the_batch_mean_are_refused(schedule):
    with pytest.raises(ValueError, match="mean over examples"):
        vaefunc.train(W.params(torch.float32), W.data(torch.float32), epochs=1, batch_size=16, kl_schedule=schedule,
                      distributed=True)  # fmt: skip


def test_the_command_line_under_torchrun_equals_a_single_process_run(tmp_path):
    """`torchrun --nproc-per-node 2 -m vaefunc train ...`: rank 0 writes the run, which equals one process's."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "tiny.npz", images=(digits.images[:240] * 16).clip(0, 255).astype(np.uint8),
             labels=digits.target[:240])  # fmt: skip
    args = ["train", "--data", "tiny.npz", "--epochs", "2", "--latent-dim", "2", "--hidden", "16",
            "--batch-size", "16", "--device", "cpu", "--compile", "no", "--progress", "never"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                        "OMP_NUM_THREADS": "1"}  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]  # fmt: skip
    dp = subprocess.run([*launcher, "-m", "vaefunc", *args, "--out", "runs/dp"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dp.returncode == 0, dp.stdout + dp.stderr
    one = subprocess.run([sys.executable, "-m", "vaefunc", *args, "--out", "runs/one"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert one.returncode == 0, one.stderr
    a, b = (vaefunc.load(tmp_path / f"runs/{run}/checkpoint.safetensors") for run in ("dp", "one"))
    for k in b.params:
        torch.testing.assert_close(a.params[k], b.params[k], rtol=0, atol=1e-5)
    metrics = (tmp_path / "runs/dp/metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2  # one line per epoch: only rank 0 wrote
