"""Reference engine: reserve on accept, settle on exchange events, roll the trading day.

docs/ARCHITECTURE.md §4 (end): accepted orders change state, exchange events change it back, and after
any sequence of events nothing is frozen for a finished order, positions equal the fills and
the funds identity holds. A rejection touches no state. References are never reused for a
stale event. The daily roll resets the daily counters and turns today's positions into
yesterday's.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.calendar import ns_from_local
from checks.enums import Hedge, Offset, OrdStatus, OrdType, Side, Tif
from checks.reasons import Reason as R
from checks.state import NO_BUY, NO_SELL

FUNDED = {"rb2605": {"margin_long": 0.1, "margin_short": 0.1,
                     "fees": {"open_per_lot": 2.0, "close_per_lot": 1.5, "close_today_per_lot": 3.0,
                              "per_order": 0.5, "per_cancel": 0.25}}}


@pytest.fixture
def funded(make_book):
    return make_book(inst=FUNDED, groups=[{"name": "G", "limits": {
        "max_open_volume_per_contract": 100}}], account={
        "group": "G", "positions": [{"symbol": "rb2605", "long": 4, "long_price": 3180.0}]})


def nothing_frozen(book, account: str = "A1", symbol: str = "rb2605") -> None:
    acct, pos = book.account(account), book.position(account, symbol)
    assert (acct.frozen_margin, acct.frozen_fee, acct.open_orders) == (0, 0, 0)
    assert (pos.long_pending, pos.short_pending) == (0, 0)
    assert (pos.long_td_frozen, pos.long_yd_frozen, pos.short_td_frozen, pos.short_yd_frozen) == (
        0, 0, 0, 0)
    assert book.eng.orders == {}
    for gi in book.eng.group_inst.values():  # the self-trade index is empty
        assert (gi.buys, gi.sells, gi.best_buy, gi.best_sell) == ({}, {}, NO_BUY, NO_SELL)


# ---------------------------------------------------------------- reserve and settle
def test_accept_reserves_margin_fees_pending_volume_and_the_self_trade_index(funded):
    ref = funded.accept(qty=3)
    acct, pos = funded.account(), funded.position()
    assert acct.frozen_margin == 3 * 320000 and acct.frozen_fee == 600 and acct.paid_fee == 50
    assert pos.long_pending == 3 and acct.open_orders == 1
    o = funded.eng.orders[ref]
    assert (o.status, o.leaves, o.cum, o.ticks) == (OrdStatus.PENDING_NEW, 3, 0, 3200)
    gi = funded.eng.snapshot()["groups"][(funded.eng.group_ids["G"], "rb2605")]
    assert gi[0] == 3 and gi[1] == 3200 and gi[3] == ((3200, 1),)


def test_ack_partial_fill_cancel_leaves_nothing_frozen(funded):
    ref = funded.accept(qty=3)
    assert funded.eng.apply_ack(ref, funded.t0).known
    assert funded.eng.orders[ref].status == OrdStatus.NEW
    out = funded.fill(ref, 1, 3199.0)
    assert not out.finished and funded.eng.orders[ref].status == OrdStatus.PARTIALLY_FILLED
    acct = funded.account()
    assert acct.frozen_margin == 2 * 320000 and acct.frozen_fee == 400
    funded.cancel(ref)
    nothing_frozen(funded)
    pos = funded.position()
    assert (pos.long_td, pos.long_yd) == (1, 4)
    # used margin: yesterday 4 x 3180 x 10 x 0.1 + today 1 x 3199 x 10 x 0.1
    assert acct.used_margin == 4 * 318000 + 319900
    # fees: per-order 0.50 + open 2.00 for the filled lot + per-cancel 0.25
    assert acct.paid_fee == 50 + 200 + 25


def test_fill_in_pieces_finishes_the_order(funded):
    ref = funded.accept(qty=3)
    assert not funded.fill(ref, 2, 3200.0).finished
    out = funded.fill(ref, 1, 3200.0)
    assert out.finished
    nothing_frozen(funded)
    assert funded.position().long_td == 3


def test_exchange_reject_releases_everything(funded):
    before = funded.account()
    paid = before.paid_fee
    ref = funded.accept(qty=3)
    closing = funded.accept(side=Side.SELL, offset=Offset.CLOSE, qty=4, price=3210.0)
    assert funded.eng.apply_reject(ref, funded.t0).finished
    assert funded.eng.apply_reject(closing, funded.t0).finished
    nothing_frozen(funded)
    assert funded.account().paid_fee == paid + 2 * 50  # the per-order fees are not refunded
    funded.accept(side=Side.SELL, offset=Offset.CLOSE, qty=4, price=3210.0)


def test_closing_order_freezes_and_releases_the_position(funded):
    ref = funded.accept(side=Side.SELL, offset=Offset.CLOSE, qty=3, price=3210.0)
    assert funded.position().long_yd_frozen == 3
    funded.fill(ref, 1, 3210.0)
    pos = funded.position()
    assert (pos.long_yd, pos.long_yd_frozen) == (3, 2)
    funded.cancel(ref)
    nothing_frozen(funded)
    acct = funded.account()
    assert acct.realised == (3210 - 3180) * 10 * 100
    assert acct.used_margin == 3 * 318000


def test_short_open_and_close_round_trip(make_book):
    book = make_book(inst=FUNDED)
    book.open_position(2, side=Side.SELL, px=3200.0)
    ref = book.accept(side=Side.BUY, offset=Offset.CLOSE_TODAY, qty=2, price=3190.0)
    book.fill(ref, 2, 3190.0)
    nothing_frozen(book)
    acct = book.account()
    assert acct.used_margin == 0 and acct.realised == 2 * 10 * 10 * 100
    assert book.position().as_tuple()[:4] == (0, 0, 0, 0)


@pytest.mark.parametrize("qty", [0, -1, 4, 1.0, True])
def test_fill_of_an_impossible_quantity_is_not_known(funded, qty):
    ref = funded.accept(qty=3)
    before = funded.eng.snapshot()
    assert not funded.eng.apply_fill(ref, qty, 3200.0, funded.t0).known
    assert funded.eng.snapshot() == before


@pytest.mark.parametrize("px", [0.0, -1.0, math.nan, math.inf, 2e9])
def test_fill_at_an_impossible_price_is_not_known(funded, px):
    ref = funded.accept(qty=3)
    before = funded.eng.snapshot()
    assert not funded.eng.apply_fill(ref, 1, px, funded.t0).known
    assert funded.eng.snapshot() == before


# ---------------------------------------------------------------- references
def test_refs_are_never_reused_for_a_stale_event(funded):
    old = funded.accept(qty=2)
    funded.cancel(old)
    new = funded.accept(qty=2)
    assert new != old
    assert old & 0xFFFFFFFF == new & 0xFFFFFFFF  # the slot is reused, with a new generation
    before = funded.eng.snapshot()
    for late in (funded.eng.apply_ack(old, funded.t0),
                 funded.eng.apply_fill(old, 1, 3200.0, funded.t0),
                 funded.eng.apply_canceled(old, funded.t0),
                 funded.eng.apply_reject(old, funded.t0),
                 funded.eng.cancel_request(old, funded.t0)):
        assert not late.known and not late.finished
    assert funded.eng.snapshot() == before
    assert funded.eng.orders[new].leaves == 2


@pytest.mark.parametrize("finish", ["fill", "cancel", "reject"])
def test_late_events_on_a_finished_ref_are_not_known(funded, finish):
    ref = funded.accept(qty=1)
    {"fill": lambda: funded.fill(ref, 1, 3200.0), "cancel": lambda: funded.cancel(ref),
     "reject": lambda: funded.eng.apply_reject(ref, funded.t0)}[finish]()
    before = funded.eng.snapshot()
    assert not funded.eng.apply_fill(ref, 1, 3200.0, funded.t0).known
    assert not funded.eng.apply_canceled(ref, funded.t0).known
    assert not funded.eng.apply_reject(ref, funded.t0).known
    assert not funded.eng.apply_ack(ref, funded.t0).known
    assert funded.eng.snapshot() == before


def test_accepted_decision_carries_a_fresh_ref(funded):
    refs = {funded.accept(price=3200.0 - k) for k in range(5)}
    assert len(refs) == 5 and all(r >= 0 for r in refs)


# ---------------------------------------------------------------- a rejection touches nothing
def test_every_kind_of_rejection_leaves_the_snapshot_unchanged(make_book):
    # Book.decide asserts snapshot equality on every rejection; here, one of each on a busy book.
    book = make_book(inst={**FUNDED, "rb2605": {**FUNDED["rb2605"], "position_limit": 6,
                                                 "collar_ticks": 50}},
                     account={"balance": 15_786.50, "limits": {
                         "max_order_qty": 5, "max_notional": 160_000.0, "max_open_orders": 3,
                         "max_repeats": 1, "loss_limit": 10_000.0},
                         "positions": [{"symbol": "rb2605", "long": 2, "long_price": 3200.0}]})
    book.accept(qty=2, price=3190.0)
    book.accept(side=Side.SELL, offset=Offset.CLOSE, qty=1, price=3220.0)
    assert book.account().available() == 300_000  # 3000.00 left
    for reason, fields in [
        (R.UNKNOWN_ACCOUNT, {"account": "X"}), (R.UNKNOWN_INSTRUMENT, {"symbol": "X"}),
        (R.INVALID_FIELD, {"side": 3}), (R.ORD_TYPE_NOT_ALLOWED_EXCHANGE, {
            "ord_type": OrdType.MARKET, "tif": Tif.IOC}),
        (R.INVALID_QTY, {"qty": 0}), (R.INVALID_PRICE, {"price": -1.0}),
        (R.PRICE_NOT_ON_TICK, {"price": 3200.5}), (R.PRICE_ABOVE_UPPER_LIMIT, {"price": 4000.0}),
        (R.PRICE_OUTSIDE_COLLAR, {"price": 3251.0}), (R.QTY_ABOVE_ACCOUNT_MAX, {"qty": 6}),
        (R.NOTIONAL_ABOVE_MAX, {"qty": 5, "price": 3250.0}),
        (R.REPEATED_ORDERS, {"side": Side.SELL, "offset": Offset.CLOSE, "qty": 1, "price": 3220.0}),
        (R.INSUFFICIENT_POSITION, {"side": Side.SELL, "offset": Offset.CLOSE, "qty": 2,
                                   "price": 3221.0}),
        (R.POSITION_LIMIT, {"qty": 3, "price": 3180.0}),
        (R.INSUFFICIENT_FUNDS, {"qty": 1, "price": 3170.0}),
        (R.SELF_TRADE, {"side": Side.SELL, "offset": Offset.CLOSE, "price": 3190.0, "qty": 1}),
    ]:
        book.reject(reason, **fields)
    close = book.accept(side=Side.SELL, offset=Offset.CLOSE, qty=1, price=3230.0)  # no funds
    book.reject(R.OPEN_ORDERS_LIMIT, qty=1, price=3150.0, hedge=Hedge.ARB)
    book.eng.apply_reject(close, book.t0)
    book.eng.market_data("rb2605", 2700.0, 3424.0, 2600.0, book.t0)  # -10000.00 on 2 lots
    book.reject(R.LOSS_LIMIT, qty=1, price=2700.0)


# ---------------------------------------------------------------- the trading day
TUE_DAY = ns_from_local(2026, 3, 10, 10, 0)
TUE_NIGHT = ns_from_local(2026, 3, 10, 21, 0)  # Wednesday's trading day


def test_daily_roll_turns_todays_position_into_yesterdays(make_book):
    book = make_book()
    book.open_position(2, now=TUE_DAY)
    assert (book.position().long_td, book.position().long_yd) == (2, 0)
    book.reject(R.INSUFFICIENT_POSITION, now=TUE_DAY + 1, side=Side.SELL,
                offset=Offset.CLOSE_YESTERDAY)
    # In the night session (the next trading day) the position is yesterday's.
    book.reject(R.INSUFFICIENT_POSITION, now=TUE_NIGHT, side=Side.SELL,
                offset=Offset.CLOSE_TODAY)
    book.accept(now=TUE_NIGHT, side=Side.SELL, offset=Offset.CLOSE_YESTERDAY, qty=2)
    assert (book.position().long_td, book.position().long_yd) == (0, 2)


def test_daily_roll_moves_frozen_today_closes_to_yesterday(make_book):
    book = make_book()
    book.open_position(2, now=TUE_DAY)
    ref = book.accept(now=TUE_DAY, side=Side.SELL, offset=Offset.CLOSE_TODAY, qty=2,
                      price=3201.0)
    book.accept(now=TUE_NIGHT, price=3150.0)  # rolls the day
    pos = book.position()
    assert (pos.long_yd, pos.long_yd_frozen, pos.long_td_frozen) == (2, 2, 0)
    o = book.eng.orders[ref]
    assert (o.close_yd, o.close_td) == (2, 0)
    book.fill(ref, 2, 3201.0, now=TUE_NIGHT)
    assert book.position().as_tuple()[:8] == (0,) * 8


def test_daily_roll_resets_daily_counters(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 1}},
                     exchanges={"SHFE": {"self_trade_limit": 1}},
                     account={"limits": {"max_messages_per_product": 3,
                                         "max_open_volume_per_contract": 3}})
    ref = book.accept(now=TUE_DAY)
    book.cancel(ref, TUE_DAY)
    book.reject(R.CONTRACT_CANCEL_LIMIT, now=TUE_DAY)
    book.reject(R.CONTRACT_CANCEL_LIMIT, now=ns_from_local(2026, 3, 10, 14, 59, 59))
    ref = book.accept(now=TUE_NIGHT)
    assert book.account().day_msgs == 1
    book.fill(ref, 1, 3200.0, now=TUE_NIGHT, self_trade=True)
    book.reject(R.SELF_TRADE_LIMIT, now=TUE_NIGHT)
    wed_day = ns_from_local(2026, 3, 11, 10, 0)  # same trading day as Tuesday night
    book.reject(R.SELF_TRADE_LIMIT, now=wed_day)
    thu_night = ns_from_local(2026, 3, 11, 21, 0)
    book.accept(now=thu_night, qty=3)  # opening volume and messages reset too
    book.reject(R.OPEN_VOLUME_LIMIT, now=thu_night, price=3199.0)


def test_working_opening_carries_into_the_new_days_opening_volume(make_book):
    book = make_book(account={"limits": {"max_open_volume_per_contract": 2}})
    ref = book.accept(now=TUE_DAY, qty=2)
    book.reject(R.OPEN_VOLUME_LIMIT, now=TUE_NIGHT, price=3199.0)  # still working: still counted
    book.cancel(ref, TUE_NIGHT)
    book.accept(now=TUE_NIGHT, qty=2, price=3199.0)
    book.reject(R.OPEN_VOLUME_LIMIT, now=TUE_NIGHT, price=3198.0)


def test_rate_windows_are_not_reset_by_the_roll(make_book):
    just_before = ns_from_local(2026, 3, 10, 16, 59, 59) + 500_000_000
    book = make_book(account={"limits": {"max_orders_per_sec": 1}},
                     firm={"trading_hours": "ignore"}, t0=just_before)
    book.accept()
    day = book.eng.day
    book.reject(R.ORDER_RATE, now=ns_from_local(2026, 3, 10, 17, 0))  # a new trading day
    assert book.eng.day == day + 1


# ---------------------------------------------------------------- the book's invariants
OFFSETS = [Offset.OPEN, Offset.OPEN, Offset.CLOSE, Offset.CLOSE_TODAY, Offset.CLOSE_YESTERDAY]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["new", "new", "ack", "fill", "cancel", "reject",
                                                 "auto_cancel", "mark", "night"]),
                                st.integers(0, 10**6), st.integers(1, 4), st.booleans()),
                      max_size=60))
def test_invariants_hold_after_any_sequence_of_events(make_book, steps):
    book = make_book(inst={**FUNDED, "m2605": {"margin_per_lot": 500.0,
                                               "fees": {"open_ratio": 0.0001, "per_order": 1.0}}},
                     account={"group": "G", "balance": 200_000.0, "positions": [
                         {"symbol": "rb2605", "long": 3, "long_price": 3190.0},
                         {"symbol": "m2605", "short": 2, "short_price": 2910.0}]},
                     accounts=[{"id": "A2", "group": "G", "balance": 50_000.0}, {"id": "A3"}])
    eng, now = book.eng, book.t0
    refs: list[int] = []
    fills: dict[tuple[str, str], int] = {}
    for kind, n, qty, flag in steps:
        now += 1_000
        if kind == "new":
            symbol = ("rb2605", "m2605")[n % 2]
            spec = eng.instruments[eng.inst_ids[symbol]]
            d = book.decide(now=now, account=("A1", "A2", "A3")[n // 2 % 3], symbol=symbol,
                            side=Side.BUY if flag else Side.SELL, offset=OFFSETS[n // 6 % 5],
                            tif=(Tif.GFD, Tif.GFD, Tif.IOC)[n // 30 % 3], qty=qty,
                            price=spec.ref_price + (n // 90 % 7 - 3) * spec.tick)
            if d.accepted:
                refs.append(d.ref)
        elif kind == "night":
            now = max(now, TUE_NIGHT)
            eng.cancel_request(-1, now)
        elif kind == "mark":
            for inst in eng.instruments:
                eng.market_data(inst.symbol, inst.ref_price + (n % 31 - 15) * inst.tick,
                                inst.upper, inst.lower, now)
        elif refs:
            ref = refs[n % len(refs)]
            o = eng.orders.get(ref)
            if kind == "ack":
                eng.apply_ack(ref, now)
            elif kind == "fill" and o is not None:
                q = min(qty, o.leaves)
                if eng.apply_fill(ref, q, o.price, now, self_trade=flag).known:
                    key = (eng.accounts[o.acct].id, eng.instruments[o.inst].symbol)
                    fills[key] = fills.get(key, 0) + (q if o.side == Side.BUY else -q)
            elif kind == "cancel":
                eng.cancel_request(ref, now)
                eng.apply_canceled(ref, now)
            elif kind == "auto_cancel":
                eng.apply_canceled(ref, now)
            elif kind == "reject":
                eng.apply_reject(ref, now)
        check_invariants(book, fills)
    for ref in list(eng.orders):
        eng.apply_reject(ref, now)
    check_invariants(book, fills)
    for acct in eng.accounts:
        assert (acct.frozen_margin, acct.frozen_fee, acct.open_orders) == (0, 0, 0)
    for pos in eng.positions.values():
        assert (pos.long_pending, pos.short_pending, pos.long_td_frozen, pos.long_yd_frozen,
                pos.short_td_frozen, pos.short_yd_frozen) == (0,) * 6
    for gi in eng.group_inst.values():
        assert gi.open_volume >= 0 and not gi.buys and not gi.sells


def check_invariants(book, fills) -> None:
    eng = book.eng
    start = {("A1", "rb2605"): 3, ("A1", "m2605"): -2}
    for acct in eng.accounts:
        working = [o for o in eng.orders.values() if o.acct == acct.idx]
        assert acct.open_orders == len(working)
        assert acct.frozen_margin == sum(o.frozen_margin for o in working) >= 0
        assert acct.frozen_fee == sum(o.frozen_fee for o in working) >= 0
        assert acct.available() == (acct.balance - acct.used_margin - acct.frozen_margin
                                    - acct.frozen_fee - acct.paid_fee + acct.realised)
        for inst in eng.instruments:
            pos = eng.positions.get((acct.idx, inst.idx))
            if pos is None:
                continue
            mine = [o for o in working if o.inst == inst.idx]
            assert pos.long_pending == sum(o.leaves for o in mine if o.opening and o.side == Side.BUY)
            assert pos.short_pending == sum(o.leaves for o in mine
                                            if o.opening and o.side == Side.SELL)
            assert pos.long_yd_frozen + pos.long_td_frozen == sum(
                o.close_yd + o.close_td for o in mine if not o.opening and o.side == Side.SELL)
            assert pos.short_yd_frozen + pos.short_td_frozen == sum(
                o.close_yd + o.close_td for o in mine if not o.opening and o.side == Side.BUY)
            assert 0 <= pos.long_yd_frozen <= pos.long_yd and 0 <= pos.long_td_frozen <= pos.long_td
            assert 0 <= pos.short_yd_frozen <= pos.short_yd
            assert 0 <= pos.short_td_frozen <= pos.short_td
            net = pos.long_td + pos.long_yd - pos.short_td - pos.short_yd
            key = (acct.id, inst.symbol)
            assert net == start.get(key, 0) + fills.get(key, 0), key
    for (g, i), gi in eng.group_inst.items():
        members = [o for o in eng.orders.values()
                   if eng.accounts[o.acct].group == g and o.inst == i]
        assert gi.open_volume >= sum(o.leaves for o in members
                                     if o.opening and o.hedge != Hedge.HEDGE)
        buys = {}
        for o in members:
            if o.ticks >= 0 and o.side == Side.BUY:
                buys[o.ticks] = buys.get(o.ticks, 0) + 1
        assert gi.buys == buys
        assert gi.best_buy == (max(buys) if buys else -1)
