"""Exchange rule defaults (issue 10, item 8): each exchange's own abnormal-trading thresholds.

The defaults in ``checks/exchanges.py`` must follow each exchange's rules, not one table:
CFFEX index futures count 400 cancels and 100 large cancels (of >= 80 % of the maximum
limit-order size) per contract and day, SHFE/INE 500 cancels and 50 large cancels of >= 300
lots, DCE/GFEX 500 and 50 of >= 80 %, CZCE 500 and 50 of >= 800 lots; 5 self-trades everywhere.
"""

from __future__ import annotations

import pytest

from checks.exchanges import DEFAULT_EXCHANGES, ExchangeRules
from checks.reasons import Reason as R

# exchange: (cancels, large size in lots or None, large fraction or None, large cancels,
#            self-trades, market orders, close-today apart)
EXPECTED = {
    "SHFE": (500, 300, None, 50, 5, False, True),
    "INE": (500, 300, None, 50, 5, False, True),
    "DCE": (500, None, 0.8, 50, 5, True, False),
    "CZCE": (500, 800, None, 50, 5, True, False),
    "CFFEX": (400, None, 0.8, 100, 5, True, False),
    "GFEX": (500, None, 0.8, 50, 5, True, False),
}


@pytest.mark.parametrize("exchange", sorted(EXPECTED))
def test_each_exchange_has_its_own_thresholds(exchange):
    r = DEFAULT_EXCHANGES[exchange]
    assert (r.cancel_limit_per_contract, r.large_order_qty, r.large_order_fraction,
            r.large_cancel_limit, r.self_trade_limit, r.market_orders,
            r.close_today_distinct) == EXPECTED[exchange]


def test_every_exchange_is_spelled_out_not_left_to_the_field_defaults():
    assert set(DEFAULT_EXCHANGES) == set(EXPECTED)
    # The table names every threshold explicitly: changing a field default moves no exchange.
    import inspect

    from checks import exchanges

    source = inspect.getsource(exchanges).split("DEFAULT_EXCHANGES: dict", 1)[1]
    for name in EXPECTED:
        entry = source.split(f'"{name}": ExchangeRules(', 1)[1].split(")", 1)[0]
        for field in ("cancel_limit_per_contract", "large_cancel_limit", "self_trade_limit",
                      "large_order_qty", "large_order_fraction"):
            assert f"{field}=" in entry, (name, field)


def test_the_engine_derives_each_contracts_counts_from_its_exchange(make_book):
    book = make_book(inst={"IF2612": {"max_limit_qty": 20}, "m2605": {"max_limit_qty": 1000}})
    eng = book.eng

    def inst(symbol: str):
        return eng.instruments[eng.inst_ids[symbol]]

    cffex, shfe, dce = inst("IF2612"), inst("rb2605"), inst("m2605")
    assert (cffex.cancel_limit, cffex.large_qty, cffex.large_cancel_limit) == (400, 16, 100)
    assert (shfe.cancel_limit, shfe.large_qty, shfe.large_cancel_limit) == (500, 300, 50)
    assert (dce.cancel_limit, dce.large_qty, dce.large_cancel_limit) == (500, 800, 50)


def test_cffex_refuses_a_large_opening_only_after_its_100th_large_cancel(make_book):
    # 99 large cancels leave room; the 100th reaches CFFEX's limit (SHFE's 50 would have
    # stopped at half). Small contracts keep the test short: max 2 lots, so 2 lots are large.
    book = make_book(inst={"IF2612": {"max_limit_qty": 2}},
                     limits={"max_orders_per_sec": None, "max_cancels_per_sec": None,
                             "max_repeats": None})
    now = book.t0
    i = book.eng.instruments[book.eng.inst_ids["IF2612"]]
    for k in range(100):
        if k == 50:
            book.accept(now=now, symbol="IF2612", qty=2, price=i.ref_price)  # past SHFE's 50
        ref = book.accept(now=now, symbol="IF2612", qty=2, price=i.ref_price - (k % 50) * i.tick)
        book.cancel(ref, now)
    book.reject(R.LARGE_CANCEL_LIMIT, now=now, symbol="IF2612", qty=2, price=i.ref_price)


def test_a_deployment_overrides_one_threshold_and_keeps_the_rest(make_book):
    book = make_book(exchanges={"CFFEX": {"large_cancel_limit": 60}})
    cffex = book.eng.instruments[book.eng.inst_ids["IF2612"]]
    assert (cffex.cancel_limit, cffex.large_cancel_limit) == (400, 60)
    assert ExchangeRules().large_cancel_limit == 50  # the field default is not the CFFEX one
