"""Reference engine: price checks (5xx) and size checks (6xx), docs/ARCHITECTURE.md §4.5-4.6.

The daily band and the fat-finger collar accept a price exactly at their edge and refuse one
tick past it; market data moves the band and the collar's reference price. The account's
maximum quantity and notional per order accept exactly the maximum.
"""

from __future__ import annotations

import math

import pytest

from checks.enums import OrdType, Side, Tif
from checks.reasons import Reason as R

IOC_MARKET = {"ord_type": OrdType.MARKET, "tif": Tif.IOC}


# ---------------------------------------------------------------- 501 / 502
@pytest.mark.parametrize("symbol,upper,tick", [("rb2605", 3424.0, 1.0), ("au2606", 691.2, 0.02),
                                               ("IF2612", 3850.0, 0.2)])
def test_accept_at_the_upper_limit_reject_one_tick_above_501(book, symbol, upper, tick):
    book.passes(symbol=symbol, price=upper)
    d = book.reject(R.PRICE_ABOVE_UPPER_LIMIT, symbol=symbol, price=round(upper + tick, 2))
    assert str(upper) in d.text


@pytest.mark.parametrize("symbol,lower,tick", [("rb2605", 2976.0, 1.0), ("au2606", 588.8, 0.02),
                                               ("IF2612", 3150.0, 0.2)])
def test_accept_at_the_lower_limit_reject_one_tick_below_502(book, symbol, lower, tick):
    book.passes(symbol=symbol, price=lower, side=Side.SELL)
    book.reject(R.PRICE_BELOW_LOWER_LIMIT, symbol=symbol, price=round(lower - tick, 2),
                side=Side.SELL)


def test_market_data_moves_the_daily_band(book):
    book.eng.market_data("rb2605", 3300.0, 3500.0, 3100.0, book.t0)
    book.passes(price=3500.0)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, price=3501.0)
    book.passes(price=3100.0, side=Side.SELL, now=book.t0 + 1)
    book.reject(R.PRICE_BELOW_LOWER_LIMIT, price=3099.0, side=Side.SELL)


@pytest.mark.parametrize("upper,lower", [(3000.0, 3100.0), (math.nan, 3000.0), (3500.0, math.inf),
                                         (3500.0, 0.0), (3500.0, -1.0), (2e9, 3000.0)])
def test_market_data_with_an_impossible_band_leaves_the_band_alone(book, upper, lower):
    book.eng.market_data("rb2605", 3200.0, upper, lower, book.t0)
    book.passes(price=3424.0)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, price=3425.0)


def test_market_data_for_an_unknown_symbol_is_not_known(book):
    assert not book.eng.market_data("zz999", 1.0, 2.0, 0.5, book.t0).known


def test_market_orders_are_not_checked_against_the_band(book):
    book.eng.market_data("m2605", 2900.0, 2950.0, 2850.0, book.t0)
    book.passes(symbol="m2605", **IOC_MARKET)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, symbol="m2605", price=2951.0)


# ---------------------------------------------------------------- 503
def test_collar_pct_accept_at_the_edge_reject_one_tick_past(make_book):
    book = make_book(inst={"rb2605": {"collar_pct": 0.05}})  # 3200 +/- 160
    book.passes(price=3360.0)
    book.passes(price=3040.0, side=Side.SELL)
    d = book.reject(R.PRICE_OUTSIDE_COLLAR, price=3361.0)
    assert "3200" in d.text and "160" in d.text
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3039.0, side=Side.SELL)


def test_collar_ticks_accept_at_the_edge_reject_one_tick_past(make_book):
    book = make_book(inst={"rb2605": {"collar_ticks": 10},
                           "IF2612": {"collar_ticks": 200}})
    book.passes(price=3210.0)
    book.passes(price=3190.0, side=Side.SELL)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3211.0)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3189.0, side=Side.SELL)
    book.passes(symbol="IF2612", price=3540.0)  # 200 ticks of 0.2
    book.reject(R.PRICE_OUTSIDE_COLLAR, symbol="IF2612", price=3540.2)
    book.passes(symbol="IF2612", price=3460.0, side=Side.SELL)
    book.reject(R.PRICE_OUTSIDE_COLLAR, symbol="IF2612", price=3459.8, side=Side.SELL)


