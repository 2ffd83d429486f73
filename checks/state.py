"""The risk book of the reference engine: per-instrument, per-account and per-order state.

Built once from a resolved ``RiskConfig``. Everything a check reads or a reservation writes is
here, as plain attributes with the same names and units the Cython book uses, so the two can
be compared by ``snapshot()``. Money is held in integer fen (0.01 CNY): frozen and released
amounts must cancel exactly, which floats cannot promise.
"""

from __future__ import annotations

import math
from collections import deque

from checks.model import UNLIMITED, Instrument, ResolvedAccount, RiskConfig

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NO_BUY = -1  # best resting buy in ticks when the group has none
NO_SELL = UNLIMITED  # best resting sell in ticks when the group has none


def fen(amount: float) -> int:
    """Money in integer fen, rounded half up (the one rounding rule both engines use)."""
    return int(math.floor(amount * 100.0 + 0.5))


def fen_float(amount: float) -> float:
    """``fen(amount)`` as a float, for comparing amounts to a limit in whole fen.

    Exact (a double's floor is a double) and defined where ``fen`` is not: an infinite limit
    (none) stays infinite, and amounts beyond int64 compare as they are. Comparing in fen means
    an amount that float arithmetic puts a hair above the limit (691.2 x 3 x 1000 =
    2073600.0000000005) is at the limit, as it is in money.
    """
    y = amount * 100.0 + 0.5
    return float(math.floor(y)) if math.isfinite(y) else y


def lim(value: int | None) -> int:
    return UNLIMITED if value is None else int(value)


# Repeated-order detection keeps this many distinct order keys per account (the least recently
# used goes). N identical orders within the window are caught however other orders interleave,
# as long as fewer than REPEAT_KEYS + 1 distinct keys are cycled: evading it would take
# (REPEAT_KEYS + 1) x N orders within the window, beyond the order rate (100/s by default, against
# 9 x 20 = 180 for the default 20 repeats a second).
REPEAT_KEYS = 8


def repeat_slot(keys: list, key: tuple) -> int:
    """The slot holding ``key`` in an account's ``repeat_keys``, or -1."""
    for j in range(REPEAT_KEYS):
        if keys[j] == key:
            return j
    return -1


def repeat_victim(keys: list, runs: list, now: int, window: int) -> int:
    """The slot a new order key takes: the first free one, else the first whose orders are all
    out of the window, else the least recently used (the first of equals)."""
    best, best_t = 0, None
    for j in range(REPEAT_KEYS):
        if keys[j] is None or not runs[j] or runs[j][-1] <= now - window:
            return j
        if best_t is None or runs[j][-1] < best_t:
            best, best_t = j, runs[j][-1]
    return best


def recent(ring: deque[int], k: int, now: int, window: int) -> bool:
    """At least ``k`` of the timestamps in ``ring`` lie in ``(now - window, now]``.

    The ring keeps the most recent timestamps in order, so the k-th most recent decides:
    exact, and O(1) however busy the account is. ``k <= 0`` is always true: a limit of 0 allows
    nothing (it is ``None`` that means no limit).
    """
    return k <= 0 or (k <= len(ring) and ring[-k] > now - window)


class InstrumentState:
    def __init__(self, idx: int, inst: Instrument, cfg: RiskConfig, product_idx: int) -> None:
        rules = cfg.exchanges[inst.exchange]
        self.idx = idx
        self.symbol = inst.symbol
        self.exchange = inst.exchange
        self.product = inst.product
        self.product_idx = product_idx
        self.multiplier = float(inst.multiplier)
        self.tick = float(inst.tick)
        self.upper = float(inst.upper_limit)
        self.lower = float(inst.lower_limit)
        self.ref_price = float(inst.reference_price)
        self.mark = float(inst.reference_price)
        self.margin_long = float(inst.margin_long)
        self.margin_short = float(inst.margin_short)
        self.margin_per_lot = float(inst.margin_per_lot)
        f = inst.fees
        self.open_per_lot, self.open_ratio = float(f.open_per_lot), float(f.open_ratio)
        self.close_per_lot, self.close_ratio = float(f.close_per_lot), float(f.close_ratio)
        self.close_today_per_lot = float(f.close_today_per_lot)
        self.close_today_ratio = float(f.close_today_ratio)
        self.per_order_fee = fen(f.per_order)
        self.per_cancel_fee = fen(f.per_cancel)
        self.min_limit_qty, self.max_limit_qty = inst.min_limit_qty, inst.max_limit_qty
        self.min_market_qty, self.max_market_qty = inst.min_market_qty, inst.max_market_qty
        self.sessions = cfg.session_seconds[inst.symbol]
        self.position_limit = lim(inst.position_limit)
        self.collar_pct = float(inst.collar_pct) if inst.collar_pct is not None else 0.0
        self.collar_ticks = int(inst.collar_ticks) if inst.collar_ticks is not None else 0
        self.cancel_limit = lim(inst.cancel_limit if inst.cancel_limit is not None
                                else rules.cancel_limit_per_contract)
        if inst.large_order_qty is not None:
            self.large_qty = inst.large_order_qty
        elif rules.large_order_qty is not None:
            self.large_qty = rules.large_order_qty
        elif rules.large_order_fraction is not None:
            self.large_qty = max(1, int(rules.large_order_fraction * inst.max_limit_qty))
        else:
            self.large_qty = UNLIMITED
        self.large_cancel_limit = rules.large_cancel_limit
        self.self_trade_limit = rules.self_trade_limit
        self.fak_counts_as_cancel = rules.fak_counts_as_cancel
        self.market_ok = rules.market_orders
        self.close_today_distinct = rules.close_today_distinct
        self.hft_per_sec = rules.hft_per_sec
        self.hft_per_day = rules.hft_per_day


