"""The ``vaefunc`` command's start: Ctrl-C or SIGTERM while torch imports is answered in one line.

Importing :mod:`vaefunc` imports torch and NumPy, which takes a second or
more. A KeyboardInterrupt raised in the middle of those imports would leave
them half-initialised and print a long traceback, and SIGTERM would end the
process without a word. The console script (``vaefunc._launch:main``) and
``python -m vaefunc`` both import this package first, so its ``__init__``
calls :func:`hold_signals` before anything else and :func:`release_signals`
after its imports: while the command starts, SIGINT and SIGTERM are only
recorded, and once the imports are done the command exits with one line and
the conventional status, 130 for Ctrl-C and 143 for SIGTERM (128 + the
signal), before any work. From then on :func:`vaefunc.cli.main` handles Ctrl-C,
training handles both (it finishes the step and writes a checkpoint), and
SIGTERM anywhere else ends the command with one line and 143. The command also
sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (:func:`passive_wait_policy`).

This module imports only the standard library, so it is in place before
torch starts importing. In any other process (a program that imports
vaefunc, the tests) it does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_HELD = (signal.SIGINT, signal.SIGTERM)
_MESSAGES: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}
_received: list[int] = []
_previous: dict[int, signal._HANDLER] = {}  # signal -> the handler it had (typeshed's alias; never evaluated)


def is_the_command() -> bool:
    """Whether this process is the ``vaefunc`` command starting up: its console script, or
    ``python -m vaefunc`` (while ``-m`` imports the package, ``sys.argv[0]`` is ``"-m"``)."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("vaefunc", "vaefunc.exe", "vaefunc-script.py"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    as_module = "-mvaefunc" in argv or any(a == "-m" and b == "vaefunc" for a, b in zip(argv, argv[1:]))
    return sys.argv[:1] == ["-m"] and as_module


def hold_signals() -> None:
    """In the ``vaefunc`` command, record SIGINT and SIGTERM instead of acting on them until
    :func:`release_signals`, and :func:`passive_wait_policy`; in any other process, nothing."""
    if is_the_command():
        passive_wait_policy()
        _hold()


def passive_wait_policy() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, before torch loads: OpenMP threads that
    wait for work sleep instead of spinning on a core another process may need. On a 2-core machine with
    one core busy, two spinning threads ran the default model's epoch at 700-4,000 examples/s, two passive
    ones at 19,000-22,000, one thread at 20,000-22,000 (docs/BENCHMARKS.md, "Threads"). OpenMP reads the
    policy once, when torch loads, so only the command can set it for itself."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _hold() -> None:
    if _previous or threading.current_thread() is not threading.main_thread():
        return  # held already; or not the main thread, where signal handlers cannot be set
    for s in _HELD:
        _previous[s] = signal.signal(s, lambda signum, frame: _received.append(signum))


def release_signals() -> None:
    """Restore the handlers :func:`hold_signals` replaced; if a signal came meanwhile, exit with one
    line and 128 + its number (SystemExit: the interpreter ends without a traceback)."""
    while _previous:
        s, handler = _previous.popitem()
        signal.signal(s, handler)
    if _received:
        signum = _received[0]
        print(f"vaefunc: {_MESSAGES[signum]} while starting up", file=sys.stderr)
        raise SystemExit(128 + signum)


def main() -> int:
    """Import the command line and run it; a signal during the imports exits as :func:`release_signals` says."""
    passive_wait_policy()  # this is the command, however it was started
    _hold()
    try:
        from vaefunc.cli import main as run
    finally:
        release_signals()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)  # training installs its own (finish the step, checkpoint)
    return run()


def _terminated(signum: int, frame) -> None:
    """SIGTERM after start-up, outside training: one line, and exit 143 through the command's cleanup."""
    print(f"vaefunc: {_MESSAGES[signum]}", file=sys.stderr)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
