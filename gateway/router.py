"""Order routing: the gateway's core, between client sessions, the risk engine and the exchange.

Theory of operation
-------------------
Inbound, from a logged-on client session::

    NewOrder -> session checks (account permitted, cl_ord_id unused today, link up)
             -> engine.decide (Cython)  -> accepted: forward to the exchange under an
                                            exchange-facing id; rejected: ExecReport REJECTED
                                            with the reason code and sentence
    CancelOrder -> find the session's own working order -> engine.cancel_request (counted,
                   never refused) -> forward

Back from the exchange, every ``ExecReport`` settles the engine (``apply_*``), moves the order
through ``gateway.lifecycle`` and goes to the owning session (or, if it has gone, to another
live session of the same user). Alerts the engine raises go to the sessions trading the
account and, journaled once, to the alerts topic; *triggers* (stop this account) go to the
kill switch, the same path an operator uses.

Every inbound message, decision, outbound message and exchange event is appended to the
journal *before* anything is sent (write-ahead), with the timestamp the engine was given, so
replaying the journal through these same handlers rebuilds the exact book (``replaying``
suppresses the sends).

Time is read once per handled message (``clock``) and passed down; the engine never reads it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from checks.calendar import trading_day_bounds, trading_day_number
from checks.decision import TRIGGER_STATUS, AlertEvent
from checks.enums import AlertLevel, ExecType, KillScope, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.lifecycle import FINAL, Event, next_status
from gateway.protocol import (
    Alert,
    CancelOrder,
    CancelReject,
    ExecReport,
    MarketData,
    NewOrder,
    OrderStatusEnd,
)

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.config import GatewayConfig

log = structlog.get_logger("fengkong.router")
NS = 1_000_000_000


class RoutedOrder:
    """What the gateway knows of one working order (the engine holds its risk state)."""

    __slots__ = ("ref", "session", "session_id", "user", "cl_ord_id", "exch_id", "order_id",
                 "account", "symbol", "side", "price", "qty", "cum", "leaves", "status", "ts_ns")

    def __init__(self, ref: int, session: SessionPort, msg: NewOrder, qty: int,
                 exch_id: str, now: int) -> None:
        self.ref = ref
        self.session = session  # where its reports go while that session lives
        self.session_id = session.session_id
        self.user = session.user
        self.cl_ord_id = msg.cl_ord_id
        self.exch_id = exch_id
        self.order_id = ""
        self.account = msg.account
        self.symbol = msg.symbol
        self.side = msg.side
        self.price = msg.price
        self.qty = qty
        self.cum = 0
        self.leaves = qty
        self.status = OrdStatus.PENDING_NEW
        self.ts_ns = now

    def view(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__ if s != "session"}


class SessionPort:
    """What the router needs of a client session (``gateway.session.ClientSession``)."""

    session_id: int
    user: str
    accounts: frozenset[str]
    by_clid: dict[str, int]  # the session's working orders by its own cl_ord_id
    finished_clids: set[str]  # its finished orders (so a late cancel says "finished")
    closed: bool

    def send(self, msg: Any) -> None: ...


class LinkPort:
    """What the router needs of the exchange link (``gateway.exchange_link.ExchangeLink``)."""

    up: bool

    def send(self, msg: Any) -> None: ...


class Router:
    def __init__(self, cfg: GatewayConfig, engine: Any, audit: AuditLog | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.cfg = cfg
        self.engine = engine
        self.audit = audit
        # Every connection flushes the write-ahead batch before its bytes leave.
        self.before_write = audit.flush if audit is not None else None
        self.clock = clock
        self.replaying = False
        # Why new orders are refused whatever the engine says (None: they are not): the journal
        # cannot be written (JOURNAL_UNAVAILABLE) or is damaged (SAFE_MODE). Cancels still go.
        self.halted: tuple[int, str] | None = None
        self.sessions: dict[int, SessionPort] = {}
        self.orders: dict[int, RoutedOrder] = {}
        self.by_exch: dict[str, int] = {}
        self.cancels: dict[str, tuple[int, str]] = {}  # exchange cancel id -> (ref, client id)
        self.used_clids: dict[str, set[str]] = {}  # user -> ids used this trading day
        self.clid_day_end = -1  # the used ids are forgotten from this timestamp on
        self.link: LinkPort | None = None
        self.alerts: deque[Alert] = deque(maxlen=1000)
        self.trigger_handler: Callable[[str, int, int], None] | None = None
        self.reject_times: dict[int, deque[int]] = {}
        self.storm_handler: Callable[[int], None] | None = None
        self.prefix = f"{cfg.gateway.id}.{time.time_ns() // 1_000_000 % 10**10:x}."
        self._seq = 0
        self.stats = {"orders": 0, "accepted": 0, "rejected": 0, "cancels": 0, "fills": 0}

    # ------------------------------------------------------------------ plumbing
    def _record(self, record: Any) -> None:
        if self.audit is not None and not self.replaying:
            self.audit.append(record)

    def _to_session(self, session: SessionPort | None, msg: Any, now: int) -> None:
        if session is None or self.replaying:
            return
        self._record(jr.Outbound(now, session.session_id, msg))
        session.send(msg)

    def _to_exchange(self, msg: Any, now: int) -> None:
        if self.replaying or self.link is None:
            return
        self._record(jr.Outbound(now, jr.EXCHANGE_LINK, msg))
        self.link.send(msg)

    def _owner(self, o: RoutedOrder) -> SessionPort | None:
        s = o.session
        if not s.closed:
            return s
        for s in self.sessions.values():  # the user reconnected: the new session gets it
            if s.user == o.user and not s.closed:
                return s
        return None

    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"{self.prefix}{kind}{self._seq:x}"

    def link_up(self) -> bool:
        return self.link is not None and self.link.up

    # ------------------------------------------------------------------ sessions
    def add_session(self, session: SessionPort) -> None:
        self.sessions[session.session_id] = session

    def remove_session(self, session: SessionPort, cancel_open: bool) -> int:
        """Forget a closed session; cancel its working orders if it asked for that."""
        self.sessions.pop(session.session_id, None)
        self.reject_times.pop(session.session_id, None)
        if not cancel_open:
            return 0
        refs = [ref for ref, o in self.orders.items() if o.session_id == session.session_id]
        return self.cancel_refs(refs, f"cancel-on-disconnect of session {session.session_id}")

    def _clids(self, user: str, now: int) -> set[str]:
        """The cl_ord_ids ``user`` used this trading day (they must be unique per day)."""
        if now >= self.clid_day_end:
            boundary = self.cfg.risk.day_boundary_s
            self.clid_day_end = trading_day_bounds(trading_day_number(now, boundary), boundary)[1]
            self.used_clids.clear()
        return self.used_clids.setdefault(user, set())

    # ------------------------------------------------------------------ new orders
    def new_order(self, session: SessionPort, msg: NewOrder, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self._record(jr.Inbound(now, session.session_id, msg))
        self.stats["orders"] += 1
        if msg.account not in session.accounts:
            return self._reject(session, msg, Reason.ACCOUNT_NOT_PERMITTED,
                                f"session {session.session_id} may not trade {msg.account!r}", now)
        used = self._clids(session.user, now)
        if msg.cl_ord_id in used:
            return self._reject(session, msg, Reason.DUPLICATE_CL_ORD_ID,
                                f"cl_ord_id {msg.cl_ord_id!r}", now)
        used.add(msg.cl_ord_id)
        if not self.replaying:
            if self.halted is not None:
                return self._reject(session, msg, self.halted[0], self.halted[1], now)
            if not self.link_up():
                return self._reject(session, msg, Reason.EXCHANGE_UNAVAILABLE, "", now)
        decision = self.engine.decide(msg, now, session.session_id)
        self._record(jr.Decision(now, session.session_id, msg.cl_ord_id, msg.account, msg.symbol,
                                 int(decision.reason), decision.text,
                                 decision.ref if decision.reason == 0 else 0))
        if decision.alerts:
            self._alerts(decision.alerts, now)
        if decision.reason:
            self._reject(session, msg, decision.reason, None, now, text=decision.text)
        else:
            self.stats["accepted"] += 1
            qty = int(msg.qty)
            exch_id = f"{self.prefix}{decision.ref:x}"
            o = RoutedOrder(decision.ref, session, msg, qty, exch_id, now)
            self.orders[decision.ref] = o
            self.by_exch[exch_id] = decision.ref
            session.by_clid[msg.cl_ord_id] = decision.ref
            self._to_exchange(NewOrder(exch_id, msg.account, msg.symbol, msg.side, msg.offset,
                                       msg.hedge, msg.ord_type, msg.tif, msg.price, qty), now)
        if decision.trigger:
            self._trigger(msg.account, decision.trigger, now)
        return None

    def _reject(self, session: SessionPort, msg: NewOrder, reason: int, detail: str | None,
                now: int, text: str | None = None) -> None:
        self.stats["rejected"] += 1
        if text is None:
            text = Reason(reason).description + (f" ({detail})" if detail else "")
        qty = msg.qty if type(msg.qty) is int else 0
        price = msg.price if type(msg.price) is float else 0.0
        self._to_session(session, ExecReport(
            msg.cl_ord_id, "", msg.account, msg.symbol, OrdStatus.REJECTED, ExecType.REJECTED,
            int(reason), text, 0, 0.0, 0, 0, now, msg.side, price, qty), now)
        if self.storm_handler is not None and not self.replaying:
            times = self.reject_times.setdefault(session.session_id,
                                                 deque(maxlen=self.cfg.gateway.reject_storm))
            times.append(now)
            if len(times) == times.maxlen and times[0] > now - NS:
                times.clear()
                self.storm_handler(session.session_id)

    # ------------------------------------------------------------------ cancels
    def cancel(self, session: SessionPort, msg: CancelOrder, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self._record(jr.Inbound(now, session.session_id, msg))
        ref = session.by_clid.get(msg.orig_cl_ord_id)
        o = self.orders.get(ref) if ref is not None else None
        if o is None or o.account != msg.account:
            reason = (Reason.ORDER_FINISHED if o is None and msg.orig_cl_ord_id in session.finished_clids
                      else Reason.UNKNOWN_ORDER)
            self._to_session(session, CancelReject(msg.cl_ord_id, msg.orig_cl_ord_id, int(reason),
                                                   Reason(reason).description), now)
            return
        if not self.replaying and not self.link_up():
            self._to_session(session, CancelReject(
                msg.cl_ord_id, msg.orig_cl_ord_id, int(Reason.EXCHANGE_UNAVAILABLE),
                Reason.EXCHANGE_UNAVAILABLE.description), now)
            return
        self._send_cancel(o, msg.cl_ord_id, now)

    def _send_cancel(self, o: RoutedOrder, client_id: str, now: int) -> None:
        self.stats["cancels"] += 1
        outcome = self.engine.cancel_request(o.ref, now)
        if outcome.alerts:
            self._alerts(outcome.alerts, now)
        cancel_id = self._next_id("c")
        self.cancels[cancel_id] = (o.ref, client_id)
        self._to_exchange(CancelOrder(cancel_id, o.exch_id, o.account), now)
        if outcome.trigger:
            self._trigger(o.account, outcome.trigger, now)

    def cancel_refs(self, refs: list[int], why: str, now: int | None = None) -> int:
        """Send cancels for working orders (kill switch, disconnect); returns how many."""
        now = self.clock() if now is None else now
        sent = 0
        for ref in refs:
            o = self.orders.get(ref)
            if o is not None:
                self._send_cancel(o, "", now)
                sent += 1
        if sent:
            log.info("cancels sent", count=sent, why=why)
        return sent

    # ------------------------------------------------------------------ exchange side
    def exchange_report(self, rep: ExecReport, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self._record(jr.ExchangeEvent(now, rep))
        ref = self.by_exch.get(rep.cl_ord_id)
        o = self.orders.get(ref) if ref is not None else None
        if o is None:
            if rep.exec_type != ExecType.STATUS:  # status of long-finished orders is expected
                log.warning("report for an unknown order", exch_id=rep.cl_ord_id,
                            exec_type=rep.exec_type)
            return
        et = rep.exec_type
        engine = self.engine
        if et == ExecType.NEW:
            engine.apply_ack(o.ref, now)
            event = Event.ACK
            o.order_id = rep.order_id
        elif et == ExecType.TRADE:
            outcome = engine.apply_fill(o.ref, rep.last_qty, rep.last_px, now, rep.self_trade)
            if not outcome.known:
                log.error("fill refused by the book", exch_id=rep.cl_ord_id, qty=rep.last_qty,
                          px=rep.last_px, leaves=o.leaves)
                return
            self.stats["fills"] += 1
            o.cum += rep.last_qty
            o.leaves -= rep.last_qty
            event = Event.FULL_FILL if o.leaves == 0 else Event.PARTIAL_FILL
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
            if outcome.trigger:
                self._trigger(o.account, outcome.trigger, now)
        elif et == ExecType.CANCELED:
            outcome = engine.apply_canceled(o.ref, now)
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
            event = Event.CANCELED
        elif et == ExecType.REJECTED:
            engine.apply_reject(o.ref, now)
            event = Event.REJECTED
        elif et == ExecType.STATUS:
            self._reconcile(o, rep, now)
            return
        else:
            log.warning("report with an unknown exec type", exec_type=et)
            return
        status = next_status(o.status, event)
        if status is None:
            log.warning("report out of lifecycle order", exch_id=rep.cl_ord_id,
                        status=o.status, lifecycle_event=event.name)
            return
        o.status = status
        if o.order_id == "" and rep.order_id:
            o.order_id = rep.order_id
        out = ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, status, et,
                         rep.reason if et in (ExecType.REJECTED, ExecType.CANCELED) else 0,
                         rep.text, rep.last_qty, rep.last_px, o.cum, o.leaves, now,
                         o.side, o.price, o.qty, rep.self_trade)
        if et == ExecType.REJECTED and not out.reason:
            out.reason = int(Reason.EXCHANGE_REJECT)
        self._to_session(self._owner(o), out, now)
        if status in FINAL:
            self._forget(o)

    def _forget(self, o: RoutedOrder) -> None:
        self.orders.pop(o.ref, None)
        self.by_exch.pop(o.exch_id, None)
        s = self.sessions.get(o.session_id)
        if s is not None and s.by_clid.get(o.cl_ord_id) == o.ref:
            del s.by_clid[o.cl_ord_id]
            s.finished_clids.add(o.cl_ord_id)

    def cancel_reject(self, msg: CancelReject, now: int | None = None) -> None:
        """The exchange refused a cancel (usually: the order finished meanwhile)."""
        now = self.clock() if now is None else now
        entry = self.cancels.pop(msg.cl_ord_id, None)
        if entry is None:
            return
        ref, client_id = entry
        o = self.orders.get(ref)
        if o is None or not client_id:
            return
        self._to_session(self._owner(o), CancelReject(client_id, o.cl_ord_id, msg.reason,
                                                      msg.text), now)

    def market_data(self, md: MarketData, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self._record(jr.Inbound(now, jr.EXCHANGE_LINK, md))
        outcome = self.engine.market_data(md.symbol, md.last_px, md.upper_limit, md.lower_limit, now)
        if outcome.alerts:
            self._alerts(outcome.alerts, now)
        for account, trigger in outcome.triggers or ():  # e.g. a holder reached its loss limit
            self._trigger(account, trigger, now)

    def _reconcile(self, o: RoutedOrder, rep: ExecReport, now: int) -> None:
        """An order-status answer after a reconnect: catch up on what we missed."""
        missed = rep.cum_qty - o.cum
        if missed > 0:
            px = rep.last_px if rep.last_px > 0 else rep.price
            fill = ExecReport(o.exch_id, rep.order_id, o.account, o.symbol, 0, ExecType.TRADE,
                              last_qty=missed, last_px=px, ts_ns=now)
            self.exchange_report(fill, now)
        if rep.status in (OrdStatus.CANCELED, OrdStatus.REJECTED) and o.ref in self.orders:
            et = ExecType.CANCELED if rep.status == OrdStatus.CANCELED else ExecType.REJECTED
            self.exchange_report(ExecReport(o.exch_id, rep.order_id, o.account, o.symbol,
                                            rep.status, et, ts_ns=now), now)
        elif rep.status in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED) and o.ref in self.orders \
                and o.status == OrdStatus.PENDING_NEW:
            self.exchange_report(ExecReport(o.exch_id, rep.order_id, o.account, o.symbol,
                                            OrdStatus.NEW, ExecType.NEW, ts_ns=now), now)

    def reconciled(self, end: OrderStatusEnd, seen: set[str], now: int | None = None) -> int:
        """After the status answer: working orders the exchange does not know were lost."""
        now = self.clock() if now is None else now
        lost = [o for o in self.orders.values() if o.exch_id not in seen]
        for o in lost:
            # Never acknowledged: the exchange never took it. Acknowledged: it is gone from the
            # exchange's book, which for the client is a cancel.
            never_acked = o.status == OrdStatus.PENDING_NEW
            self.exchange_report(ExecReport(
                o.exch_id, o.order_id, o.account, o.symbol,
                OrdStatus.REJECTED if never_acked else OrdStatus.CANCELED,
                ExecType.REJECTED if never_acked else ExecType.CANCELED,
                int(Reason.EXCHANGE_REJECT), "the exchange has no record of this order after "
                "the link came back", ts_ns=now), now)
        return len(lost)

    # ------------------------------------------------------------------ alerts and triggers
    def _alerts(self, events: list[AlertEvent], now: int) -> None:
        for ev in events:
            self.alert(ev.level, ev.code, ev.scope, ev.text, now)

    def alert(self, level: int, code: int, scope: str, text: str, now: int | None = None) -> None:
        """Raise an alert: to the sessions trading the account in scope, to the log, to listeners."""
        now = self.clock() if now is None else now
        msg = Alert(int(level), int(code), scope, text, now)
        self.alerts.append(msg)
        if self.replaying:
            return
        self._record(jr.Outbound(now, jr.NO_SESSION, msg))  # once, for the alerts topic
        log.warning("alert", level=AlertLevel(level).name, code=Reason(code).name, scope=scope,
                    text=text)
        account = scope.split(":", 1)[1].split("/", 1)[0] if scope.startswith("account:") else None
        for s in list(self.sessions.values()):
            if not s.closed and (account is None or account in s.accounts):
                self._to_session(s, msg, now)

    def _trigger(self, account: str, reason: int, now: int) -> None:
        # On replay the trigger's effects are already in the journal (admin action, cancels).
        if self.trigger_handler is not None and not self.replaying:
            self.trigger_handler(account, reason, TRIGGER_STATUS.get(reason, 0))

    # ------------------------------------------------------------------ views
    def session_refs(self, session_id: int) -> list[int]:
        return sorted(ref for ref, o in self.orders.items() if o.session_id == session_id)

    def open_order_views(self, account: str | None = None) -> list[dict[str, Any]]:
        return [o.view() for o in self.orders.values() if account is None or o.account == account]

    def scope_refs(self, scope: int, key: str | int) -> list[int]:
        if scope == KillScope.SESSION:
            return self.session_refs(int(key))
        return self.engine.open_orders(scope, key)