class AccountState:
    def __init__(self, idx: int, acc: ResolvedAccount, group_idx: int,
                 product_ids: dict[str, int], msg_ring: int) -> None:
        lm = acc.limits
        self.idx = idx
        self.id = acc.id
        self.group = group_idx
        self.status = acc.status
        self.programmatic = acc.programmatic
        self.hft_registered = acc.hft_registered
        self.hft_max_per_sec = acc.hft_max_per_sec
        self.hft_max_per_day = acc.hft_max_per_day
        self.direct_access = acc.direct_access
        self.products = {product_ids[p] for p in acc.products}  # empty = every product
        self.market_ok = acc.market_allowed
        self.limit_ok = acc.limit_allowed
        self.balance = fen(acc.balance)
        self.warn_fraction = lm.warn_fraction
        self.set_limits(lm)
        # Funds, in fen.
        self.frozen_margin = 0
        self.frozen_fee = 0
        self.used_margin = 0
        self.paid_fee = 0
        self.realised = 0
        self.unrealised = 0
        # The intraday loss limit counts from the P&L (realised + marked - paid fees) at the
        # start of the trading day: 0 at start of day, saved again at each daily roll.
        self.pnl_base = 0
        self.loss_warned = False
        self.loss_stopped = False  # the loss limit was reached today (alerted, stop requested)
        # Rolling windows: timestamps of the most recent events, oldest first.
        self.orders: deque[int] = deque(maxlen=max(1, min(self.max_orders_per_sec, 1 << 20)))
        self.cancels: deque[int] = deque(maxlen=max(1, min(self.max_cancels_per_sec, 1 << 20)))
        self.msgs: deque[int] = deque(maxlen=msg_ring)
        self.execs: deque[int] = deque(maxlen=max(1, min(self.max_executions + 1, 1 << 20)))
        # Repeated-order detection: up to REPEAT_KEYS distinct order keys (instrument, side,
        # offset, ticks, qty), each with the times of its most recent accepted orders.
        self.repeat_keys: list[tuple[int, int, int, int, int] | None] = [None] * REPEAT_KEYS
        self.repeat_runs: list[deque[int]] = [
            deque(maxlen=max(1, min(self.max_repeats, 1 << 20))) for _ in range(REPEAT_KEYS)]
        # Daily counters.
        self.day_msgs = 0
        self.occasions = 0
        self.programmatic_flagged = False
        self.hft_flagged = False
        self.open_orders = 0

    def set_limits(self, lm) -> None:  # noqa: ANN001 - checks.model.Limits
        self.max_order_qty = lim(lm.max_order_qty)
        self.max_notional = math.inf if lm.max_notional is None else float(lm.max_notional)
        self.max_orders_per_sec = lim(lm.max_orders_per_sec)
        self.max_cancels_per_sec = lim(lm.max_cancels_per_sec)
        self.max_open_orders = lim(lm.max_open_orders)
        self.max_open_volume = lim(lm.max_open_volume_per_contract)
        self.max_messages = lim(lm.max_messages_per_product)
        self.max_otr = math.inf if lm.max_otr is None else float(lm.max_otr)
        self.otr_min_messages = lm.otr_min_messages
        self.message_fee = float(lm.message_fee)
        self.message_fee_free = lm.message_fee_free
        self.max_repeats = lim(lm.max_repeats)
        self.repeat_window = lm.repeat_window_ms * NS_PER_MS
        self.max_executions = lim(lm.max_executions)
        self.execution_window = lm.execution_window_ms * NS_PER_MS
        self.loss_limit = UNLIMITED if lm.loss_limit is None else fen(lm.loss_limit)
        self.programmatic_per_sec = lm.programmatic_per_sec
        self.programmatic_occasions = lm.programmatic_occasions
        self.stop_programmatic = lm.stop_unregistered_programmatic
        self.warn_fraction = lm.warn_fraction

    def intraday_pnl(self) -> int:
        """Today's P&L in fen: realised + marked - paid fees, less the day's starting point."""
        return self.realised + self.unrealised - self.paid_fee - self.pnl_base

    def available(self) -> int:
        """The funds identity of docs/ARCHITECTURE.md §4, in fen."""
        return (self.balance - self.used_margin - self.frozen_margin - self.frozen_fee
                - self.paid_fee + self.realised)


class PositionState:
    """One account's position in one instrument, and what pending orders hold of it."""

    __slots__ = (
        "long_td", "long_yd", "short_td", "short_yd",
        "long_td_frozen", "long_yd_frozen", "short_td_frozen", "short_yd_frozen",
        "long_pending", "short_pending", "long_cost", "short_cost",
        "long_margin", "short_margin", "unrealised",
        "cancels", "large_cancels", "self_trades",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)


class ProductCounters:
    """Daily message counters of one account on one product (信息量, OTR)."""

    __slots__ = ("messages", "filled_orders")

    def __init__(self) -> None:
        self.messages = 0
        self.filled_orders = 0


class GroupInstrument:
    """State shared by an account group in one instrument: opening volume and resting orders."""

    __slots__ = ("open_volume", "buys", "sells", "best_buy", "best_sell")

    def __init__(self) -> None:
        self.open_volume = 0
        self.buys: dict[int, int] = {}  # price in ticks -> number of resting buy orders
        self.sells: dict[int, int] = {}
        self.best_buy = NO_BUY
        self.best_sell = NO_SELL


class OrderState:
    __slots__ = (
        "ref", "acct", "inst", "side", "offset", "hedge", "ord_type", "tif", "price", "ticks",
        "qty", "leaves", "cum", "status", "opening", "large", "frozen_margin", "frozen_fee",
        "close_yd", "close_td", "had_fill", "cancel_requested",
    )

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)
