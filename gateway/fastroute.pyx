# cython: language_level=3
"""The router's order path, compiled: ``gateway.router.Router``'s hot handlers, typed.

``gateway.router`` holds the reference: ``RouterBase`` (sessions, reconciliation, alerts, views:
everything rare) and ``Router``, which adds the order path in plain Python. ``FastRouter``
(``gateway.fast_router``) is ``RouterCore`` (this module) + the same ``RouterBase``: the rare cases run
the one readable implementation, and only what every order, cancel and exchange report goes
through is here — the same steps in the same order as ``Router``'s methods of the same names,
with the order's state in a typed ``Order`` and the router's tables in typed attributes, so
each step is a C field access or a dict lookup rather than a Python attribute search.

The two must decide, send and journal identically: ``tests/gateway/test_fastroute.py`` drives
hypothesis-generated flows through both and compares every byte sent, every journal record
and the engine's book. Change one, change both.
"""

cimport cython
from libc.stdint cimport int64_t

from checks.enums import AlertLevel, ExecType, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.lifecycle import TRANSITIONS, Action, Event
from gateway.protocol import CancelOrder, CancelReject, ExecReport, NewOrder

from gateway.router import (
    NS,
    cancel_field_problem,
    echo,
    order_field_problem,
)

import structlog
from collections import deque
from time import monotonic_ns

from gateway.session import State

_ACTIVE = State.ACTIVE

log = structlog.get_logger("fengkong.router")

from gateway import router as _reference

# Identifier caps (gateway.router): C constants here, checked against the reference at import.
DEF MAX_ID_BYTES = 64
DEF MAX_ACCOUNT_BYTES = 32
DEF MAX_SYMBOL_BYTES = 32
if (_reference.MAX_ID_BYTES, _reference.MAX_ACCOUNT_BYTES, _reference.MAX_SYMBOL_BYTES) != \
        (MAX_ID_BYTES, MAX_ACCOUNT_BYTES, MAX_SYMBOL_BYTES):
    raise ImportError("gateway/fastroute.pyx: identifier caps differ from gateway.router's; "
                      "change both")

# Order statuses, exec types and lifecycle events/actions as C constants (checks.enums,
# gateway.lifecycle: the values are part of the wire protocol and cannot change).
cdef int S_PENDING_NEW = OrdStatus.PENDING_NEW
cdef int S_NEW = OrdStatus.NEW
cdef int S_PARTIALLY_FILLED = OrdStatus.PARTIALLY_FILLED
cdef int S_FILLED = OrdStatus.FILLED
cdef int S_CANCELED = OrdStatus.CANCELED
cdef int S_REJECTED = OrdStatus.REJECTED
cdef int ET_NEW = ExecType.NEW
cdef int ET_TRADE = ExecType.TRADE
cdef int ET_CANCELED = ExecType.CANCELED
cdef int ET_REJECTED = ExecType.REJECTED
cdef int ET_STATUS = ExecType.STATUS
cdef int EV_ACK = Event.ACK
cdef int EV_PARTIAL_FILL = Event.PARTIAL_FILL
cdef int EV_FULL_FILL = Event.FULL_FILL
cdef int EV_CANCELED = Event.CANCELED
cdef int EV_REJECTED = Event.REJECTED
cdef int A_SURPRISE = Action.SURPRISE
cdef int A_REPEAT = Action.REPEAT
cdef int A_LATE = Action.LATE
cdef int R_EXCHANGE_UNAVAILABLE = Reason.EXCHANGE_UNAVAILABLE
cdef int R_EXCHANGE_REJECT = Reason.EXCHANGE_REJECT
cdef int R_INVALID_FIELD = Reason.INVALID_FIELD

# The lifecycle table (gateway.lifecycle.TRANSITIONS) as a C array: [status][event] ->
# next status * 8 + action; -1 where the table has no row (it has one for every pair).
cdef int _STEP[8][8]


cdef void _load_table():
    cdef int s, e
    for s in range(8):
        for e in range(8):
            _STEP[s][e] = -1
    for (s, e), (nxt, action) in TRANSITIONS.items():
        _STEP[s][e] = int(nxt) * 8 + int(action)


