"""A run directory: its fresh numbered name, config.json, metrics.jsonl and checkpoint paths.

``vaefunc train`` writes::

    runs/NAME/
      config.json              the run id, the settings (model spec, training config, data), versions
                               and command (the checkpoint's config holds the same run id)
      metrics.jsonl            one JSON line per epoch (train and test loss, ELBO, rec, KL), flushed as it goes
      checkpoint.safetensors   params, model spec, Adam state, step, epoch, RNG states (every epoch, atomically)
      reconstructions.png      test inputs (top row) above their reconstructions
      samples.png              decoder means of 64 draws from the prior
      traverse.png             one row per latent dimension, from -3 to 3
      interpolate.png          straight lines between the codes of test pairs (unconditional models)
      loss.png                 -ELBO, reconstruction and KL per epoch, train and test
      latent.png, manifold.png with 2 latent dimensions: the test split's codes coloured by label, and
                               the decoder over a grid of codes

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

from .._io import atomic_write_text, parse_json, read_small_text
from .parser import UsageError

RUNS = Path("runs")
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.safetensors"
LAST_FINITE = "last_finite.safetensors"
PICTURES = ("reconstructions.png", "samples.png", "traverse.png", "interpolate.png", "loss.png")
LATENT_PICTURES = ("latent.png", "manifold.png")
"""What a model with 2 latent dimensions adds (:func:`vaefunc.cli.figures.write_pictures`)."""
FILES = (CONFIG, METRICS, CHECKPOINT, *PICTURES, *LATENT_PICTURES)
"""What ``vaefunc train`` writes (LATENT_PICTURES only for 2 latent dimensions)."""
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
    if not path.is_file():
        return None
    try:
        config = parse_json(read_small_text(path))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is corrupt ({e}); restore it from a copy, or start a new run with another "
                         "--out (the checkpoint beside it still loads: vaefunc eval, sample, ...)") from None  # fmt: skip
    if not isinstance(config, dict):
        raise UsageError(f"{path} must hold a JSON object of settings; got {type(config).__name__}")
    return config


def check_out(out: str | None) -> None:
    """``--out`` must name a folder that is not a file, is not under a file, and can be written."""
    if out is None:
        return
    if not str(out).strip():
        raise UsageError("--out must name a folder; got an empty path")
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise UsageError(f"--out {out}: is a symlink to {os.readlink(path)}, which does not exist")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable")


def picture_out(out: str | None, run: str | os.PathLike, name: str) -> Path:
    """Where a picture command writes: ``--out``, or ``name`` in the run directory (beside a checkpoint
    file given instead); checked before any work."""
    if out is None:
        folder = Path(run) if Path(run).is_dir() else Path(run).parent
        if not _writable(folder):
            raise UsageError(f"cannot write {name} into {folder}; --out FILE.png names another place")
        return folder / name
    check_picture_out(out)
    return Path(out)


def picture_folder(out: str | None, run: str | os.PathLike) -> Path:
    """Where a command that writes several pictures writes them: the folder ``--out`` names (made when
    needed), or the run directory (the checkpoint file's folder); checked before any work."""
    if out is None:
        return picture_out(None, run, "pictures").parent  # the run's folder, checked
    path = Path(out)
    if not str(out).strip() or (path.exists() and not path.is_dir()):
        raise UsageError(f"--out {out!r}: expected a folder to write into, not a file")
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not _writable(folder):
        raise UsageError(f"--out {out}: {folder} is not a writable folder")
    return path


def check_picture_out(out: str) -> None:
    """A picture command's ``--out`` must be a file path whose folder can be written."""
    path = Path(out)
    if not str(out).strip() or path.is_dir():
        raise UsageError(f"--out {out!r}: expected a .png file to write, not a folder")
    folder = next((p for p in path.parents if p.exists()), Path("."))
    if not _writable(folder):
        raise UsageError(f"--out {out}: {folder} is not a writable folder")


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


class Lock:
    """An exclusive lock on a run directory (its ``.lock`` file), held until the process ends or
    :meth:`release`: a second ``vaefunc train`` or ``sweep`` on the same folder fails at once.

    Taking it also removes the temporary files that a killed writer left behind (every writer of
    the folder holds the lock, so none is in flight). The folders it had to make are remembered:
    :meth:`discard` removes them again when the run is refused before it writes anything.
    """

    def __init__(self, run: Path) -> None:
        self.run, self.made = run, _make_folders(run)
        for _ in range(100):  # a .lock removed by a discarding holder between our open and flock: again
            self.file = open(run / ".lock", "a+", encoding="utf-8")  # noqa: SIM115  (held for the run)
            try:
                import fcntl

                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # not POSIX: no lock
                break
            except OSError:
                self.file.seek(0)
                holder = self.file.read().strip() or "another process"
                self.file.close()
                raise UsageError(f"{run} is in use by {holder}; wait for it to finish, or choose another --out") \
                    from None  # fmt: skip
            if _same_file(self.file, run / ".lock"):
                break
            self.file.close()
            self.made += _make_folders(run)
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"vaefunc (pid {os.getpid()})")
        self.file.flush()
        for stale in run.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def release(self) -> None:
        self.file.close()

    def discard(self) -> None:
        """Release the lock; remove the .lock file and the folders taking it made, when nothing else is in them."""
        if self.made and not self.file.closed:
            (self.run / ".lock").unlink(missing_ok=True)  # while held: no other process holds this file
            for folder in reversed(self.made):
                try:
                    folder.rmdir()
                except OSError:  # something else was written there: keep it
                    break
        self.release()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _make_folders(run: Path) -> list[Path]:
    """Make ``run`` and the folders above it that are missing; those this call made, outermost first."""
    made = []
    for folder in reversed((run, *run.parents)):
        if folder.is_dir():
            continue
        try:
            folder.mkdir()
            made.append(folder)
        except FileExistsError:
            pass
    if not run.is_dir():
        raise NotADirectoryError(f"{run} is not a folder")
    return made


def _same_file(file: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


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
        self.rows: list[dict[str, Any]] = [r for r in _rows(self.path, old) if r["epoch"] <= upto]
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


def _rows(path: Path, lines: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a torn last line (a kill mid-write) is dropped, a corrupt earlier one is an error."""
    lines = [line for line in lines if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = parse_json(line)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError("not a metrics row with an integer epoch")
        except ValueError as e:
            if i == len(lines) - 1:
                break  # the torn last line of a killed run: its epoch is written again
            raise UsageError(f"{path}: line {i + 1} is corrupt ({e}); delete that line, or start a new run with "
                             "another --out") from None  # fmt: skip
        rows.append(row)
    return rows


def members(ckpt: Any) -> int | None:
    """m for a checkpoint of a sweep's m stacked models; None for one model's."""
    shapes = ckpt.model.param_shapes()
    key = next(iter(shapes))
    value = ckpt.params[key]
    return value.shape[0] if value.ndim == len(shapes[key]) + 1 else None
