"""Order routing: the gateway's core, between client sessions, the risk engine and the exchange.

Theory of operation
-------------------
Inbound, from a logged-on client session::

    NewOrder -> session checks (account permitted, cl_ord_id unused today, not halted, link up)
             -> engine.decide (Cython)  -> accepted: forward to the exchange under an
                                            exchange-facing id; rejected: ExecReport REJECTED
                                            with the reason code and sentence
    CancelOrder -> find the user's working order -> engine.cancel_request (counted, never
                   refused) -> forward, or hold it until the link is back

Back from the exchange, every ``ExecReport`` is looked up in ``gateway.lifecycle``'s table
*before* anything changes; then it settles the engine (``apply_*``), moves the order and goes
to the order's owner. A fill is applied once per exchange execution id, live and on replay.

Ownership: an order belongs to its user and account, not to a TCP connection. Its *owner* is
the session that placed it while that session lives; when it closes, cancel-on-disconnect
cancels what it owned, or else the user's next (or other live) session takes the orders over
and manages them exactly as its own. After a restart the replayed sessions are gone: the
orders of those that asked for cancel-on-disconnect are cancelled once the link is back, the
rest wait for their user to log on again.

Cancels are never dropped: a cancel is counted and journaled when it is requested; if the
exchange link is down it waits, and every working order with a requested cancel gets it (again)
as soon as the link is back and reconciled, before any new order can pass.

Reconciliation (after every connect): the link asks for the status and the executions of every
order of the seat. Executions come back with their ids, so missed fills are booked exactly once;
orders the exchange no longer has are closed; orders the exchange has and the gateway does not
know raise a CRITICAL alert and are cancelled or adopted (``exchange.unknown_orders``).

Journal: inbound messages, exchange reports, the reconciliation's start (the status request)
and end (``OrderStatusEnd``), every cancel requested, session ends and the start of each trading
day (a checkpoint, ``on_day_start``) are the inputs ``gateway.recovery`` replays through these
same handlers (``replaying`` suppresses sends and journaling). What they derive — reports to
clients, closures found by reconciliation — is re-derived on replay, never journaled as input.

Time is read once per handled message (``clock``) and passed down; the engine never reads it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from checks.calendar import trading_day_bounds, trading_day_number
from checks.decision import TRIGGER_STATUS, AlertEvent
from checks.enums import AlertLevel, ExecType, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.idmemory import IdMemory
from gateway.lifecycle import FINAL, Action, Event, step
from gateway.protocol import (
    Alert,
    CancelOrder,
    CancelReject,
    ExecReport,
    MarketData,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
)

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.config import GatewayConfig

log = structlog.get_logger("fengkong.router")
NS = 1_000_000_000
# Refusals that depend on the gateway's surroundings at that moment, not on its book: replay
# takes them from the journaled decision instead of deciding the order again.
LIVE_ONLY_REFUSALS = frozenset({int(Reason.EXCHANGE_UNAVAILABLE), int(Reason.JOURNAL_UNAVAILABLE),
                                int(Reason.SAFE_MODE)})
FINISHED_MEMORY = 100_000  # finished orders remembered (per day) to recognise late reports
UNKNOWN_MEMORY = 10_000  # unknown exchange ids already alerted (one alert each)
RECON_NAMED_MAX = 2_000  # working orders named in a status request (~25 bytes each, 64 KiB frames)

# Memory caps (issue 10, item 5). Everything the router keeps grows with something a client
# controls, so each structure has a bound, checked before anything is stored:
# - identifiers are refused (408 INVALID_FIELD) past these sizes, before they are remembered;
#   CTP's order references are 13 bytes and exchange account / contract codes ~12, so the caps
#   leave room and still keep a day's id memory to ~100 bytes an order;
MAX_ID_BYTES = 64  # cl_ord_id / orig_cl_ord_id: 1..64 bytes (UTF-8)
MAX_ACCOUNT_BYTES = 32
MAX_SYMBOL_BYTES = 32
# - the cl_ord_ids a user used today (needed to refuse duplicates all day): past this many the
#   user's new orders are refused (408) until the next trading day. At 20 orders a second for a
#   whole trading day that is ~400 k; the cap is the day's order budget, ~100 MB at 64-byte ids;
MAX_CLIDS_PER_USER_DAY = 1_000_000
# - executions applied today (a repeated exec id is dropped, not booked twice): oldest forgotten
#   past the cap, which is far above a day's fills (bounded by the orders above);
EXEC_ID_MEMORY = 1_000_000
# - cancel requests in flight for one order (a client may repeat a cancel): the oldest request's
#   answer is no longer routed back past this many; all are forgotten with the order;
MAX_CANCELS_PER_ORDER = 8
# - working orders (``orders``, ``by_exch``, ``by_clid``) are bounded by the engine's per-account
#   ``max_open_orders``; ``finished`` and ``unknown_alerted`` by the memories above; per-session
#   reject times by ``gateway.reject_storm`` each, dropped with the session; alerts by
#   ``ALERTS_KEPT``. Per-day structures are also emptied at each trading day's start.
ALERTS_KEPT = 1_000  # the latest alerts, for the status view


def _too_long(text: str, limit: int) -> bool:
    # ASCII (every id a real client sends) costs one length check; otherwise count UTF-8 bytes.
    return len(text) > limit or (not text.isascii() and len(text.encode()) > limit)


def _field_problem(name: str, text: str, limit: int) -> str | None:
    if not text:
        return f"{name} is empty; 1 to {limit} bytes are expected"
    if _too_long(text, limit):
        return f"{name} is {len(text.encode())} bytes; at most {limit} are allowed"
    return None


def order_field_problem(msg: NewOrder) -> str | None:
    """Why a new order's identifiers cannot be taken (None: they can). Checked before the id is
    remembered or echoed in any text, so no client can grow the gateway's memory with them."""
    return (_field_problem("cl_ord_id", msg.cl_ord_id, MAX_ID_BYTES)
            or _field_problem("account", msg.account, MAX_ACCOUNT_BYTES)
            or _field_problem("symbol", msg.symbol, MAX_SYMBOL_BYTES))


