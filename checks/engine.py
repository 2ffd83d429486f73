"""The reference risk engine: every pre-trade check of docs/ARCHITECTURE.md §4, plainly written.

This is the specification in code. ``cext.engine.Engine`` makes exactly the same decisions
over C arrays; the differential property tests in ``tests/cext`` hold the two together.

Theory of operation
-------------------
``decide(order, now_ns, session)`` runs the checks in docs/ARCHITECTURE.md §4's order; the first failure
wins and returns a ``Decision`` with its reason code — *having touched no state*. When every
check passes, ``_reserve`` commits all of the order's effects at once (rate windows, daily
counters, frozen margin and fees, frozen closing position, pending opening volume, the
self-trade index) and the order gets a reference (``Decision.ref``).

What comes back from the exchange settles the reservation through ``apply_*``: an ack moves the
order to NEW; a fill converts frozen margin and fees into used margin and paid fees and moves
the position; an exchange reject or a cancel releases whatever the order still holds.
``cancel_request`` counts a cancel (rates, daily counts, fees) and is never refused.

Time is passed in; nothing reads a clock. The trading day rolls lazily: the first call whose
timestamp lies past the current trading day resets the daily counters and turns today's
positions into yesterday's.

Order references are slot numbers with a generation in the high bits, so a late event for a
finished order can never touch the order that reused its slot.
"""

from __future__ import annotations

import math

from checks.calendar import session_open, trading_day_bounds, trading_day_number
from checks.decision import (
    AlertEvent,
    Decision,
    Outcome,
    accepted,
    alert,
    rejected,
    warn,
    warn_level,
)
from checks.enums import (
    AccountStatus,
    AlertLevel,
    Hedge,
    KillScope,
    OrdStatus,
    OrdType,
    ProgReg,
    Side,
    Tif,
)
from checks.enums import Offset as Off
from checks.model import UNLIMITED, RiskConfig
from checks.reasons import Reason as R
from checks.state import (
    NO_BUY,
    NO_SELL,
    NS_PER_S,
    REPEAT_KEYS,
    AccountState,
    GroupInstrument,
    InstrumentState,
    OrderState,
    PositionState,
    ProductCounters,
    fen,
    fen_float,
    recent,
    repeat_slot,
    repeat_victim,
)

KILL_BLOCK = 1
KILL_CLOSE_ONLY = 2
MAX_QTY = 1_000_000_000  # beyond any instrument's maximum; keeps C int64 arithmetic safe
# Above any futures price (CNY per unit). A fill or market price beyond it is treated as garbage
# from the exchange: fen() of it would overflow C int64 (and raise on inf in Python).
MAX_PRICE = 1e9
SLOT_BITS = 32
_KILL_REASON = {
    KillScope.FIRM: R.KILLED_FIRM, KillScope.ACCOUNT: R.KILLED_ACCOUNT,
    KillScope.GROUP: R.KILLED_GROUP, KillScope.SESSION: R.KILLED_SESSION,
    KillScope.INSTRUMENT: R.KILLED_INSTRUMENT, KillScope.PRODUCT: R.KILLED_PRODUCT,
}


def as_qty(qty: object) -> int | None:
    """A whole positive-or-not number of lots, or None when ``qty`` is not a whole number."""
    if type(qty) is int:
        return qty
    if type(qty) is float and math.isfinite(qty) and qty == math.floor(qty) and abs(qty) < 2.0**62:
        return int(qty)
    return None


def as_price(price: object) -> float | None:
    if type(price) is float:
        return price
    if type(price) is int and abs(price) < 2**53:
        return float(price)
    return None


