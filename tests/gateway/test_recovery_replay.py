"""Recovery rules at the record level: which journal records rebuild which state."""

from __future__ import annotations

from checks.calendar import ns_from_local
from checks.engine import Engine as ReferenceEngine
from checks.enums import KillScope
from gateway import journal as jr
from gateway.config import load_gateway_config
from gateway.protocol import Logon, NewOrder
from gateway.recovery import replay_journal
from gateway.server import Gateway
from tests.conftest import EXAMPLES

YESTERDAY = ns_from_local(2026, 11, 27, 10, 0)  # Friday
TODAY = ns_from_local(2026, 11, 30, 10, 0)  # Monday


def _order(clid: str, price: float) -> NewOrder:
    return NewOrder(clid, "A001", "rb2605", 1, 1, 1, 1, 1, price, 1)


def _write(path, records) -> None:
    with jr.Journal.open(path) as j:
        j.append_many(records)


def test_only_todays_trading_is_replayed_but_stops_stay_in_force(tmp_path):
    logon = Logon("algo1", "***", ["A001", "A004"], 5.0, False)
    _write(tmp_path, [
        jr.State(YESTERDAY, "boot", b"gw1.old."),
        jr.Inbound(YESTERDAY, 1, logon),
        jr.Inbound(YESTERDAY + 1, 1, _order("y1", 3200.0)),
        jr.Decision(YESTERDAY + 1, 1, "y1", "A001", "rb2605", 0, "", 0),
        jr.AdminAction(YESTERDAY + 2, "risk-officer-li", "kill", "account", "A004", {}, "why"),
        jr.State(TODAY, "boot", b"gw1.new."),
        jr.Inbound(TODAY, 3, logon),
        jr.Inbound(TODAY + 1, 3, _order("t1", 3201.0)),
        jr.Decision(TODAY + 1, 3, "t1", "A001", "rb2605", 0, "", 0),
    ])
    gw = Gateway(load_gateway_config(EXAMPLES / "gateway.toml"), engine_cls=ReferenceEngine)
    with jr.Journal.open(tmp_path) as j:
        report = replay_journal(gw, j, now_ns=TODAY + 10)
    assert report.records == 9 and report.disagreements == []
    assert [o.cl_ord_id for o in gw.router.orders.values()] == ["t1"]
    assert [o.exch_id.startswith("gw1.new.") for o in gw.router.orders.values()] == [True]
    assert (int(KillScope.ACCOUNT), 5, 1) in gw.engine.killed()  # A004 is account index 5
    assert report.max_session == 3


def test_a_replayed_decision_that_disagrees_is_reported(tmp_path):
    logon = Logon("algo1", "***", ["A001"], 5.0, False)
    _write(tmp_path, [
        jr.Inbound(TODAY, 1, logon),
        jr.Inbound(TODAY + 1, 1, _order("t1", 9999.0)),  # far outside the band: rejected now
        jr.Decision(TODAY + 1, 1, "t1", "A001", "rb2605", 0, "", 0),  # ...but journaled accepted
    ])
    gw = Gateway(load_gateway_config(EXAMPLES / "gateway.toml"), engine_cls=ReferenceEngine)
    with jr.Journal.open(tmp_path) as j:
        report = replay_journal(gw, j, now_ns=TODAY + 10)
    assert len(report.disagreements) == 1 and "t1" in report.disagreements[0]
