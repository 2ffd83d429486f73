"""``python -m simulator {exchange,replay,scenario} ...`` (same as ``fengkong sim ...``)."""

import sys

from simulator.cli import main

sys.exit(main())