class Engine:
    """The readable reference engine (see the module docstring)."""

    def __init__(self, cfg: RiskConfig) -> None:
        self.cfg = cfg
        self.enforce_hours = cfg.enforce_hours
        self.day_boundary = cfg.day_boundary_s
        products = sorted({i.product for i in cfg.instruments})
        self.product_ids = {p: n for n, p in enumerate(products)}
        self.instruments = [InstrumentState(n, inst, cfg, self.product_ids[inst.product])
                            for n, inst in enumerate(cfg.instruments)]
        self.inst_ids = {i.symbol: i.idx for i in self.instruments}
        groups = sorted({a.group for a in cfg.accounts})
        self.group_ids = {g: n for n, g in enumerate(groups)}
        self.msg_ring = msg_ring_size(cfg)
        self.accounts = [AccountState(n, acc, self.group_ids[acc.group], self.product_ids,
                                      self.msg_ring) for n, acc in enumerate(cfg.accounts)]
        self.acct_ids = {a.id: a.idx for a in self.accounts}
        # Accounts under common control (实际控制关系) by group: the position limit counts the
        # group's combined position, as the exchanges do.
        self.group_members: list[list[int]] = [[] for _ in groups]
        for acct in self.accounts:
            self.group_members[acct.group].append(acct.idx)
        self.positions: dict[tuple[int, int], PositionState] = {}
        self.products: dict[tuple[int, int], ProductCounters] = {}
        self.group_inst: dict[tuple[int, int], GroupInstrument] = {}
        self.holders: dict[int, set[int]] = {}  # instrument -> accounts with a position
        self.orders: dict[int, OrderState] = {}  # ref -> working order
        self.free_slots: list[int] = []
        self.slot_gen: list[int] = []
        self.kills: dict[int, dict[int, int]] = {int(s): {} for s in KillScope}
        self.automated_sessions: set[int] = set()
        self.day = -1
        self.day_end = -(1 << 62)
        for acc_cfg, acct in zip(cfg.accounts, self.accounts, strict=True):
            for p in acc_cfg.positions:
                self._load_position(acct, self.inst_ids[p.symbol], p.long, p.long_price,
                                    p.short, p.short_price)

    # ---------------------------------------------------------------- lookups and set-up
    def _load_position(self, acct: AccountState, i: int, long: int, long_px: float,
                       short: int, short_px: float) -> None:
        inst = self.instruments[i]
        pos = self._pos(acct.idx, i)
        pos.long_yd, pos.short_yd = long, short
        pos.long_cost = fen(long_px * long * inst.multiplier)
        pos.short_cost = fen(short_px * short * inst.multiplier)
        pos.long_margin = fen(long_px * long * inst.multiplier * inst.margin_long
                              + long * inst.margin_per_lot)
        pos.short_margin = fen(short_px * short * inst.multiplier * inst.margin_short
                               + short * inst.margin_per_lot)
        acct.used_margin += pos.long_margin + pos.short_margin
        self._mark(acct, inst, pos)

    def _pos(self, a: int, i: int) -> PositionState:
        pos = self.positions.get((a, i))
        if pos is None:
            pos = self.positions[(a, i)] = PositionState()
        return pos

    def _prod(self, a: int, p: int) -> ProductCounters:
        pc = self.products.get((a, p))
        if pc is None:
            pc = self.products[(a, p)] = ProductCounters()
        return pc

    def _gi(self, g: int, i: int) -> GroupInstrument:
        gi = self.group_inst.get((g, i))
        if gi is None:
            gi = self.group_inst[(g, i)] = GroupInstrument()
        return gi

    def _group_held(self, g: int, i: int, side: int) -> int:
        """The account group's combined position on one side of an instrument, pending opens
        included (the position limit's measure)."""
        held = 0
        for a in self.group_members[g]:
            pos = self.positions.get((a, i))
            if pos is not None:
                held += (pos.long_td + pos.long_yd + pos.long_pending if side == Side.BUY
                         else pos.short_td + pos.short_yd + pos.short_pending)
        return held

    def register_session(self, session: int, automated: bool) -> None:
        """Declare whether a session is automated (needs a confirmed registration to trade)."""
        if automated:
            self.automated_sessions.add(session)
        else:
            self.automated_sessions.discard(session)

    # ---------------------------------------------------------------- the trading day
    def _roll_day(self, now: int) -> None:
        day = trading_day_number(now, self.day_boundary)
        self.day_end = trading_day_bounds(day, self.day_boundary)[1]
        if self.day == -1:
            self.day = day
            return
        self.day = day
        for acct in self.accounts:
            acct.day_msgs = 0
            acct.occasions = 0
            acct.programmatic_flagged = False
            acct.hft_flagged = False
            acct.pnl_base = acct.realised + acct.unrealised - acct.paid_fee  # the loss is intraday
            acct.loss_warned = False
            acct.loss_stopped = False
        for pos in self.positions.values():
            pos.long_yd += pos.long_td
            pos.short_yd += pos.short_td
            pos.long_yd_frozen += pos.long_td_frozen
            pos.short_yd_frozen += pos.short_td_frozen
            pos.long_td = pos.short_td = pos.long_td_frozen = pos.short_td_frozen = 0
            pos.cancels = pos.large_cancels = pos.self_trades = 0
        for order in self.orders.values():  # pending closes now draw on yesterday's position
            order.close_yd += order.close_td
            order.close_td = 0
        for pc in self.products.values():
            pc.messages = pc.filled_orders = 0
        for gi in self.group_inst.values():
            gi.open_volume = 0
        # Working openings carry over into the new day's opening volume: their leaves are released
        # from it when they finish, which must not drive the new day's count below zero.
        for order in self.orders.values():
            if order.opening and order.hedge != Hedge.HEDGE:
                self._gi(self.accounts[order.acct].group, order.inst).open_volume += order.leaves

    # ---------------------------------------------------------------- decide
    def decide(self, order, now: int, session: int = 0) -> Decision:  # noqa: ANN001
        """Check a ``NewOrder`` (or anything with its fields); reserve it when it passes."""
        if now >= self.day_end:
            self._roll_day(now)
        a = self.acct_ids.get(order.account) if type(order.account) is str else None
        if a is None:
            return rejected(R.UNKNOWN_ACCOUNT, f"account {order.account!r}")
        i = self.inst_ids.get(order.symbol) if type(order.symbol) is str else None
        if i is None:
            return rejected(R.UNKNOWN_INSTRUMENT, f"symbol {order.symbol!r}")
        acct, inst = self.accounts[a], self.instruments[i]
        side, offset, hedge, ord_type, tif = (order.side, order.offset, order.hedge,
                                              order.ord_type, order.tif)
        for name, value, top in (("side", side, 2), ("offset", offset, 4), ("hedge", hedge, 3),
                                 ("ord_type", ord_type, 2), ("tif", tif, 3)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                return rejected(R.INVALID_FIELD, f"{name}={value!r}")
        opening = offset == Off.OPEN

        # 2. kill switch
        for scope, key in ((KillScope.FIRM, 0), (KillScope.ACCOUNT, a),
                           (KillScope.GROUP, acct.group), (KillScope.SESSION, session),
                           (KillScope.INSTRUMENT, i), (KillScope.PRODUCT, inst.product_idx)):
            mode = self.kills[scope].get(key, 0)
            if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
                return rejected(_KILL_REASON[scope])

        # 3. permissions
        if acct.status == AccountStatus.SUSPENDED:
            return rejected(R.ACCOUNT_SUSPENDED)
        if acct.status == AccountStatus.CLOSE_ONLY and opening:
            return rejected(R.ACCOUNT_CLOSE_ONLY)
        if session in self.automated_sessions and acct.programmatic != ProgReg.CONFIRMED:
            return rejected(R.PROGRAMMATIC_NOT_CONFIRMED)
        if acct.products and inst.product_idx not in acct.products:
            return rejected(R.INSTRUMENT_NOT_PERMITTED, f"product {inst.product}")
        market = ord_type == OrdType.MARKET
        if (market and not acct.market_ok) or (not market and not acct.limit_ok):
            return rejected(R.ORD_TYPE_NOT_ALLOWED_ACCOUNT)
        if market and (not inst.market_ok or tif == Tif.GFD):
            return rejected(R.ORD_TYPE_NOT_ALLOWED_EXCHANGE,
                            f"{inst.exchange} market orders" if not inst.market_ok
                            else "market orders must be IOC or FOK")

        # 4. static validation
        if self.enforce_hours and not session_open(now, inst.sessions):  # hours and weekday
            return rejected(R.MARKET_CLOSED)
        qty = as_qty(order.qty)
        if qty is None or qty <= 0:
            return rejected(R.INVALID_QTY, f"qty={order.qty!r}")
        lo, hi = ((inst.min_market_qty, inst.max_market_qty) if market
                  else (inst.min_limit_qty, inst.max_limit_qty))
        if qty < lo:
            return rejected(R.QTY_BELOW_MIN, f"{qty} < {lo}")
        if qty > hi:
            return rejected(R.QTY_ABOVE_MAX, f"{qty} > {hi}")
        price = as_price(order.price)
        if price is None or not math.isfinite(price) or price < 0.0 or (price == 0.0 and not market):
            return rejected(R.INVALID_PRICE, f"price={order.price!r}")
        if not market:
            quotient = price / inst.tick + 0.5  # inf for an absurd price: not a whole number of ticks
            steps = math.floor(quotient) if math.isfinite(quotient) else None
            if steps is None or abs(steps * inst.tick - price) > inst.tick * 1e-6:
                return rejected(R.PRICE_NOT_ON_TICK, f"{price} with tick {inst.tick}")

            # 5. price: the band on whole ticks, as the tick check, so a limit price that
            # float arithmetic put a hair above the limit (3500 * 1.1 = 3850.0000000000005)
            # is at the limit, not above it.
            if steps > band_upper_ticks(inst):
                return rejected(R.PRICE_ABOVE_UPPER_LIMIT, f"{price} > {inst.upper}")
            if steps < band_lower_ticks(inst):
                return rejected(R.PRICE_BELOW_LOWER_LIMIT, f"{price} < {inst.lower}")
            width = collar_width(inst)
            # A millionth of a tick of slack, as for the tick itself: 659.2 - 640.0 comes out
            # as 19.200000000000045, yet a price exactly at the collar's edge is inside it.
            if abs(price - inst.ref_price) > width + inst.tick * 1e-6:
                return rejected(R.PRICE_OUTSIDE_COLLAR,
                                f"{price} vs reference {inst.ref_price} +/- {width:.6g}")
            ticks = int(steps)
            px = price
        else:
            ticks = -1
            px = inst.upper if side == Side.BUY else inst.lower  # market orders freeze at the band

        # 6. size
        if qty > acct.max_order_qty:
            return rejected(R.QTY_ABOVE_ACCOUNT_MAX, f"{qty} > {acct.max_order_qty}")
        notional = px * qty * inst.multiplier
        if fen_float(notional) > fen_float(acct.max_notional):  # in whole fen: no float drift
            return rejected(R.NOTIONAL_ABOVE_MAX, f"{notional:.2f} > {acct.max_notional:.2f}")

        # 7. rates and counts
        pos = self.positions.get((a, i)) or _EMPTY_POS
        pc = self.products.get((a, inst.product_idx)) or _EMPTY_PROD
        gi = self.group_inst.get((acct.group, i)) or _EMPTY_GI
        if recent(acct.orders, acct.max_orders_per_sec, now, NS_PER_S):
            return rejected(R.ORDER_RATE, f"limit {acct.max_orders_per_sec}/s")
        if recent(acct.cancels, acct.max_cancels_per_sec, now, NS_PER_S):
            return rejected(R.CANCEL_RATE, f"limit {acct.max_cancels_per_sec}/s")
        # The daily counts (703-705, 707, 708) restrict opening only (限制开仓), as the exchanges
        # do: a closing order always passes them, so a client can still get out of a position.
        if opening and pos.cancels >= inst.cancel_limit:
            return rejected(R.CONTRACT_CANCEL_LIMIT, f"{pos.cancels} cancels on {inst.symbol}")
        large = qty >= inst.large_qty
        if opening and large and pos.large_cancels >= inst.large_cancel_limit:
            return rejected(R.LARGE_CANCEL_LIMIT, f"{pos.large_cancels} large cancels on {inst.symbol}")
        if opening and pos.self_trades >= inst.self_trade_limit:
            return rejected(R.SELF_TRADE_LIMIT, f"{pos.self_trades} self-trades on {inst.symbol}")
        counts_open = opening and hedge != Hedge.HEDGE  # hedging is exempt from 交易限额
        if counts_open and gi.open_volume + qty > acct.max_open_volume:
            return rejected(R.OPEN_VOLUME_LIMIT, f"{gi.open_volume} + {qty} > {acct.max_open_volume}")
        messages = pc.messages + 1
        if opening and messages > acct.max_messages:
            return rejected(R.MESSAGE_LIMIT, f"{messages} > {acct.max_messages} on {inst.product}")
        if opening and messages >= acct.otr_min_messages:
            otr = messages / max(pc.filled_orders, 1) - 1.0
            if otr > acct.max_otr:
                return rejected(R.OTR_LIMIT, f"{otr:.2f} > {acct.max_otr:.2f} on {inst.product}")
        if acct.open_orders >= acct.max_open_orders:
            return rejected(R.OPEN_ORDERS_LIMIT, f"{acct.open_orders} working")
        key = (i, side, offset, ticks, qty)  # N identical orders within the window, however
        j = repeat_slot(acct.repeat_keys, key)  # other orders interleave (A/B/A/B)
        if j >= 0 and recent(acct.repeat_runs[j], acct.max_repeats, now, acct.repeat_window):
            return rejected(R.REPEATED_ORDERS, f"{acct.max_repeats} identical orders",
                            trigger=R.REPEATED_ORDERS)

        # 8. programmatic and high-frequency trading
        if acct.programmatic == ProgReg.NONE and acct.programmatic_flagged and acct.stop_programmatic:
            return rejected(R.PROGRAMMATIC_UNREGISTERED, trigger=R.PROGRAMMATIC_UNREGISTERED)
        if acct.hft_registered and not acct.direct_access:
            if (recent(acct.msgs, acct.hft_max_per_sec, now, NS_PER_S)
                    or acct.day_msgs >= acct.hft_max_per_day):
                return rejected(R.HFT_LIMIT, f"reported {acct.hft_max_per_sec}/s, "
                                             f"{acct.hft_max_per_day}/day")
        elif recent(acct.msgs, inst.hft_per_sec, now, NS_PER_S) or acct.day_msgs >= inst.hft_per_day:
            return rejected(R.HFT_DIRECT_ACCESS if acct.direct_access else R.HFT_UNREGISTERED,
                            f"standard {inst.hft_per_sec}/s, {inst.hft_per_day}/day")

        # 9. positions
        close_yd = close_td = 0
        if opening:
            held = self._group_held(acct.group, i, side)  # the group's, pending opens included
            if held + qty > inst.position_limit:
                return rejected(R.POSITION_LIMIT, f"{held} + {qty} > {inst.position_limit}")
        else:
            if side == Side.SELL:  # selling closes a long position
                yd_free = pos.long_yd - pos.long_yd_frozen
                td_free = pos.long_td - pos.long_td_frozen
            else:
                yd_free = pos.short_yd - pos.short_yd_frozen
                td_free = pos.short_td - pos.short_td_frozen
            split = close_split(inst.close_today_distinct, offset, yd_free, td_free, qty)
            if split is None:
                return rejected(R.INSUFFICIENT_POSITION,
                                f"closable today {td_free}, yesterday {yd_free}, asked {qty}")
            close_yd, close_td = split

        # 10. funds
        if opening:
            rate = inst.margin_long if side == Side.BUY else inst.margin_short
            margin = fen(px * qty * inst.multiplier * rate + qty * inst.margin_per_lot)
            fee = fen(qty * inst.open_per_lot + px * qty * inst.multiplier * inst.open_ratio)
        else:
            margin = 0
            fee = close_fee(inst, px, close_yd, close_td)
        if opening:
            if acct.loss_limit < UNLIMITED and acct.intraday_pnl() <= -acct.loss_limit:
                return rejected(R.LOSS_LIMIT, trigger=R.LOSS_LIMIT)
            need = margin + fee + inst.per_order_fee
            available = acct.available()
            if need > available:
                return rejected(R.INSUFFICIENT_FUNDS,
                                f"need {need / 100:.2f}, available {available / 100:.2f}")

        # 11. self-trade prevention
        if side == Side.BUY:
            if gi.best_sell != NO_SELL and (market or ticks >= gi.best_sell):
                return rejected(R.SELF_TRADE, f"crosses own sell at {gi.best_sell * inst.tick:.6g}")
        elif gi.best_buy != NO_BUY and (market or ticks <= gi.best_buy):
            return rejected(R.SELF_TRADE, f"crosses own buy at {gi.best_buy * inst.tick:.6g}")

        return self._reserve(acct, inst, order, now, side, offset, hedge, ord_type, tif, price,
                             ticks, qty, large, counts_open, margin, fee, close_yd, close_td, key)

    # ---------------------------------------------------------------- reserve (accept)
    def _reserve(self, acct: AccountState, inst: InstrumentState, order, now: int, side: int,  # noqa: ANN001
                 offset: int, hedge: int, ord_type: int, tif: int, price: float, ticks: int,
                 qty: int, large: bool, counts_open: bool, margin: int, fee: int,
                 close_yd: int, close_td: int, key: tuple) -> Decision:
        a, i = acct.idx, inst.idx
        alerts: list[AlertEvent] = []
        trigger = 0
        frac = acct.warn_fraction
        scope = f"account:{acct.id}"
        pos = self._pos(a, i)
        pc = self._prod(a, inst.product_idx)
        gi = self._gi(acct.group, i)

        # rate windows and daily counts
        if acct.max_orders_per_sec < UNLIMITED:
            lvl = warn_level(acct.max_orders_per_sec, frac)
            before = recent(acct.orders, lvl, now, NS_PER_S)
            acct.orders.append(now)
            if not before and recent(acct.orders, lvl, now, NS_PER_S):
                alerts.append(warn(R.ORDER_RATE, scope, "orders in the last second", lvl,
                                   acct.max_orders_per_sec))
        trigger = self._count_message(acct, inst, pc, now, alerts)
        if counts_open:
            gi.open_volume += qty
            if acct.max_open_volume < UNLIMITED:
                lvl = warn_level(acct.max_open_volume, frac)
                if gi.open_volume - qty < lvl <= gi.open_volume:
                    alerts.append(warn(R.OPEN_VOLUME_LIMIT, f"account:{acct.id}/{inst.symbol}",
                                       "group opening volume", gi.open_volume, acct.max_open_volume))
        acct.open_orders += 1
        if acct.max_open_orders < UNLIMITED:
            lvl = warn_level(acct.max_open_orders, frac)
            if acct.open_orders == lvl:
                alerts.append(warn(R.OPEN_ORDERS_LIMIT, scope, "working orders", lvl,
                                   acct.max_open_orders))
        j = repeat_slot(acct.repeat_keys, key)
        if j < 0:
            j = repeat_victim(acct.repeat_keys, acct.repeat_runs, now, acct.repeat_window)
            acct.repeat_keys[j] = key
            acct.repeat_runs[j].clear()
        run = acct.repeat_runs[j]
        lvl = warn_level(acct.max_repeats, frac)
        before = recent(run, lvl, now, acct.repeat_window)
        run.append(now)
        if (lvl <= acct.max_repeats < UNLIMITED and not before
                and recent(run, lvl, now, acct.repeat_window)):
            alerts.append(warn(R.REPEATED_ORDERS, scope,
                               f"identical orders in {acct.repeat_window // 1_000_000} ms", lvl,
                               acct.max_repeats))

        # position and funds reservations
        if offset == Off.OPEN:
            if side == Side.BUY:
                pos.long_pending += qty
            else:
                pos.short_pending += qty
            if inst.position_limit < UNLIMITED:
                held = self._group_held(acct.group, i, side)
                lvl = warn_level(inst.position_limit, frac)
                if held - qty < lvl <= held:
                    alerts.append(warn(R.POSITION_LIMIT, f"account:{acct.id}/{inst.symbol}",
                                       "position incl. pending opens", held, inst.position_limit))
        elif side == Side.SELL:
            pos.long_yd_frozen += close_yd
            pos.long_td_frozen += close_td
        else:
            pos.short_yd_frozen += close_yd
            pos.short_td_frozen += close_td
        acct.frozen_margin += margin
        acct.frozen_fee += fee
        acct.paid_fee += inst.per_order_fee

        # the order itself, and the self-trade index
        ref = self._new_ref()
        o = OrderState()
        o.ref, o.acct, o.inst = ref, a, i
        o.side, o.offset, o.hedge, o.ord_type, o.tif = side, offset, hedge, ord_type, tif
        o.price, o.ticks, o.qty, o.leaves, o.cum = price, ticks, qty, qty, 0
        o.status = OrdStatus.PENDING_NEW
        o.opening, o.large = offset == Off.OPEN, large
        o.frozen_margin, o.frozen_fee = margin, fee
        o.close_yd, o.close_td = close_yd, close_td
        o.had_fill = o.cancel_requested = False
        self.orders[ref] = o
        if ticks >= 0:
            book = gi.buys if side == Side.BUY else gi.sells
            book[ticks] = book.get(ticks, 0) + 1
            if side == Side.BUY and ticks > gi.best_buy:
                gi.best_buy = ticks
            if side == Side.SELL and ticks < gi.best_sell:
                gi.best_sell = ticks
        decision = accepted(ref, alerts or None)
        decision.trigger = trigger
        return decision

    def _count_message(self, acct: AccountState, inst: InstrumentState, pc: ProductCounters,
                       now: int, alerts: list[AlertEvent]) -> int:
        """Count one order or cancel message: HFT window, daily totals, product 信息量.

        Returns a trigger when the message makes an unregistered account programmatic and the
        account is configured to be stopped for it.
        """
        trigger = 0
        frac = acct.warn_fraction
        scope = f"account:{acct.id}"
        k = acct.programmatic_per_sec
        before = recent(acct.msgs, k, now, NS_PER_S)
        acct.msgs.append(now)
        acct.day_msgs += 1
        if acct.programmatic == ProgReg.NONE and not before and recent(acct.msgs, k, now, NS_PER_S):
            acct.occasions += 1
            if acct.occasions == acct.programmatic_occasions and not acct.programmatic_flagged:
                acct.programmatic_flagged = True
                alerts.append(alert(AlertLevel.CRITICAL, R.PROGRAMMATIC_BEHAVIOUR, scope,
                                    f"{acct.occasions} seconds with >= {k} orders+cancels today"))
                if acct.stop_programmatic:
                    trigger = R.PROGRAMMATIC_UNREGISTERED
        if acct.hft_registered and not acct.direct_access:
            per_day = acct.hft_max_per_day
        else:
            per_day = inst.hft_per_day
        if not acct.hft_flagged and (acct.day_msgs >= inst.hft_per_day
                                     or recent(acct.msgs, inst.hft_per_sec, now, NS_PER_S)):
            acct.hft_flagged = True
            alerts.append(alert(AlertLevel.WARNING, R.HFT_CLASSIFIED, scope,
                                f"orders+cancels reached {inst.hft_per_sec}/s or "
                                f"{inst.hft_per_day}/day"))
        lvl = warn_level(per_day, frac)
        if acct.day_msgs == lvl:  # labelled with the refusal that the daily count leads to
            code = (R.HFT_LIMIT if acct.hft_registered and not acct.direct_access
                    else R.HFT_DIRECT_ACCESS if acct.direct_access else R.HFT_UNREGISTERED)
            alerts.append(warn(code, scope, "orders+cancels today", lvl, per_day))
        pc.messages += 1
        if acct.max_messages < UNLIMITED:
            lvl = warn_level(acct.max_messages, frac)
            if pc.messages == lvl:
                alerts.append(warn(R.MESSAGE_LIMIT, f"{scope}/{inst.product}",
                                   "messages today", lvl, acct.max_messages))
        if acct.max_otr < math.inf and pc.messages >= acct.otr_min_messages:
            # The ratio decide() refuses above, warned when this message takes it across the
            # fraction (fills bring it down; crossing again warns again).
            otr_lvl = acct.max_otr * frac
            filled = max(pc.filled_orders, 1)
            otr = pc.messages / filled - 1.0
            if otr >= otr_lvl and not (pc.messages - 1 >= acct.otr_min_messages
                                       and (pc.messages - 1) / filled - 1.0 >= otr_lvl):
                alerts.append(warn(R.OTR_LIMIT, f"{scope}/{inst.product}", "order-to-trade ratio",
                                   f"{otr:.2f}", f"{acct.max_otr:.2f}"))
        if acct.message_fee > 0.0 and pc.messages == acct.message_fee_free + 1:
            alerts.append(alert(AlertLevel.WARNING, R.MESSAGE_FEE, f"{scope}/{inst.product}",
                                f"message fees accrue from now on ({acct.message_fee_free} free)"))
        return trigger

    def _new_ref(self) -> int:
        if self.free_slots:
            slot = self.free_slots.pop()
            self.slot_gen[slot] += 1
        else:
            slot = len(self.slot_gen)
            self.slot_gen.append(0)
        return (self.slot_gen[slot] << SLOT_BITS) | slot

    # ---------------------------------------------------------------- cancels
    def cancel_request(self, ref: int, now: int) -> Outcome:
        """A client asked to cancel a working order: count it. Cancels are never refused."""
        if now >= self.day_end:
            self._roll_day(now)
        o = self.orders.get(ref)
        if o is None:
            return Outcome(known=False)
        acct, inst = self.accounts[o.acct], self.instruments[o.inst]
        alerts: list[AlertEvent] = []
        o.cancel_requested = True
        if acct.max_cancels_per_sec < UNLIMITED:
            lvl = warn_level(acct.max_cancels_per_sec, acct.warn_fraction)
            before = recent(acct.cancels, lvl, now, NS_PER_S)
            at_limit = recent(acct.cancels, acct.max_cancels_per_sec, now, NS_PER_S)
            acct.cancels.append(now)
            if not before and recent(acct.cancels, lvl, now, NS_PER_S):
                alerts.append(warn(R.CANCEL_RATE, f"account:{acct.id}", "cancels in the last second",
                                   lvl, acct.max_cancels_per_sec))
            # Once when the limit is reached, not for every cancel past it: a kill switch that
            # cancels thousands of orders must not raise thousands of alerts.
            if not at_limit and recent(acct.cancels, acct.max_cancels_per_sec, now, NS_PER_S):
                alerts.append(alert(AlertLevel.CRITICAL, R.CANCEL_RATE, f"account:{acct.id}",
                                    "cancel rate limit reached: new orders are refused"))
        trigger = self._count_message(acct, inst, self._prod(o.acct, inst.product_idx), now, alerts)
        acct.paid_fee += inst.per_cancel_fee
        self._count_contract_cancel(acct, inst, o, alerts)
        return Outcome(alerts=alerts or None, trigger=trigger)

    def _count_contract_cancel(self, acct: AccountState, inst: InstrumentState, o: OrderState,
                               alerts: list[AlertEvent]) -> None:
        pos = self._pos(o.acct, o.inst)
        scope = f"account:{acct.id}/{inst.symbol}"
        pos.cancels += 1
        _count_alerts(alerts, pos.cancels, inst.cancel_limit, acct.warn_fraction,
                      R.CONTRACT_CANCEL_LIMIT, scope, "cancels today")
        if o.large:
            pos.large_cancels += 1
            _count_alerts(alerts, pos.large_cancels, inst.large_cancel_limit, acct.warn_fraction,
                          R.LARGE_CANCEL_LIMIT, scope, "large-order cancels today")

    # ---------------------------------------------------------------- exchange events
    def apply_ack(self, ref: int, now: int) -> Outcome:
        o = self.orders.get(ref)
        if o is None:
            return Outcome(known=False)
        if o.status == OrdStatus.PENDING_NEW:
            o.status = OrdStatus.NEW
        return Outcome()

    def apply_reject(self, ref: int, now: int) -> Outcome:
        """The exchange refused the order: release everything it holds."""
        o = self.orders.get(ref)
        if o is None:
            return Outcome(known=False)
        self._finish(o, OrdStatus.REJECTED)
        return Outcome(finished=True)

    def apply_canceled(self, ref: int, now: int) -> Outcome:
        """The order's remainder is cancelled (on request, or FAK/FOK automatically)."""
        if now >= self.day_end:
            self._roll_day(now)
        o = self.orders.get(ref)
        if o is None:
            return Outcome(known=False)
        alerts: list[AlertEvent] = []
        inst = self.instruments[o.inst]
        if not o.cancel_requested and o.tif != Tif.GFD and inst.fak_counts_as_cancel:
            self._count_contract_cancel(self.accounts[o.acct], inst, o, alerts)
        self._finish(o, OrdStatus.CANCELED)
        return Outcome(finished=True, alerts=alerts or None)

    def apply_fill(self, ref: int, qty: int, px: float, now: int, self_trade: bool = False) -> Outcome:
        """A trade: move the position, turn frozen margin/fees into used margin/paid fees."""
        if now >= self.day_end:
            self._roll_day(now)
        o = self.orders.get(ref)
        if o is None or type(qty) is not int or not 0 < qty <= o.leaves:
            return Outcome(known=False)
        if not (math.isfinite(px) and 0.0 < px <= MAX_PRICE):
            return Outcome(known=False)
        acct, inst = self.accounts[o.acct], self.instruments[o.inst]
        pos = self._pos(o.acct, o.inst)
        alerts: list[AlertEvent] = []
        trigger = 0
        leaves = o.leaves
        release_margin = o.frozen_margin * qty // leaves
        release_fee = o.frozen_fee * qty // leaves
        o.frozen_margin -= release_margin
        o.frozen_fee -= release_fee
        acct.frozen_margin -= release_margin
        acct.frozen_fee -= release_fee
        value = fen(px * qty * inst.multiplier)
        if o.opening:
            if o.side == Side.BUY:
                margin = fen(px * qty * inst.multiplier * inst.margin_long + qty * inst.margin_per_lot)
                pos.long_td += qty
                pos.long_pending -= qty
                pos.long_cost += value
                pos.long_margin += margin
            else:
                margin = fen(px * qty * inst.multiplier * inst.margin_short + qty * inst.margin_per_lot)
                pos.short_td += qty
                pos.short_pending -= qty
                pos.short_cost += value
                pos.short_margin += margin
            acct.used_margin += margin
            acct.paid_fee += fen(qty * inst.open_per_lot + px * qty * inst.multiplier * inst.open_ratio)
        else:
            from_yd = min(qty, o.close_yd)
            from_td = qty - from_yd
            o.close_yd -= from_yd
            o.close_td -= from_td
            if o.side == Side.SELL:  # closing a long
                total = pos.long_td + pos.long_yd
                cost = pos.long_cost * qty // total
                margin = pos.long_margin * qty // total
                pos.long_yd -= from_yd
                pos.long_yd_frozen -= from_yd
                pos.long_td -= from_td
                pos.long_td_frozen -= from_td
                pos.long_cost -= cost
                pos.long_margin -= margin
                acct.realised += value - cost
            else:
                total = pos.short_td + pos.short_yd
                cost = pos.short_cost * qty // total
                margin = pos.short_margin * qty // total
                pos.short_yd -= from_yd
                pos.short_yd_frozen -= from_yd
                pos.short_td -= from_td
                pos.short_td_frozen -= from_td
                pos.short_cost -= cost
                pos.short_margin -= margin
                acct.realised += cost - value
            acct.used_margin -= margin
            acct.paid_fee += close_fee(inst, px, from_yd, from_td)
        o.leaves -= qty
        o.cum += qty
        if not o.had_fill:
            o.had_fill = True
            self._prod(o.acct, inst.product_idx).filled_orders += 1
        if self_trade and o.side == Side.BUY:  # both sides are ours: count the trade once
            pos.self_trades += 1
            _count_alerts(alerts, pos.self_trades, inst.self_trade_limit, acct.warn_fraction,
                          R.SELF_TRADE_LIMIT, f"account:{acct.id}/{inst.symbol}", "self-trades today")
        if acct.max_executions < UNLIMITED:
            lvl = warn_level(acct.max_executions, acct.warn_fraction)
            before = recent(acct.execs, lvl, now, acct.execution_window)
            acct.execs.append(now)
            if (lvl <= acct.max_executions and not before
                    and recent(acct.execs, lvl, now, acct.execution_window)):
                alerts.append(warn(R.REPEATED_EXECUTIONS, f"account:{acct.id}",
                                   f"executions in {acct.execution_window // 1_000_000} ms", lvl,
                                   acct.max_executions))
            if recent(acct.execs, acct.max_executions + 1, now, acct.execution_window):
                trigger = R.REPEATED_EXECUTIONS
                alerts.append(alert(AlertLevel.CRITICAL, R.REPEATED_EXECUTIONS, f"account:{acct.id}",
                                    f"more than {acct.max_executions} executions in "
                                    f"{acct.execution_window // 1_000_000} ms"))
        self._mark(acct, inst, pos)
        loss = self._loss_check(acct, alerts)
        if loss and not trigger:  # (repeated executions suspend: the stricter stop wins)
            trigger = loss
        finished = o.leaves == 0
        if finished:
            self._finish(o, OrdStatus.FILLED)
        else:
            o.status = OrdStatus.PARTIALLY_FILLED
        return Outcome(finished=finished, alerts=alerts or None, trigger=trigger)

    def _finish(self, o: OrderState, status: int) -> None:
        """Release everything a finished order still holds and drop it from the book."""
        acct = self.accounts[o.acct]
        pos = self._pos(o.acct, o.inst)
        acct.frozen_margin -= o.frozen_margin
        acct.frozen_fee -= o.frozen_fee
        o.frozen_margin = o.frozen_fee = 0
        if o.opening:
            if o.side == Side.BUY:
                pos.long_pending -= o.leaves
            else:
                pos.short_pending -= o.leaves
            if o.hedge != Hedge.HEDGE:
                self._gi(acct.group, o.inst).open_volume -= o.leaves
        elif o.side == Side.SELL:
            pos.long_yd_frozen -= o.close_yd
            pos.long_td_frozen -= o.close_td
        else:
            pos.short_yd_frozen -= o.close_yd
            pos.short_td_frozen -= o.close_td
        o.close_yd = o.close_td = 0
        acct.open_orders -= 1
        if o.ticks >= 0:
            gi = self._gi(acct.group, o.inst)
            book = gi.buys if o.side == Side.BUY else gi.sells
            left = book[o.ticks] - 1
            if left:
                book[o.ticks] = left
            else:
                del book[o.ticks]
                if o.side == Side.BUY and o.ticks == gi.best_buy:
                    gi.best_buy = max(book) if book else NO_BUY
                elif o.side == Side.SELL and o.ticks == gi.best_sell:
                    gi.best_sell = min(book) if book else NO_SELL
        o.status = status
        del self.orders[o.ref]
        self.free_slots.append(o.ref & ((1 << SLOT_BITS) - 1))

    # ---------------------------------------------------------------- market data and P&L
    def market_data(self, symbol: str, last_px: float, upper: float, lower: float,
                    now: int) -> Outcome:
        """Move the reference price (collars) and mark every holder's position (loss limit).

        An account whose loss reaches its limit is named in ``Outcome.triggers``: market data
        concerns many accounts, and each must be stopped by the caller.
        """
        if now >= self.day_end:  # a new day's prices count against the new day's P&L
            self._roll_day(now)
        i = self.inst_ids.get(symbol)
        if i is None:
            return Outcome(known=False)
        inst = self.instruments[i]
        if math.isfinite(upper) and math.isfinite(lower) and 0.0 < lower <= upper <= MAX_PRICE:
            inst.upper, inst.lower = upper, lower
        alerts: list[AlertEvent] = []
        triggers: list[tuple[str, int]] = []
        if math.isfinite(last_px) and 0.0 < last_px <= MAX_PRICE:
            inst.ref_price = inst.mark = last_px
            for a in sorted(self.holders.get(i, ())):
                acct = self.accounts[a]
                self._mark(acct, inst, self.positions[(a, i)])
                trigger = self._loss_check(acct, alerts)
                if trigger:
                    triggers.append((acct.id, trigger))
        return Outcome(alerts=alerts or None, triggers=triggers or None)

    def _mark(self, acct: AccountState, inst: InstrumentState, pos: PositionState) -> None:
        long_qty = pos.long_td + pos.long_yd
        short_qty = pos.short_td + pos.short_yd
        value = (fen(inst.mark * long_qty * inst.multiplier) - pos.long_cost
                 + pos.short_cost - fen(inst.mark * short_qty * inst.multiplier))
        acct.unrealised += value - pos.unrealised
        pos.unrealised = value
        holders = self.holders.setdefault(inst.idx, set())
        if long_qty or short_qty:
            holders.add(acct.idx)
        else:
            holders.discard(acct.idx)

    def _loss_check(self, acct: AccountState, alerts: list[AlertEvent]) -> int:
        """After the P&L moved: a warning at the fraction of the loss limit (1305); at the
        limit a critical alert and a stop request (``R.LOSS_LIMIT``, which puts the account
        close-only) — each once a trading day. Returns the trigger, or 0.

        The stop is not requested for a suspended account: a stricter stop is in place, and
        close-only would lift it.
        """
        if acct.loss_limit >= UNLIMITED or acct.loss_stopped:
            return 0
        pnl = acct.intraday_pnl()
        if not acct.loss_warned and pnl <= -warn_level(acct.loss_limit, acct.warn_fraction):
            acct.loss_warned = True
            alerts.append(alert(AlertLevel.WARNING, R.LOSS_WARNING, f"account:{acct.id}",
                                f"intraday P&L {pnl / 100:.2f} against limit "
                                f"{-acct.loss_limit / 100:.2f}"))
        if pnl > -acct.loss_limit:
            return 0
        acct.loss_stopped = True
        alerts.append(alert(AlertLevel.CRITICAL, R.LOSS_LIMIT, f"account:{acct.id}",
                            f"intraday P&L {pnl / 100:.2f} reached the loss limit "
                            f"{-acct.loss_limit / 100:.2f}: opening orders are refused"))
        return R.LOSS_LIMIT if acct.status != AccountStatus.SUSPENDED else 0

    # ---------------------------------------------------------------- kill switch and admin
    def _scope_key(self, scope: int, key: str | int) -> int:
        if scope == KillScope.FIRM:
            return 0
        if scope == KillScope.SESSION:
            return int(key)
        table = {KillScope.ACCOUNT: self.acct_ids, KillScope.GROUP: self.group_ids,
                 KillScope.INSTRUMENT: self.inst_ids, KillScope.PRODUCT: self.product_ids}[scope]
        if key not in table:
            raise KeyError(f"unknown {KillScope(scope).name.lower()} {key!r}")
        return table[key]  # type: ignore[index]

    def kill(self, scope: int, key: str | int = "", close_only: bool = False) -> list[int]:
        """Block new orders (or openings only) in a scope; returns the refs to cancel."""
        k = self._scope_key(scope, key)
        self.kills[scope][k] = KILL_CLOSE_ONLY if close_only else KILL_BLOCK
        return self.open_orders(scope, key, opening_only=close_only)

    def reset(self, scope: int, key: str | int = "") -> None:
        self.kills[scope].pop(self._scope_key(scope, key), None)

    def killed(self) -> list[tuple[int, int, int]]:
        return sorted((s, k, m) for s, keys in self.kills.items() for k, m in keys.items())

    def open_orders(self, scope: int, key: str | int = "", opening_only: bool = False) -> list[int]:
        """References of working orders in a scope (session scope: the caller knows them)."""
        k = self._scope_key(scope, key)
        out = []
        for ref, o in self.orders.items():
            if opening_only and not o.opening:
                continue
            if (scope == KillScope.FIRM
                    or (scope == KillScope.ACCOUNT and o.acct == k)
                    or (scope == KillScope.GROUP and self.accounts[o.acct].group == k)
                    or (scope == KillScope.INSTRUMENT and o.inst == k)
                    or (scope == KillScope.PRODUCT and self.instruments[o.inst].product_idx == k)):
                out.append(ref)
        return sorted(out)

    def set_status(self, account: str, status: int) -> None:
        self.accounts[self._scope_key(KillScope.ACCOUNT, account)].status = AccountStatus(status)

    def set_programmatic(self, account: str, registration: int) -> None:
        self.accounts[self._scope_key(KillScope.ACCOUNT, account)].programmatic = ProgReg(registration)

    def set_hft(self, account: str, max_per_sec: int, max_per_day: int) -> None:
        """Register ``account`` for high-frequency trading with the maxima it reported (orders +
        cancels per second and per day), or unregister it with ``(0, 0)``: what its confirmed
        programmatic-trading report says (``gateway.compliance.registry``). The check itself is
        the one the configuration's ``hft`` drives (§4.8); the window of message times grows
        to hold the new per-second figure, never shrinks."""
        check_hft(max_per_sec, max_per_day)
        acct = self.accounts[self._scope_key(KillScope.ACCOUNT, account)]
        acct.hft_registered = max_per_sec > 0
        acct.hft_max_per_sec = max_per_sec
        acct.hft_max_per_day = max_per_day
        if max_per_sec + 1 > (acct.msgs.maxlen or 0):
            acct.msgs = type(acct.msgs)(acct.msgs, maxlen=max_per_sec + 1)

    def set_limits(self, account: str, limits) -> None:  # noqa: ANN001 - checks.model.Limits
        """Replace an account's limits (already validated and merged by the caller)."""
        acct = self.accounts[self._scope_key(KillScope.ACCOUNT, account)]
        acct.set_limits(limits)
        acct.orders = type(acct.orders)(acct.orders, maxlen=max(1, min(acct.max_orders_per_sec, 1 << 20)))
        acct.cancels = type(acct.cancels)(acct.cancels, maxlen=max(1, min(acct.max_cancels_per_sec, 1 << 20)))
        acct.execs = type(acct.execs)(acct.execs, maxlen=max(1, min(acct.max_executions + 1, 1 << 20)))
        acct.repeat_runs = [type(r)(r, maxlen=max(1, min(acct.max_repeats, 1 << 20)))
                            for r in acct.repeat_runs]

    # ---------------------------------------------------------------- views
    def order_view(self, ref: int) -> tuple | None:
        o = self.orders.get(ref)
        return None if o is None else o.as_tuple()

    def account_view(self, account: str) -> dict:
        acct = self.accounts[self._scope_key(KillScope.ACCOUNT, account)]
        return account_summary(acct)

    def snapshot(self) -> dict:
        """The whole book as plain data, for comparison between engines and for status."""
        return {
            "day": self.day,
            "accounts": {a.id: account_tuple(a) for a in self.accounts},
            "positions": {(self.accounts[a].id, self.instruments[i].symbol): p.as_tuple()
                          for (a, i), p in self.positions.items() if any(p.as_tuple())},
            "products": {(self.accounts[a].id, p): (c.messages, c.filled_orders)
                         for (a, p), c in self.products.items() if c.messages or c.filled_orders},
            "groups": {(g, self.instruments[i].symbol): (gi.open_volume, gi.best_buy, gi.best_sell,
                                                         tuple(sorted(gi.buys.items())),
                                                         tuple(sorted(gi.sells.items())))
                       for (g, i), gi in self.group_inst.items()
                       if gi.open_volume or gi.buys or gi.sells},
            "orders": {ref: o.as_tuple() for ref, o in self.orders.items()},
            "instruments": {i.symbol: (i.ref_price, i.mark, i.upper, i.lower) for i in self.instruments},
            "kills": self.killed(),
        }


# ---------------------------------------------------------------- pure helpers
_EMPTY_POS = PositionState()
_EMPTY_PROD = ProductCounters()
_EMPTY_GI = GroupInstrument()


MAX_HFT_PER_SEC = 100_000  # a reported per-second maximum above this is not a real report
MAX_HFT_PER_DAY = 10**9


def check_hft(max_per_sec: int, max_per_day: int) -> None:
    """The one check of reported HFT maxima given to ``set_hft`` (both engines call it):
    whole numbers, both zero (not registered) or both within range."""
    for name, value, high in (("max_per_sec", max_per_sec, MAX_HFT_PER_SEC),
                              ("max_per_day", max_per_day, MAX_HFT_PER_DAY)):
        if type(value) is not int or not 0 <= value <= high:
            raise ValueError(f"{name}: expected a whole number from 0 to {high}, got {value!r}")
    if (max_per_sec == 0) != (max_per_day == 0):
        raise ValueError("max_per_sec and max_per_day are both 0 (not registered for HFT) or "
                         f"both >= 1; got {max_per_sec} and {max_per_day}")


def msg_ring_size(cfg: RiskConfig) -> int:
    """Capacity of the per-account orders+cancels window: enough for every threshold read."""
    need = max((r.hft_per_sec for r in cfg.exchanges.values()), default=1)
    for acc in cfg.accounts:
        need = max(need, acc.hft_max_per_sec, acc.limits.programmatic_per_sec)
    return need + 1


def band_upper_ticks(inst: InstrumentState) -> float:
    """The highest whole tick inside the daily band: the upper limit in ticks, a millionth of a
    tick of float error forgiven (a limit off the tick grid rounds inward)."""
    return math.floor(inst.upper / inst.tick + 1e-6)


def band_lower_ticks(inst: InstrumentState) -> float:
    """The lowest whole tick inside the daily band (see ``band_upper_ticks``)."""
    return math.ceil(inst.lower / inst.tick - 1e-6)


def collar_width(inst: InstrumentState) -> float:
    """The fat-finger collar half-width around the reference price (the tighter one applies)."""
    width = math.inf
    if inst.collar_pct > 0.0:
        width = inst.ref_price * inst.collar_pct
    if inst.collar_ticks > 0:
        width = min(width, inst.collar_ticks * inst.tick)
    return width


def close_split(distinct: bool, offset: int, yd_free: int, td_free: int,
                qty: int) -> tuple[int, int] | None:
    """How many lots a closing order draws from (yesterday, today), or None if not enough.

    SHFE/INE (``distinct``): CLOSE_TODAY draws on today's position only; CLOSE and
    CLOSE_YESTERDAY on yesterday's only. Elsewhere every close takes the oldest first.
    """
    if distinct:
        if offset == Off.CLOSE_TODAY:
            return (0, qty) if td_free >= qty else None
        return (qty, 0) if yd_free >= qty else None
    if yd_free + td_free < qty:
        return None
    from_yd = min(qty, yd_free)
    return from_yd, qty - from_yd


def close_fee(inst: InstrumentState, px: float, from_yd: int, from_td: int) -> int:
    fee = 0
    if from_yd:
        fee += fen(from_yd * inst.close_per_lot + px * from_yd * inst.multiplier * inst.close_ratio)
    if from_td:
        fee += fen(from_td * inst.close_today_per_lot
                   + px * from_td * inst.multiplier * inst.close_today_ratio)
    return fee


def _count_alerts(alerts: list[AlertEvent], count: int, limit: int, frac: float, code: int,
                  scope: str, what: str) -> None:
    """Warning at the fraction, critical alert when the limit is reached (openings refused)."""
    if limit >= UNLIMITED:
        return
    if count == warn_level(limit, frac) and count < limit:
        alerts.append(warn(code, scope, what, count, limit))
    if count == limit:
        alerts.append(alert(AlertLevel.CRITICAL, code, scope,
                            f"{what}: limit {limit} reached; new opening orders refused"))


def account_tuple(a: AccountState) -> tuple:
    return (a.status, a.programmatic, a.balance, a.frozen_margin, a.frozen_fee, a.used_margin,
            a.paid_fee, a.realised, a.unrealised, a.open_orders, a.day_msgs, a.occasions,
            a.programmatic_flagged, a.hft_flagged, a.loss_warned, tuple(a.orders),
            tuple(a.cancels), tuple(a.msgs), tuple(a.execs), repeat_tuple(a.repeat_keys, a.repeat_runs),
            a.pnl_base, a.loss_stopped)


def repeat_tuple(keys: list, runs: list) -> tuple:
    """The repeated-order table as plain data: (slot, key, times) of each used slot."""
    return tuple((j, keys[j], tuple(runs[j])) for j in range(REPEAT_KEYS) if keys[j] is not None)


def account_summary(a: AccountState) -> dict:
    return {
        "account": a.id,
        "status": AccountStatus(a.status).name,
        "programmatic": ProgReg(a.programmatic).name,
        "balance": a.balance / 100,
        "available": a.available() / 100,
        "used_margin": a.used_margin / 100,
        "frozen_margin": a.frozen_margin / 100,
        "frozen_fee": a.frozen_fee / 100,
        "paid_fee": a.paid_fee / 100,
        "realised_pnl": a.realised / 100,
        "unrealised_pnl": a.unrealised / 100,
        "open_orders": a.open_orders,
        "messages_today": a.day_msgs,
        "programmatic_flagged": a.programmatic_flagged,
        "hft_flagged": a.hft_flagged,
    }
