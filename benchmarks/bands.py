"""The quality band every benchmark row carries (no torch here: the JAX anchor runs without it)."""

from __future__ import annotations

import math
import statistics


def quality(losses: list[float]) -> dict:
    """The quality band: every loss finite and the last third lower than the first third."""
    third = max(1, len(losses) // 3)
    first, last = statistics.fmean(losses[:third]), statistics.fmean(losses[-third:])
    ok = all(math.isfinite(v) for v in losses) and last < first
    return {"loss_first": first, "loss_last": last, "quality_ok": ok}