def test_the_tighter_collar_applies(make_book):
    book = make_book(inst={"rb2605": {"collar_pct": 0.05, "collar_ticks": 10},
                           "m2605": {"collar_pct": 0.01, "collar_ticks": 100}})
    book.passes(price=3210.0)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3211.0)  # ticks (10) tighter than 5 % (160)
    book.passes(symbol="m2605", price=2929.0)  # 1 % of 2900 = 29, tighter than 100 ticks
    book.reject(R.PRICE_OUTSIDE_COLLAR, symbol="m2605", price=2930.0)


def test_collar_is_checked_after_the_band(make_book):
    book = make_book(inst={"rb2605": {"collar_ticks": 10}})
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, price=3500.0)


def test_market_data_moves_the_collar_reference(make_book):
    book = make_book(inst={"rb2605": {"collar_ticks": 10}})
    book.eng.market_data("rb2605", 3300.0, 3424.0, 2976.0, book.t0)
    book.passes(price=3310.0)
    book.passes(price=3290.0, side=Side.SELL)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3311.0)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3210.0)  # the old edge is now far outside


def test_collar_pct_band_width_follows_the_reference(make_book):
    book = make_book(inst={"rb2605": {"collar_pct": 0.05}})
    book.eng.market_data("rb2605", 3000.0, 3424.0, 2976.0, book.t0)  # 3000 +/- 150
    book.passes(price=3150.0)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3151.0)


@pytest.mark.parametrize("last_px", [0.0, -5.0, math.nan, math.inf, 2e9])
def test_market_data_with_a_garbage_last_price_leaves_the_reference_alone(make_book, last_px):
    book = make_book(inst={"rb2605": {"collar_ticks": 10}})
    book.eng.market_data("rb2605", last_px, 3424.0, 2976.0, book.t0)
    book.passes(price=3210.0)
    book.reject(R.PRICE_OUTSIDE_COLLAR, price=3211.0)


def test_market_orders_are_not_collared(make_book):
    book = make_book(inst={"m2605": {"collar_ticks": 1}})
    book.passes(symbol="m2605", **IOC_MARKET)


def test_collar_pct_edge_with_a_fractional_tick_is_accepted(make_book):
    book = make_book(inst={"au2606": {"collar_pct": 0.03}})  # 640 +/- 19.2 (examples/risk.toml)
    book.passes(symbol="au2606", price=659.2)
    book.passes(symbol="au2606", price=620.8, side=Side.SELL)


def test_collar_ticks_edge_with_a_fractional_tick_is_accepted(make_book):
    # 640.2 - 640.0 = 0.20000000000004547 > 10 * 0.02 in floats; a millionth of a tick of slack
    book = make_book(inst={"au2606": {"collar_ticks": 10}})
    book.passes(symbol="au2606", price=640.2)
    book.passes(symbol="au2606", price=639.8, side=Side.SELL)
    book.reject(R.PRICE_OUTSIDE_COLLAR, symbol="au2606", price=640.22)
    book.reject(R.PRICE_OUTSIDE_COLLAR, symbol="au2606", price=639.78)


@pytest.mark.parametrize("edge,past", [(659.2, 659.22), (620.8, 620.78)])
def test_collar_pct_with_a_fractional_tick_refuses_one_tick_past(make_book, edge, past):
    book = make_book(inst={"au2606": {"collar_pct": 0.03}})
    book.reject(R.PRICE_OUTSIDE_COLLAR, symbol="au2606", price=past)


# ---------------------------------------------------------------- 601 / 602
def test_account_max_order_qty_accept_at_max_reject_one_past_601(make_book):
    book = make_book(account={"limits": {"max_order_qty": 5}})
    book.passes(qty=5)
    d = book.reject(R.QTY_ABOVE_ACCOUNT_MAX, qty=6)
    assert "6 > 5" in d.text
    book.passes(symbol="m2605", qty=5, **IOC_MARKET)
    book.reject(R.QTY_ABOVE_ACCOUNT_MAX, symbol="m2605", qty=6, **IOC_MARKET)


def test_firm_max_order_qty_applies_to_every_account(make_book):
    book = make_book(limits={"max_order_qty": 3}, accounts=[{"id": "A2"},
                                                           {"id": "A3", "limits": {"max_order_qty": 4}}])
    book.reject(R.QTY_ABOVE_ACCOUNT_MAX, qty=4)
    book.reject(R.QTY_ABOVE_ACCOUNT_MAX, qty=4, account="A2")
    book.passes(qty=4, account="A3")


def test_account_max_notional_accept_at_max_reject_one_lot_past_602(make_book):
    book = make_book(account={"limits": {"max_notional": 96_000.0}})  # 3 lots x 3200 x 10
    book.passes(qty=3)
    d = book.reject(R.NOTIONAL_ABOVE_MAX, qty=4)
    assert "128000.00 > 96000.00" in d.text
    book.passes(qty=1, price=3424.0)
    book.reject(R.NOTIONAL_ABOVE_MAX, qty=3, price=3201.0)


