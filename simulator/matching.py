"""The exchange's matching engine: validation, order lifecycle and execution reports (sans-IO).

How it fits
-----------
``simulator.exchange`` decodes frames and hands each ``NewOrder`` / ``CancelOrder`` to an
engine together with the *owner* (the member seat's user name); the engine answers with a list
of ``(owner, message)`` reports — ``ExecReport`` or ``CancelReject`` from
``gateway.protocol`` — which the server routes to the owner's connection. Nothing here reads a
socket or sleeps; the clock is injected, so every case is a plain unit test.

Lifecycle of an order, as the engine reports it::

    NewOrder --invalid--> REJECTED (reason code + sentence, nothing kept)
             --valid----> NEW (ack; order_id = exchange id)
                           --fills--> PARTIALLY_FILLED ... --> FILLED
                           --IOC/FOK/MARKET remainder--> CANCELED
                           --GFD remainder rests; CancelOrder--> CANCELED

Validation is exchange-style and uses the one reason-code table (``checks.reasons``): unknown
instrument (401), a value outside an enumeration (408), quantity not a whole positive number
(403) or outside the instrument's min/max for the order type (404/405), order type the
exchange does not take — SHFE and INE have no market orders (306), price not finite and
positive (406), not on tick (407), above the upper / below the lower daily limit (501/502), a
cl_ord_id still working for that seat (1202). The sentence of every reject starts with
"exchange:" so a client can tell it from a gateway reject with the same code.

Market orders fill what is available inside the daily band (a buy walks the asks up to the
upper limit, a sell the bids down to the lower limit); the remainder is cancelled, as IOC.
FOK fills completely at once or is cancelled without touching the book. The exchange matches
orders of the same seat and account like any others — preventing self-trades is the broker's
job — but flags such trades with ``ExecReport.self_trade`` so the risk engine can count them.

Execution ids: every TRADE report carries an ``exec_id``, and the two sides of one match get
two different ids. An id is the engine's prefix (the start time in milliseconds plus 16 random
bits, so a restarted or second simulator never reuses one) and a counter. The engine remembers
each order's executions (``Execution``: id, lots, price, time) with the order, working or in
the finished-order memory, and ``trade_reports(order)`` says them again exactly as they were
first sent — same id, ``last_qty``/``last_px`` of that execution, ``cum_qty``/``leaves_qty``
and status as right after it — which is how the exchange answers a trade query
(``OrderStatusRequest(trades=True)``). The finished-order memory is bounded by orders
(``finished_memory``) and by the executions they hold (``trade_memory``): the oldest finished
orders leave first, with their executions.

``AckOnlyEngine`` is the capacity-benchmark stand-in: it acknowledges every order without a
book (and with ``fill=True`` fills it at once at its own price).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from checks.enums import ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from checks.exchanges import DEFAULT_EXCHANGES, ExchangeRules
from checks.model import Instrument
from checks.reasons import Reason
from gateway.protocol import CancelOrder, CancelReject, ExecReport, MarketData, NewOrder
from simulator.book import Order, OrderBook

Report = tuple[str, ExecReport | CancelReject]
"""``(owner, message)``: who the message is for, and the message."""

_BUY, _SELL = int(Side.BUY), int(Side.SELL)
_LIMIT, _MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
_GFD, _FOK = int(Tif.GFD), int(Tif.FOK)
_NEW, _PARTIAL, _FILLED = int(OrdStatus.NEW), int(OrdStatus.PARTIALLY_FILLED), int(OrdStatus.FILLED)
_CANCELED, _REJECTED = int(OrdStatus.CANCELED), int(OrdStatus.REJECTED)
_X_NEW, _X_TRADE, _X_CANCELED = int(ExecType.NEW), int(ExecType.TRADE), int(ExecType.CANCELED)
_X_REJECTED, _X_STATUS = int(ExecType.REJECTED), int(ExecType.STATUS)
_SIDES = frozenset(int(v) for v in Side)
_OFFSETS = frozenset(int(v) for v in Offset)
_HEDGES = frozenset(int(v) for v in Hedge)
_ORD_TYPES = frozenset(int(v) for v in OrdType)
_TIFS = frozenset(int(v) for v in Tif)
# How far price/tick may sit from a whole number and still count as on tick: absorbs the
# representation error of decimal prices (640.02 / 0.02), never a real off-tick price.
_TICK_EPS = 1e-6


def to_ticks(price: float, tick: float) -> int:
    """The nearest whole number of ticks: floor(x + 0.5), computed once at entry."""
    return math.floor(price / tick + 0.5)


def _decimals(tick: float) -> int:
    text = repr(tick)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 8


class Trade(NamedTuple):
    """One match, kept only when the engine records trades (tests, tools)."""

    symbol: str
    ticks: int
    price: float
    qty: int
    buy_seq: int
    sell_seq: int
    aggressor_side: int


class Execution(NamedTuple):
    """One execution of one order, as the engine remembers it for a trade query."""

    exec_id: str
    qty: int
    px: float
    ts_ns: int
    self_trade: bool


def new_exec_id_prefix() -> str:
    """A prefix no other engine uses: start time in ms (hex) and 16 random bits, then '.'."""
    return f"{time.time_ns() // 1_000_000:x}{secrets.randbits(16):04x}."


class _Instr:
    """What the engine needs of an instrument, in ticks, plus its book."""

    __slots__ = ("inst", "book", "tick", "decimals", "upper", "lower", "ref", "market_ok",
                 "min_limit", "max_limit", "min_market", "max_market")

    def __init__(self, inst: Instrument, rules: ExchangeRules) -> None:
        self.inst = inst
        self.book = OrderBook(inst.symbol)
        self.tick = inst.tick
        self.decimals = _decimals(inst.tick)
        self.upper = to_ticks(inst.upper_limit, inst.tick)
        self.lower = to_ticks(inst.lower_limit, inst.tick)
        self.ref = to_ticks(inst.reference_price, inst.tick)
        self.market_ok = rules.market_orders
        self.min_limit, self.max_limit = inst.min_limit_qty, inst.max_limit_qty
        self.min_market, self.max_market = inst.min_market_qty, inst.max_market_qty

    def px(self, ticks: int) -> float:
        return round(ticks * self.tick, self.decimals)


class _EngineBase:
    """Working orders per seat, finished-order memory and report builders shared by engines."""

    def __init__(self, instruments: Iterable[Instrument],
                 exchanges: Mapping[str, ExchangeRules] | None,
                 clock: Callable[[], int], finished_memory: int, trade_memory: int,
                 exec_id_prefix: str | None) -> None:
        rules = dict(DEFAULT_EXCHANGES) if exchanges is None else dict(exchanges)
        self._instr: dict[str, _Instr] = {
            i.symbol: _Instr(i, rules.get(i.exchange, ExchangeRules())) for i in instruments}
        self._clock = clock
        self._seq = 0
        # owner -> cl_ord_id -> working order; finished orders leave at once (bounded memory).
        self._working: dict[str, dict[str, Order]] = {}
        # A bounded memory of recently finished orders: a late cancel gets "already finished"
        # (1204) rather than "unknown" (1203), and a member reconnecting after an outage learns
        # how its orders ended (``OrderStatusRequest(open_only=False)``), fills included.
        self._finished: OrderedDict[tuple[str, str], Order] = OrderedDict()
        self._finished_memory = finished_memory
        # Executions held by the finished orders: a second bound, since one order can hold
        # many (a 500-lot order filled lot by lot holds 500).
        self._finished_execs = 0
        self._trade_memory = trade_memory
        self.exec_id_prefix = new_exec_id_prefix() if exec_id_prefix is None else exec_id_prefix
        self._exec_seq = 0

    @property
    def symbols(self) -> list[str]:
        return list(self._instr)

    def instrument(self, symbol: str) -> Instrument:
        return self._instr[symbol].inst

    def working(self, owner: str, account: str = "") -> list[Order]:
        """The seat's working orders (all accounts, or one), oldest first."""
        orders = self._working.get(owner)
        if not orders:
            return []
        return [o for o in orders.values() if not account or o.account == account]

    def finished(self, owner: str, account: str = "") -> list[Order]:
        """The seat's remembered finished orders (all accounts, or one), oldest first."""
        return [o for (own, _), o in self._finished.items()
                if own == owner and (not account or o.account == account)]

    def finished_named(self, owner: str, cl_ord_ids: Iterable[str], account: str = "") -> list[Order]:
        """The seat's remembered finished orders among ``cl_ord_ids`` (unknown ids skipped)."""
        finished = self._finished
        out = []
        for cl in cl_ord_ids:
            o = finished.get((owner, cl))
            if o is not None and (not account or o.account == account):
                out.append(o)
        return out

    def working_count(self) -> int:
        return sum(len(d) for d in self._working.values())

    def remembered_executions(self) -> int:
        """Executions held in memory: those of working orders and of remembered finished ones."""
        working = sum(len(o.execs) for d in self._working.values() for o in d.values() if o.execs)
        return working + self._finished_execs

    def trade_reports(self, o: Order) -> list[ExecReport]:
        """Each execution of the order as the TRADE report first sent for it (a trade query).

        Same ``exec_id``, lots and price; ``cum_qty``, ``leaves_qty`` and status as right after
        that execution, so a member replaying them in order passes through the states it missed.
        """
        out: list[ExecReport] = []
        cum = 0
        qty = o.qty
        for x in o.execs or ():
            cum += x.qty
            out.append(ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol,
                                  _FILLED if cum == qty else _PARTIAL, _X_TRADE, 0, "", x.qty,
                                  x.px, cum, qty - cum, x.ts_ns, o.side, o.price, qty,
                                  x.self_trade, x.exec_id))
        return out

    def status_report(self, o: Order) -> ExecReport:
        """The order's state as an ``exec_type=STATUS`` report (reconciliation); ``last_px`` is
        the average fill price, and the order's terms are all there, so a member that did not
        know the order can adopt it into its risk book."""
        avg = self._instr[o.symbol].tick * o.fill_ticks / o.cum_qty if o.cum_qty else 0.0
        return ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, o.status, _X_STATUS,
                          0, "", 0, avg, o.cum_qty, o.leaves, self._clock(), o.side, o.price, o.qty,
                          offset=o.offset, hedge=o.hedge, ord_type=o.ord_type, tif=o.tif)

    def cancel(self, owner: str, req: CancelOrder) -> list[Report]:
        """Cancel a working order of ``owner`` by its cl_ord_id (``req.orig_cl_ord_id``).

        The ``CANCELED`` report carries the *original* order's cl_ord_id, so it routes to the
        order it ends; a failure answers ``CancelReject`` with the cancel's own ids.
        """
        orders = self._working.get(owner)
        order = orders.get(req.orig_cl_ord_id) if orders else None
        if order is None or (req.account and req.account != order.account):
            key = (owner, req.orig_cl_ord_id)
            if order is None and key in self._finished:
                reason, text = Reason.ORDER_FINISHED, "exchange: order is already finished"
            else:
                reason = Reason.UNKNOWN_ORDER
                text = f"exchange: no working order {req.orig_cl_ord_id!r} for account {req.account!r}"
            return [(owner, CancelReject(req.cl_ord_id, req.orig_cl_ord_id, int(reason), text))]
        self._remove_from_book(order)
        order.leaves = 0
        order.status = _CANCELED
        self._finish(order)
        return [(owner, ExecReport(order.cl_ord_id, order.order_id, order.account, order.symbol,
                                   _CANCELED, _X_CANCELED, 0, "", 0, 0.0, order.cum_qty, 0,
                                   self._clock(), order.side, order.price, order.qty))]

    def market_data(self, symbol: str) -> MarketData:
        ins = self._instr[symbol]
        book = ins.book
        last = book.last_ticks if book.last_ticks is not None else ins.ref
        bid, ask = book.best_bid(), book.best_ask()
        return MarketData(symbol, ins.px(last), ins.px(bid) if bid is not None else 0.0,
                          ins.px(ask) if ask is not None else 0.0, ins.px(ins.upper),
                          ins.px(ins.lower), self._clock())

    # -- internals -------------------------------------------------------------------------

    def _remove_from_book(self, order: Order) -> None:
        """Engines with a book take the order out of it; the ack-only engine has none."""

    def _finish(self, order: Order) -> None:
        orders = self._working.get(order.owner)
        if orders is not None and orders.get(order.cl_ord_id) is order:
            del orders[order.cl_ord_id]
            if not orders:
                del self._working[order.owner]
        finished = self._finished
        key = (order.owner, order.cl_ord_id)
        # A cl_ord_id may be used again once its order finished: the newer order replaces it.
        old = finished.pop(key, None)
        if old is not None and old.execs:
            self._finished_execs -= len(old.execs)
        finished[key] = order
        if order.execs:
            self._finished_execs += len(order.execs)
        while len(finished) > self._finished_memory or self._finished_execs > self._trade_memory:
            _, old = finished.popitem(last=False)
            if old.execs:
                self._finished_execs -= len(old.execs)

    def _next_exec_id(self) -> str:
        self._exec_seq += 1
        return f"{self.exec_id_prefix}{self._exec_seq}"

    def _reject(self, owner: str, m: NewOrder, reason: Reason, text: str) -> list[Report]:
        qty = m.qty if isinstance(m.qty, int) else 0
        price = m.price if math.isfinite(m.price) else 0.0
        return [(owner, ExecReport(m.cl_ord_id, "", m.account, m.symbol, _REJECTED, _X_REJECTED,
                                   int(reason), "exchange: " + text, 0, 0.0, 0, 0, self._clock(),
                                   m.side, price, qty))]

    def _reject_enum(self, owner: str, m: NewOrder) -> list[Report]:
        for name, allowed in (("side", _SIDES), ("offset", _OFFSETS), ("hedge", _HEDGES),
                              ("ord_type", _ORD_TYPES), ("tif", _TIFS)):
            value = getattr(m, name)
            if value not in allowed:
                break
        return self._reject(owner, m, Reason.INVALID_FIELD,
                            f"{name}={value} is not one of {sorted(allowed)}")

    def _validate(self, owner: str, m: NewOrder) -> tuple[_Instr, int, int] | list[Report]:
        """``(instrument, qty, limit_ticks)`` for a valid order, else the reject report."""
        ins = self._instr.get(m.symbol)
        if ins is None:
            return self._reject(owner, m, Reason.UNKNOWN_INSTRUMENT, f"unknown instrument {m.symbol!r}")
        if (m.side not in _SIDES or m.offset not in _OFFSETS or m.hedge not in _HEDGES
                or m.ord_type not in _ORD_TYPES or m.tif not in _TIFS):
            return self._reject_enum(owner, m)
        qty = m.qty
        if isinstance(qty, float):
            if not (math.isfinite(qty) and qty.is_integer()):
                return self._reject(owner, m, Reason.INVALID_QTY, f"qty {qty} is not a whole number of lots")
            qty = int(qty)
        if qty <= 0:
            return self._reject(owner, m, Reason.INVALID_QTY, f"qty {qty} is not positive")
        market = m.ord_type == _MARKET
        lo, hi = (ins.min_market, ins.max_market) if market else (ins.min_limit, ins.max_limit)
        kind = "market" if market else "limit"
        if qty < lo:
            return self._reject(owner, m, Reason.QTY_BELOW_MIN,
                                f"qty {qty} is below the minimum {lo} for a {kind} order on {m.symbol}")
        if qty > hi:
            return self._reject(owner, m, Reason.QTY_ABOVE_MAX,
                                f"qty {qty} is above the maximum {hi} for a {kind} order on {m.symbol}")
        if market:
            if not ins.market_ok:
                return self._reject(owner, m, Reason.ORD_TYPE_NOT_ALLOWED_EXCHANGE,
                                    f"{ins.inst.exchange} does not accept market orders ({m.symbol})")
            return ins, qty, (ins.upper if m.side == _BUY else ins.lower)
        price = m.price
        if not (math.isfinite(price) and price > 0):
            return self._reject(owner, m, Reason.INVALID_PRICE, f"price {price} is not a finite positive number")
        x = price / ins.tick
        ticks = math.floor(x + 0.5)
        if abs(x - ticks) > _TICK_EPS:
            return self._reject(owner, m, Reason.PRICE_NOT_ON_TICK,
                                f"price {price} is not a multiple of the tick {ins.tick} on {m.symbol}")
        if ticks > ins.upper:
            return self._reject(owner, m, Reason.PRICE_ABOVE_UPPER_LIMIT,
                                f"price {price} is above the upper limit {ins.px(ins.upper)} on {m.symbol}")
        if ticks < ins.lower:
            return self._reject(owner, m, Reason.PRICE_BELOW_LOWER_LIMIT,
                                f"price {price} is below the lower limit {ins.px(ins.lower)} on {m.symbol}")
        return ins, qty, ticks

    def _accept(self, owner: str, m: NewOrder, qty: int, ticks: int, price: float) -> Order | list[Report]:
        """Create and register the working order, or reject a cl_ord_id still in use."""
        orders = self._working.get(owner)
        if orders is None:
            orders = self._working[owner] = {}
        elif m.cl_ord_id in orders:
            return self._reject(owner, m, Reason.EXCHANGE_REJECT,
                                f"cl_ord_id {m.cl_ord_id!r} is already used by a working order of this seat")
        self._seq += 1
        order = Order(self._seq, owner, m.cl_ord_id, m.account, m.symbol, m.side, m.offset,
                      m.hedge, m.ord_type, m.tif, ticks, price, qty)
        orders[m.cl_ord_id] = order
        return order


