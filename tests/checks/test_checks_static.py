"""Reference engine, the first checks of an order: who and what it is, and whether it is well formed.

Pins 107 (unknown account), 401 (unknown instrument), 408 (enumerated field out of range),
402 (market closed; the night session belongs to the next trading day) and the static
validation of docs/ARCHITECTURE.md §4.4: 403 quantity, 404/405 volume range per order type, 406 price,
407 tick — including prices whose float arithmetic drifts, which must still be accepted.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.calendar import ns_from_local, trading_day_number
from checks.enums import Hedge, Offset, OrdType, Side, Tif
from checks.reasons import Reason as R

IOC_MARKET = {"ord_type": OrdType.MARKET, "tif": Tif.IOC}


# ---------------------------------------------------------------- 107 / 401
@pytest.mark.parametrize("account", ["NOPE", "", "a1", None, 1, b"A1"])
def test_unknown_account_is_rejected_107(book, account):
    book.reject(R.UNKNOWN_ACCOUNT, account=account)


@pytest.mark.parametrize("symbol", ["zz999", "RB2605", "", None, 7])
def test_unknown_instrument_is_rejected_401(book, symbol):
    book.reject(R.UNKNOWN_INSTRUMENT, symbol=symbol)


def test_unknown_account_wins_over_unknown_instrument_and_bad_fields(book):
    book.reject(R.UNKNOWN_ACCOUNT, account="NOPE", symbol="zz999", side=9, qty=-1)
    book.reject(R.UNKNOWN_INSTRUMENT, symbol="zz999", side=9, qty=-1)


def test_rejection_text_names_the_offending_value(book):
    assert "'NOPE'" in book.reject(R.UNKNOWN_ACCOUNT, account="NOPE").text
    assert "'zz999'" in book.reject(R.UNKNOWN_INSTRUMENT, symbol="zz999").text


# ---------------------------------------------------------------- 408
ENUM_FIELDS = {"side": 2, "offset": 4, "hedge": 3, "ord_type": 2, "tif": 3}


@pytest.mark.parametrize("field,top", ENUM_FIELDS.items())
@pytest.mark.parametrize("bad", [0, -1, "TOP+1", 2**64, True, False, 1.0, "1", None], ids=repr)
def test_enum_field_outside_its_enumeration_is_rejected_408(book, field, top, bad):
    value = top + 1 if bad == "TOP+1" else bad
    d = book.reject(R.INVALID_FIELD, **{field: value})
    assert field in d.text


@pytest.mark.parametrize("field,top", ENUM_FIELDS.items())
def test_every_value_of_an_enum_field_passes_the_field_check(book, field, top):
    for value in range(1, top + 1):
        d = book.decide(**{field: value})
        assert d.reason != R.INVALID_FIELD


def test_enum_members_and_plain_ints_are_the_same(book):
    book.accept(side=1, offset=1, hedge=1, ord_type=1, tif=1)
    book.accept(side=Side.BUY, offset=Offset.OPEN, hedge=Hedge.SPEC, ord_type=OrdType.LIMIT,
                tif=Tif.GFD, price=3199.0)


# ---------------------------------------------------------------- 402 trading sessions
@pytest.mark.parametrize("hh,mm,ss,open_", [
    (8, 59, 59, False), (9, 0, 0, True), (10, 14, 59, True), (10, 15, 0, False),
    (10, 29, 59, False), (10, 30, 0, True), (11, 30, 0, False), (12, 0, 0, False),
    (13, 30, 0, True), (14, 59, 59, True), (15, 0, 0, False), (20, 59, 59, False),
    (21, 0, 0, True), (22, 59, 59, True), (23, 0, 0, False), (3, 0, 0, False),
])
def test_orders_outside_the_sessions_are_rejected_402(book, hh, mm, ss, open_):
    now = ns_from_local(2026, 3, 10, hh, mm, ss)
    if open_:
        book.accept(now=now)
    else:
        book.reject(R.MARKET_CLOSED, now=now)


@pytest.mark.parametrize("hh,mm,open_", [
    (21, 0, True), (23, 59, True), (0, 0, True), (2, 29, True), (2, 30, False), (8, 0, False),
])
def test_night_session_crossing_midnight(book, hh, mm, open_):
    now = ns_from_local(2026, 3, 11, hh, mm)  # Wednesday
    if open_:
        book.accept(now=now, symbol="au2606")
    else:
        book.reject(R.MARKET_CLOSED, now=now, symbol="au2606")


def test_sessions_are_per_instrument(book):
    night = ns_from_local(2026, 3, 10, 21, 30)
    book.accept(now=night)
    book.reject(R.MARKET_CLOSED, now=night, symbol="IF2612")  # CFFEX: no night session
    book.reject(R.MARKET_CLOSED, now=ns_from_local(2026, 3, 10, 9, 15), symbol="IF2612")
    book.accept(now=ns_from_local(2026, 3, 10, 9, 30), symbol="IF2612")


def test_trading_hours_ignore_accepts_at_any_hour(make_book):
    book = make_book(firm={"trading_hours": "ignore"})
    book.accept(now=ns_from_local(2026, 3, 10, 4, 0))
    book.accept(now=ns_from_local(2026, 3, 14, 12, 0), price=3199.0)


def test_night_session_belongs_to_the_next_trading_day(book):
    book.accept(now=ns_from_local(2026, 3, 10, 14, 0))
    tuesday = trading_day_number(ns_from_local(2026, 3, 10, 12, 0))
    assert book.eng.day == tuesday
    book.accept(now=ns_from_local(2026, 3, 10, 21, 0))
    assert book.eng.day == tuesday + 1  # Wednesday's trading day


def test_friday_night_belongs_to_monday(book):
    book.accept(now=ns_from_local(2026, 3, 13, 21, 30))
    assert book.eng.day == trading_day_number(ns_from_local(2026, 3, 16, 10, 0))
    book.accept(now=ns_from_local(2026, 3, 14, 1, 0), symbol="au2606")  # Saturday 01:00
    assert book.eng.day == trading_day_number(ns_from_local(2026, 3, 16, 10, 0))


@pytest.mark.parametrize("when", [
    (2026, 3, 14, 10, 0),  # Saturday morning: no day session
    (2026, 3, 14, 21, 30),  # Saturday evening: no night session
    (2026, 3, 15, 10, 0),  # Sunday morning
    (2026, 3, 15, 21, 30),  # Sunday evening: no night session
    (2026, 3, 15, 1, 0),  # Sunday 01:00: no Saturday night session to continue
    (2026, 3, 16, 1, 0),  # Monday 01:00: no Sunday night session to continue
    (2026, 3, 14, 2, 30),  # Saturday 02:30: Friday's night session has ended
], ids=["saturday-day", "saturday-night", "sunday-day", "sunday-night", "sunday-small-hours",
        "monday-small-hours", "saturday-0230"])
def test_weekend_times_inside_session_windows_are_closed(book, when):
    book.reject(R.MARKET_CLOSED, now=ns_from_local(*when), symbol="au2606")


@pytest.mark.parametrize("when,symbol", [
    ((2026, 3, 16, 9, 0), "au2606"),  # Monday's day session opens
    ((2026, 3, 13, 14, 59), "au2606"),  # Friday's day session
    ((2026, 3, 13, 21, 0), "rb2605"),  # Friday evening: the night session of Monday's day
    ((2026, 3, 13, 22, 59), "rb2605"),
    ((2026, 3, 14, 0, 0), "au2606"),  # Friday's night session runs into Saturday
    ((2026, 3, 14, 2, 29), "au2606"),
    ((2026, 3, 10, 1, 0), "au2606"),  # Tuesday 01:00: Monday night continues
    ((2026, 3, 16, 21, 0), "au2606"),  # Monday evening
], ids=str)
def test_weekday_sessions_around_the_weekend_are_open(book, when, symbol):
    book.accept(now=ns_from_local(*when), symbol=symbol)


def test_a_whole_day_session_is_always_open(make_book):
    # 00:00-24:00 is how simulators and benchmarks say "always open" (examples/bench-risk.toml).
    book = make_book(inst={"rb2605": {"sessions": [["00:00", "24:00"]]}})
    for when in [(2026, 3, 14, 10, 0), (2026, 3, 15, 3, 0), (2026, 3, 16, 1, 0),
                 (2026, 3, 15, 23, 59)]:
        book.passes(now=ns_from_local(*when))


def test_a_session_written_from_midnight_continues_the_evening_before(make_book):
    book = make_book(inst={"rb2605": {"sessions": [["21:00", "24:00"], ["00:00", "02:30"]]}})
    book.passes(now=ns_from_local(2026, 3, 13, 23, 30))  # Friday evening
    book.passes(now=ns_from_local(2026, 3, 14, 1, 0))  # Saturday 01:00: Friday night continues
    book.reject(R.MARKET_CLOSED, now=ns_from_local(2026, 3, 16, 1, 0))  # Monday 01:00
    book.reject(R.MARKET_CLOSED, now=ns_from_local(2026, 3, 15, 21, 30))  # Sunday evening


# ---------------------------------------------------------------- 403 quantity
@pytest.mark.parametrize("qty", [0, -1, -5, 1.5, 0.999, math.nan, math.inf, -math.inf, None,
                                 "1", True, [1], 2.0**63], ids=repr)
def test_quantity_must_be_a_positive_whole_number_403(book, qty):
    book.reject(R.INVALID_QTY, qty=qty)


def test_whole_float_quantity_is_taken_as_lots(book):
    # NewOrder.qty is ``int | float`` on the wire: 2.0 lots is 2 lots.
    ref = book.accept(qty=2.0)
    assert book.eng.orders[ref].qty == 2 and type(book.eng.orders[ref].qty) is int


def test_quantity_checks_apply_to_market_orders_too(book):
    book.reject(R.INVALID_QTY, symbol="m2605", qty=0, **IOC_MARKET)
    book.reject(R.INVALID_QTY, symbol="m2605", qty=0.5, **IOC_MARKET)


# ---------------------------------------------------------------- 404 / 405
def test_limit_volume_range_accept_at_min_and_max_reject_one_past(make_book):
    book = make_book(inst={"rb2605": {"min_limit_qty": 2, "max_limit_qty": 5}})
    book.reject(R.QTY_BELOW_MIN, qty=1)
    book.accept(qty=2)
    book.accept(qty=5)
    d = book.reject(R.QTY_ABOVE_MAX, qty=6)
    assert "6 > 5" in d.text


def test_market_volume_range_accept_at_min_and_max_reject_one_past(make_book):
    book = make_book(inst={"m2605": {"min_market_qty": 3, "max_market_qty": 4,
                                     "max_limit_qty": 100}})
    book.reject(R.QTY_BELOW_MIN, symbol="m2605", qty=2, **IOC_MARKET)
    book.accept(symbol="m2605", qty=3, **IOC_MARKET)
    book.accept(symbol="m2605", qty=4, tif=Tif.FOK, ord_type=OrdType.MARKET)
    book.reject(R.QTY_ABOVE_MAX, symbol="m2605", qty=5, **IOC_MARKET)
    # The limit-order range is separate: 5 lots limit is fine, 2 too.
    book.accept(symbol="m2605", qty=5)
    book.accept(symbol="m2605", qty=2, price=2899.0)


@pytest.mark.parametrize("qty", [10**9, 2**63, 10**30, 2.0**61])
def test_huge_quantity_is_above_max_not_a_crash(book, qty):
    book.reject(R.QTY_ABOVE_MAX, qty=qty)
    book.reject(R.QTY_ABOVE_MAX, symbol="m2605", qty=qty, **IOC_MARKET)


# ---------------------------------------------------------------- 406 price
@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf, -1.0, -3200.0, 0.0, -0.0, 0,
                                   None, "3200", True, 2**60], ids=repr)
def test_limit_price_must_be_finite_and_positive_406(book, price):
    book.reject(R.INVALID_PRICE, price=price)


def test_integer_price_is_taken_as_a_price(book):
    book.accept(price=3200)


def test_market_order_may_carry_price_zero(book):
    book.accept(symbol="m2605", price=0.0, **IOC_MARKET)
    book.accept(symbol="m2605", price=0, tif=Tif.FOK, ord_type=OrdType.MARKET)


@pytest.mark.parametrize("price", [math.nan, math.inf, -1.0], ids=repr)
def test_market_order_price_must_still_be_finite_and_not_negative(book, price):
    book.reject(R.INVALID_PRICE, symbol="m2605", price=price, **IOC_MARKET)


def test_market_order_price_is_not_checked_against_tick_band_or_collar(make_book):
    book = make_book(inst={"m2605": {"collar_ticks": 1}})
    book.accept(symbol="m2605", price=99999.5, **IOC_MARKET)


# ---------------------------------------------------------------- 407 tick
@pytest.mark.parametrize("symbol,price", [
    ("rb2605", 3200.5), ("rb2605", 3200.001), ("IF2612", 3500.1), ("IF2612", 3500.3),
    ("IF2612", 3500.0001), ("au2606", 640.01), ("au2606", 640.03), ("au2606", 640.019),
])
def test_price_off_the_tick_is_rejected_407(book, symbol, price):
    d = book.reject(R.PRICE_NOT_ON_TICK, symbol=symbol, price=price)
    assert "tick" in d.text


@pytest.mark.parametrize("symbol,price", [
    ("IF2612", 3500.2), ("IF2612", 3500.4), ("IF2612", 3499.8), ("IF2612", 3500.6),
    ("IF2612", 0.2 * 17501), ("IF2612", 3150.2), ("au2606", 640.02), ("au2606", 0.02 * 32001),
    ("au2606", 640.06), ("au2606", 639.98), ("au2606", 588.82), ("au2606", 691.18),
])
def test_prices_on_the_tick_with_float_drift_are_accepted(book, symbol, price):
    book.accept(symbol=symbol, price=price)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_tick_in_the_band_is_on_tick_and_every_half_tick_is_not(make_book, data):
    book = make_book(firm={"trading_hours": "ignore"})
    eng = book.eng
    symbol = data.draw(st.sampled_from(["IF2612", "au2606"]))
    inst = eng.instruments[eng.inst_ids[symbol]]
    lo, hi = round(inst.lower / inst.tick), round(inst.upper / inst.tick)
    k = data.draw(st.integers(lo, hi))
    how = data.draw(st.sampled_from(["mul", "round", "str"]))
    price = {"mul": k * inst.tick, "round": round(k * inst.tick, 2),
             "str": float(f"{k * inst.tick:.2f}")}[how]
    d = book.decide(symbol=symbol, price=price)
    assert d.accepted, (price, d.text)
    eng.apply_reject(d.ref, book.t0)
    if k < hi:
        book.reject(R.PRICE_NOT_ON_TICK, symbol=symbol, price=price + inst.tick / 2)


@pytest.mark.parametrize("price", [1e308, 1.7e308], ids=repr)
def test_price_whose_tick_count_overflows_is_not_on_tick_not_a_crash(book, price):
    # price / tick overflows to inf for a 0.2 tick: that is "not on tick", never an exception.
    book.reject(R.PRICE_NOT_ON_TICK, symbol="IF2612", price=price)


@pytest.mark.parametrize("symbol", ["IF2612", "au2606", "rb2605"])
@pytest.mark.parametrize("price", [1e300, 1e200, 2.0**53 + 2, 1e18], ids=repr)
def test_huge_finite_price_is_rejected_not_a_crash(book, symbol, price):
    d = book.decide(symbol=symbol, price=price)
    assert d.reason in (R.PRICE_NOT_ON_TICK, R.PRICE_ABOVE_UPPER_LIMIT)


def test_huge_finite_price_with_a_whole_tick_is_above_the_upper_limit(book):
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, price=1e308)
