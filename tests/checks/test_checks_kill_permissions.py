"""Reference engine: the kill switch (2xx) and permission control (3xx), docs/ARCHITECTURE.md §4.2-4.3.

A killed scope rejects new orders with the scope's own code; a close-only kill refuses openings
and lets closes through; reset lifts it. Cancels are never blocked. Permissions: SUSPENDED
refuses everything, CLOSE_ONLY refuses openings, an automated session needs a confirmed
programmatic registration, the product allow-list, order types per account and per exchange.
"""

from __future__ import annotations

import pytest

from checks.decision import TRIGGER_STATUS
from checks.enums import AccountStatus, KillScope, Offset, OrdType, ProgReg, Side, Tif
from checks.reasons import KILL_REASON_BY_SCOPE_NAME
from checks.reasons import Reason as R

IOC_MARKET = {"ord_type": OrdType.MARKET, "tif": Tif.IOC}
HELD = {"positions": [{"symbol": "rb2605", "long": 5, "long_price": 3200.0},
                      {"symbol": "m2605", "long": 5, "long_price": 2900.0}]}
CLOSE = {"side": Side.SELL, "offset": Offset.CLOSE}


@pytest.fixture
def kbook(make_book):
    """A1 and A2 in group G1 (A1 holds 5 rb and 5 m long), A3 on its own."""
    return make_book(account={"group": "G1", **HELD},
                     accounts=[{"id": "A2", "group": "G1"}, {"id": "A3"}])


# ---------------------------------------------------------------- 201-206
KILLS = [
    # scope, key, code, an order in the scope, one outside it (or None), a close by A1 in it
    (KillScope.FIRM, "", R.KILLED_FIRM, {}, None, {}),
    (KillScope.ACCOUNT, "A1", R.KILLED_ACCOUNT, {}, {"account": "A2"}, {}),
    (KillScope.GROUP, "G1", R.KILLED_GROUP, {"account": "A2"}, {"account": "A3"}, {}),
    (KillScope.SESSION, 7, R.KILLED_SESSION, {"session": 7}, {"session": 8}, {"session": 7}),
    (KillScope.INSTRUMENT, "rb2605", R.KILLED_INSTRUMENT, {}, {"symbol": "au2606"}, {}),
    (KillScope.PRODUCT, "m", R.KILLED_PRODUCT, {"symbol": "m2609"}, {"symbol": "au2606"},
     {"symbol": "m2605", "price": 2901.0}),
]
IDS = [k[0].name for k in KILLS]


def close_by_a1(close: dict) -> dict:
    """A1 selling part of its long above every buy price used here (no self-trade)."""
    return {"account": "A1", "price": 3201.0, **CLOSE, **close}


@pytest.mark.parametrize("scope,key,code,hit,miss,close", KILLS, ids=IDS)
def test_kill_rejects_new_orders_in_its_scope_with_its_code(kbook, scope, key, code, hit, miss,
                                                            close):
    kbook.eng.kill(scope, key)
    kbook.reject(code, **hit)
    kbook.reject(code, **close_by_a1(close))  # a full kill blocks closes too
    if miss is not None:
        kbook.accept(**miss)
    kbook.eng.reset(scope, key)
    kbook.accept(**hit)
    kbook.accept(**close_by_a1(close))


@pytest.mark.parametrize("scope,key,code,hit,miss,close", KILLS, ids=IDS)
def test_close_only_kill_passes_closes_and_refuses_opens(kbook, scope, key, code, hit, miss,
                                                         close):
    kbook.eng.kill(scope, key, close_only=True)
    kbook.reject(code, **hit)
    kbook.reject(code, **{**hit, "side": Side.SELL, "price": 3210.0})  # selling open is opening
    kbook.accept(**close_by_a1(close))
    kbook.eng.reset(scope, key)
    kbook.accept(**hit)


def test_kill_scope_codes_match_the_reason_table():
    for scope, _key, code, *_ in KILLS:
        assert KILL_REASON_BY_SCOPE_NAME[scope.name.lower()] == code
    assert {k[2] for k in KILLS} == set(KILL_REASON_BY_SCOPE_NAME.values())


