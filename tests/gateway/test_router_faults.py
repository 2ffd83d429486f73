"""The router under exchange surprises, link loss, reconnects and restarts (issue 9, sans-IO).

Each test drives the real router, reference engine and journal with fake sessions and a fake
exchange link at explicit times, then — where the claim is about restarts — replays the
journal into a fresh gateway and requires the same book. The process-level versions (kill -9,
real simulator) live in test_recovery.py and test_crash_property.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from checks.calendar import ns_from_local
from checks.digest import digest
from checks.engine import Engine as ReferenceEngine
from checks.enums import (
    AlertLevel,
    ExecType,
    Hedge,
    KillScope,
    Offset,
    OrdStatus,
    OrdType,
    Side,
    Tif,
)
from checks.reasons import Reason
from gateway import journal as jr
from gateway.audit import AuditLog
from gateway.config import load_gateway_config
from gateway.kafka_bus import Topics, route
from gateway.lifecycle import FINAL, TRANSITIONS, Action, Event
from gateway.protocol import (
    Alert,
    CancelOrder,
    CancelReject,
    ExecReport,
    Logon,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
)
from gateway.recovery import replay_journal
from gateway.server import Gateway
from tests.conftest import EXAMPLES

MON_10 = ns_from_local(2026, 11, 30, 10, 0)  # Monday, day session
MON_1630 = ns_from_local(2026, 11, 30, 16, 30)  # after the close, before the 17:00 boundary
MON_2105 = ns_from_local(2026, 11, 30, 21, 5)  # night session: Tuesday's trading day
MS = 1_000_000


class FakeSession:
    def __init__(self, sid: int, user: str = "algo1", accounts=("A001", "A004"),
                 cod: bool = False) -> None:
        self.session_id = sid
        self.user = user
        self.accounts = frozenset(accounts)
        self.cancel_on_disconnect = cod
        self.automated = True
        self.closed = False
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    def reports(self) -> list[ExecReport]:
        return [m for m in self.sent if type(m) is ExecReport]


class FakeLink:
    def __init__(self) -> None:
        self.up = True
        self.sent: list[Any] = []

    def send(self, msg: Any) -> bool:
        if not self.up:
            return False
        self.sent.append(msg)
        return True


def _cfg(**exchange: Any):
    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    if exchange:
        cfg = msgspec.structs.replace(cfg, exchange=msgspec.structs.replace(cfg.exchange, **exchange))
    return cfg


class Live:
    """A gateway's router, engine and journal without sockets."""

    def __init__(self, path: Path, start: int = MON_10 - 1, router_cls: Any = None,
                 **exchange: Any) -> None:
        self.path = path
        self.cfg = _cfg(**exchange)
        self.gw = Gateway(self.cfg, engine_cls=ReferenceEngine, router_cls=router_cls)
        self.audit = AuditLog(jr.Journal.open(path))
        self.router = r = self.gw.router
        r.audit = self.audit
        r.on_day_start = self.gw.checkpoint_now
        r.link = self.link = FakeLink()
        r.record(jr.State(start, "boot", r.prefix.encode()))  # as Gateway does at start-up

    def logon(self, sid: int, now: int, **kw: Any) -> FakeSession:
        s = FakeSession(sid, **kw)
        self.router.record(jr.Inbound(now, sid, Logon(s.user, "***", sorted(s.accounts), 5.0,
                                                      s.cancel_on_disconnect)))
        self.gw.engine.register_session(sid, True)
        self.router.add_session(s)
        return s

    def order(self, s: FakeSession, clid: str, now: int, qty: int = 5, side: int = Side.BUY,
              price: float = 3200.0, account: str = "A001") -> str:
        """Send an order; return its exchange id ("" if rejected)."""
        before = len(self.link.sent)
        self.router.new_order(s, NewOrder(clid, account, "rb2605", side, Offset.OPEN, Hedge.SPEC,
                                          OrdType.LIMIT, Tif.GFD, price, qty), now)
        sent = self.link.sent[before:]
        return sent[0].cl_ord_id if sent else ""

    def working_order(self) -> tuple[FakeSession, str]:
        """Session 1 logs on at 10:00 and has 5 lots of rb2605 working as o1 (acknowledged)."""
        s = self.logon(1, MON_10)
        x = self.order(s, "o1", MON_10 + MS)
        self.report(x, ExecType.NEW, MON_10 + 2 * MS, status=OrdStatus.NEW)
        return s, x

    def report(self, exch_id: str, et: int, now: int, qty: int = 0, px: float = 3200.0,
               exec_id: str = "", status: int = 0, **kw: Any) -> None:
        self.router.exchange_report(ExecReport(exch_id, "X1", "A001", "rb2605", status, et,
                                               last_qty=qty, last_px=px, exec_id=exec_id, **kw),
                                    now)

    def replay(self, now: int):
        """Close this journal and rebuild a fresh gateway from it: (gateway, report)."""
        self.audit.close()
        gw = Gateway(self.cfg, engine_cls=ReferenceEngine)
        with jr.Journal.open(self.path) as j:
            report = replay_journal(gw, j, now_ns=now)
        return gw, report

    def alerts(self, code: int) -> list[Alert]:
        return [a for a in self.router.alerts if a.code == code]