_load_table()


cdef inline bint _fits(object text, Py_ssize_t limit):
    """Surely 1..limit UTF-8 bytes: a str of at most limit / 4 characters (no character takes
    more than four bytes). Anything else is asked of ``gateway.router``'s exact check."""
    return type(text) is str and 0 < len(<str>text) <= limit // 4


cdef inline bint _final(int status):
    return status == S_FILLED or status == S_CANCELED or status == S_REJECTED


@cython.final
@cython.no_gc  # never part of a reference cycle: not scanned by the cyclic collector
cdef class Order:
    """``gateway.router.RoutedOrder``, typed: what the gateway knows of one order.

    The cyclic garbage collector does not track it: an order refers to its owner session, its
    strings and a list of cancel ids, none of which refers back, so it cannot be in a cycle; a
    day's orders (working, and the finished ones remembered for late reports) are then not
    walked by every full collection."""

    cdef public int64_t ref
    cdef public object owner
    cdef public int64_t session_id
    cdef public str user
    cdef public str cl_ord_id
    cdef public str exch_id
    cdef public str order_id
    cdef public str account
    cdef public str symbol
    cdef public int side
    cdef public double price
    cdef public int64_t qty
    cdef public int64_t cum
    cdef public int64_t leaves
    cdef public int status
    cdef public int64_t ts_ns
    cdef public str cancel_id
    cdef public bint adopted
    cdef public object old_cancels

    def __init__(self, int64_t ref, owner, str user, str cl_ord_id, str exch_id, str account,
                 str symbol, int side, double price, int64_t qty, int64_t now):
        self.ref = ref
        self.owner = owner
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
        self.status = S_PENDING_NEW
        self.ts_ns = now
        self.cancel_id = ""
        self.adopted = False
        self.old_cancels = None

    def view(self):
        return {s: getattr(self, s) for s in _VIEW_FIELDS}