class MatchingEngine(_EngineBase):
    """One order book per instrument; price-time priority; LIMIT/MARKET; GFD/IOC/FOK."""

    def __init__(self, instruments: Iterable[Instrument],
                 exchanges: Mapping[str, ExchangeRules] | None = None, *,
                 clock: Callable[[], int] = time.time_ns, record_trades: bool = False,
                 finished_memory: int = 100_000, trade_memory: int = 1_000_000,
                 exec_id_prefix: str | None = None) -> None:
        super().__init__(instruments, exchanges, clock, finished_memory, trade_memory,
                         exec_id_prefix)
        self.trades: list[Trade] | None = [] if record_trades else None

    def book(self, symbol: str) -> OrderBook:
        return self._instr[symbol].book

    def submit(self, owner: str, m: NewOrder) -> list[Report]:
        """Validate, acknowledge and match one order; return every report it caused."""
        checked = self._validate(owner, m)
        if isinstance(checked, list):
            return checked
        ins, qty, limit = checked
        if m.ord_type == _MARKET:
            order = self._accept(owner, m, qty, 0, 0.0)
        else:
            order = self._accept(owner, m, qty, limit, ins.px(limit))
        if isinstance(order, list):
            return order
        now = self._clock()
        side, price = order.side, order.price
        reports: list[Report] = [(owner, ExecReport(
            order.cl_ord_id, order.order_id, order.account, order.symbol, _NEW, _X_NEW, 0, "",
            0, 0.0, 0, qty, now, side, price, qty))]
        book = ins.book
        if order.tif == _FOK and not book.available(side, limit, qty):
            order.leaves = 0
            order.status = _CANCELED
            self._finish(order)
            reports.append((owner, ExecReport(
                order.cl_ord_id, order.order_id, order.account, order.symbol, _CANCELED,
                _X_CANCELED, 0, "exchange: FOK order cannot be filled in full; cancelled", 0, 0.0,
                0, 0, now, side, price, qty)))
            return reports
        fills = book.match(order, limit)
        if fills:
            self._report_fills(order, fills, ins, reports, now)
        if order.leaves:
            if order.tif == _GFD and order.ord_type == _LIMIT:
                book.add(order)
                return reports
            order.leaves = 0
            order.status = _CANCELED
            what = "market" if order.ord_type == _MARKET else "IOC"
            reports.append((owner, ExecReport(
                order.cl_ord_id, order.order_id, order.account, order.symbol, _CANCELED,
                _X_CANCELED, 0, f"exchange: unfilled remainder of a {what} order cancelled", 0,
                0.0, order.cum_qty, 0, now, side, price, qty)))
        self._finish(order)
        return reports

    def _report_fills(self, order: Order, fills: list, ins: _Instr, reports: list[Report],
                      now: int) -> None:
        """Two TRADE reports per fill (aggressor, then resting), in fill order, each with its
        own execution id, and each execution remembered with its order."""
        cum = 0
        qty = order.qty
        trades = self.trades
        mine = order.execs
        if mine is None:
            mine = order.execs = []
        for rest, n, ticks in fills:
            cum += n
            px = ins.px(ticks)
            self_trade = rest.account == order.account
            status = _FILLED if cum == qty else _PARTIAL
            xid = self._next_exec_id()
            mine.append(Execution(xid, n, px, now, self_trade))
            reports.append((order.owner, ExecReport(
                order.cl_ord_id, order.order_id, order.account, order.symbol, status, _X_TRADE,
                0, "", n, px, cum, qty - cum, now, order.side, order.price, qty, self_trade, xid)))
            rest.status = _FILLED if rest.leaves == 0 else _PARTIAL
            xid = self._next_exec_id()
            if rest.execs is None:
                rest.execs = []
            rest.execs.append(Execution(xid, n, px, now, self_trade))
            reports.append((rest.owner, ExecReport(
                rest.cl_ord_id, rest.order_id, rest.account, rest.symbol, rest.status, _X_TRADE,
                0, "", n, px, rest.cum_qty, rest.leaves, now, rest.side, rest.price, rest.qty,
                self_trade, xid)))
            if rest.leaves == 0:
                self._finish(rest)
            if trades is not None:
                buy, sell = (order, rest) if order.side == _BUY else (rest, order)
                trades.append(Trade(order.symbol, ticks, px, n, buy.seq, sell.seq, order.side))
        order.status = _FILLED if order.leaves == 0 else _PARTIAL

    def _remove_from_book(self, order: Order) -> None:
        self._instr[order.symbol].book.remove(order)


