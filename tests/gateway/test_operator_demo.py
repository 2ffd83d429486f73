"""The demos show what they say they show (issue 10, item 11): each row of the engine walk-through
gets the outcome its label promises, and the kill switch in the loopback demo cancels orders
that really rest at the exchange."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

from rich.console import Console

from checks.reasons import Reason
from gateway import engine_demo
from gateway.demo import RESTING
from tests.conftest import ROOT

# What each row's label promises (the code it must show).
PROMISED = {
    "an ordinary opening buy": Reason.ACCEPTED,
    "close yesterday's long (SHFE: CLOSE = close-yesterday)": Reason.ACCEPTED,
    "CLOSE_TODAY with no position opened today": 901,
    "closing more than the account holds": 901,
    "its sibling would buy into it: self-trade": Reason.SELF_TRADE,
    "not enough funds for the margin": 1001,
}


def test_engine_walk_through_rows_show_what_their_labels_say() -> None:
    results = dict(engine_demo.run(console=Console(file=io.StringIO(), width=200)))
    for what, code in PROMISED.items():
        assert results[what] == int(code), (what, Reason(results[what]).name)
    # Only the self-trade row may show a self-trade.
    assert [w for w, c in results.items() if c == Reason.SELF_TRADE] == [
        "its sibling would buy into it: self-trade"]


def test_loopback_demo_kill_cancels_the_orders_left_resting() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "demo"], cwd=ROOT, text=True,
                         capture_output=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    m = re.search(r"kill switch: (\d+) cancels sent", out.stdout)
    assert m and int(m.group(1)) == RESTING
    assert re.search(rf"the exchange confirmed {m.group(1)} of them CANCELED", out.stdout)

