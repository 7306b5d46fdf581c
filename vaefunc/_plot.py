"""Plots as PNG bytes: a matplotlib Figure without pyplot (the caller's backend and figures are left
alone), in one style for every plot vaefunc draws (:mod:`vaefunc.pictures`, :mod:`vaefunc.traversal`,
:mod:`vaefunc.sweep`)."""

from __future__ import annotations

import io
from typing import Any, cast

PLOT_DPI = 100
PLOT_STYLE: dict[str, Any] = {"font.size": 12, "axes.titlesize": 12}
"""matplotlib settings of the plots (the other sizes follow font.size, "medium" or larger): 12 points at
PLOT_DPI is 17 pixels per em, so DejaVu Sans's capitals and digits are 12 pixels high."""


def plot_png(draw, *, figsize: tuple[float, float]) -> bytes:
    """A matplotlib Figure (Agg, no pyplot) drawn by ``draw(fig)`` in PLOT_STYLE at PLOT_DPI, laid out
    tight: its PNG bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(cast(Any, PLOT_STYLE)):  # its stubs list every rc key as a Literal
        fig = Figure(figsize=figsize, dpi=PLOT_DPI)
        FigureCanvasAgg(fig)
        draw(fig)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()
