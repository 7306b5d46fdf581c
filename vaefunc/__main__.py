"""``python -m vaefunc``: the same as the ``vaefunc`` command (Ctrl-C or SIGTERM while it starts: one line)."""

from ._launch import main

raise SystemExit(main())
