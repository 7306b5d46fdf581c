"""How many intra-op threads a run uses: one, or all of the caller's, whichever runs its step faster.

torch splits a matmul's sums across ``torch.get_num_threads()`` OpenMP
threads, and an OpenMP thread that finishes its share spin-waits for the
others. When another process holds one of the cores, the thread scheduled
there runs late and every thread waits for it: on a 2-core machine with one
core busy, the 784-400-20 epoch fell from about 20,000 examples/s on one
thread to 700-4,000 on two (docs/BENCHMARKS.md, "Threads"). On a quiet machine
the second thread is worth little at these sizes and a lot for wider models.

``train(..., threads=N)`` (:class:`vaefunc.TrainConfig`, ``vaefunc train --threads N``)
runs the run's steps on N threads. ``threads=None`` (the default; 0 on the
command line) decides:

1. ``VAEFUNC_THREADS=N`` in the environment, when set, is N for every run that
   does not name one (pinning a whole program, or a test suite, to one count);
2. off the CPU, and under torchrun, the caller's count, unchanged;
3. where the caller's count (``torch.get_num_threads()``, at most the cores
   this process may run on) is 1, or the run has fewer than
   :data:`PROBE_MIN_STEPS` steps, one thread;
4. else the faster of one thread and the caller's count, timed on the run's
   own step (eager, on copies of its params, a zero batch of its shapes):
   a warm-up and :data:`PROBE_STEPS` steps at each count, alternating; the
   caller's count must be :data:`PREFER_MANY` times faster to win, and no
   other process's thread may be running while it times (Linux's count of
   runnable threads, :func:`others_running`, asked before every step, and
   taken again a few times over 8 ms when it sees one, so that a process
   that runs for a moment is not taken for a busy core): one
   thread cannot collapse when the machine gets busy, and a probe that ran
   between another process's bursts chose two threads that then ran at a
   tenth of one thread's rate (docs/BENCHMARKS.md). The choice is
   cached for the process, per step and count, so later runs of the same
   step agree.

``train`` sets the count for the run and restores the caller's after; the
count a run used is in every history entry (``"threads"``). The same seed and
thread count give the same numbers bit for bit; a different thread count
changes the last bits (a matmul sums in another order), so a run that must
repeat another process's bits names ``threads=``.

The ``vaefunc`` command also sets ``OMP_WAIT_POLICY=PASSIVE`` (unless it is set)
before torch loads, so its OpenMP threads sleep instead of spinning while they
wait (:func:`vaefunc._launch.passive_wait_policy`); a program that imports vaefunc after torch
cannot, since OpenMP reads it once when torch loads.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch

from . import _check

ENV = "VAEFUNC_THREADS"
PROBE_STEPS = 3  # timed steps at each count, after a warm-up step at each
PROBE_MIN_STEPS = 50  # a run shorter than this takes one thread without timing: the probe would cost more than it saves
GIVE_UP = 3.0  # a step at the caller's count this many times one thread's fastest ends the timing: one thread
PREFER_MANY = 1.1  # the caller's count must run the step this many times faster than one thread to be chosen
CONFIRM = 5  # a reading of another running thread is taken again this many times in all; a majority means busy
CONFIRM_GAP = 0.002  # seconds between those readings: a process that runs for a few ms is not a busy core
_chosen: dict[Hashable, int] = {}


def check(threads: Any) -> int | None:
    """``threads`` as TrainConfig holds it: None (auto; 0 means the same) or an int >= 1."""
    if threads is None:
        return None
    value = _check.integer("threads", threads, minimum=0)
    return value or None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), or the machine's where that is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def caller_count() -> int:
    """The most threads auto tries: torch's count (the cores, or ``OMP_NUM_THREADS``), at most the cores available."""
    return max(1, min(torch.get_num_threads(), available_cores()))


