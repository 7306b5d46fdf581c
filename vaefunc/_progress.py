"""Progress for long work: a tqdm bar in a terminal, plain lines off one (a log file, CI, a pipe).

``progress=`` takes what :class:`vaefunc.TrainConfig`'s does: True shows a tqdm
bar on stderr when stderr is a terminal (so tests and piped output stay
quiet), ``"always"`` shows it anyway, False never. The bar counts examples or
importance samples, with their rate and the ETA, and disappears when done.

A command (``vaefunc eval``, ``vaefunc train``, ``python -m vaefunc.sweep``)
runs its work inside :func:`plain_lines`: there, a bar that is hidden only
because stderr is not a terminal (``progress=True``) prints a plain line
instead, at most every :data:`EVERY` seconds, so a long command off a
terminal never goes quiet for longer than that. Library calls outside such a
block stay quiet.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import shutil
import sys
import time

from . import _check

PROGRESS = (True, False, "always")
"""The values ``progress=`` takes."""

EVERY = 10.0
"""Seconds between two plain lines off a terminal."""

_LINES: contextvars.ContextVar[str | None] = contextvars.ContextVar("vaefunc_plain_lines", default=None)
_UNITS = {"ex": "examples", "sample": "samples"}
_FALLBACK_COLUMNS = 100  # a terminal that reports no size (a pty opened without one): tqdm would draw nothing


def shown(progress: bool | str) -> bool:
    """Whether a bar is shown for ``progress`` (checked: True, False or "always")."""
    _check.option("progress", progress, PROGRESS)
    return progress == "always" or (progress is True and sys.stderr.isatty())


@contextlib.contextmanager
def plain_lines(prefix: str):
    """Inside the block, progress hidden only because stderr is not a terminal prints a plain line on stderr
    at most every :data:`EVERY` seconds, each starting with ``prefix`` (the command's name)."""
    token = _LINES.set(prefix)
    try:
        yield
    finally:
        _LINES.reset(token)


def lines_wanted(progress: bool | str) -> bool:
    """Whether ``progress`` gets plain lines here: True, off a terminal, inside :func:`plain_lines`."""
    return progress is True and _LINES.get() is not None and not sys.stderr.isatty()


def bar(progress: bool | str, total: int, *, unit: str, desc: str, scale: int = 1):
    """A tqdm bar of ``total`` units on stderr, shown as :func:`shown` says (a disabled one costs nothing),
    or :class:`Lines` where :func:`lines_wanted`. ``scale``: units per ``update(1)`` (a step of a batch)."""
    from tqdm.auto import tqdm

    show = shown(progress)
    if not show and lines_wanted(progress):
        return Lines(total, unit=unit, desc=desc, scale=scale)
    return tqdm(total=total, disable=not show, unit=unit, unit_scale=scale if scale > 1 else total >= 100_000,
                desc=desc, ncols=ncols(), dynamic_ncols=ncols() is None, leave=False,
                file=sys.stderr)  # fmt: skip  (1.2M samples, but 364 examples)


def ncols() -> int | None:
    """None (tqdm follows the terminal's width) unless the terminal reports a width of 0."""
    return None if shutil.get_terminal_size((_FALLBACK_COLUMNS, 24)).columns > 0 else _FALLBACK_COLUMNS


class Lines:
    """What a bar says, as a plain line on stderr at most every :data:`EVERY` seconds (and none for work
    that ends sooner): ``vaefunc eval: log p(x) 1,200,000/5,000,000 samples (24%), 41,000 samples/s,
    about 1 min 33 s left``. What vaefunc uses of a tqdm bar: update, set_postfix, close, disable."""

    disable = False  # shown (tqdm's flag): a caller may synchronize a device for honest rates

    def __init__(self, total: int, *, unit: str, desc: str, scale: int = 1, every: float | None = None):
        self.prefix, self.total, self.unit, self.desc = _LINES.get() or "vaefunc", total * scale, unit, desc
        self.scale, self.every, self.done = scale, EVERY if every is None else every, 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n * self.scale
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            print(self.line(now - self.start), file=sys.stderr, flush=True)

    def line(self, elapsed: float) -> str:
        unit = _UNITS.get(self.unit, self.unit)
        rate = self.done / elapsed if elapsed > 0 else math.inf
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = f", about {_duration((self.total - self.done) / rate)} left" if 0 < rate < math.inf else ""
        return (f"{self.prefix}: {self.desc} {self.done:,}/{self.total:,} {unit}{share}, "
                f"{rate:,.0f} {unit}/s{left}")  # fmt: skip

    def set_postfix(self, *args, **kwargs) -> None:
        """The bar's running numbers: a plain line leaves them to the per-epoch lines."""

    def close(self) -> None:
        """Nothing to clear: every line is already whole."""

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    """``12 s``, ``3 min 5 s``, ``2 h 10 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