def test_market_order_notional_is_taken_at_the_band(make_book):
    book = make_book(account={"limits": {"max_notional": 62_060.0}})  # 2 x 3103 x 10
    book.passes(symbol="m2605", qty=2, **IOC_MARKET)  # buy: at the upper limit
    book.reject(R.NOTIONAL_ABOVE_MAX, symbol="m2605", qty=3, side=Side.SELL, **IOC_MARKET)
    book.passes(symbol="m2605", qty=2, side=Side.SELL, **IOC_MARKET)  # 2 x 2697 x 10


def test_qty_limit_is_checked_before_notional(make_book):
    book = make_book(account={"limits": {"max_order_qty": 1, "max_notional": 1.0}})
    book.reject(R.QTY_ABOVE_ACCOUNT_MAX, qty=2)
    book.reject(R.NOTIONAL_ABOVE_MAX, qty=1)


def test_notional_exactly_at_max_with_a_fractional_price_is_accepted(make_book):
    # 691.2 * 3 * 1000 = 2073600.0000000005 in floats: compared in whole fen, it is the maximum.
    book = make_book(account={"limits": {"max_notional": 2_073_600.0}})
    book.passes(symbol="au2606", price=691.2, qty=3)


def test_notional_one_fen_past_max_with_a_fractional_price_is_refused(make_book):
    book = make_book(account={"limits": {"max_notional": 2_073_599.99}})
    d = book.reject(R.NOTIONAL_ABOVE_MAX, symbol="au2606", price=691.2, qty=3)
    assert "2073600.00 > 2073599.99" in d.text
    book.passes(symbol="au2606", price=691.18, qty=3)  # 2073540


# ---------------------------------------------------------------- 501 / 502 on whole ticks
def test_a_limit_price_computed_in_floats_is_at_the_upper_limit_not_above(book):
    # 3500 x 1.1 = 3850.0000000000005: on the tick (the tick check says so), at the limit 3850.
    price = 3500.0 * (1 + 0.1)
    assert price > 3850.0
    book.passes(symbol="IF2612", price=price)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, symbol="IF2612", price=price + 0.2)


def test_an_upper_limit_computed_in_floats_admits_the_limit_price(book):
    book.eng.market_data("IF2612", 3500.0, 3500.0 * 1.1 - 1e-9, 3150.0, book.t0)  # a hair below
    book.passes(symbol="IF2612", price=3850.0)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, symbol="IF2612", price=3850.2)


def test_a_limit_price_computed_in_floats_is_at_the_lower_limit_not_below(book):
    # 640 x 0.93 = 595.1999999999999: at the lower limit 595.2.
    book.eng.market_data("au2606", 640.0, 684.8, 595.2, book.t0)
    price = 640.0 * (1 - 0.07)
    assert price < 595.2
    book.passes(symbol="au2606", price=price, side=Side.SELL)
    book.reject(R.PRICE_BELOW_LOWER_LIMIT, symbol="au2606", price=price - 0.02, side=Side.SELL)


def test_a_band_off_the_tick_grid_rounds_inward(book):
    book.eng.market_data("rb2605", 3200.0, 3424.5, 2975.5, book.t0)
    book.passes(price=3424.0)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, price=3425.0)
    book.passes(price=2976.0, side=Side.SELL)
    book.reject(R.PRICE_BELOW_LOWER_LIMIT, price=2975.0, side=Side.SELL)


# ---------------------------------------------------------------- 503: the default and "off"
@pytest.mark.parametrize("off", [{"collar_pct": 0.0}, {"collar_pct": 0.0, "collar_ticks": 0}])
def test_a_limit_up_day_order_at_the_limit_passes_when_the_collar_is_off(make_book, off):
    """Limit-up: reference 3200, upper limit 3424 (7 %). The 5 % collar refuses the limit price;
    with the collar switched off per instrument, the order at the limit passes."""
    on = make_book(inst={"rb2605": {"collar_pct": 0.05}})
    on.reject(R.PRICE_OUTSIDE_COLLAR, price=3424.0)
    book = make_book(inst={"rb2605": off})
    book.passes(price=3424.0)
    book.passes(price=2976.0, side=Side.SELL)
    book.reject(R.PRICE_ABOVE_UPPER_LIMIT, price=3425.0)
