"""The ``vaefunc`` command: train, sweep, eval, sample, reconstruct, interpolate, traverse, latent.

``vaefunc train`` with no arguments trains the default model (784-400-20 on the
embedded mnist5k digits, 10 epochs) and writes a run directory (see
:mod:`vaefunc.cli.rundir`): config.json (the model spec, the training config,
the data), metrics.jsonl, checkpoint.safetensors and pictures.
``--arch conv`` and ``--n-classes N`` (labels from the data) reach the conv
and conditional models; ``--preset NAME`` (:mod:`vaefunc.presets`) sets the
model and training fields it names, and flags given explicitly override it.
``vaefunc sweep`` trains one model per ``--beta``, ``--lr`` or ``--seed`` at
once (:func:`vaefunc.train_many`) and plots their rate against their distortion.

Ctrl-C (SIGINT) or SIGTERM during training finishes the current step, writes
the checkpoint, prints how to resume, and exits with 128 + the signal number;
``vaefunc train --out runs/NAME --resume`` continues bit for bit, runs written
by vaefunc 0.1 included. ``eval``, ``sample``, ``reconstruct``, ``interpolate``,
``traverse`` and ``latent`` run the model as its checkpoint's spec says; the
picture commands write into the run directory unless ``--out`` says otherwise.

Bad arguments print one line and exit with 2; a non-finite loss exits with 1
(the last finite params are saved in last_finite.safetensors). An OS error
(a name too long, a full disk) is one line naming the path: exit 2 for a path
given, 1 for the machine's state. A run's folder is locked before anything is
read, and ``--resume`` refuses a checkpoint that is not the folder's run (its
run id, spec or settings differ from config.json's).

Modules: :mod:`~vaefunc.cli.parser` (the flags), :mod:`~vaefunc.cli.settings`
(flags and config.json to a spec, a TrainConfig and data options),
:mod:`~vaefunc.cli.rundir` (the run directory), :mod:`~vaefunc.cli.datasets`,
:mod:`~vaefunc.cli.figures`, :mod:`~vaefunc.cli.session` (what train and sweep
share) and one module per command group (``cmd_train``, ``cmd_sweep``, ``cmd_model``).
"""

from __future__ import annotations

import contextlib
import errno
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..loop import NonFiniteLossError
from ..schedules import parse as parse_kl_schedule
from ..threads import using
from . import cmd_model, cmd_sweep, cmd_train
from .parser import DEFAULT_DATA, UsageError, build_parser, given
from .rundir import FILES, SWEEP_FILES

COMMANDS: dict[str, Callable[[Any], int]] = {
    "train": cmd_train.run,
    "sweep": cmd_sweep.run,
    "eval": cmd_model.evaluate,
    "sample": cmd_model.sample,
    "reconstruct": cmd_model.reconstruct,
    "interpolate": cmd_model.interpolate,
    "traverse": cmd_model.traverse,
    "latent": cmd_model.latent,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script's entry point)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv, args.given = argv, given(argv)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as args.cleanup:  # run-directory locks, released
            if args.threads:  # --threads N: for the whole command (train sets it again for its steps)
                args.cleanup.enter_context(using(args.threads))
            warnings.showwarning = _warning_line(args.command)
            return COMMANDS[args.command](args)
    except UsageError as e:
        return _fail(args.command, e, 2)
    except NonFiniteLossError as e:
        return _fail(args.command, e, 1)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        # Bad input found by the library (unknown dataset, corrupt file, wrong shapes...): one line, exit 2.
        return _fail(args.command, e, 2)
    except OSError as e:
        # The system refused a path or a write (a name too long, a full disk): one line naming the path; exit 2
        # for the paths given, 1 for the machine's state (the checkpoint written last is whole: writes are atomic).
        return _fail(args.command, _os_message(e), 2 if e.errno in _PATH_ERRORS else 1)
    except RuntimeError as e:
        from ..distributed import DistributedError

        if not isinstance(e, DistributedError):
            raise
        return _fail(args.command, e, 1)  # a peer died or stalled: one line, not a traceback
    except KeyboardInterrupt:
        print(f"vaefunc {args.command}: interrupted", file=sys.stderr)
        return 130


def _warning_line(command: str) -> Callable[..., None]:
    """Warnings (a diverging loss, say) as one line on stderr that leaves the progress bar whole."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"vaefunc {command}: warning: {message}", file=sys.stderr)

    return show


_PATH_ERRORS = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                errno.ELOOP, errno.EROFS}  # fmt: skip
"""OS errors that say a path given is wrong (exit 2, as for other bad input), not the machine's state."""


def _os_message(e: OSError) -> str:
    """``path: No space left on device (errno 28)``; the path and the second one where the error names them."""
    names = " -> ".join(str(n) for n in (e.filename, e.filename2) if n is not None)
    what = f"{e.strerror} (errno {e.errno})" if e.strerror else str(e)
    return f"{names}: {what}" if names else what


def _fail(command: str, error: Exception | str, code: int) -> int:
    print(f"vaefunc {command}: error: {error}", file=sys.stderr)
    return code


__all__ = ["COMMANDS", "DEFAULT_DATA", "FILES", "SWEEP_FILES", "UsageError", "build_parser", "main",
           "parse_kl_schedule"]  # fmt: skip
