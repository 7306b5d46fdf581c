"""``vaefunc train``: one model, trained by :func:`vaefunc.train`, into a run directory.

After every epoch the test split's ELBO (:func:`vaefunc.metrics.dataset_elbo`,
the same seeded eps every epoch) goes to metrics.jsonl (and, with ``--log
tensorboard``, to TensorBoard: :mod:`vaefunc.cli.logs`) and the checkpoint is
rewritten; at the end the pictures are drawn and a summary printed.
"""

from __future__ import annotations

import math
import shlex
import time
from typing import Any

from .. import metrics
from ..training import train
from . import datasets, figures, logs, rundir, session
from .settings import one_beta, one_seed

ROW_METRICS = ("loss", "elbo", "recon", "kl")


def run(args: Any) -> int:
    """Train (or resume) one model; returns the exit code."""
    t_start = time.perf_counter()
    writer_type = logs.summary_writer() if args.log == "tensorboard" else None  # a missing package: before any work
    job = session.open_run(args, command="train")
    model, config, seed = job.model, job.settings.config, one_seed(job.settings.config)
    board = None
    if writer_type is not None and job.writer:
        board = logs.TensorBoard(writer_type, job.path, resumed_at=job.resume.state.epoch if job.resume and job.resume.state else None)
        args.cleanup.callback(board.close)
    x_test = datasets.binarized(job.test, config.binarize, seed, job.device)
    y_test = datasets.labels(model, job.test)
    steps = session.steps_per_epoch(job)

    def on_epoch(entry: dict[str, float], st) -> None:
        row = epoch_row(entry, test_metrics(model, st.params, x_test, y_test, seed), steps, one_beta(config))
        job.metrics.append([row])
        job.save(st.params, st)
        if board is not None:
            board.epoch(row)
        session.log(f"epoch {row['epoch']}/{config.epochs}  train loss {row['train_loss']:.2f}  "
                    f"test ELBO {row['test_elbo']:.2f}  KL {row['test_kl']:.2f}  "
                    + (f"error {100 * row['test_error']:.2f}%  " if "test_error" in row else "")
                    + f"{entry['examples_per_s']:,.0f} ex/s")  # fmt: skip

    if job.resume is not None:
        params, state = job.resume.params, job.resume.state
    else:
        params, state = model.init(seed, device=job.device), None
    t_train = time.perf_counter()
    result, code = session.train_job(job, train, params, state, on_epoch, command="train")
    if code is not None or not job.writer:
        return code or 0
    seconds = time.perf_counter() - t_train
    job.save(result.params, result.state)  # also when epochs == 0
    figures.write_pictures(job.path, model, result.params, x_test, y_test, seed, job.metrics.rows,
                           objective=config.objective, k=config.k, colour=job.test.labels)  # fmt: skip
    if board is not None:
        board.pictures(job.path, rundir.PICTURES, result.state.epoch)
    print(summary(job, seconds, time.perf_counter() - t_start, threads=_threads(result.history)))
    return 0


def test_metrics(model, params, x_test, y_test, seed: int) -> dict[str, float]:
    """The test split's ELBO and its parts (the same seeded eps every epoch); a semi-supervised model's
    classification error too (argmax q(y|x))."""
    test = metrics.dataset_elbo(params, x_test, labels=y_test, seed=seed, model=model, progress=False)
    if model.semi_supervised:
        test["error"] = metrics.classification_error(params, x_test, y_test, model=model, progress=False)
    return test


def epoch_row(entry: dict[str, float], test: dict[str, float], steps: int, beta: float) -> dict[str, Any]:
    """A metrics.jsonl line: the epoch's training means and the test split's ELBO, in nats per example
    (and its classification error, a semi-supervised model's)."""
    row: dict[str, Any] = {"epoch": entry["epoch"], "step": entry["epoch"] * steps}
    row |= {f"train_{k}": entry[k] for k in ROW_METRICS}
    row |= {"test_loss": beta * test["kl"] - test["recon"]} | {f"test_{k}": test[k] for k in ROW_METRICS[1:]}
    row |= {"seconds": entry["seconds"], "examples_per_s": entry["examples_per_s"], "threads": entry["threads"]}
    return row | ({"test_error": test["error"]} if "error" in test else {})


