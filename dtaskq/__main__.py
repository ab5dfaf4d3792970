"""``python -m dtaskq``: the same as the ``dtaskq`` command."""

from .cli import main

raise SystemExit(main())
