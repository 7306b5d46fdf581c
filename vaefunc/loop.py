"""The training loop: the package's one ``for epoch ... for step ...``.

It runs a :class:`vaefunc.runners.Runner` over the batches of a
:class:`vaefunc.feed.Feed` and never asks how a step runs (eager, compiled,
a CUDA graph, data-parallel, an ensemble). Per step it adds the step's
metrics to running sums on the device; the host reads them only at sync
points: a progress refresh (at most twice a second, only with a bar) and the
end of each epoch. There it checks that the sums, params and optimizer state
are finite, keeps that state as the last good one, and on a non-finite value
replays from it step by step to name the first bad step.

Axis letters: m ensemble members.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import _progress
from ._types import OptState, Params
from .feed import Draws, Feed
from .runners import Runner
from .state import TrainState as TrainState  # defined a floor below, re-exported where it was

METRICS = ("loss", "recon", "kl", "elbo")


class NonFiniteLossError(FloatingPointError):
    """The loss, the params or the optimizer state became NaN or inf during training.

    Attributes:
        epoch, step: 1-based epoch and step within it whose loss (or update)
            was the first non-finite one.
        params, opt_state: the last finite state, from just before that step.
        history: the epochs finished before it.
        members: for an ensemble, the models that went non-finite (else None).
    """

    def __init__(self, message: str, *, epoch: int, step: int, params: Params, opt_state: OptState, history,
                 members: list[int] | None = None):  # fmt: skip
        super().__init__(message)
        self.epoch, self.step, self.members = epoch, step, members
        self.params, self.opt_state, self.history = params, opt_state, history


class Hooks(NamedTuple):
    """What the loop reports and polls: a progress bar, a per-epoch callback, a stop flag."""

    progress: bool = False  # show a tqdm bar on stderr
    on_epoch: Callable[[Any, TrainState], None] | None = None  # (history entry or entries, state)
    should_stop: Callable[[], bool] | None = None  # polled after every step
    cause: str = "try a lower lr"  # what the non-finite error suggests


class DivergenceWarning(RuntimeWarning):
    """The loss grew by orders of magnitude over its running minimum: training is diverging."""


DIVERGENCE_FACTOR = 1e3
"""A loss above its running minimum by this many times the minimum's size (at least 1 nat) is diverging."""


class _Watch:
    """Warns once when the loss (per model) grows by orders of magnitude over its running minimum.

    The reference is the first step's loss, kept on the device and read at the
    first sync point, then the minimum of the running means seen at sync
    points: a run that blows up inside its first epoch is caught there too.
    """

    def __init__(self, cause: str):
        self.cause, self.warned = cause, False
        self.first: Tensor | None = None
        self.best: list[float] | None = None

    def see_first(self, loss: Tensor) -> None:
        if self.first is None:
            self.first = loss.detach().clone()  # a graph's outputs are static: keep a copy

    def check(self, mean_loss: Tensor, epoch: int, step: int) -> None:
        """At a sync point: the running mean loss of this epoch, (,) or (m,)."""
        now = mean_loss.reshape(-1).tolist()
        ref = self.best if self.best is not None else self.first.reshape(-1).tolist() if self.first is not None else now
        self.best = [min(a, b) for a, b in zip(ref, now)]
        bad = [i for i, (r, v) in enumerate(zip(ref, now)) if v - r > DIVERGENCE_FACTOR * max(abs(r), 1.0)]
        if bad and not self.warned:
            self.warned = True
            who = "" if len(now) == 1 else f" of model(s) {bad}"
            warnings.warn(DivergenceWarning(
                f"the loss{who} grew from {ref[bad[0]]:.4g} to {now[bad[0]]:.4g} nats by epoch {epoch + 1}, step "
                f"{step}: training is diverging ({self.cause})"), stacklevel=4)  # fmt: skip


class Outcome(NamedTuple):
    params: Params
    opt_state: OptState
    history: list  # one dict per epoch; for an ensemble, one such list per member
    state: TrainState
    interrupted: bool


