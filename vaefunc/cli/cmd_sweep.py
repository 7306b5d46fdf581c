"""``vaefunc sweep``: m models trained at once by :func:`vaefunc.train_many`, one per --beta, --lr or --seed.

Every model has the same spec and data; ``--beta``, ``--lr`` and ``--seed``
take one value (shared) or one per model. With one seed every model starts
from the same init and sees the same batches and noise, so the models differ
only in their beta and lr (common random numbers); with a seed per model,
model i is initialised and fed from its own seed. After every epoch each
model's test ELBO goes to metrics.jsonl (one line per model, its index under
"model"); at the end :func:`vaefunc.sweep.rate_distortion` measures each
model on the test split, rate_distortion.png plots them, and a table is printed.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, cast

import torch

from .. import sweep
from .._types import Params
from ..ensemble import stack, train_many, unstack
from ..spec import VAE
from . import datasets, rundir, session, settings
from .cmd_train import architecture, epoch_row, test_metrics

T = TypeVar("T")


def run(args: Any) -> int:
    """Train (or resume) a sweep; returns the exit code."""
    t_start = time.perf_counter()
    job = session.open_run(args, command="sweep")
    model, config = job.model, job.settings.config
    if job.resume is not None:
        m = cast(int, rundir.members(job.resume))  # a sweep's checkpoint (open_run refuses one model's)
    else:  # the lists of the settings: the flags', the --config file's, or beta 1 for iwae and KL schedules
        m = settings.members_of(config)
    seeds, betas, lrs = _each(config.seed, m), _each(config.beta, m), _each(config.lr, m)
    x_test = datasets.binarized(job.test, config.binarize, seeds[0], job.device)
    y_test = datasets.labels(model, job.test)
    steps = session.steps_per_epoch(job, m)

    def on_epoch(entries: list[dict[str, float]], st) -> None:
        rows = []
        for i, (entry, params_i) in enumerate(zip(entries, unstack(st.params), strict=True)):
            test = test_metrics(model, params_i, x_test, y_test, seeds[i])
            rows.append({"model": i} | epoch_row(entry, test, steps, betas[i]) | {"beta": betas[i], "lr": lrs[i],
                                                                                  "seed": seeds[i]})  # fmt: skip
        job.metrics.append(rows)
        job.save(st.params, st)
        elbos = " ".join(f"{r['test_elbo']:.2f}" for r in rows)
        session.log(f"epoch {entries[0]['epoch']}/{config.epochs}  test ELBO per model {elbos}")

    if job.resume is not None:
        params, state = job.resume.params, job.resume.state
    else:
        own = seeds if isinstance(config.seed, tuple) else seeds[:1]  # a seed per model, or one for all
        params, state = initial_params(model, own, m, job.device), None
    t_train = time.perf_counter()
    result, code = session.train_job(job, train_many, params, state, on_epoch, command="sweep")
    if code is not None or not job.writer:
        return code or 0
    seconds = time.perf_counter() - t_train
    job.save(result.params, result.state)
    rate, distortion = rate_distortion(model, result.params, x_test, y_test, seeds[0])
    outcome = sweep.SweepResult(betas, result.params, rate, distortion, result.history)
    title = f"{m} models trained at once on {job.settings.data['name']} (test split)"
    sweep.plot_rate_distortion(outcome, job.path / rundir.RATE_DISTORTION, title=title)
    print(summary(job, outcome, lrs, seeds, seconds, time.perf_counter() - t_start))
    return 0


def _each(value: T | tuple[T, ...], m: int) -> list[T]:
    return list(value) if isinstance(value, tuple) else [value] * m


def initial_params(model: VAE, seeds: list[int], m: int, device: torch.device) -> Params:
    """m stacked models: ``model.init(seed)`` for each of m seeds, or m copies of one seed's."""
    if len(seeds) == 1:
        one = model.init(seeds[0], device=device)
        return {k: v.expand(m, *v.shape).clone() for k, v in one.items()}
    return stack([model.init(s, device=device) for s in seeds])


def rate_distortion(model: VAE, params: Params, x, y, seed: int) -> tuple[list[float], list[float]]:
    """Each model's mean rate (KL) and distortion (-log p(x|z)) on x, in nats, with one common eps."""
    rate, distortion = sweep.rate_distortion(params, x, seed=seed, model=model, labels=y)
    return rate.tolist(), distortion.tolist()


def summary(job: session.Job, outcome: sweep.SweepResult, lrs: list[float], seeds: list[int], train_s: float,
            total_s: float) -> str:  # fmt: skip
    """What a finished sweep prints: the models, the time, and a table of their rate and distortion."""
    c, data, m = job.settings.config, job.settings.data, len(outcome.betas)
    how = session.how(job, m)
    lines = [(f"vaefunc: trained {m} models of {architecture(job.model)} at once on {data['name']} "
              f"({data['n_train']} train / {data['n_test']} test examples) for {c.epochs} epoch{'s' * (c.epochs != 1)} in {train_s:.1f} s "
              f"({how}, {job.device}; {total_s:.1f} s in all)")]  # fmt: skip
    lines.append(f"  {'model':>5} {'beta':>6} {'lr':>8} {'seed':>5} {'rate (KL)':>10} {'distortion':>11} {'-ELBO':>8}")
    for i, (beta, r, d) in enumerate(zip(outcome.betas, outcome.rate, outcome.distortion, strict=True)):
        lines.append(f"  {i:5d} {beta:6g} {lrs[i]:8g} {seeds[i]:5d} {r:10.2f} {d:11.2f} {r + d:8.2f}")
    lines.append("  (nats per test example; rate = KL(q(z|x) || p(z)), distortion = -log p(x|z), -ELBO = their sum)")
    files = [f for f in rundir.SWEEP_FILES if (job.path / f).exists()]
    lines.append(f"  files in {job.path}/: {' '.join(files)}")
    return "\n".join(lines)