cdef class RouterCore:
    """The order path's state and handlers; ``gateway.router.FastRouter`` adds the rest."""

    cdef public object cfg
    cdef public object engine
    cdef public object audit
    cdef public object before_write
    cdef public object clock
    cdef public bint replaying
    cdef public object halted
    cdef public dict sessions
    cdef public dict orders
    cdef public dict by_exch
    cdef public dict by_clid
    cdef public object finished
    cdef public object exec_ids
    cdef public dict cancels
    cdef public dict used_clids
    cdef public int64_t day
    cdef public int64_t day_end
    cdef public object link
    cdef public object storm_handler
    cdef public dict reject_times
    cdef public str prefix
    cdef public int64_t order_seq
    cdef public int64_t _cancel_seq
    cdef public int64_t max_clids_per_user_day
    cdef public int64_t exec_id_memory
    cdef public int64_t finished_memory
    cdef public int64_t max_cancels_per_order
    cdef public dict stats
    cdef public list rejects_by_reason
    cdef public list report_observers
    cdef public object on_counted
    cdef public object ack_latency
    cdef public object recon_seen

    # ------------------------------------------------------------------ plumbing
    def record(self, record):
        if self.audit is not None and not self.replaying:
            if record.ts_ns >= self.day_end:
                self._new_day(record.ts_ns)
            self.audit.append(record)

    def _at(self, int64_t now):
        if now >= self.day_end:
            self._new_day(now)

    def _to_session(self, session, msg, now):
        if session is None or self.replaying or session.closed:
            return
        session.send(msg)

    def _to_exchange(self, msg, now):
        if self.replaying or self.link is None:
            return
        self.link.send(msg)

    def _clids(self, str user, int64_t now):
        self._at(now)
        used = self.used_clids.get(user)
        if used is None:
            used = self.used_clids[user] = set()
        return used

    # ------------------------------------------------------------------ a read's messages
    def client_messages(self, session, list messages):
        """Every message of one read from a client session (``FramedProtocol.on_messages``):
        an active session's orders and cancels go to the order path here, anything else to the
        session's own ``on_message``; the per-message rules of ``FramedProtocol.data_received``
        hold (stop once the session closes; a bug in one message is that message's
        ``on_internal_error``)."""
        session.last_in = monotonic_ns()
        for msg in messages:
            if session.closed:
                break
            t = type(msg)
            try:
                if t is NewOrder and session.state == _ACTIVE:
                    self.new_order(session, msg, self.clock())
                elif t is CancelOrder and session.state == _ACTIVE:
                    self.cancel(session, msg, self.clock())
                else:
                    session.on_message(msg)
            except Exception as exc:
                session.on_internal_error(msg, exc)

    def exchange_messages(self, proto, list messages):
        """Every message of one read from the exchange link: execution reports here, the rest
        to the link's ``on_message`` (the same rules as ``client_messages``)."""
        for msg in messages:
            if proto.closed:
                break
            try:
                if type(msg) is ExecReport:
                    self.exchange_report(msg, self.clock())
                else:
                    proto.on_message(msg)
            except Exception as exc:
                proto.on_internal_error(msg, exc)

    # ------------------------------------------------------------------ new orders
    def new_order(self, session, msg, now=None, bint engine_saw=True):
        cdef int64_t t = self.clock() if now is None else now
        cdef set used
        cdef Order o
        cdef int64_t qty
        if t >= self.day_end:
            self._new_day(t)
        sid = session.session_id
        if self.audit is not None and not self.replaying:
            self.audit.append(jr.Inbound(t, sid, msg))
        stats = self.stats
        stats["orders"] += 1
        bad = None
        if not (_fits(msg.cl_ord_id, MAX_ID_BYTES) and _fits(msg.account, MAX_ACCOUNT_BYTES)
                and _fits(msg.symbol, MAX_SYMBOL_BYTES)):
            bad = order_field_problem(msg)
        if bad is not None:
            return self._reject(session, msg, R_INVALID_FIELD, bad, t)
        if msg.account not in session.accounts:
            return self._reject(session, msg, Reason.ACCOUNT_NOT_PERMITTED,
                                f"session {sid} may not trade {msg.account!r}", t)
        user = session.user
        used = self._clids(user, t)
        clid = msg.cl_ord_id
        if clid in used:
            return self._reject(session, msg, Reason.DUPLICATE_CL_ORD_ID, f"cl_ord_id {clid!r}", t)
        if len(used) >= self.max_clids_per_user_day:
            return self._reject(session, msg, R_INVALID_FIELD,
                                f"user {user!r} used {self.max_clids_per_user_day} cl_ord_ids "
                                "today, the most the gateway remembers; new orders are refused "
                                "until the next trading day", t)
        used.add(clid)
        if self.replaying and not engine_saw:
            stats["rejected"] += 1
            return None
        if not self.replaying:
            refusal = self.halted
            if refusal is None and not (self.link is not None and self.link.up):
                refusal = (R_EXCHANGE_UNAVAILABLE, "")
            if refusal is not None:
                return self._reject(session, msg, refusal[0], refusal[1], t)
        decision = self.engine.decide(msg, t, sid)
        reason = decision.reason
        if reason:  # right behind the order, before what the decision sets off
            self._journal_refusal(session, msg, reason, decision.text, t)
        if decision.alerts:
            self._alerts(decision.alerts, t)
        if self.on_counted is not None:
            self.on_counted(msg.account, t, int(reason))
        if reason:
            self._reject(session, msg, reason, None, t, decision.text, True)
        else:
            stats["accepted"] += 1
            qty = int(msg.qty)
            self.order_seq += 1
            exch_id = self.prefix + format(self.order_seq, "x")
            o = Order(decision.ref, session, user, clid, exch_id, msg.account, msg.symbol,
                      msg.side, msg.price, qty, t)
            self.orders[o.ref] = o
            self.by_exch[exch_id] = o.ref
            self.by_clid[(user, clid)] = o.ref
            if not self.replaying and self.link is not None:
                self.link.send(NewOrder(exch_id, msg.account, msg.symbol, msg.side, msg.offset,
                                        msg.hedge, msg.ord_type, msg.tif, msg.price, qty))
        if decision.trigger:
            self._trigger(msg.account, decision.trigger, t)
        return None

    def _track(self, Order o):
        self.orders[o.ref] = o
        self.by_exch[o.exch_id] = o.ref
        self.by_clid[(o.user, o.cl_ord_id)] = o.ref

    def _journal_refusal(self, session, msg, reason, text, now):
        self.record(jr.Decision(now, session.session_id, msg.cl_ord_id, msg.account, msg.symbol,
                                int(reason), text, 0))

    def _reject(self, session, msg, reason, detail, now, text=None, bint journaled=False):
        self.stats["rejected"] += 1
        self.rejects_by_reason[reason] += 1
        if text is None:
            text = Reason(reason).description + (f" ({detail})" if detail else "")
        if not journaled:
            self._journal_refusal(session, msg, reason, text, now)
        qty = msg.qty if type(msg.qty) is int else 0
        price = msg.price if type(msg.price) is float else 0.0
        rep = ExecReport(
            echo(msg.cl_ord_id, MAX_ID_BYTES), "", echo(msg.account, MAX_ACCOUNT_BYTES),
            echo(msg.symbol, MAX_SYMBOL_BYTES), _STATUS[S_REJECTED], ET_REJECTED,
            int(reason), text, 0, 0.0, 0, 0, now, msg.side, price, qty)
        self._to_session(session, rep, now)
        if self.report_observers and not self.replaying:
            for observe in self.report_observers:
                observe(rep)
        if self.storm_handler is not None and not self.replaying:
            times = self.reject_times.get(session.session_id)
            if times is None:
                times = self.reject_times[session.session_id] = deque(
                    maxlen=self.cfg.gateway.reject_storm)
            times.append(now)
            if len(times) == times.maxlen and times[0] > now - NS:
                times.clear()
                self.storm_handler(session.session_id)

    # ------------------------------------------------------------------ cancels
    def cancel(self, session, msg, now=None):
        cdef int64_t t = self.clock() if now is None else now
        cdef Order o
        if t >= self.day_end:
            self._new_day(t)
        self.record(jr.Inbound(t, session.session_id, msg))
        bad = None
        if not (_fits(msg.cl_ord_id, MAX_ID_BYTES) and _fits(msg.orig_cl_ord_id, MAX_ID_BYTES)
                and _fits(msg.account, MAX_ACCOUNT_BYTES)):
            bad = cancel_field_problem(msg)
        if bad is not None:
            self._to_session(session, CancelReject(
                echo(msg.cl_ord_id, MAX_ID_BYTES), echo(msg.orig_cl_ord_id, MAX_ID_BYTES),
                R_INVALID_FIELD, f"{Reason.INVALID_FIELD.description} ({bad})"), t)
            return
        ref = self.by_clid.get((session.user, msg.orig_cl_ord_id))
        found = self.orders.get(ref) if ref is not None else None
        if found is None or found.account != msg.account or found.account not in session.accounts:
            used = self.used_clids.get(session.user, ())
            reason = (Reason.ORDER_FINISHED if found is None and msg.orig_cl_ord_id in used
                      else Reason.UNKNOWN_ORDER)
            self._to_session(session, CancelReject(msg.cl_ord_id, msg.orig_cl_ord_id, int(reason),
                                                   Reason(reason).description), t)
            return
        o = found
        self._send_cancel_c(o, msg.cl_ord_id, t)

    def cancel_refs(self, refs, why, now=None):
        """``RouterBase.cancel_refs`` (kill switch, cancel-on-disconnect) compiled: the kill of
        thousands of working orders is this loop."""
        cdef int64_t t = self.clock() if now is None else now
        cdef int64_t sent = 0, held = 0
        if t >= self.day_end:
            self._new_day(t)
        orders = self.orders
        for ref in refs:
            found = orders.get(ref)
            if found is not None:
                if self._send_cancel_c(<Order>found, "", t):
                    sent += 1
                else:
                    held += 1
        if sent or held:
            log.info("cancels requested", sent=sent, held_until_link=held, why=why)
        return sent, held

    def _send_cancel(self, Order o, str client_id, int64_t now):
        return self._send_cancel_c(o, client_id, now)

    cdef bint _send_cancel_c(self, Order o, str client_id, int64_t now) except -1:
        self.stats["cancels"] += 1
        outcome = self.engine.cancel_request(o.ref, now)
        if outcome.alerts:
            self._alerts(outcome.alerts, now)
        if self.on_counted is not None:
            self.on_counted(o.account, now, 0)
        self._cancel_seq += 1
        cancel_id = self.prefix + "c" + format(self._cancel_seq, "x")
        self._remember_cancel_c(o, cancel_id, client_id)
        msg = CancelOrder(cancel_id, o.exch_id, o.account)
        sent = False
        if not self.replaying:
            if self.audit is not None:
                self.audit.append(jr.Outbound(now, jr.EXCHANGE_LINK, msg))
            if self.link is not None and self.link.up:
                sent = self.link.send(msg)
        if outcome.trigger:
            self._trigger(o.account, outcome.trigger, now)
        return bool(sent)

    def _remember_cancel(self, Order o, str cancel_id, str client_id):
        self._remember_cancel_c(o, cancel_id, client_id)

    cdef int _remember_cancel_c(self, Order o, str cancel_id, str client_id) except -1:
        if o.cancel_id:
            old = o.old_cancels
            if old is None:
                old = o.old_cancels = []
            old.append(o.cancel_id)
            if len(old) >= self.max_cancels_per_order:
                self.cancels.pop(old.pop(0), None)
        o.cancel_id = cancel_id
        self.cancels[cancel_id] = (o.ref, client_id)
        return 0

    # ------------------------------------------------------------------ exchange side
    def exchange_report(self, rep, now=None):
        cdef int64_t t = self.clock() if now is None else now
        cdef int et, event
        cdef Order o
        cdef int64_t last_qty
        if t >= self.day_end:
            self._new_day(t)
        exch_id = rep.cl_ord_id
        ref = self.by_exch.get(exch_id)
        found = self.orders.get(ref) if ref is not None else None
        if found is None:
            found = self.finished.get(exch_id)
        if self.audit is not None and not self.replaying:
            if found is None:
                self.audit.append(jr.ExchangeEvent(t, rep))
            else:
                o = found
                self.audit.append(jr.ExchangeEvent(t, rep, "", o.session_id, o.cl_ord_id))
        et = rep.exec_type
        exec_id = rep.exec_id
        if et == ET_TRADE and exec_id:
            if exec_id in self.exec_ids:
                self.stats["duplicate_fills"] += 1
                log.info("execution already applied", exec_id=exec_id, exch_id=exch_id)
                return
        if found is None:
            self._unknown_report(rep, t)
            return
        o = found
        if et == ET_STATUS:
            self._reconcile(o, rep, t)
            return
        if et == ET_NEW:
            event = EV_ACK
        elif et == ET_TRADE:
            last_qty = rep.last_qty
            if last_qty <= 0 or (not _final(o.status) and last_qty > o.leaves):
                self._seen_execution(rep)
                self._surprise(o, f"a fill of {rep.last_qty} lots against {o.leaves} working "
                               f"(execution {rep.exec_id or 'without id'}) was not booked",
                               t, AlertLevel.CRITICAL)
                return
            event = EV_FULL_FILL if last_qty == o.leaves else EV_PARTIAL_FILL
        elif et == ET_CANCELED:
            event = EV_CANCELED
        elif et == ET_REJECTED:
            event = EV_REJECTED
        else:
            log.warning("report with an unknown exec type", exec_type=et, exch_id=exch_id)
            return
        self._settle(o, event, rep, t, False)

    def _settle(self, Order o, int event, rep, int64_t now, bint derived=True):
        cdef int cell = _STEP[o.status][event] if 0 <= o.status < 8 and 0 <= event < 8 else -1
        cdef int status, action, et, reason
        cdef int64_t last_qty
        if cell < 0:
            raise KeyError((o.status, event))
        status, action = cell >> 3, cell & 7
        if action == A_REPEAT:
            log.info("report repeats a known state", exch_id=o.exch_id, status=o.status,
                     lifecycle_event=Event(event).name)
            return
        if action == A_LATE:
            self._seen_execution(rep)
            self._surprise(o, f"a fill of {rep.last_qty} lots at {rep.last_px} (execution "
                           f"{rep.exec_id or 'without id'}) came after the order ended as "
                           f"{OrdStatus(o.status).name}; the book could not take it",
                           now, AlertLevel.CRITICAL)
            return
        engine = self.engine
        et = rep.exec_type
        if event == EV_ACK:
            engine.apply_ack(o.ref, now)
            if self.ack_latency is not None and not self.replaying:
                self.ack_latency.observe(now - o.ts_ns)
        elif event == EV_PARTIAL_FILL or event == EV_FULL_FILL:
            last_qty = rep.last_qty
            outcome = engine.apply_fill(o.ref, last_qty, rep.last_px, now, rep.self_trade)
            if not outcome.known:
                log.error("fill refused by the book", exch_id=o.exch_id, qty=last_qty)
                return
            self._seen_execution(rep)
            self.stats["fills"] += 1
            o.cum += last_qty
            o.leaves -= last_qty
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
            if outcome.trigger:
                self._trigger(o.account, outcome.trigger, now)
        elif event == EV_CANCELED:
            outcome = engine.apply_canceled(o.ref, now)
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
        else:
            engine.apply_reject(o.ref, now)
        if action == A_SURPRISE:
            self._surprise(o, f"the exchange rejected the order after it was "
                           f"{OrdStatus(o.status).name} ({rep.text or 'no reason given'}); "
                           f"it is closed here too", now, AlertLevel.WARNING)
        o.status = status
        if not o.order_id and rep.order_id:
            o.order_id = rep.order_id
        reason = rep.reason if (et == ET_REJECTED or et == ET_CANCELED) else 0
        if et == ET_REJECTED and not reason:
            reason = R_EXCHANGE_REJECT
        trade = et == ET_TRADE
        out = ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, _STATUS[status],
                         rep.exec_type, reason,
                         rep.text, rep.last_qty if trade else 0,
                         rep.last_px if trade else 0.0, o.cum, o.leaves, now,
                         o.side, o.price, o.qty, rep.self_trade, rep.exec_id)
        self._report(o, out, now, derived)
        if _final(status):
            self._forget(o)

    def _report(self, Order o, out, int64_t now, bint derived):
        s = o.owner
        live = s is not None and not s.closed
        if derived and not self.replaying:
            self.record(jr.Outbound(now, s.session_id if live else jr.NO_SESSION, out))
        if live and not self.replaying:
            s.send(out)
        if self.report_observers and not self.replaying:
            for observe in self.report_observers:
                observe(out)

    def _forget(self, Order o):
        self.orders.pop(o.ref, None)
        self.by_exch.pop(o.exch_id, None)
        key = (o.user, o.cl_ord_id)
        if self.by_clid.get(key) == o.ref:
            del self.by_clid[key]
        if o.cancel_id:
            self.cancels.pop(o.cancel_id, None)
            o.cancel_id = ""
        if o.old_cancels is not None:
            for cancel_id in o.old_cancels:
                self.cancels.pop(cancel_id, None)
            o.old_cancels = None
        finished = self.finished
        finished[o.exch_id] = o
        if len(finished) > self.finished_memory:
            finished.popitem(last=False)

    def _seen_execution(self, rep):
        exec_id = rep.exec_id
        if exec_id:
            exec_ids = self.exec_ids
            exec_ids[exec_id] = None
            if len(exec_ids) > self.exec_id_memory:
                exec_ids.popitem(last=False)


# The enum members the reference passes (equal to their ints on the wire and in every
# comparison, and what a test sees when it looks at a report's fields).
_STATUS = {int(s): s for s in OrdStatus}
_VIEW_FIELDS = ("ref", "session_id", "user", "cl_ord_id", "exch_id", "order_id", "account",
                "symbol", "side", "price", "qty", "cum", "leaves", "status", "ts_ns", "cancel_id",
                "adopted")
