"""``python -m bench.ceilings``: see :mod:`bench.ceilings.cli`."""

from bench.ceilings.cli import main

raise SystemExit(main())