class AckOnlyEngine(_EngineBase):
    """No book: acknowledge every order (capacity benchmarks); optionally fill it at once.

    Orders are not validated. With ``fill=False`` they stay working until cancelled (so the
    cancel and status paths behave as with a book); with ``fill=True`` each is filled in full
    at its own price (a market order at the reference price) right after the ack, with an
    execution id like any trade — but, to keep the capacity benchmark's exchange light, such an
    order is not remembered at all, so neither a status nor a trade query lists it.
    """

    def __init__(self, instruments: Iterable[Instrument] = (),
                 exchanges: Mapping[str, ExchangeRules] | None = None, *, fill: bool = False,
                 clock: Callable[[], int] = time.time_ns, finished_memory: int = 100_000,
                 trade_memory: int = 1_000_000, exec_id_prefix: str | None = None) -> None:
        super().__init__(instruments, exchanges, clock, finished_memory, trade_memory,
                         exec_id_prefix)
        self.fill = fill

    def submit(self, owner: str, m: NewOrder) -> list[Report]:
        now = self._clock()
        qty = int(m.qty) if isinstance(m.qty, float) and math.isfinite(m.qty) else m.qty
        if self.fill:
            self._seq += 1
            oid = str(self._seq)
            px = m.price
            if m.ord_type == _MARKET:
                ins = self._instr.get(m.symbol)
                px = ins.px(ins.ref) if ins is not None else 0.0
            return [
                (owner, ExecReport(m.cl_ord_id, oid, m.account, m.symbol, _NEW, _X_NEW, 0, "", 0,
                                   0.0, 0, qty, now, m.side, m.price, qty)),
                (owner, ExecReport(m.cl_ord_id, oid, m.account, m.symbol, _FILLED, _X_TRADE, 0,
                                   "", qty, px, qty, 0, now, m.side, m.price, qty, False,
                                   self._next_exec_id())),
            ]
        order = self._accept(owner, m, qty, 0, m.price)
        if isinstance(order, list):
            return order
        return [(owner, ExecReport(m.cl_ord_id, order.order_id, m.account, m.symbol, _NEW,
                                   _X_NEW, 0, "", 0, 0.0, 0, qty, now, m.side, m.price, qty))]


Engine = MatchingEngine | AckOnlyEngine