def fit(runner: Runner, feed: Feed, start: TrainState, *, epochs: int, hooks: Hooks) -> Outcome:
    """Train from ``start`` until ``epochs`` epochs are done, or ``hooks.should_stop()`` says so."""
    history: list = [] if feed.members is None else [[] for _ in range(feed.members)]
    bar = _progress_bar(hooks.progress, (epochs - start.epoch) * feed.steps - start.step, feed.batch_size)
    state, watch = start, _Watch(hooks.cause)
    try:
        for epoch in range(start.epoch, epochs):
            state, stopped = _epoch(runner, feed, state, epoch, hooks, bar, history, watch)
            if stopped:
                return Outcome(state.params, state.opt_state, history, state, True)
    finally:
        bar.close()
    return Outcome(state.params, state.opt_state, history, state, False)


def _epoch(runner: Runner, feed: Feed, start: TrainState, epoch: int, hooks: Hooks, bar, history: list,
           watch: _Watch):  # fmt: skip
    """One epoch from ``start`` (its first step is ``start.step``): (the state after it, stopped)."""
    rng = feed.rng_state()
    t0 = time.perf_counter()
    draws = feed.draw(epoch)
    first = start.step
    feed.skip(draws, first)
    sums = start.sums
    good = _Good(start, feed.binarize_state())  # the last state checked finite
    state, last_sync = start, t0
    for i in range(first, feed.steps):
        metrics = runner.advance(feed.batch(draws, i))
        watch.see_first(metrics["loss"])
        sums = sums + torch.stack([metrics[k] for k in METRICS], dim=-1)
        bar.update(1)
        stop = hooks.should_stop is not None and _flag(hooks.should_stop())
        now = time.perf_counter()
        if i == feed.steps - 1 or stop or (hooks.progress and now - last_sync > 0.5):
            # a snapshot: the buffers go on changing
            state = TrainState(*runner.state(), epoch, i + 1, rng, sums, feed.batch_size)
            # This is a CPU-GPU sync point: the metrics are read on the host.
            if not finite(sums, state.params, state.opt_state):
                _raise_non_finite(runner, feed, draws, good, epoch, history, hooks.cause)
            watch.check(sums[..., 0] / (i + 1), epoch, i + 1)
            good, last_sync = _Good(state, feed.binarize_state()), now
            if hooks.progress:
                mean = (sums.reshape(-1, len(METRICS)).mean(0) / (i + 1)).tolist()
                bar.set_postfix(epoch=epoch + 1, loss=f"{mean[0]:.2f}", kl=f"{mean[2]:.2f}", refresh=False)
        if stop:
            return state, True
    entries = _entries(sums / feed.steps, epoch, time.perf_counter() - t0, (feed.steps - first) * feed.batch_size)
    if feed.members is None:
        history.append(entries[0])
    else:
        for member, entry in zip(history, entries):
            member.append(entry)
    state = TrainState(state.params, state.opt_state, epoch + 1, 0, feed.rng_state(), torch.zeros_like(sums),
                       feed.batch_size)  # fmt: skip
    if hooks.on_epoch is not None:  # a copy: a callback that edits its state must not reach the run's
        hooks.on_epoch(entries[0] if feed.members is None else entries, _copy(state))
    return state, False


class _Good(NamedTuple):
    state: TrainState
    binarize: list[Tensor]


def _entries(means: Tensor, epoch: int, seconds: float, examples: int) -> list[dict[str, float]]:
    """History entries of an epoch: one per model (examples/s counts the examples each model saw; threads:
    torch's intra-op threads, which the run set for its steps)."""
    rate = examples / seconds if seconds > 0 else math.inf
    rows = means.reshape(-1, len(METRICS)).tolist()
    return [{"epoch": epoch + 1, **dict(zip(METRICS, row)), "seconds": seconds, "examples_per_s": rate,
             "threads": torch.get_num_threads()} for row in rows]  # fmt: skip