def cancel_field_problem(msg: CancelOrder) -> str | None:
    return (_field_problem("cl_ord_id", msg.cl_ord_id, MAX_ID_BYTES)
            or _field_problem("orig_cl_ord_id", msg.orig_cl_ord_id, MAX_ID_BYTES)
            or _field_problem("account", msg.account, MAX_ACCOUNT_BYTES))


def echo(text: str, limit: int) -> str:
    """``text`` as echoed back to a client: unchanged within ``limit`` bytes, else its first
    ``limit`` characters and an ellipsis — longer than any valid id, so it can never be taken
    for one of the client's real orders."""
    return text if not _too_long(text, limit) else text[:limit] + "\u2026"


class RoutedOrder:
    """What the gateway knows of one order (the engine holds its risk state)."""

    __slots__ = ("ref", "owner", "session_id", "user", "cl_ord_id", "exch_id", "order_id",
                 "account", "symbol", "side", "price", "qty", "cum", "leaves", "status", "ts_ns",
                 "cancel_id", "adopted", "old_cancels")

    def __init__(self, ref: int, owner: SessionPort | None, user: str, cl_ord_id: str,
                 exch_id: str, account: str, symbol: str, side: int, price: float, qty: int,
                 now: int) -> None:
        self.ref = ref
        self.owner = owner  # the live session its reports go to (None: its user is away)
        self.session_id = owner.session_id if owner is not None else 0
        self.user = user
        self.cl_ord_id = cl_ord_id
        self.exch_id = exch_id
        self.order_id = ""
        self.account = account
        self.symbol = symbol
        self.side = side
        self.price = price
        self.qty = qty
        self.cum = 0
        self.leaves = qty
        self.status = OrdStatus.PENDING_NEW
        self.ts_ns = now
        self.cancel_id = ""  # the latest cancel requested for it ("" none)
        self.adopted = False  # taken over from the exchange at reconciliation
        self.old_cancels: list[str] | None = None  # earlier cancel requests still in ``cancels``

    def view(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__ if s not in ("owner", "old_cancels")}


class SessionPort:
    """What the router needs of a client session (``gateway.session.ClientSession``)."""

    session_id: int
    user: str
    accounts: frozenset[str]
    cancel_on_disconnect: bool
    closed: bool

    def send(self, msg: Any) -> None: ...


class LinkPort:
    """What the router needs of the exchange link (``gateway.exchange_link.ExchangeLink``)."""

    up: bool

    def send(self, msg: Any) -> bool: ...