def test_ungrouped_account_is_its_own_group(kbook):
    kbook.eng.kill(KillScope.GROUP, "~A3")
    kbook.reject(R.KILLED_GROUP, account="A3")
    kbook.accept(account="A1")


def test_kill_checks_scopes_in_order_firm_first(kbook):
    kbook.eng.kill(KillScope.PRODUCT, "rb")
    kbook.eng.kill(KillScope.ACCOUNT, "A1")
    kbook.reject(R.KILLED_ACCOUNT)
    kbook.eng.kill(KillScope.FIRM)
    kbook.reject(R.KILLED_FIRM)


def test_kill_wins_over_permissions(kbook):
    kbook.eng.set_status("A1", AccountStatus.SUSPENDED)
    kbook.eng.kill(KillScope.ACCOUNT, "A1")
    kbook.reject(R.KILLED_ACCOUNT)


def test_kill_returns_the_working_orders_to_cancel(kbook):
    a1_open = kbook.accept()
    a1_close = kbook.accept(**CLOSE, price=3201.0)
    a2_open = kbook.accept(account="A2", price=3199.0)
    a3_open = kbook.accept(account="A3", symbol="au2606", price=640.0)
    assert kbook.eng.kill(KillScope.ACCOUNT, "A1") == sorted([a1_open, a1_close])
    assert kbook.eng.kill(KillScope.GROUP, "G1", close_only=True) == sorted([a1_open, a2_open])
    assert kbook.eng.kill(KillScope.INSTRUMENT, "au2606") == [a3_open]
    assert kbook.eng.kill(KillScope.PRODUCT, "rb") == sorted([a1_open, a1_close, a2_open])
    assert kbook.eng.kill(KillScope.SESSION, 3) == []  # the gateway knows its sessions' orders
    assert kbook.eng.kill(KillScope.FIRM) == sorted([a1_open, a1_close, a2_open, a3_open])
    assert len(kbook.eng.killed()) == 6


def test_cancels_are_never_blocked_by_a_kill(kbook):
    ref = kbook.accept()
    kbook.eng.kill(KillScope.FIRM)
    out = kbook.eng.cancel_request(ref, kbook.t0)
    assert out.known
    assert kbook.eng.apply_canceled(ref, kbook.t0).finished


def test_unknown_kill_key_raises_key_error(kbook):
    with pytest.raises(KeyError, match="account"):
        kbook.eng.kill(KillScope.ACCOUNT, "NOPE")
    with pytest.raises(KeyError, match="product"):
        kbook.eng.kill(KillScope.PRODUCT, "zz")


def test_reset_of_a_scope_that_is_not_killed_is_harmless(kbook):
    kbook.eng.reset(KillScope.ACCOUNT, "A1")
    kbook.accept()


# ---------------------------------------------------------------- 301 / 302
def test_suspended_account_refuses_opens_and_closes_301(make_book):
    book = make_book(account={"status": "SUSPENDED", **HELD})
    book.reject(R.ACCOUNT_SUSPENDED)
    book.reject(R.ACCOUNT_SUSPENDED, **CLOSE)


def test_close_only_account_refuses_opens_and_passes_closes_302(make_book):
    book = make_book(account={"status": "CLOSE_ONLY", **HELD})
    book.reject(R.ACCOUNT_CLOSE_ONLY)
    book.reject(R.ACCOUNT_CLOSE_ONLY, side=Side.SELL)
    book.accept(**CLOSE)
    book.accept(side=Side.SELL, offset=Offset.CLOSE_YESTERDAY, price=3201.0)


def test_status_changes_take_effect_on_the_next_order(make_book):
    book = make_book(account=HELD)
    book.accept()
    book.eng.set_status("A1", AccountStatus.CLOSE_ONLY)
    book.reject(R.ACCOUNT_CLOSE_ONLY, price=3199.0)
    book.eng.set_status("A1", AccountStatus.SUSPENDED)
    book.reject(R.ACCOUNT_SUSPENDED, **CLOSE)
    book.eng.set_status("A1", AccountStatus.ACTIVE)
    book.accept(price=3198.0)