def finite(sums: Tensor, params: Params, opt_state: OptState) -> bool:
    """Whether the metric sums, the params and the optimizer state are all finite.

    The state matters too: Adam's second moment can overflow to inf while the
    params are still finite, and every later step is then NaN. Each tensor is
    multiplied by 0 first (0 where finite, NaN where not), so the norms that
    reduce it to one flag cannot overflow on large finite values.
    """
    leaves = [sums, *params.values(), *(t for t in _tensors(opt_state) if t.is_floating_point())]
    norms = torch._foreach_norm(torch._foreach_mul(leaves, 0.0))
    return bool(torch.isfinite(torch.stack(norms)).all())


def bad_members(loss: Tensor, params: Params, opt_state: OptState, members: int | None) -> list[int]:
    """The models whose loss, params or optimizer state are not finite ([0] or [] for one model)."""
    if members is None:
        return [] if finite(loss.reshape(1), params, opt_state) else [0]
    ok = torch.isfinite(loss)
    for t in [*params.values(), *_tensors(opt_state)]:
        if t.is_floating_point() and t.ndim and t.shape[0] == members:
            ok = ok & torch.isfinite(t.reshape(members, -1)).all(1)
    return torch.nonzero(~ok).flatten().tolist()


def _raise_non_finite(runner: Runner, feed: Feed, draws: Draws, good: _Good, epoch: int, history: list, cause: str):
    """Replay from the last state checked finite to find the first bad step; raise."""
    runner.load(good.state.params, good.state.opt_state)
    feed.set_binarize_state(good.binarize)
    for i in range(good.state.step, feed.steps):
        metrics = runner.advance(feed.batch(draws, i))
        params, opt_state = runner.state()
        bad = bad_members(metrics["loss"], params, opt_state, feed.members)
        if bad:
            before = good.state
            what = ("training became non-finite (loss, params or optimizer state)" if feed.members is None
                    else f"the loss of model(s) {bad} became non-finite")  # fmt: skip
            loss = "" if feed.members is not None else f" (loss {float(metrics['loss']):g})"
            raise NonFiniteLossError(
                f"{what} at epoch {epoch + 1}, step {i + 1} of {feed.steps}{loss}; the last finite params and "
                f"optimizer state are kept on this exception as .params and .opt_state ({cause})",
                epoch=epoch + 1, step=i + 1, params=before.params, opt_state=before.opt_state, history=history,
                members=None if feed.members is None else bad,
            )  # fmt: skip
        good = _Good(TrainState(params, opt_state, epoch, i + 1, good.state.rng, good.state.sums, feed.batch_size),
                     [])  # fmt: skip
    raise AssertionError("non-finite metrics that a replay could not reproduce")


def _flag(value: Any) -> bool:
    """should_stop's answer: a bool, or None for "go on" (a string such as 'no' is truthy, so it is refused)."""
    if value is None:
        return False
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"should_stop must return True or False; got {value!r}")
    return bool(value)


def _copy(tree: Any) -> Any:
    """A tree of NamedTuples, tuples, lists and dicts with every tensor cloned."""
    if isinstance(tree, Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_copy(v) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_copy(v) for v in tree)
    return tree


def _tensors(tree: Any) -> list[Tensor]:
    """The tensors of a tree of NamedTuples, tuples, lists and dicts."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (tuple, list)):
        return [t for v in tree for t in _tensors(v)]
    return []


def _progress_bar(show: bool, total: int, batch_size: int):
    """Counts steps, shown as examples: the rate is examples/s, with the ETA. Hidden off a terminal, except
    inside a command's :func:`vaefunc._progress.plain_lines`, where it is a plain line every 10 s."""
    if not show and _progress.lines_wanted(True):
        return _progress.Lines(total, unit="ex", desc="training", scale=batch_size)
    from tqdm.auto import tqdm

    ncols = _progress.ncols()
    return tqdm(total=total, disable=not show, unit="ex", unit_scale=batch_size, ncols=ncols,
                dynamic_ncols=ncols is None, leave=True)  # fmt: skip