def _position(engine, account: str = "A001") -> tuple:
    return engine.snapshot()["positions"].get((account, "rb2605"), ())


def _same_book(live: Live, gw: Gateway) -> None:
    assert digest(gw.engine.snapshot()) == digest(live.gw.engine.snapshot())
    assert sorted((o.exch_id, o.cum, o.leaves, o.status) for o in gw.router.orders.values()) == \
        sorted((o.exch_id, o.cum, o.leaves, o.status) for o in live.router.orders.values())


# ------------------------------------------------------------------ the lifecycle table
def test_the_lifecycle_table_has_a_row_for_every_report_at_every_state():
    for status in OrdStatus:
        for event in Event:
            assert (status, event) in TRANSITIONS, (status.name, event.name)
    for status in FINAL:  # a finished order never moves again
        assert all(TRANSITIONS[(status, e)][0] == status for e in Event)
    assert TRANSITIONS[(OrdStatus.NEW, Event.REJECTED)] == (OrdStatus.REJECTED, Action.SURPRISE)
    assert TRANSITIONS[(OrdStatus.CANCELED, Event.FULL_FILL)][1] == Action.LATE


# ------------------------------------------------------------------ item 1: executions once
def test_a_repeated_execution_is_applied_once_live_and_on_replay(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    for i in range(3):  # the same execution three times
        live.report(x, ExecType.TRADE, MON_10 + (3 + i) * MS, qty=2, exec_id="E1",
                    status=OrdStatus.PARTIALLY_FILLED)
    o = next(iter(live.router.orders.values()))
    assert (o.cum, o.leaves) == (2, 3)
    assert [r.exec_id for r in s.reports() if r.exec_type == ExecType.TRADE] == ["E1"]
    assert live.router.stats["duplicate_fills"] == 2
    gw, report = live.replay(MON_10 + 10 * MS)
    assert report.disagreements == []
    _same_book(live, gw)


def test_fills_learnt_at_reconciliation_count_once_after_a_restart(tmp_path):
    """Order 5 lots, link drops, 2 fill at the exchange, link returns, restart: 2, not 4."""
    live = Live(tmp_path)
    s, x = live.working_order()
    live.link.up = False  # the link drops; at the exchange 2 lots fill
    for attempt in range(2):  # two reconnects: the exchange says the same execution twice
        t = MON_10 + (10 + 10 * attempt) * MS
        live.router.recon_begin(OrderStatusRequest(f"r{attempt}", "", False, True), t)
        live.report(x, ExecType.TRADE, t + 1, qty=2, exec_id="E1",
                    status=OrdStatus.PARTIALLY_FILLED, cum_qty=2, leaves_qty=3)
        live.report(x, ExecType.STATUS, t + 2, status=OrdStatus.PARTIALLY_FILLED, cum_qty=2,
                    leaves_qty=3, price=3200.0, qty=5, side=Side.BUY)
        assert live.router.reconciled(OrderStatusEnd(f"r{attempt}", 1), t + 3) == 0
    live.link.up = True
    assert _position(live.gw.engine)[0] == 2  # long today
    gw, report = live.replay(MON_10 + 100 * MS)
    assert _position(gw.engine)[0] == 2
    _same_book(live, gw)


def test_reconciliation_closes_orders_the_exchange_lost_once_even_on_replay(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    live.router.recon_begin(OrderStatusRequest("r", "", False, True), MON_10 + 3 * MS)
    assert live.router.reconciled(OrderStatusEnd("r", 0), MON_10 + 4 * MS) == 1
    assert live.router.orders == {}
    assert s.reports()[-1].status == OrdStatus.CANCELED
    gw, _ = live.replay(MON_10 + 10 * MS)
    assert gw.router.orders == {}
    _same_book(live, gw)


# ------------------------------------------------------------------ item 6: surprises
def test_a_reject_after_an_ack_closes_the_order_tells_the_client_and_alerts(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    live.report(x, ExecType.REJECTED, MON_10 + 3 * MS, status=OrdStatus.REJECTED,
                text="exchange: session risk")
    last = s.reports()[-1]
    assert (last.cl_ord_id, last.status, last.reason) == ("o1", OrdStatus.REJECTED,
                                                          Reason.EXCHANGE_REJECT)
    assert live.router.orders == {}
    view = live.gw.engine.account_view("A001")
    assert (view["frozen_margin"], view["frozen_fee"], view["open_orders"]) == (0, 0, 0)
    assert len(live.alerts(Reason.EXCHANGE_SURPRISE)) == 1
    # A cancel for it now is "finished", and nothing goes to the exchange.
    sent = len(live.link.sent)
    live.router.cancel(s, CancelOrder("c1", "o1", "A001"), MON_10 + 4 * MS)
    assert s.sent[-1].reason == Reason.ORDER_FINISHED and len(live.link.sent) == sent
    live.report(x, ExecType.CANCELED, MON_10 + 5 * MS, status=OrdStatus.CANCELED)  # repeat
    assert len(s.reports()) == 2  # ack, reject: the repeat told nobody anything new


def test_a_fill_after_the_order_ended_is_a_critical_alert_not_a_silent_drop(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    live.report(x, ExecType.CANCELED, MON_10 + 3 * MS, status=OrdStatus.CANCELED)
    before = _position(live.gw.engine)
    live.report(x, ExecType.TRADE, MON_10 + 4 * MS, qty=1, exec_id="E9",
                status=OrdStatus.PARTIALLY_FILLED)
    live.report(x, ExecType.TRADE, MON_10 + 5 * MS, qty=1, exec_id="E9")  # said again
    [alert] = live.alerts(Reason.EXCHANGE_SURPRISE)  # once
    assert alert.level == 3 and "E9" in alert.text  # CRITICAL
    assert _position(live.gw.engine) == before  # the book could not take it, and says so


def test_fills_after_a_cancel_request_and_after_a_cancel_reject_are_booked(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    live.router.cancel(s, CancelOrder("c1", "o1", "A001"), MON_10 + 3 * MS)
    live.report(x, ExecType.TRADE, MON_10 + 4 * MS, qty=2, exec_id="E1")
    cancel_id = live.link.sent[-1].cl_ord_id
    live.router.cancel_reject(CancelReject(cancel_id, x, int(Reason.ORDER_FINISHED), "x"),
                              MON_10 + 5 * MS)
    live.report(x, ExecType.TRADE, MON_10 + 6 * MS, qty=3, exec_id="E2")
    assert [r.status for r in s.reports()] == [OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED,
                                               OrdStatus.FILLED]
    assert _position(live.gw.engine)[0] == 5
    gw, _ = live.replay(MON_10 + 10 * MS)
    _same_book(live, gw)


def test_a_report_for_an_unknown_id_alerts_once_and_only_to_its_account(tmp_path):
    live = Live(tmp_path)
    mine = live.logon(1, MON_10)
    other = live.logon(2, MON_10, user="manual1", accounts=("A003",))
    for i in range(3):
        live.report("someone-else.1", ExecType.TRADE, MON_10 + i, qty=1, exec_id=f"E{i}")
    assert len(live.alerts(Reason.UNKNOWN_EXCHANGE_ORDER)) == 1
    assert [type(m) for m in mine.sent] == [Alert] and other.sent == []


# ------------------------------------------------------------------ item 4: held cancels
def test_cancels_requested_while_the_link_is_down_go_first_when_it_is_back(tmp_path):
    live = Live(tmp_path)
    s = live.logon(1, MON_10, cod=True)
    watcher = live.logon(2, MON_10)
    xs = [live.order(s, f"o{i}", MON_10 + (1 + i) * MS, qty=1) for i in range(3)]
    for i, x in enumerate(xs):
        live.report(x, ExecType.NEW, MON_10 + (5 + i) * MS, status=OrdStatus.NEW)
    live.link.up = False
    result = live.gw.killswitch.kill("account", "A001", operator="risk-officer-li",
                                     reason="test", now=MON_10 + 10 * MS)
    assert (result.cancels_sent, result.cancels_pending) == (0, 3)
    assert live.router.pending_cancels() == 3
    # The exchange link comes back: reconciliation, then the held cancels, before anything.
    live.link.up = True
    before = len(live.link.sent)
    assert live.router.link_restored() == 3
    assert sorted(m.orig_cl_ord_id for m in live.link.sent[before:]) == sorted(xs)
    for x in xs:
        live.report(x, ExecType.CANCELED, MON_10 + 20 * MS, status=OrdStatus.CANCELED)
    assert live.router.orders == {} and live.router.pending_cancels() == 0
    del watcher


def test_a_cancel_held_at_a_crash_is_sent_after_the_restart(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    live.link.up = False
    live.router.cancel(s, CancelOrder("c1", "o1", "A001"), MON_10 + 3 * MS)  # not refused
    assert not any(type(m) is CancelReject for m in s.sent)
    gw, _ = live.replay(MON_10 + 10 * MS)  # kill -9 here
    gw.router.link = link = FakeLink()
    assert gw.router.link_restored() == 1 and link.sent[0].orig_cl_ord_id == x
    _same_book(live, gw)


# ------------------------------------------------------------------ item 5: ownership
def test_orders_belong_to_the_user_across_connections_and_restarts(tmp_path):
    live = Live(tmp_path)
    first = live.logon(1, MON_10)
    x = live.order(first, "o1", MON_10 + MS)
    live.report(x, ExecType.NEW, MON_10 + 2 * MS, status=OrdStatus.NEW)
    first.closed = True
    live.router.remove_session(first, False, MON_10 + 3 * MS)  # no cancel-on-disconnect
    second = live.logon(2, MON_10 + 4 * MS, cod=True)  # the user reconnects
    assert next(iter(live.router.orders.values())).session_id == 2
    live.report(x, ExecType.TRADE, MON_10 + 5 * MS, qty=1, exec_id="E1")
    assert second.reports()[-1].cum_qty == 1  # its reports come to the new connection
    # After a restart the recovered session owns it too, and its cancel-on-disconnect fires.
    gw, report = live.replay(MON_10 + 10 * MS)
    assert report.open_sessions == [2]
    from gateway.recovery import end_replayed_sessions
    gw.router.link = FakeLink()
    assert end_replayed_sessions(gw) == 1  # held until the link is back and reconciled
    assert gw.router.link_restored() == 1


def test_a_reconnected_session_cancels_the_orders_of_its_earlier_connection(tmp_path):
    live = Live(tmp_path)
    first = live.logon(1, MON_10)
    x = live.order(first, "o1", MON_10 + MS)
    live.report(x, ExecType.NEW, MON_10 + 2 * MS, status=OrdStatus.NEW)
    first.closed = True
    live.router.remove_session(first, False, MON_10 + 3 * MS)
    second = live.logon(2, MON_10 + 4 * MS)
    live.router.cancel(second, CancelOrder("c1", "o1", "A001"), MON_10 + 5 * MS)
    assert type(live.link.sent[-1]) is CancelOrder and live.link.sent[-1].orig_cl_ord_id == x
    other = live.logon(3, MON_10 + 6 * MS, user="manual1", accounts=("A003",))
    live.router.cancel(other, CancelOrder("c2", "o1", "A001"), MON_10 + 7 * MS)
    assert other.sent[-1].reason == Reason.UNKNOWN_ORDER


# ------------------------------------------------------------------ item 2: day boundary
def _night_flow(live: Live) -> str:
    assert live.router.day != -1
    s = live.logon(1, MON_1630)  # logged on before the 17:00 boundary
    x = live.order(s, "n1", MON_2105, qty=3)  # trades in the night session (next day)
    assert x, s.sent
    live.report(x, ExecType.NEW, MON_2105 + MS, status=OrdStatus.NEW)
    live.report(x, ExecType.TRADE, MON_2105 + 2 * MS, qty=3, exec_id="N1")
    return x


def test_a_session_that_logged_on_before_the_day_boundary_keeps_its_fills(tmp_path):
    live = Live(tmp_path, start=MON_1630 - 1)
    _night_flow(live)
    assert _position(live.gw.engine)[0] == 3
    gw, report = live.replay(MON_2105 + 10 * MS)
    assert report.from_seq > 1 and report.disagreements == []  # from the night's checkpoint
    assert _position(gw.engine)[0] == 3
    _same_book(live, gw)


def test_a_journal_without_checkpoints_still_replays_a_session_across_the_boundary(tmp_path):
    logon = Logon("algo1", "***", ["A001"], 5.0, False)
    with jr.Journal.open(tmp_path) as j:
        j.append_many([
            jr.Inbound(MON_1630, 1, logon),
            jr.Inbound(MON_2105, 1, NewOrder("n1", "A001", "rb2605", 1, 1, 1, 1, 1, 3200.0, 3)),
            jr.Decision(MON_2105, 1, "n1", "A001", "rb2605", 0, "", 1),
        ])
    gw = Gateway(_cfg(), engine_cls=ReferenceEngine)
    with jr.Journal.open(tmp_path) as j:
        report = replay_journal(gw, j, now_ns=MON_2105 + MS)
    assert report.disagreements == [] and len(gw.router.orders) == 1


def test_kills_carry_over_in_the_checkpoint_and_replay_starts_there(tmp_path):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    live.gw.killswitch.kill("account", "A004", operator="risk-officer-li", reason="test",
                            now=MON_10 + MS)
    live.gw.killswitch.set_status("A001", "CLOSE_ONLY", operator="risk-officer-li",
                                  reason="report", now=MON_10 + 2 * MS)
    live.order(s, "n1", MON_2105, account="A004")  # first record of the next day: checkpoint
    gw, report = live.replay(MON_2105 + MS)
    assert report.checkpoint_day == live.router.day and report.from_seq > 1
    assert (int(KillScope.ACCOUNT), 5, 1) in gw.engine.killed()
    assert gw.engine.account_view("A001")["status"] == "CLOSE_ONLY"
    assert 1 in gw.router.sessions  # the session that logged on yesterday


# ------------------------------------------------------------------ unknown orders
def _unknown_status(**kw: Any) -> ExecReport:
    base = dict(status=OrdStatus.NEW, leaves_qty=2, qty=2, price=3200.0, side=Side.BUY)
    base.update(kw)
    return ExecReport("gw0.old.1", "X7", "A001", "rb2605", base.pop("status"), ExecType.STATUS,
                      **base)


@pytest.mark.parametrize("policy", ["cancel", "adopt"])
def test_an_order_the_gateway_does_not_know_is_never_ignored(tmp_path, policy):
    live = Live(tmp_path, unknown_orders=policy)
    live.router.recon_begin(OrderStatusRequest("r", "", False, True), MON_10)
    live.router.exchange_report(ExecReport("gw0.old.1", "X7", "A001", "rb2605", 0,
                                           ExecType.TRADE, last_qty=1, last_px=3200.0,
                                           exec_id="U1"), MON_10 + 1)
    live.router.exchange_report(_unknown_status(
        status=OrdStatus.PARTIALLY_FILLED, cum_qty=1, leaves_qty=1, offset=Offset.OPEN,
        hedge=Hedge.SPEC, ord_type=OrdType.LIMIT, tif=Tif.GFD), MON_10 + 2)
    live.router.reconciled(OrderStatusEnd("r", 1), MON_10 + 3)
    [alert] = live.alerts(Reason.UNKNOWN_EXCHANGE_ORDER)
    assert alert.level == 3 and "gw0.old.1" in alert.text
    if policy == "cancel":
        assert type(live.link.sent[-1]) is CancelOrder
        assert live.link.sent[-1].orig_cl_ord_id == "gw0.old.1"
        assert live.router.orders == {}
    else:
        [o] = live.router.orders.values()
        assert (o.adopted, o.cum, o.leaves, o.account) == (True, 1, 1, "A001")
        assert _position(live.gw.engine)[0] == 1
        gw, _ = live.replay(MON_10 + MS)
        _same_book(live, gw)


def test_adoption_falls_back_to_cancel_when_the_exchange_does_not_give_the_terms(tmp_path):
    live = Live(tmp_path, unknown_orders="adopt")
    live.router.recon_begin(OrderStatusRequest("r", "", False, True), MON_10)
    live.router.exchange_report(_unknown_status(), MON_10 + 1)
    live.router.reconciled(OrderStatusEnd("r", 1), MON_10 + 2)
    assert type(live.link.sent[-1]) is CancelOrder and live.router.orders == {}
    assert "refused to adopt" in live.alerts(Reason.UNKNOWN_EXCHANGE_ORDER)[0].text


def test_a_report_with_no_client_to_hear_it_is_still_journaled_for_the_drop_copy(tmp_path):
    """The exchange's report is journaled with whose order it is, client or no client, and
    goes to the drop copy; a report the gateway derives (an order the exchange lost) is
    journaled as the report itself, to no session."""
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    x = live.order(s, "o1", MON_10 + MS)
    y = live.order(s, "o2", MON_10 + MS)
    s.closed = True
    live.router.remove_session(s, False, MON_10 + 2 * MS)  # the client is gone
    live.report(x, ExecType.NEW, MON_10 + 3 * MS, status=OrdStatus.NEW)
    live.router.recon_begin(OrderStatusRequest("r1", "", True, True, [x, y]), MON_10 + 4 * MS)
    live.report(x, ExecType.STATUS, MON_10 + 5 * MS, status=OrdStatus.NEW)
    live.router.reconciled(OrderStatusEnd("r1", 1), MON_10 + 6 * MS)  # o2 is lost
    live.audit.close()
    with jr.Journal.open(tmp_path) as j:
        recs = [r for _, r in j.read()]
    topics = Topics()
    drop = [r for r in recs if topics.drop_copy in route(r, topics)]
    assert [(type(r).__name__, r.session) for r in drop] == \
        [("ExchangeEvent", 0), ("ExchangeEvent", 0), ("Outbound", jr.NO_SESSION)]
    assert [r.client_id for r in drop[:2]] == ["o1", "o1"]
    assert (drop[2].msg.cl_ord_id, drop[2].msg.status) == ("o2", OrdStatus.REJECTED)  # never acked
    assert not any(type(r) is jr.Decision for r in recs)  # both orders accepted: no decisions


def test_an_order_refused_for_a_down_link_is_refused_again_on_replay(tmp_path):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    live.link.up = False
    assert live.order(s, "r1", MON_10 + MS) == ""
    assert s.reports()[-1].reason == Reason.EXCHANGE_UNAVAILABLE
    live.link.up = True
    x = live.order(s, "t1", MON_10 + 2 * MS)  # the boot's first exchange id
    gw, report = live.replay(MON_10 + 10 * MS)
    assert report.disagreements == []
    assert [(o.cl_ord_id, o.exch_id) for o in gw.router.orders.values()] == [("t1", x)]
    _same_book(live, gw)
    assert "r1" in gw.router.used_clids["algo1"]  # its id stays used for the day


def test_reconciliation_names_the_working_orders_and_no_more(tmp_path, monkeypatch):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    xs = [live.order(s, f"o{i}", MON_10 + (1 + i) * MS, qty=1) for i in range(3)]
    live.report(xs[0], ExecType.CANCELED, MON_10 + 9 * MS, status=OrdStatus.CANCELED)
    req = live.router.recon_request("r")
    assert (req.open_only, req.trades, sorted(req.orders)) == (True, True, sorted(xs[1:]))
    import gateway.router
    monkeypatch.setattr(gateway.router, "RECON_NAMED_MAX", 1)  # too many to name: ask for all
    req = live.router.recon_request("r")
    assert (req.open_only, req.trades, req.orders) == (False, True, [])


def test_an_order_closed_here_but_working_at_the_exchange_is_cancelled_and_alerted(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    live.router.recon_begin(OrderStatusRequest("r1", "", True, True, []), MON_10 + 3 * MS)
    live.router.reconciled(OrderStatusEnd("r1", 0), MON_10 + 4 * MS)  # lost, it seemed
    assert live.router.orders == {}
    live.router.recon_begin(OrderStatusRequest("r2", "", True, True, []), MON_10 + 5 * MS)
    live.report(x, ExecType.STATUS, MON_10 + 6 * MS, status=OrdStatus.NEW, leaves_qty=5, qty=5,
                price=3200.0, side=Side.BUY)  # ...but it is working there after all
    assert type(live.link.sent[-1]) is CancelOrder and live.link.sent[-1].orig_cl_ord_id == x
    assert "had closed as CANCELED" in live.alerts(Reason.UNKNOWN_EXCHANGE_ORDER)[-1].text


@pytest.mark.parametrize("router", ["reference", "fast"])
def test_a_refusal_is_journaled_right_behind_its_order_whatever_it_sets_off(tmp_path, router):
    """A refusal can set off journaled records of its own (the registry's watch flags an
    account on an HFT refusal: an admin action and an alert). The refusal's Decision still
    comes right behind the order — recovery looks for it in the very next record — and a
    restart replays the day without a disagreement."""
    from gateway.fast_router import router_class

    live = Live(tmp_path, router_cls=router_class(router))
    r = live.router

    def counted(account: str, now: int, reason: int) -> None:  # what a watch may journal
        if reason:
            r.alert(AlertLevel.WARNING, Reason.REPORT_NEEDS_CORRECTION, f"account:{account}",
                    "refused while watched", now)

    r.on_counted = counted
    s = live.logon(1, MON_10)
    assert live.order(s, "bad", MON_10 + MS, price=3200.5) == ""  # off the tick: refused
    live.audit.close()
    with jr.Journal.open(tmp_path) as j:
        recs = [rec for _, rec in j.read()]
    i = next(k for k, rec in enumerate(recs) if type(rec) is jr.Inbound
             and getattr(rec.msg, "cl_ord_id", "") == "bad")
    assert type(recs[i + 1]) is jr.Decision and recs[i + 1].cl_ord_id == "bad"
    assert type(recs[i + 2]) is jr.Outbound and type(recs[i + 2].msg) is Alert
    _, report = live.replay(MON_10 + 2 * MS)
    assert report.disagreements == []
