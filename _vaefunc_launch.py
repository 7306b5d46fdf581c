"""The ``vaefunc`` console script: the command line, with Ctrl-C during start-up answered in one line.

Importing :mod:`vaefunc` imports torch and NumPy, which takes a second or
more; a KeyboardInterrupt raised in the middle of those imports would leave
them half-initialised and print a traceback (or worse). So while they import,
Ctrl-C only sets a flag, and the command exits 130 with one line once they
are done; from then on :func:`vaefunc.cli.main` handles it.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    """Import the command line and run it; Ctrl-C during the imports exits 130 with one line."""
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from vaefunc.cli import main as run
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("vaefunc: interrupted while starting up", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
