"""``python -m gateway`` is the ``fengkong`` command."""

from gateway.cli import main

raise SystemExit(main())