def test_triggers_map_to_the_status_that_stops_the_account():
    assert TRIGGER_STATUS[R.LOSS_LIMIT] == AccountStatus.CLOSE_ONLY
    for code in (R.REPEATED_ORDERS, R.REPEATED_EXECUTIONS, R.PROGRAMMATIC_UNREGISTERED):
        assert TRIGGER_STATUS[code] == AccountStatus.SUSPENDED


# ---------------------------------------------------------------- 303
@pytest.mark.parametrize("registration", ["NONE", "REPORTED"])
def test_automated_session_needs_a_confirmed_registration_303(make_book, registration):
    book = make_book(account={"programmatic": registration})
    book.eng.register_session(5, automated=True)
    book.reject(R.PROGRAMMATIC_NOT_CONFIRMED, session=5)
    book.accept(session=6)  # a manual session of the same account may trade
    book.eng.set_programmatic("A1", ProgReg.CONFIRMED)
    book.accept(session=5, price=3199.0)


def test_confirmed_account_trades_in_an_automated_session(book):
    book.eng.register_session(5, automated=True)
    book.accept(session=5)


def test_session_declared_manual_again_may_trade(make_book):
    book = make_book(account={"programmatic": "NONE"})
    book.eng.register_session(5, automated=True)
    book.reject(R.PROGRAMMATIC_NOT_CONFIRMED, session=5)
    book.eng.register_session(5, automated=False)
    book.accept(session=5)


# ---------------------------------------------------------------- 304 / 305 / 306
def test_product_allow_list_304(make_book):
    book = make_book(account={"products": ["rb", "m"]})
    book.accept()
    book.accept(symbol="m2609")
    d = book.reject(R.INSTRUMENT_NOT_PERMITTED, symbol="au2606")
    assert "au" in d.text


def test_empty_allow_list_permits_every_product(book):
    for symbol in ("rb2605", "au2606", "m2605", "IF2612"):
        book.accept(symbol=symbol, now=book.t0 + 1)


def test_account_order_types_305(make_book):
    limit_only = make_book(account={"order_types": ["LIMIT"]})
    limit_only.reject(R.ORD_TYPE_NOT_ALLOWED_ACCOUNT, symbol="m2605", **IOC_MARKET)
    limit_only.accept(symbol="m2605")
    market_only = make_book(account={"order_types": ["MARKET"]})
    market_only.reject(R.ORD_TYPE_NOT_ALLOWED_ACCOUNT, symbol="m2605")
    market_only.accept(symbol="m2605", **IOC_MARKET)


@pytest.mark.parametrize("tif", [Tif.GFD, Tif.IOC, Tif.FOK])
def test_shfe_refuses_market_orders_306(book, tif):
    d = book.reject(R.ORD_TYPE_NOT_ALLOWED_EXCHANGE, ord_type=OrdType.MARKET, tif=tif)
    assert "SHFE" in d.text


def test_market_order_must_be_ioc_or_fok_306(book):
    d = book.reject(R.ORD_TYPE_NOT_ALLOWED_EXCHANGE, symbol="m2605", ord_type=OrdType.MARKET,
                    tif=Tif.GFD)
    assert "IOC or FOK" in d.text
    book.accept(symbol="m2605", ord_type=OrdType.MARKET, tif=Tif.IOC)
    book.accept(symbol="m2605", ord_type=OrdType.MARKET, tif=Tif.FOK)


@pytest.mark.parametrize("tif", [Tif.GFD, Tif.IOC, Tif.FOK])
def test_limit_orders_take_every_tif(book, tif):
    book.accept(tif=tif)


def test_exchange_market_rule_is_configurable(make_book):
    book = make_book(exchanges={"SHFE": {"market_orders": True}, "DCE": {"market_orders": False}})
    book.accept(**IOC_MARKET)
    book.reject(R.ORD_TYPE_NOT_ALLOWED_EXCHANGE, symbol="m2605", **IOC_MARKET)


def test_account_order_type_is_checked_before_the_exchange_rule(make_book):
    book = make_book(account={"order_types": ["LIMIT"]})
    book.reject(R.ORD_TYPE_NOT_ALLOWED_ACCOUNT, **IOC_MARKET)  # SHFE, market: account first
