"""``python -m alexnet``: the same entry point as the ``alexnet`` console script."""

from alexnet.cli import main

raise SystemExit(main())
