"""``python -m vaefunc``: the same as the ``vaefunc`` command."""

from .cli import main

raise SystemExit(main())
