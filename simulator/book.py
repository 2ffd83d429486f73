"""One instrument's limit order book: price levels in integer ticks, price-time priority.

Theory of operation
-------------------
Prices never appear here as floats: the matching engine (``simulator.matching``) converts a
price to ticks once, at entry, and everything below compares integers, so there is no float
drift and no "3200.0000000004 is not 3200" surprise.

Each side keeps
- ``levels``: a dict from a *key* to a ``_Level`` (a FIFO deque of resting orders plus the
  level's live order count and live quantity), and
- ``keys``: the keys of the non-empty levels, sorted ascending, **best last**.

The key is signed so that "best" is always the largest key on both sides: bids use
``key = ticks`` (highest bid is best), asks use ``key = -ticks`` (lowest ask is best). Taking
the best level is ``keys[-1]`` and removing it is ``keys.pop()``, both O(1); a new level is
placed with ``bisect.insort`` (a memmove over at most the number of ticks inside the daily
limit band — a few thousand ints — and new levels are usually near the touch, i.e. near the
end of the list). An aggressive order walks levels from the best key while they cross; no
operation scans the whole book.

Cancels are O(1): a cancelled order gets ``leaves = 0`` and stays in its level's deque as a
*dead* entry that matching skips and drops when it reaches the front. A level whose last live
order goes is deleted at once (so ``keys`` only ever holds levels with something to trade),
and a level whose dead entries outnumber its live ones twice over is compacted, so a cancel
storm behind one long-lived order cannot grow memory without bound.

The book knows nothing about owners, reports or validation: ``match`` returns the fills as
``(resting_order, qty, ticks)`` and the engine turns them into execution reports.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

from checks.enums import OrdStatus, Side

BUY = int(Side.BUY)


class Order:
    """A working order as the exchange holds it (mutable; owned by the engine)."""

    __slots__ = (
        "seq", "order_id", "owner", "cl_ord_id", "account", "symbol", "side", "offset",
        "hedge", "ord_type", "tif", "ticks", "price", "qty", "cum_qty", "leaves", "status",
        "fill_ticks", "execs",
    )

    def __init__(self, seq: int, owner: str, cl_ord_id: str, account: str, symbol: str,
                 side: int, offset: int, hedge: int, ord_type: int, tif: int, ticks: int,
                 price: float, qty: int) -> None:
        self.seq = seq  # arrival sequence: the "time" of price-time priority
        self.order_id = str(seq)  # the exchange order id as it travels on the wire
        self.owner = owner
        self.cl_ord_id = cl_ord_id
        self.account = account
        self.symbol = symbol
        self.side = side
        self.offset = offset
        self.hedge = hedge
        self.ord_type = ord_type
        self.tif = tif
        self.ticks = ticks
        self.price = price
        self.qty = qty
        self.cum_qty = 0
        self.leaves = qty
        self.status = int(OrdStatus.NEW)
        self.fill_ticks = 0  # sum of lots x price in ticks over every fill: the average price
        # The engine's record of each execution of this order, oldest first (``None`` until the
        # first fill, so a resting order that never trades costs no list).
        self.execs: list | None = None

    def __repr__(self) -> str:
        side = "BUY" if self.side == BUY else "SELL"
        return (f"Order({self.order_id} {self.cl_ord_id!r} {side} {self.symbol} "
                f"{self.leaves}/{self.qty}@{self.ticks}t)")


class _Level:
    __slots__ = ("orders", "live", "qty")

    def __init__(self) -> None:
        self.orders: deque[Order] = deque()
        self.live = 0  # resting orders with leaves > 0
        self.qty = 0  # their total leaves


class _Side:
    __slots__ = ("levels", "keys", "sign")

    def __init__(self, sign: int) -> None:
        self.levels: dict[int, _Level] = {}
        self.keys: list[int] = []  # sorted ascending, best last
        self.sign = sign  # key = sign * ticks


Fill = tuple[Order, int, int]  # (resting order, qty, price in ticks)


class OrderBook:
    """Resting orders of one instrument, both sides, price-time priority."""

    __slots__ = ("symbol", "bids", "asks", "last_ticks")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = _Side(1)
        self.asks = _Side(-1)
        self.last_ticks: int | None = None  # price of the last trade

    # -- queries ---------------------------------------------------------------------------

    def best_bid(self) -> int | None:
        keys = self.bids.keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self.asks.keys
        return -keys[-1] if keys else None

    def depth(self, side: int) -> list[tuple[int, int]]:
        """``[(ticks, qty), ...]`` of one side, best first (for tests and market data)."""
        s = self.bids if side == BUY else self.asks
        return [(key * s.sign, s.levels[key].qty) for key in reversed(s.keys)]

    def orders_at(self, side: int, ticks: int) -> list[Order]:
        """Live orders resting at one price, in time priority."""
        s = self.bids if side == BUY else self.asks
        level = s.levels.get(s.sign * ticks)
        return [o for o in level.orders if o.leaves] if level else []

    def available(self, side: int, limit_ticks: int, needed: int) -> bool:
        """Whether an order of ``side`` limited at ``limit_ticks`` could fill ``needed`` now."""
        opp = self.asks if side == BUY else self.bids
        threshold = -limit_ticks if side == BUY else limit_ticks
        total = 0
        levels = opp.levels
        for key in reversed(opp.keys):
            if key < threshold:
                break
            total += levels[key].qty
            if total >= needed:
                return True
        return False

    # -- changes ---------------------------------------------------------------------------

    def match(self, aggr: Order, limit_ticks: int) -> list[Fill]:
        """Fill ``aggr`` against the opposite side down to ``limit_ticks``; return the fills.

        Updates ``leaves``/``cum_qty`` of every order touched and removes filled resting
        orders; the caller decides what happens to the aggressor's remainder.
        """
        buy = aggr.side == BUY
        opp = self.asks if buy else self.bids
        # On the opposite side, a level crosses while its key >= threshold (see module doc).
        threshold = -limit_ticks if buy else limit_ticks
        keys = opp.keys
        levels = opp.levels
        fills: list[Fill] = []
        remaining = aggr.leaves
        while remaining and keys:
            key = keys[-1]
            if key < threshold:
                break
            level = levels[key]
            queue = level.orders
            ticks = key if key > 0 else -key
            while remaining and queue:
                rest = queue[0]
                lv = rest.leaves
                if lv == 0:  # a cancelled order left behind; drop it now
                    queue.popleft()
                    continue
                n = lv if lv < remaining else remaining
                rest.leaves = lv - n
                rest.cum_qty += n
                rest.fill_ticks += n * ticks
                aggr.fill_ticks += n * ticks
                remaining -= n
                level.qty -= n
                fills.append((rest, n, ticks))
                if lv == n:
                    queue.popleft()
                    level.live -= 1
            if level.live == 0:
                del levels[key]
                keys.pop()
        if fills:
            self.last_ticks = fills[-1][2]
        aggr.leaves = remaining
        aggr.cum_qty = aggr.qty - remaining
        return fills

    def add(self, order: Order) -> None:
        """Rest ``order`` (its remaining ``leaves``) at the back of its price level."""
        s = self.bids if order.side == BUY else self.asks
        key = s.sign * order.ticks
        level = s.levels.get(key)
        if level is None:
            level = s.levels[key] = _Level()
            insort(s.keys, key)
        level.orders.append(order)
        level.live += 1
        level.qty += order.leaves

    def remove(self, order: Order) -> None:
        """Take a resting order out of the book (cancel); O(1) apart from an empty level."""
        s = self.bids if order.side == BUY else self.asks
        key = s.sign * order.ticks
        level = s.levels[key]
        level.qty -= order.leaves
        order.leaves = 0
        level.live -= 1
        if level.live == 0:
            del s.levels[key]
            del s.keys[bisect_left(s.keys, key)]
        elif len(level.orders) > 2 * level.live + 16:
            level.orders = deque(o for o in level.orders if o.leaves)
