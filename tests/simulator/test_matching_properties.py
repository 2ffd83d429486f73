"""Property tests of the matching engine against a deliberately naive reference book.

The reference sorts every resting order by (price priority, arrival) on every order, which is
obviously right and obviously slow; the engine must produce exactly its trades. On top of that,
invariants that need no model: quantity conservation (every fill has a counterpart of equal
qty and price), an uncrossed book after every action, FOK all-or-nothing, IOC never resting,
and every order's reports telling one consistent story.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from checks.config import load_risk_config
from checks.enums import ExecType, OrdStatus, OrdType, Side, Tif
from gateway.protocol import CancelOrder, ExecReport, NewOrder
from simulator.matching import MatchingEngine

RISK = load_risk_config(Path(__file__).resolve().parents[2] / "examples" / "risk.toml")
SYMBOL = "m2605"  # DCE: market orders allowed; band 2697..3103, tick 1
UPPER, LOWER = 3103, 2697
BUY, SELL = int(Side.BUY), int(Side.SELL)
TIFS = [int(Tif.GFD), int(Tif.IOC), int(Tif.FOK)]


@dataclass
class RefOrder:
    seq: int
    side: int
    ticks: int
    leaves: int


class ReferenceBook:
    """Price-time priority the slow, plain way."""

    def __init__(self) -> None:
        self.resting: list[RefOrder] = []
        self.trades: list[tuple[int, int, int, int]] = []  # (ticks, qty, buy_seq, sell_seq)

    def submit(self, seq: int, side: int, ticks: int, qty: int, tif: int, market: bool) -> None:
        limit = (UPPER if side == BUY else LOWER) if market else ticks
        crosses = (lambda r: r.ticks <= limit) if side == BUY else (lambda r: r.ticks >= limit)
        opp = [r for r in self.resting if r.side != side and crosses(r)]
        opp.sort(key=lambda r: (r.ticks if side == BUY else -r.ticks, r.seq))
        if tif == Tif.FOK and sum(r.leaves for r in opp) < qty:
            return
        left = qty
        for r in opp:
            if not left:
                break
            n = min(left, r.leaves)
            r.leaves -= n
            left -= n
            buy, sell = (seq, r.seq) if side == BUY else (r.seq, seq)
            self.trades.append((r.ticks, n, buy, sell))
        self.resting = [r for r in self.resting if r.leaves]
        if left and tif == Tif.GFD and not market:
            self.resting.append(RefOrder(seq, side, ticks, left))

    def cancel(self, seq: int) -> None:
        self.resting = [r for r in self.resting if r.seq != seq]

    def depth(self, side: int) -> list[tuple[int, int]]:
        levels: dict[int, int] = defaultdict(int)
        for r in self.resting:
            if r.side == side:
                levels[r.ticks] += r.leaves
        return sorted(levels.items(), reverse=side == BUY)


new_order = st.tuples(
    st.just("new"), st.sampled_from([BUY, SELL]), st.integers(2895, 2905),
    st.integers(1, 12), st.sampled_from(TIFS), st.booleans(),
)
cancel = st.tuples(st.just("cancel"), st.integers(0, 200))
actions = st.lists(st.one_of(new_order, new_order, new_order, cancel), min_size=20, max_size=120)


def run(ops: list[tuple]) -> tuple[MatchingEngine, ReferenceBook, list[ExecReport], dict]:
    engine = MatchingEngine(RISK.instruments, RISK.exchanges, clock=lambda: 0, record_trades=True)
    ref = ReferenceBook()
    reports: list[ExecReport] = []
    orders: dict[str, tuple[int, int, int, int, bool]] = {}  # cl -> (seq, side, qty, tif, market)
    seq = 0
    book = engine.book(SYMBOL)
    for op in ops:
        if op[0] == "new":
            _, side, ticks, qty, tif, market = op
            # Market orders only a fifth of the time, so books build up.
            market = market and ticks % 5 == 0
            seq += 1
            cl = f"o{seq}"
            orders[cl] = (seq, side, qty, tif, market)
            ord_type = int(OrdType.MARKET) if market else int(OrdType.LIMIT)
            out = engine.submit("u", NewOrder(cl, "A001", SYMBOL, side, 1, 1, ord_type, tif,
                                              0.0 if market else float(ticks), qty))
            ref.submit(seq, side, ticks, qty, tif, market)
            if tif != Tif.GFD or market:  # IOC / FOK / market never rest
                assert all(o.cl_ord_id != cl for o in engine.working("u"))
        else:
            if not orders:
                continue
            cl = list(orders)[op[1] % len(orders)]
            out = engine.cancel("u", CancelOrder("c" + cl, cl, "A001"))
            ref.cancel(orders[cl][0])
        reports += [m for _, m in out if isinstance(m, ExecReport)]
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, f"crossed book {bid} >= {ask}"
    return engine, ref, reports, orders


@settings(max_examples=150, deadline=None)
@given(actions)
def test_trades_match_the_reference_price_time_priority(ops: list[tuple]) -> None:
    engine, ref, _, _ = run(ops)
    got = [(t.ticks, t.qty, t.buy_seq, t.sell_seq) for t in engine.trades]
    assert got == ref.trades
    book = engine.book(SYMBOL)
    assert book.depth(BUY) == ref.depth(BUY)
    assert book.depth(SELL) == ref.depth(SELL)


@settings(max_examples=150, deadline=None)
@given(actions)
def test_quantity_is_conserved_and_every_fill_has_a_counterpart(ops: list[tuple]) -> None:
    engine, _, reports, orders = run(ops)
    fills = [r for r in reports if r.exec_type == ExecType.TRADE]
    assert len(fills) == 2 * len(engine.trades)
    # Reports of one match are adjacent: aggressor then resting, equal qty and price.
    for a, b in zip(fills[::2], fills[1::2], strict=True):
        assert (a.last_qty, a.last_px) == (b.last_qty, b.last_px)
        assert a.side != b.side
        assert a.last_qty > 0
    bought = sum(f.last_qty for f in fills if f.side == BUY)
    sold = sum(f.last_qty for f in fills if f.side == SELL)
    assert bought == sold == sum(t.qty for t in engine.trades)
    # Per order: cum_qty is the running sum of its fills and cum + leaves never exceeds qty.
    running: dict[str, int] = defaultdict(int)
    for r in reports:
        if r.exec_type == ExecType.TRADE:
            running[r.cl_ord_id] += r.last_qty
            assert r.cum_qty == running[r.cl_ord_id]
        qty = orders[r.cl_ord_id][2]
        assert r.cum_qty + r.leaves_qty <= qty
        if r.status in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED):
            assert r.cum_qty + r.leaves_qty == qty


@settings(max_examples=150, deadline=None)
@given(actions)
def test_lifecycle_fok_all_or_nothing_and_ioc_never_rests(ops: list[tuple]) -> None:
    engine, _, reports, orders = run(ops)
    by_order: dict[str, list[ExecReport]] = defaultdict(list)
    for r in reports:
        by_order[r.cl_ord_id].append(r)
    finished = {OrdStatus.FILLED, OrdStatus.CANCELED}
    working = {o.cl_ord_id for o in engine.working("u")}
    for cl, reps in by_order.items():
        _, _, qty, tif, market = orders[cl]
        assert reps[0].exec_type == ExecType.NEW
        statuses = [r.status for r in reps]
        # Nothing after a finish; a finished order is no longer working.
        for i, s in enumerate(statuses):
            if s in finished:
                assert i == len(statuses) - 1, statuses
        if statuses[-1] in finished:
            assert cl not in working
        else:
            assert cl in working and tif == Tif.GFD and not market
        if tif == Tif.FOK:
            assert reps[-1].cum_qty in (0, qty)
            assert statuses[-1] in finished
        if tif == Tif.IOC or market:
            assert statuses[-1] in finished


@settings(max_examples=150, deadline=None)
@given(actions)
def test_every_trade_has_its_own_exec_id_and_a_trade_query_says_each_again(ops: list[tuple]) -> None:
    engine, _, reports, _ = run(ops)
    fills = [r for r in reports if r.exec_type == ExecType.TRADE]
    ids = [r.exec_id for r in fills]
    assert all(ids) and len(set(ids)) == len(ids)
    live: dict[str, list[ExecReport]] = defaultdict(list)
    for r in fills:
        live[r.cl_ord_id].append(r)
    for o in engine.finished("u") + engine.working("u"):
        assert engine.trade_reports(o) == live.get(o.cl_ord_id, [])
