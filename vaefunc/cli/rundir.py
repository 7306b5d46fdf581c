"""A run directory: its fresh numbered name, config.json, metrics.jsonl and checkpoint paths.

``vaefunc train`` writes::

    runs/NAME/
      config.json              the settings (model spec, training config, data), versions and command
      metrics.jsonl            one JSON line per epoch (train and test loss, ELBO, rec, KL), flushed as it goes
      checkpoint.safetensors   params, model spec, Adam state, step, epoch, RNG states (every epoch, atomically)
      reconstructions.png      test inputs (top row) above their reconstructions
      samples.png              decoder means of 64 draws from the prior
      traverse.png             one row per latent dimension, from -3 to 3
      interpolate.png          straight lines between the codes of test pairs (unconditional models)
      loss.png                 -ELBO, reconstruction and KL per epoch, train and test

and ``vaefunc sweep`` config.json, metrics.jsonl (one line per epoch per
model, with its index under "model"), the stacked checkpoint and
rate_distortion.png. A run that went non-finite also holds
last_finite.safetensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._io import atomic_write_text

RUNS = Path("runs")
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.safetensors"
LAST_FINITE = "last_finite.safetensors"
PICTURES = ("reconstructions.png", "samples.png", "traverse.png", "interpolate.png", "loss.png")
FILES = (CONFIG, METRICS, CHECKPOINT, *PICTURES)
"""What ``vaefunc train`` writes."""
RATE_DISTORTION = "rate_distortion.png"
SWEEP_FILES = (CONFIG, METRICS, CHECKPOINT, RATE_DISTORTION)
"""What ``vaefunc sweep`` writes."""


def fresh_run_dir(data: str, suffix: str = "") -> Path:
    """runs/NAME: the data's name (a path's file name without its extensions) and ``suffix``,
    numbered -2, -3, ... if taken."""
    stem = (Path(str(data)).name.split(".")[0] or "run") + suffix
    run, k = RUNS / stem, 2
    while run.exists():
        run, k = RUNS / f"{stem}-{k}", k + 1
    return run


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint of a run directory, or the checkpoint file given."""
    p = Path(path)
    if not p.is_dir():
        return p
    if not (p / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{p} holds no {CHECKPOINT}; is it a run directory?")
    return p / CHECKPOINT


def read_config(run: Path) -> dict[str, Any] | None:
    """The run's config.json, or None when it has none."""
    path = run / CONFIG
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_config(run: Path, config: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / CONFIG, json.dumps(config, indent=2) + "\n")


class MetricsLog:
    """metrics.jsonl: the lines of the epochs kept (a resumed run rewrites the rest), then one line per
    epoch (per model, for a sweep), each flushed and fsynced as it is written.

    With ``write=False`` (a torchrun rank other than 0) it only keeps the rows.
    """

    def __init__(self, run: Path, *, upto: int, write: bool = True) -> None:
        self.path, self.write = run / METRICS, write
        old = self.path.read_text(encoding="utf-8").splitlines() if upto and self.path.is_file() else []
        self.rows: list[dict[str, Any]] = [r for r in map(json.loads, filter(str.strip, old)) if r["epoch"] <= upto]
        if write:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if not self.write:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())


def members(ckpt: Any) -> int | None:
    """m for a checkpoint of a sweep's m stacked models; None for one model's."""
    shapes = ckpt.model.param_shapes()
    key = next(iter(shapes))
    value = ckpt.params[key]
    return value.shape[0] if value.ndim == len(shapes[key]) + 1 else None