def from_env() -> int | None:
    """``VAEFUNC_THREADS`` as a count (None where unset, empty or 0); ValueError naming it when it is not an int."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{ENV} must be an int >= 0 (0: decide per run); got {text!r}")
    return value or None


@contextlib.contextmanager
def using(threads: int) -> Iterator[int]:
    """Inside the block, torch runs on ``threads`` intra-op threads; the caller's count comes back after."""
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def others_running() -> int | None:
    """How many threads of other processes are running or waiting for a core right now (Linux's
    ``/proc/loadavg`` count of runnable threads, less this process's own); None where unknown."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        ours = 0
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/stat") as f:
                ours += f.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - ours)


def choose(step: Callable[[], Any], many: int, *, key: Hashable | None = None,
           timer: Callable[[], float] = time.perf_counter, steps: int = PROBE_STEPS,
           busy: Callable[[], int | None] = others_running) -> int:  # fmt: skip
    """1 or ``many``: the count that ran ``step`` faster (median of ``steps`` timed calls at each, after a
    warm-up call at each, alternating), ``many`` only when :data:`PREFER_MANY` times faster and ``busy()``,
    asked before every call, never saw another process's thread running (:func:`_busy`; on a core other
    work holds now or later, ``many`` threads can wait for it at every matmul); a call at ``many`` that takes
    :data:`GIVE_UP` times one thread's fastest ends the timing with 1. Cached by ``(key, many)`` when
    ``key`` is given. ``step`` must finish its work before it returns (a CPU step does)."""
    if many <= 1:
        return 1
    if key is not None and (key, many) in _chosen:
        return _chosen[(key, many)]
    with using(1):
        chosen = _timed(step, many, timer, steps, busy)
    if key is not None:
        _chosen[(key, many)] = chosen
    return chosen


def resolve(threads: int | None, *, device: torch.device, total_steps: int, distributed: bool = False,
            probe: Callable[[], Callable[[], Any]] | None = None, key: Hashable | None = None) -> int:  # fmt: skip
    """The count a run uses (see the module's docstring). ``probe()`` builds the step to time (called only
    when timing is needed); ``key`` caches the choice."""
    if threads is not None:
        return threads
    env = from_env()
    if env is not None:
        return env
    if device.type != "cpu" or distributed:
        return torch.get_num_threads()
    many = caller_count()
    if many == 1 or total_steps < PROBE_MIN_STEPS or probe is None:
        return 1
    return choose(probe(), many, key=key)


def _timed(step: Callable[[], Any], many: int, timer: Callable[[], float], steps: int,
           busy: Callable[[], int | None]) -> int:  # fmt: skip
    times: dict[int, list[float]] = {1: [], many: []}
    fastest_one = math.inf
    for i in range(steps + 1):
        for n in (1, many):
            if _busy(busy):  # another process runs: the cores are not all this run's
                return 1
            torch.set_num_threads(n)
            t0 = timer()
            step()
            seconds = timer() - t0
            if n == 1:
                fastest_one = min(fastest_one, seconds)
            elif seconds > GIVE_UP * fastest_one:  # collapsed: its threads wait for a busy core
                return 1
            if i:  # the first call at each count is a warm-up
                times[n].append(seconds)
    return many if statistics.median(times[many]) * PREFER_MANY < statistics.median(times[1]) else 1


def _busy(busy: Callable[[], int | None]) -> bool:
    """Whether another process holds a core: ``busy()`` saw another running thread in a majority of
    :data:`CONFIRM` readings :data:`CONFIRM_GAP` apart (one reading when it sees none). On a quiet
    2-core Intel Xeon 3 of 20 probes saw a blip (a short-lived process, or one of this process's
    threads going to sleep between the two counts) that one reading took for a busy core, running the
    epoch on one thread, a third slower; a busy loop on the other core was seen in every reading of
    6 probes out of 6."""
    if not busy():
        return False
    seen = 1
    for _ in range(CONFIRM - 1):
        time.sleep(CONFIRM_GAP)
        seen += bool(busy())
    return seen > CONFIRM // 2