def architecture(model) -> str:
    """``784-400-20``; a conv model as ``1x28x28-conv(32,32)-400-20``; the activation and classes if any."""
    if model.arch == "conv":
        first = "x".join(map(str, model.input_shape)) + f"-conv({','.join(map(str, model.channels))})"
    else:
        first = str(math.prod(model.input_shape))
    text = "-".join([first, *map(str, model.hidden), str(model.latent_dim)])
    if model.top_latent_dim:  # the IWAE paper's notation: 784-100-100-[z1 100]-50-50-[z2 50]
        text = "-".join([first, *map(str, model.hidden), f"[z1 {model.latent_dim}]", *map(str, model.top_hidden),
                         f"[z2 {model.top_latent_dim}]"])  # fmt: skip
    notes = [model.activation] * (model.activation != "relu") + [f"{model.n_classes} classes"] * bool(model.n_classes)
    notes += ["semi-supervised"] * model.semi_supervised + [f"IAF posterior, {model.flow_steps} steps"] * bool(
        model.flow_steps)  # fmt: skip
    return text + (f" ({', '.join(notes)})" if notes else "")


def _threads(history: list) -> int | None:
    """The intra-op thread count the run's steps used (None when it took no epoch)."""
    return history[-1]["threads"] if history else None


def summary(run: session.Job, train_s: float, total_s: float, *, threads: int | None = None) -> str:
    """What a finished run prints: the model, the data, the time, the last test ELBO, the files; ``threads``:
    the intra-op threads its steps used, when known."""
    model, c, data, rows = run.model, run.settings.config, run.settings.data, run.metrics.rows
    where = str(run.device)
    if threads is not None and run.device.type == "cpu":
        where += f", {'auto: ' * (c.threads is None)}{threads} thread{'s' * (threads != 1)}"
    how = session.how(run)
    lines = [(f"vaefunc: trained {architecture(model)} on {data['name']} ({data['n_train']} train / "
              f"{data['n_test']} test examples) for {c.epochs} epoch{'s' * (c.epochs != 1)} in {train_s:.1f} s ({how}, {where}; "
              f"{total_s:.1f} s in all)")]  # fmt: skip
    objective = f"IWAE k={c.k}" if c.objective == "iwae" else "ELBO"
    objective += {"stl": " (sticking-the-landing gradients)", "dreg": " (doubly reparameterized gradients)"}.get(
        c.gradient, "")  # fmt: skip
    lines.append(f"  objective {objective}, {model.likelihood} likelihood, {model.prior} prior"
                 + (f", KL schedule {c.kl_schedule}" if c.kl_schedule else "")
                 + (f", preset {run.settings.preset}" if run.settings.preset else ""))  # fmt: skip
    if rows:
        last = rows[-1]
        if c.objective == "iwae":  # the training bound is IWAE_k; the test metric is the single-sample ELBO
            bound = f"IWAE_{c.k}"
            lines.append(f"  test ELBO  {last['test_elbo']:.2f} nats  (single sample; reconstruction "
                         f"{last['test_recon']:.2f}, KL {last['test_kl']:.2f})")  # fmt: skip
            lines.append(f"  train {bound} {-last['train_loss']:.2f} nats  (the training bound, k={c.k}; mean over "
                         "the last epoch's steps)")  # fmt: skip
        else:
            lines.append(f"  test ELBO  {last['test_elbo']:.2f} nats  (reconstruction {last['test_recon']:.2f}, "
                         f"KL {last['test_kl']:.2f})")  # fmt: skip
            lines.append(f"  train ELBO {last['train_elbo']:.2f} nats  (mean over the last epoch's steps)")
        if "test_error" in last:
            kept = run.settings.data.get("labels_per_class")
            lines.append(f"  test classification error {100 * last['test_error']:.2f}%  (argmax q(y|x); "
                         + (f"{kept} labels per class kept for training)" if kept else "every training label kept)"))
    files = [f for f in rundir.FILES if (run.path / f).exists()]
    lines.append(f"  files in {run.path}/: {' '.join(files)}")
    quoted = shlex.quote(str(run.path))
    lines.append(f"  next: vaefunc eval {quoted}   vaefunc sample {quoted}")
    return "\n".join(lines)