class RouterBase:
    """The router's state and everything but the order path: sessions, held cancels,
    reconciliation, alerts, views. ``Router`` adds the order path in Python (the reference);
    ``gateway.fast_router.FastRouter`` adds the same order path compiled. The order path is
    ``record``, ``new_order``, ``cancel``, ``exchange_report`` and the helpers they share
    (``_reject``, ``_send_cancel``, ``_settle``, ``_report``, ``_forget``, ...): the methods
    below call them on ``self`` and get whichever the concrete class has."""

    order_type: Any = RoutedOrder  # what ``_adopt`` makes an order of
    id_memory: Any = IdMemory  # what the day's id tables are (``FastRouter``: its compiled twin)

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
        self.by_clid: dict[tuple[str, str], int] = {}  # (user, cl_ord_id) -> working order
        # By exchange id, today; and executions applied today. Each remembers at most its
        # newest keys, in shards that never rebuild the whole table at once (``IdMemory``).
        self.finished = self.id_memory(FINISHED_MEMORY)  # exchange id -> RoutedOrder
        self.exec_ids = self.id_memory(EXEC_ID_MEMORY)
        self.cancels: dict[str, tuple[int, str]] = {}  # exchange cancel id -> (ref, client id)
        self.used_clids: dict[str, IdMemory] = {}  # user -> ids used this trading day
        self.day = -1
        self.day_end = -1  # the per-day memory above is forgotten from this timestamp on
        self.on_day_start: Callable[[int, int], None] | None = None  # (day, now): checkpoint
        self.recon_seen: set[str] | None = None  # exchange ids reported while reconciling
        self.recon_trades: dict[str, list[ExecReport]] = {}  # executions of unknown orders
        self.unknown_alerted: OrderedDict[str, None] = OrderedDict()
        self.link: LinkPort | None = None
        self.alerts: deque[Alert] = deque(maxlen=ALERTS_KEPT)
        self.trigger_handler: Callable[[str, int, int], None] | None = None
        # Observers of every execution report the router sends to a client (or journals for
        # an absent one), rejects included: the FIX drop copy (``gateway.fix.acceptor``).
        # Called live only (never on replay), after the report is journaled; they must not
        # raise and must not call back into the router.
        self.report_observers: list[Callable[[ExecReport], None]] = []
        self.reject_times: dict[int, deque[int]] = {}
        self.storm_handler: Callable[[int], None] | None = None
        # Told of every order the engine decided and every cancel it counted, live and on
        # replay: (account, now, reason; 0 for an accepted order or a cancel). The compliance
        # registry's watch on reported behaviour (gateway.compliance.conformance).
        self.on_counted: Callable[[str, int, int], None] | None = None
        # Told of each session's Logon once it is accepted (session, logon, now): the terminal
        # information relay to the exchange (gateway.terminal).
        self.on_logon: Callable[[Any, Any, int], None] | None = None
        self.prefix = f"{cfg.gateway.id}.{time.time_ns() // 1_000_000 % 10**10:x}."
        self.order_seq = 0  # exchange ids of orders: deterministic, so replay gives the same ids
        # The memory caps above, per instance (a test may lower one before it builds a router).
        self.max_clids_per_user_day = MAX_CLIDS_PER_USER_DAY
        self.max_cancels_per_order = MAX_CANCELS_PER_ORDER
        self._cancel_seq = 0
        self.stats = {"orders": 0, "accepted": 0, "rejected": 0, "cancels": 0, "fills": 0,
                      "duplicate_fills": 0, "surprises": 0}
        # Refused new orders by reason code, one slot per code (a list index and an add per
        # reject; read by the metrics collector at scrape time).
        self.rejects_by_reason = [0] * (max(map(int, Reason)) + 1)
        # Order -> exchange-ack round trip, observed at each live ack (``gateway.metrics``).
        self.ack_latency: Any = None

    # ------------------------------------------------------------------ plumbing
    def _new_day(self, now: int) -> None:
        """The trading day changed: forget the day's ids, and checkpoint (live)."""
        boundary = self.cfg.risk.day_boundary_s
        day = trading_day_number(now, boundary)
        first = self.day == -1
        self.day = day
        self.day_end = trading_day_bounds(day, boundary)[1]
        self.used_clids.clear()
        self.exec_ids.clear()
        self.finished.clear()
        if not first and self.on_day_start is not None and not self.replaying:
            self.on_day_start(day, now)

    def link_up(self) -> bool:
        return self.link is not None and self.link.up

    # ------------------------------------------------------------------ sessions
    def add_session(self, session: SessionPort) -> None:
        """A session logged on: it takes over its user's orders that have no live owner."""
        self.sessions[session.session_id] = session
        for o in self.orders.values():
            if o.user == session.user and (o.owner is None or o.owner.closed):
                o.owner, o.session_id = session, session.session_id

    def remove_session(self, session: SessionPort, cancel_open: bool,
                       now: int | None = None) -> int:
        """Forget a closed session; cancel what it owned if it asked for that, or hand its
        orders to another live session of the user (or none, until the user is back)."""
        now = self.clock() if now is None else now
        self._at(now)
        if self.sessions.pop(session.session_id, None) is None:
            return 0
        self.record(jr.State(now, "session_closed", str(session.session_id).encode()))
        self.reject_times.pop(session.session_id, None)
        owned = [o for o in self.orders.values() if o.owner is session]
        heir = next((s for s in self.sessions.values()
                     if s.user == session.user and not s.closed), None)
        for o in owned:  # its reports (the cancels' too) go to the heir, if any
            o.owner, o.session_id = heir, heir.session_id if heir is not None else 0
        if not cancel_open:
            return 0
        return sum(self.cancel_refs([o.ref for o in owned],
                                    f"cancel-on-disconnect of session {session.session_id}", now))

    def owned(self, session_id: int) -> int:
        return sum(1 for o in self.orders.values() if o.session_id == session_id)

    # ------------------------------------------------------------------ cancels
    def replay_cancel(self, msg: CancelOrder, now: int) -> None:
        """Recovery: a journaled cancel request, counted by the engine as it was then."""
        self._at(now)
        ref = self.by_exch.get(msg.orig_cl_ord_id)
        o = self.orders.get(ref) if ref is not None else None
        if o is not None:
            self.engine.cancel_request(o.ref, now)
            if self.on_counted is not None:
                self.on_counted(o.account, now, 0)
            self._remember_cancel(o, msg.cl_ord_id, "")

    def cancel_refs(self, refs: list[int], why: str, now: int | None = None) -> tuple[int, int]:
        """Cancel working orders (kill switch, disconnect): (sent now, held until the link is
        back)."""
        now = self.clock() if now is None else now
        self._at(now)
        sent = held = 0
        for ref in refs:
            o = self.orders.get(ref)
            if o is not None:
                if self._send_cancel(o, "", now):
                    sent += 1
                else:
                    held += 1
        if sent or held:
            log.info("cancels requested", sent=sent, held_until_link=held, why=why)
        return sent, held

    def pending_cancels(self) -> int:
        """Working orders whose requested cancel has not been answered yet."""
        return sum(1 for o in self.orders.values() if o.cancel_id)

    def link_restored(self) -> int:
        """The link is back and reconciled: every working order with a requested cancel gets
        it (again) before any new order may pass. Returns how many went."""
        if self.link is None:
            return 0
        count = 0
        for o in list(self.orders.values()):
            if o.cancel_id and self.link.send(CancelOrder(o.cancel_id, o.exch_id, o.account)):
                count += 1
        if count:
            log.warning("held cancels sent after the link came back", count=count)
        return count

    # ------------------------------------------------------------------ exchange side
    def _surprise(self, o: RoutedOrder, text: str, now: int, level: AlertLevel) -> None:
        self.stats["surprises"] += 1
        log.error("exchange surprise", exch_id=o.exch_id, account=o.account, text=text)
        self.alert(level, Reason.EXCHANGE_SURPRISE, f"account:{o.account}",
                   f"order {o.cl_ord_id} ({o.symbol}): {text}", now)

    def _unknown_report(self, rep: ExecReport, now: int) -> None:
        if self.recon_seen is not None:  # reconciling: the status answer decides about it
            if rep.exec_type == ExecType.TRADE:
                self.recon_trades.setdefault(rep.cl_ord_id, []).append(rep)
            elif rep.exec_type == ExecType.STATUS:
                self._unknown_order(rep, now)
            return
        if rep.cl_ord_id in self.unknown_alerted:
            return
        self.unknown_alerted[rep.cl_ord_id] = None
        if len(self.unknown_alerted) > UNKNOWN_MEMORY:
            self.unknown_alerted.popitem(last=False)
        log.error("report for an order the gateway does not know", exch_id=rep.cl_ord_id,
                  exec_type=rep.exec_type, account=rep.account)
        # Scoped to the account: only its own sessions (and the risk desk) hear of it.
        self.alert(AlertLevel.CRITICAL, Reason.UNKNOWN_EXCHANGE_ORDER, f"account:{rep.account}",
                   f"the exchange reported order {rep.cl_ord_id!r} of account {rep.account!r} "
                   f"(exec type {rep.exec_type}), which the gateway does not know", now)

    def cancel_reject(self, msg: CancelReject, now: int | None = None) -> None:
        """The exchange refused a cancel (usually: the order finished meanwhile)."""
        now = self.clock() if now is None else now
        entry = self.cancels.get(msg.cl_ord_id)
        if entry is None:
            return
        ref, client_id = entry
        o = self.orders.get(ref)
        if o is None:
            self.cancels.pop(msg.cl_ord_id, None)
            return
        if msg.reason != Reason.EXCHANGE_UNAVAILABLE:
            # Answered: no longer held for the next reconnect (a new request may follow).
            self.cancels.pop(msg.cl_ord_id, None)
            if o.cancel_id == msg.cl_ord_id:
                o.cancel_id = ""
        if client_id:
            self._to_session(o.owner, CancelReject(client_id, o.cl_ord_id, msg.reason,
                                                   msg.text), now)

    def market_data(self, md: MarketData, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self._at(now)
        self.record(jr.Inbound(now, jr.EXCHANGE_LINK, md))
        outcome = self.engine.market_data(md.symbol, md.last_px, md.upper_limit, md.lower_limit, now)
        if outcome.alerts:
            self._alerts(outcome.alerts, now)
        for account, trigger in outcome.triggers or ():  # e.g. a holder reached its loss limit
            self._trigger(account, trigger, now)

    # ------------------------------------------------------------------ reconciliation
    def recon_request(self, req_id: str) -> OrderStatusRequest:
        """What to ask the exchange after a connect: every order working there (orders we do
        not know show up) and, by name, the orders working here (how each ended, if it did
        while we were away), each with its executions. Naming them keeps the answer — and the
        journal — to the working orders, not the day's; past ``RECON_NAMED_MAX`` names the
        request would not fit a frame, and it asks for every order the exchange remembers."""
        names = [o.exch_id for o in self.orders.values()]
        if len(names) > RECON_NAMED_MAX:
            return OrderStatusRequest(req_id, "", False, True)
        return OrderStatusRequest(req_id, "", True, True, names)

    def recon_begin(self, req: OrderStatusRequest, now: int | None = None) -> None:
        """The link asked the exchange for the state (and executions) of every order."""
        now = self.clock() if now is None else now
        self._at(now)
        self.record(jr.Outbound(now, jr.EXCHANGE_LINK, req))
        self.recon_seen = set()
        self.recon_trades = {}

    def _reconcile(self, o: RoutedOrder, rep: ExecReport, now: int) -> None:
        """An order-status answer: the executions came just before it (booked by id); settle
        how the order stands at the exchange."""
        if self.recon_seen is not None:
            self.recon_seen.add(o.exch_id)
        if o.status in FINAL:
            if rep.status in (OrdStatus.PENDING_NEW, OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED):
                # Closed here (e.g. as lost at an earlier reconnect) yet working there: as
                # dangerous as an order we never knew, and handled the same way.
                self._unknown_order(rep, now, f"had closed as {OrdStatus(o.status).name}")
            return
        if rep.cum_qty > o.cum:  # the exchange did not send every execution again
            self._surprise(o, f"the exchange has {rep.cum_qty} lots filled, the gateway "
                           f"booked {o.cum}; the missing executions were not reported",
                           now, AlertLevel.CRITICAL)
        if rep.status in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED) \
                and o.status == OrdStatus.PENDING_NEW:
            self._settle(o, Event.ACK, ExecReport(o.exch_id, rep.order_id, o.account, o.symbol,
                                                  OrdStatus.NEW, ExecType.NEW), now)
        elif rep.status in (OrdStatus.CANCELED, OrdStatus.REJECTED):
            et = ExecType.CANCELED if rep.status == OrdStatus.CANCELED else ExecType.REJECTED
            self._settle(o, Event.CANCELED if et == ExecType.CANCELED else Event.REJECTED,
                         ExecReport(o.exch_id, rep.order_id, o.account, o.symbol, rep.status, et,
                                    rep.reason, rep.text), now)

    def _unknown_order(self, rep: ExecReport, now: int, here: str = "did not know") -> None:
        """A working order the exchange has and the gateway does not: never ignored."""
        if rep.status not in (OrdStatus.PENDING_NEW, OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED):
            return  # finished before we knew of it: nothing rests at the exchange
        policy = self.cfg.exchange.unknown_orders
        adopted = policy == "adopt" and self._adopt(rep, now)
        if adopted:
            what = "adopted into the book"
        else:
            what = "cancelled" + (" (the risk checks refused to adopt it)" if policy == "adopt"
                                  else "")
            self._cancel_unknown(rep, now)
        log.critical("unknown order at the exchange", exch_id=rep.cl_ord_id, account=rep.account,
                     symbol=rep.symbol, leaves=rep.leaves_qty, action=what)
        self.alert(AlertLevel.CRITICAL, Reason.UNKNOWN_EXCHANGE_ORDER, f"account:{rep.account}",
                   f"the exchange has working order {rep.cl_ord_id!r} ({rep.symbol}, "
                   f"{rep.leaves_qty} of {rep.qty} lots working) that the gateway {here}: "
                   f"{what}", now)

    def _adopt(self, rep: ExecReport, now: int) -> bool:
        if not (rep.offset and rep.hedge and rep.ord_type and rep.tif and rep.qty > 0):
            return False  # the exchange did not say enough about it to check it
        msg = NewOrder(rep.cl_ord_id, rep.account, rep.symbol, rep.side, rep.offset, rep.hedge,
                       rep.ord_type, rep.tif, rep.price, rep.qty)
        decision = self.engine.decide(msg, now, 0)
        if decision.reason:
            return False
        o = self.order_type(decision.ref, None, "", rep.cl_ord_id, rep.cl_ord_id, rep.account,
                        rep.symbol, rep.side, rep.price, rep.qty, now)
        o.adopted = True
        self._track(o)
        self.recon_seen.add(o.exch_id)  # type: ignore[union-attr]
        for trade in self.recon_trades.pop(rep.cl_ord_id, ()):  # journaled as they came
            if trade.exec_id not in self.exec_ids and 0 < trade.last_qty <= o.leaves:
                self._settle(o, Event.FULL_FILL if trade.last_qty == o.leaves
                             else Event.PARTIAL_FILL, trade, now)
        self._reconcile(o, rep, now)
        return True

    def _cancel_unknown(self, rep: ExecReport, now: int) -> None:
        self._cancel_seq += 1
        msg = CancelOrder(f"{self.prefix}c{self._cancel_seq:x}", rep.cl_ord_id, rep.account)
        if not self.replaying:
            self.record(jr.Outbound(now, jr.EXCHANGE_LINK, msg))
            if self.link is not None:
                self.link.send(msg)

    def reconciled(self, end: OrderStatusEnd, now: int | None = None) -> int:
        """The status answer is complete: working orders the exchange does not know were lost.
        Returns how many were closed."""
        now = self.clock() if now is None else now
        self._at(now)
        self.record(jr.Inbound(now, jr.EXCHANGE_LINK, end))
        seen = self.recon_seen if self.recon_seen is not None else set()
        self.recon_seen = None
        self.recon_trades = {}
        lost = [o for o in self.orders.values() if o.exch_id not in seen]
        for o in lost:
            # Never acknowledged: the exchange never took it. Acknowledged: it is gone from the
            # exchange's book, which for the client is a cancel.
            never_acked = o.status == OrdStatus.PENDING_NEW
            et = ExecType.REJECTED if never_acked else ExecType.CANCELED
            self._settle(o, Event.REJECTED if never_acked else Event.CANCELED, ExecReport(
                o.exch_id, o.order_id, o.account, o.symbol,
                OrdStatus.REJECTED if never_acked else OrdStatus.CANCELED, et,
                int(Reason.EXCHANGE_REJECT), "the exchange has no record of this order after "
                "the link came back"), now)
        return len(lost)

    # ------------------------------------------------------------------ alerts and triggers
    def _alerts(self, events: list[AlertEvent], now: int) -> None:
        for ev in events:
            self.alert(ev.level, ev.code, ev.scope, ev.text, now)

    def alert(self, level: int, code: int, scope: str, text: str, now: int | None = None,
              client_text: str | None = None) -> None:
        """Raise an alert: journaled once with its full text (the risk desk's: the alerts topic,
        /v1/alerts, the log), then told to the client sessions it concerns (delivery, not
        journaled again).

        A client hears only of what concerns the accounts it may trade, and never an operator's
        name or a free-text reason: it is told ``client_text`` where the raiser gives one (the
        kill switch does: a neutral sentence of what changed), else

        - ``account:A[/...]``: the text itself, to the sessions that may trade A (the engine's
          and the router's account alerts speak only of that account's orders and counts);
        - ``firm``: the exchange link's and the journal's state in neutral words (new orders are
          refused, or accepted again), to every session; other firm-wide alerts (Kafka) stay
          with the desk;
        - any other scope: nothing, unless a ``client_text`` is given; then to the sessions that
          may trade an account of ``group:G``, to ``session:N`` itself, or to every session
          (``instrument:``, ``product:``, ``firm``).
        """
        now = self.clock() if now is None else now
        msg = Alert(int(level), int(code), scope, text, now)
        self.alerts.append(msg)
        if self.replaying:
            return
        self.record(jr.Outbound(now, jr.NO_SESSION, msg))
        log.warning("alert", level=AlertLevel(level).name, code=Reason(code).name, scope=scope,
                    text=text)
        kind, _, target = scope.partition(":")
        target = target.split("/", 1)[0]
        if client_text is None:
            if kind == "account":
                client_text = text
            elif kind == "firm" and code == Reason.LINK_STATUS:
                client_text = ("exchange link lost: new orders are refused until it is back"
                               if level >= AlertLevel.CRITICAL else
                               "exchange link is back: new orders are accepted again")
            elif kind == "firm" and code == Reason.SEAT_TAKEN_OVER:
                client_text = ("exchange seat taken over by another connection: new orders "
                               "are refused until the link is back")
            elif kind == "firm" and code == Reason.JOURNAL_FAILURE:  # not where, nor the repair
                client_text = ("the gateway cannot write its journal: "
                               if level >= AlertLevel.CRITICAL else
                               "the gateway's journal is writable again: ") + \
                    (f"new orders are refused ({self.halted[0]}); cancels still go"
                     if self.halted is not None else "new orders are accepted again")
            else:
                return
        out = msg if client_text == text else Alert(int(level), int(code), scope, client_text, now)
        group = ({a.id for a in self.cfg.risk.accounts if a.group == target}
                 if kind == "group" else frozenset())
        for s in list(self.sessions.values()):
            if s.closed:
                continue
            if (target in s.accounts if kind == "account" else
                    str(s.session_id) == target if kind == "session" else
                    not group.isdisjoint(s.accounts) if kind == "group" else True):
                s.send(out)

    def _trigger(self, account: str, reason: int, now: int) -> None:
        # On replay the trigger's effects are already in the journal (admin action, cancels).
        if self.trigger_handler is not None and not self.replaying:
            self.trigger_handler(account, reason, TRIGGER_STATUS.get(reason, 0))

    # ------------------------------------------------------------------ views
    def session_refs(self, session_id: int) -> list[int]:
        return sorted(ref for ref, o in self.orders.items() if o.session_id == session_id)

    def user_orders(self, user: str, account: str = "") -> list[RoutedOrder]:
        return [o for o in self.orders.values()
                if o.user == user and (not account or o.account == account)]

    def open_order_views(self, account: str | None = None) -> list[dict[str, Any]]:
        return [o.view() for o in self.orders.values() if account is None or o.account == account]


