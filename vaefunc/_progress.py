"""Progress bars for the long evaluations (log-likelihoods, metrics over a data set).

``progress=`` takes what :class:`vaefunc.TrainConfig`'s does: True shows a tqdm
bar on stderr when stderr is a terminal (so tests and piped output stay
quiet), ``"always"`` shows it anyway, False never. The bar counts examples or
importance samples, with their rate and the ETA, and disappears when done.
"""

from __future__ import annotations

import sys

from . import _check

PROGRESS = (True, False, "always")
"""The values ``progress=`` takes."""


def shown(progress: bool | str) -> bool:
    """Whether a bar is shown for ``progress`` (checked: True, False or "always")."""
    _check.option("progress", progress, PROGRESS)
    return progress == "always" or (progress is True and sys.stderr.isatty())


def bar(progress: bool | str, total: int, *, unit: str, desc: str):
    """A tqdm bar of ``total`` units on stderr, shown as :func:`shown` says (a disabled one costs nothing)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not shown(progress), unit=unit, unit_scale=total >= 100_000, desc=desc,
                dynamic_ncols=True, leave=False, file=sys.stderr)  # fmt: skip  (1.2M samples, but 364 examples)
