"""``python -m elpips``: the same as the ``elpips`` console command."""

from elpips.scripts.cli import main

raise SystemExit(main())