class Router(RouterBase):
    """The reference order path: every client order, cancel and exchange report, in Python.
    ``gateway/fastroute.pyx`` is the same, compiled; the differential test
    (tests/gateway/test_fastroute.py) holds the two together."""

    # ------------------------------------------------------------------ plumbing
    def record(self, record: Any) -> None:
        """Append a record to the journal (write-ahead: before its effect is visible)."""
        if self.audit is not None and not self.replaying:
            if record.ts_ns >= self.day_end:
                self._new_day(record.ts_ns)
            self.audit.append(record)

    def _at(self, now: int) -> None:
        if now >= self.day_end:
            self._new_day(now)

    # What the gateway sends is derived from what it received: the journal holds the inputs
    # (and the few facts replay cannot derive), so these two only send. See the module docstring.
    def _to_session(self, session: SessionPort | None, msg: Any, now: int) -> None:
        if session is None or self.replaying or session.closed:
            return
        session.send(msg)

    def _to_exchange(self, msg: Any, now: int) -> None:
        if self.replaying or self.link is None:
            return
        self.link.send(msg)

    def _clids(self, user: str, now: int) -> IdMemory:
        """The cl_ord_ids ``user`` used this trading day (they must be unique per day)."""
        self._at(now)
        used = self.used_clids.get(user)
        if used is None:
            used = self.used_clids[user] = self.id_memory()
        return used

    # ------------------------------------------------------------------ new orders
    def new_order(self, session: SessionPort, msg: NewOrder, now: int | None = None,
                  engine_saw: bool = True) -> None:
        """A client's order. On replay ``engine_saw`` says whether the journal has the engine's
        decision for it: an order refused live before the engine saw it (link down, journal
        failing, safe mode) is refused again, never decided on a book that cannot know why."""
        now = self.clock() if now is None else now
        self._at(now)
        self.record(jr.Inbound(now, session.session_id, msg))
        self.stats["orders"] += 1
        bad = order_field_problem(msg)
        if bad is not None:
            return self._reject(session, msg, Reason.INVALID_FIELD, bad, now)
        if msg.account not in session.accounts:
            return self._reject(session, msg, Reason.ACCOUNT_NOT_PERMITTED,
                                f"session {session.session_id} may not trade {msg.account!r}", now)
        used = self._clids(session.user, now)
        if msg.cl_ord_id in used:
            return self._reject(session, msg, Reason.DUPLICATE_CL_ORD_ID,
                                f"cl_ord_id {msg.cl_ord_id!r}", now)
        if len(used) >= self.max_clids_per_user_day:
            return self._reject(session, msg, Reason.INVALID_FIELD,
                                f"user {session.user!r} used {self.max_clids_per_user_day} cl_ord_ids "
                                "today, the most the gateway remembers; new orders are refused "
                                "until the next trading day", now)
        used.put(msg.cl_ord_id)
        if self.replaying and not engine_saw:
            self.stats["rejected"] += 1
            return None
        if not self.replaying:
            refusal = self.halted if self.halted is not None else \
                None if self.link_up() else (int(Reason.EXCHANGE_UNAVAILABLE), "")
            if refusal is not None:
                # Journaled as a refusal (every refusal is): replay cannot see the link or the
                # disk as they were, and must not decide (and accept) this order again.
                return self._reject(session, msg, refusal[0], refusal[1], now)
        decision = self.engine.decide(msg, now, session.session_id)
        if decision.reason:  # right behind the order, before what the decision sets off
            self._journal_refusal(session, msg, decision.reason, decision.text, now)
        if decision.alerts:
            self._alerts(decision.alerts, now)
        if self.on_counted is not None:
            self.on_counted(msg.account, now, int(decision.reason))
        if decision.reason:
            self._reject(session, msg, decision.reason, None, now, text=decision.text,
                         journaled=True)
        else:
            self.stats["accepted"] += 1
            qty = int(msg.qty)
            self.order_seq += 1
            exch_id = f"{self.prefix}{self.order_seq:x}"
            o = RoutedOrder(decision.ref, session, session.user, msg.cl_ord_id, exch_id,
                            msg.account, msg.symbol, msg.side, msg.price, qty, now)
            self._track(o)
            self._to_exchange(NewOrder(exch_id, msg.account, msg.symbol, msg.side, msg.offset,
                                       msg.hedge, msg.ord_type, msg.tif, msg.price, qty), now)
        if decision.trigger:
            self._trigger(msg.account, decision.trigger, now)
        return None

    def _track(self, o: RoutedOrder) -> None:
        self.orders[o.ref] = o
        self.by_exch[o.exch_id] = o.ref
        self.by_clid[(o.user, o.cl_ord_id)] = o.ref

    def _journal_refusal(self, session: SessionPort, msg: NewOrder, reason: int, text: str,
                         now: int) -> None:
        """A refused order's ``Decision``, right behind its ``Inbound`` (an accepted order has
        none: replay decides it again; recovery looks for it in the very next record)."""
        self.record(jr.Decision(now, session.session_id, msg.cl_ord_id, msg.account, msg.symbol,
                                int(reason), text, 0))

    def _reject(self, session: SessionPort, msg: NewOrder, reason: int, detail: str | None,
                now: int, text: str | None = None, journaled: bool = False) -> None:
        """Refuse an order: its ``Decision`` journaled (unless the caller did already), then
        the reject to the client."""
        self.stats["rejected"] += 1
        self.rejects_by_reason[reason] += 1
        if text is None:
            text = Reason(reason).description + (f" ({detail})" if detail else "")
        if not journaled:
            self._journal_refusal(session, msg, reason, text, now)
        qty = msg.qty if type(msg.qty) is int else 0
        price = msg.price if type(msg.price) is float else 0.0
        # Echoed identifiers are bounded, so a reject always fits a frame (see ``echo``).
        rep = ExecReport(
            echo(msg.cl_ord_id, MAX_ID_BYTES), "", echo(msg.account, MAX_ACCOUNT_BYTES),
            echo(msg.symbol, MAX_SYMBOL_BYTES), OrdStatus.REJECTED, ExecType.REJECTED,
            int(reason), text, 0, 0.0, 0, 0, now, msg.side, price, qty)
        self._to_session(session, rep, now)
        if self.report_observers and not self.replaying:
            for observe in self.report_observers:
                observe(rep)
        if self.storm_handler is not None and not self.replaying:
            times = self.reject_times.setdefault(session.session_id,
                                                 deque(maxlen=self.cfg.gateway.reject_storm))
            times.append(now)
            if len(times) == times.maxlen and times[0] > now - NS:
                times.clear()
                self.storm_handler(session.session_id)

    # ------------------------------------------------------------------ cancels
    def cancel(self, session: SessionPort, msg: CancelOrder, now: int | None = None) -> None:
        """A client's cancel: any working order of its user in an account the session may
        trade, whichever connection placed it. Never refused for a down link: it waits."""
        now = self.clock() if now is None else now
        self._at(now)
        self.record(jr.Inbound(now, session.session_id, msg))
        bad = cancel_field_problem(msg)
        if bad is not None:
            self._to_session(session, CancelReject(
                echo(msg.cl_ord_id, MAX_ID_BYTES), echo(msg.orig_cl_ord_id, MAX_ID_BYTES),
                int(Reason.INVALID_FIELD), f"{Reason.INVALID_FIELD.description} ({bad})"), now)
            return
        ref = self.by_clid.get((session.user, msg.orig_cl_ord_id))
        o = self.orders.get(ref) if ref is not None else None
        if o is None or o.account != msg.account or o.account not in session.accounts:
            used = self.used_clids.get(session.user, ())
            reason = (Reason.ORDER_FINISHED if o is None and msg.orig_cl_ord_id in used
                      else Reason.UNKNOWN_ORDER)
            self._to_session(session, CancelReject(msg.cl_ord_id, msg.orig_cl_ord_id, int(reason),
                                                   Reason(reason).description), now)
            return
        self._send_cancel(o, msg.cl_ord_id, now)

    def _send_cancel(self, o: RoutedOrder, client_id: str, now: int) -> bool:
        """Count and journal a cancel, and send it if the link is up; True if it left now."""
        self.stats["cancels"] += 1
        outcome = self.engine.cancel_request(o.ref, now)
        if outcome.alerts:
            self._alerts(outcome.alerts, now)
        if self.on_counted is not None:
            self.on_counted(o.account, now, 0)
        self._cancel_seq += 1
        cancel_id = f"{self.prefix}c{self._cancel_seq:x}"
        self._remember_cancel(o, cancel_id, client_id)
        msg = CancelOrder(cancel_id, o.exch_id, o.account)
        sent = False
        if not self.replaying:
            self.record(jr.Outbound(now, jr.EXCHANGE_LINK, msg))  # the request, sent or held
            if self.link_up():
                assert self.link is not None
                sent = self.link.send(msg)
        if outcome.trigger:
            self._trigger(o.account, outcome.trigger, now)
        return sent

    def _remember_cancel(self, o: RoutedOrder, cancel_id: str, client_id: str) -> None:
        """The order's latest cancel request; earlier ones stay routable (their answers go to
        the client) up to ``MAX_CANCELS_PER_ORDER``, and all go when the order does."""
        if o.cancel_id:
            old = o.old_cancels
            if old is None:
                old = o.old_cancels = []
            old.append(o.cancel_id)
            if len(old) >= self.max_cancels_per_order:
                self.cancels.pop(old.pop(0), None)
        o.cancel_id = cancel_id
        self.cancels[cancel_id] = (o.ref, client_id)

    # ------------------------------------------------------------------ exchange side
    def exchange_report(self, rep: ExecReport, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self._at(now)
        ref = self.by_exch.get(rep.cl_ord_id)
        o = self.orders.get(ref) if ref is not None else None
        if o is None:
            o = self.finished.get(rep.cl_ord_id)
        # The input, with whose order it is: the drop copy's record of what the client heard.
        if o is None:
            self.record(jr.ExchangeEvent(now, rep))
        else:
            self.record(jr.ExchangeEvent(now, rep, "", o.session_id, o.cl_ord_id))
        et = rep.exec_type
        if et == ExecType.TRADE and rep.exec_id:
            if rep.exec_id in self.exec_ids:
                self.stats["duplicate_fills"] += 1
                log.info("execution already applied", exec_id=rep.exec_id, exch_id=rep.cl_ord_id)
                return
        if o is None:
            self._unknown_report(rep, now)
            return
        if et == ExecType.STATUS:
            self._reconcile(o, rep, now)
            return
        if et == ExecType.NEW:
            event = Event.ACK
        elif et == ExecType.TRADE:
            if rep.last_qty <= 0 or (o.status not in FINAL and rep.last_qty > o.leaves):
                self._seen_execution(rep)
                self._surprise(o, f"a fill of {rep.last_qty} lots against {o.leaves} working "
                               f"(execution {rep.exec_id or 'without id'}) was not booked",
                               now, AlertLevel.CRITICAL)
                return
            event = Event.FULL_FILL if rep.last_qty == o.leaves else Event.PARTIAL_FILL
        elif et == ExecType.CANCELED:
            event = Event.CANCELED
        elif et == ExecType.REJECTED:
            event = Event.REJECTED
        else:
            log.warning("report with an unknown exec type", exec_type=et, exch_id=rep.cl_ord_id)
            return
        self._settle(o, event, rep, now, derived=False)

    def _settle(self, o: RoutedOrder, event: Event, rep: ExecReport, now: int,
                derived: bool = True) -> None:
        """Move ``o`` by one exchange event: the lifecycle table first, then the engine, the
        order and its owner. ``derived``: the event is the gateway's conclusion (from a
        reconciliation), not a report it journaled as it came; the client's report is then
        journaled too, for the drop copy."""
        status, action = step(o.status, event)
        if action == Action.REPEAT:
            log.info("report repeats a known state", exch_id=o.exch_id, status=o.status,
                     lifecycle_event=event.name)
            return
        if action == Action.LATE:
            self._seen_execution(rep)
            self._surprise(o, f"a fill of {rep.last_qty} lots at {rep.last_px} (execution "
                           f"{rep.exec_id or 'without id'}) came after the order ended as "
                           f"{OrdStatus(o.status).name}; the book could not take it",
                           now, AlertLevel.CRITICAL)
            return
        engine = self.engine
        et = rep.exec_type
        if event == Event.ACK:
            engine.apply_ack(o.ref, now)
            if self.ack_latency is not None and not self.replaying:
                self.ack_latency.observe(now - o.ts_ns)
        elif event in (Event.PARTIAL_FILL, Event.FULL_FILL):
            outcome = engine.apply_fill(o.ref, rep.last_qty, rep.last_px, now, rep.self_trade)
            if not outcome.known:  # the table and the book disagree: a bug, say it loudly
                log.error("fill refused by the book", exch_id=o.exch_id, qty=rep.last_qty)
                return
            self._seen_execution(rep)
            self.stats["fills"] += 1
            o.cum += rep.last_qty
            o.leaves -= rep.last_qty
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
            if outcome.trigger:
                self._trigger(o.account, outcome.trigger, now)
        elif event == Event.CANCELED:
            outcome = engine.apply_canceled(o.ref, now)
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
        else:
            engine.apply_reject(o.ref, now)
        if action == Action.SURPRISE:
            self._surprise(o, f"the exchange rejected the order after it was "
                           f"{OrdStatus(o.status).name} ({rep.text or 'no reason given'}); "
                           f"it is closed here too", now, AlertLevel.WARNING)
        o.status = status
        if not o.order_id and rep.order_id:
            o.order_id = rep.order_id
        reason = rep.reason if et in (ExecType.REJECTED, ExecType.CANCELED) else 0
        if et == ExecType.REJECTED and not reason:
            reason = int(Reason.EXCHANGE_REJECT)
        out = ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, status, et, reason,
                         rep.text, rep.last_qty if et == ExecType.TRADE else 0,
                         rep.last_px if et == ExecType.TRADE else 0.0, o.cum, o.leaves, now,
                         o.side, o.price, o.qty, rep.self_trade, rep.exec_id)
        self._report(o, out, now, derived)
        if status in FINAL:
            self._forget(o)

    def _report(self, o: RoutedOrder, out: ExecReport, now: int, derived: bool) -> None:
        """An order's report to its owner (if one is connected to hear it). A report the
        gateway derived rather than received is journaled for the drop copy and the audit
        trail (to the session, or to none); one straight from the exchange is there already."""
        s = o.owner
        live = s is not None and not s.closed
        if derived and not self.replaying:
            self.record(jr.Outbound(now, s.session_id if live else jr.NO_SESSION, out))
        if live:
            self._to_session(s, out, now)
        if self.report_observers and not self.replaying:
            for observe in self.report_observers:
                observe(out)

    def _forget(self, o: RoutedOrder) -> None:
        self.orders.pop(o.ref, None)
        self.by_exch.pop(o.exch_id, None)
        if self.by_clid.get((o.user, o.cl_ord_id)) == o.ref:
            del self.by_clid[(o.user, o.cl_ord_id)]
        if o.cancel_id:
            self.cancels.pop(o.cancel_id, None)
            o.cancel_id = ""
        if o.old_cancels is not None:
            for cancel_id in o.old_cancels:
                self.cancels.pop(cancel_id, None)
            o.old_cancels = None
        self.finished.put(o.exch_id, o)

    def _seen_execution(self, rep: ExecReport) -> None:
        """An execution is dealt with once: booked, or (if the book cannot take it) alerted —
        when the exchange says it again (a trade query after a reconnect) nothing repeats."""
        if rep.exec_id:
            self.exec_ids.put(rep.exec_id)

