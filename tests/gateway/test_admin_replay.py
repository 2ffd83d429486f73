"""Replaying journaled admin changes (issue 10, item 3), at the record level.

A restart replays every journaled change: limits, status and registration. A limit change goes
through the same checks as the admin plane's (``checks.config.merge_limits``), so one an older
version journaled without them (a NaN ``max_notional`` that let a 16 M order through a 1 M
limit) is refused on replay as a whole, logged, and never put back in force.
"""

from __future__ import annotations

import math

from checks.calendar import ns_from_local
from checks.engine import Engine as ReferenceEngine
from gateway import journal as jr
from gateway.config import load_gateway_config
from gateway.recovery import replay_journal
from gateway.server import Gateway
from tests.conftest import EXAMPLES

TODAY = ns_from_local(2026, 11, 30, 10, 0)  # Monday


def _replay(tmp_path, records: list) -> Gateway:
    with jr.Journal.open(tmp_path) as j:
        j.append_many(records)
    gw = Gateway(load_gateway_config(EXAMPLES / "gateway.toml"), engine_cls=ReferenceEngine)
    with jr.Journal.open(tmp_path) as j:
        replay_journal(gw, j, now_ns=TODAY + 10)
    return gw


def test_journaled_changes_are_replayed(tmp_path):
    gw = _replay(tmp_path, [
        jr.AdminAction(TODAY, "admin-wang", "set_limits", "account", "A001",
                       {"changes": {"max_order_qty": 300, "max_notional": 40_000_000.0}},
                       "block trade", True),
        jr.AdminAction(TODAY + 1, "risk-officer-li", "set_status", "account", "A002",
                       {"status": "ACTIVE"}, "cleared", True),
        jr.AdminAction(TODAY + 2, "risk-officer-li", "set_programmatic", "account", "A003",
                       {"registration": "CONFIRMED"}, "confirmed", True),
    ])
    assert (gw.limits["A001"].max_order_qty, gw.limits["A001"].max_notional) == (300, 4e7)
    assert gw.engine.account_view("A002")["status"] == "ACTIVE"
    assert gw.engine.account_view("A003")["programmatic"] == "CONFIRMED"


def test_a_journaled_limit_change_that_fails_the_checks_is_not_replayed_at_all(tmp_path):
    configured = load_gateway_config(EXAMPLES / "gateway.toml").risk.accounts[0].limits
    gw = _replay(tmp_path, [
        jr.AdminAction(TODAY, "risk-officer-li", "set_limits", "account", "A001",
                       {"changes": {"max_order_qty": 3, "max_notional": math.nan}}, ""),
        jr.AdminAction(TODAY + 1, "risk-officer-li", "set_limits", "account", "A001",
                       {"changes": {"loss_limit": -5.0}}, ""),
    ])
    assert gw.limits["A001"] == configured  # neither half of either change
