"""Bad input through both engines: never an exception out of ``decide``, always the same answer.

An order's fields come from a client: the wire codec guarantees the message shape, not the
values, and the engines accept "anything with NewOrder's fields". Every field here is replaced
by every kind of wrong value — None, bools, ints beyond int64, NaN and infinities, -0.0, the
smallest subnormal, strings, bytes, containers, Decimals, enum members and subclasses of int,
float and str — and both engines must return the same ``Decision`` (reason, text, trigger),
without raising, and leave the book untouched. A hypothesis test then mixes good and bad
values across all fields at once, so the checks further down the pipeline see bad values too.

The events that come back from the exchange (fills, cancels, market data) and the admin calls
are not client input, but they must fail alike in both engines: same answer, or the same
exception type.
"""

from __future__ import annotations

import math
import types
from decimal import Decimal
from enum import IntEnum
from fractions import Fraction

import msgspec
import pytest
from diffbook import SYMBOLS, T0, Pair, config, outcome_of, wire_call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.enums import KillScope, Side
from gateway.protocol import NewOrder


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyStr(str):
    pass


class Colour(IntEnum):
    RED = 1
    BLUE = 2


WRONG = [
    None, True, False, 0, -1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), math.nan,
    -math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.5, 2.0, 1e300, 1.7976931348623157e308,
    "", "1", "rb2605", b"A1", [1], (1,), {}, object(), Decimal("1"), Decimal("NaN"),
    Fraction(1, 1), Colour.RED, Side.SELL, MyInt(1), MyInt(2**70), MyFloat(3200.0), MyStr("A1"),
    MyStr("rb2605"),
]
GOOD = {"account": "A1", "symbol": "rb2605", "side": 1, "offset": 1, "hedge": 1, "ord_type": 1,
        "tif": 1, "price": 3200.0, "qty": 1}
FIELDS = list(GOOD)


def _order(**fields: object) -> NewOrder:
    values = dict(GOOD, **fields)
    return NewOrder("c1", values["account"], values["symbol"], values["side"], values["offset"],
                    values["hedge"], values["ord_type"], values["tif"], values["price"],
                    values["qty"])


@pytest.fixture(scope="module")
def pair() -> Pair:
    p = Pair(config("ignore"))
    p.call("cancel_request", -1, T0)  # roll the trading day in, so a rejection changes nothing
    return p


def _same_decision(pair: Pair, order: object, session: object = 0) -> object:
    before = pair.ref.snapshot()
    want = outcome_of(pair.ref.decide, order, T0, session)
    got = outcome_of(pair.c.decide, order, T0, session)
    assert got == want, f"{order}: cext {got} != reference {want}"
    got = wire_call(pair.wire, "decide", (order, T0, session), {})  # (the wire's types only)
    assert got == want, f"{order}: cext wire entry {got} != reference {want}"
    assert want[0] == "ok", f"the reference raised {want[1]} on {order}"
    if not want[1].accepted:
        assert pair.ref.snapshot() == before == pair.c.snapshot() == pair.wire.snapshot()
    else:  # release it again, so the next case starts from the same book
        pair.call("apply_reject", want[1].ref, T0)
    return want[1]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_every_field_with_every_wrong_value(pair: Pair, field: str, value: object) -> None:
    _same_decision(pair, _order(**{field: value}))


@pytest.mark.parametrize("qty", [1, 2.0, 12, 12.0, 13, 21, 2**62 - 1, 2**62, 2.0**62,
                                 2.0**62 - 1024, 2**63 - 1, 2**63, -(2**63), -(2**62)], ids=repr)
def test_quantities_at_the_int64_edges(pair: Pair, qty: object) -> None:
    _same_decision(pair, _order(qty=qty))


@pytest.mark.parametrize("price", [3200, 2**53 - 1, 2**53, -(2**53) + 1, 3200.0000000001,
                                   3199.9999999999, 3200.5, 1e-300, 3.3e3, 1.7e308, 1e20],
                         ids=repr)
@pytest.mark.parametrize("symbol", ["rb2605", "au2606", "IF2612"])
def test_prices_near_ticks_and_beyond_float_range(pair: Pair, price: object, symbol: str) -> None:
    _same_decision(pair, _order(symbol=symbol, price=price))


def test_market_orders_with_any_price(pair: Pair) -> None:
    for price in [0.0, -0.0, 1e308, math.nan, None, 3200]:
        for tif in (1, 2, 3):
            _same_decision(pair, _order(symbol="m2605", ord_type=2, tif=tif, price=price))


def test_orders_that_are_not_new_orders(pair: Pair) -> None:
    """Anything with the fields is an order; without one, both engines fail alike."""
    _same_decision(pair, types.SimpleNamespace(**GOOD))
    for missing in FIELDS:
        fields = {k: v for k, v in GOOD.items() if k != missing}
        order = types.SimpleNamespace(**fields)
        assert outcome_of(pair.c.decide, order, T0) == outcome_of(pair.ref.decide, order, T0)


@pytest.mark.parametrize("session", [0, 1, -1, 2**70, "s", None, 1.0, True, (1,)], ids=repr)
def test_sessions_of_any_kind(pair: Pair, session: object) -> None:
    pair.call("register_session", 1, True)
    _same_decision(pair, _order(account="U1"), session)
    pair.call("kill", KillScope.SESSION, 1)
    _same_decision(pair, _order(), session)
    pair.call("reset", KillScope.SESSION, 1)
    pair.call("register_session", 1, False)


def test_unhashable_session_fails_alike(pair: Pair) -> None:
    pair.call("register_session", 1, True)
    try:
        assert outcome_of(pair.c.decide, _order(), T0, [1]) == \
            outcome_of(pair.ref.decide, _order(), T0, [1])
    finally:
        pair.call("register_session", 1, False)


BAD_REFS = [None, -1, 2**70, -(2**70), 1.5, math.nan, math.inf, "0", b"0", Decimal(0),
            Fraction(0), True, MyInt(0), MyFloat(0.0), [0], object()]


@pytest.mark.parametrize("ref", BAD_REFS, ids=repr)
def test_exchange_events_with_bad_references(ref: object) -> None:
    p = Pair(config("ignore"))
    d = p.call("decide", _order(), T0)
    assert d.accepted and d.ref == 0  # so 0, 0.0, False, Decimal(0) ... name a live order
    for name, args in [("order_view", ()), ("apply_ack", (T0,)), ("cancel_request", (T0,)),
                       ("fill", (1, 3200.0, T0, False)), ("apply_canceled", (T0,)),
                       ("apply_reject", (T0,))]:
        if name == "fill":
            p.fill(ref, *args)
        else:
            p.call(name, ref, *args)
        p.check()


@pytest.mark.parametrize("qty", [0, -1, 2, 1.0, True, 2**70, None, "1"], ids=repr)
@pytest.mark.parametrize("px", [math.nan, math.inf, 0.0, -1.0, 1e9, 1e9 + 1, 1e300, 3200, None,
                                "3200", Decimal("3200")], ids=repr)
def test_fills_with_bad_quantities_and_prices(qty: object, px: object) -> None:
    p = Pair(config("ignore"))
    d = p.call("decide", _order(), T0)
    p.fill(d.ref, qty, px, T0 + 1, False)
    p.check()


@pytest.mark.parametrize("args", [
    ("rb2605", math.nan, 3300.0, 3100.0), ("rb2605", 3150.0, math.nan, 3100.0),
    ("rb2605", 3150.0, 3300.0, math.inf), ("rb2605", 3150.0, 3100.0, 3300.0),
    ("rb2605", 3150.0, 2e9, 1.0), ("rb2605", 1e300, 3300.0, 3100.0), ("rb2605", 0.0, 0.0, 0.0),
    ("rb2605", None, 3300.0, 3100.0), ("rb2605", 3150.0, math.nan, None),
    ("rb2605", 3150.0, None, 3100.0), ("rb2605", 3150, 3300, 3100), ("nope", 1.0, 2.0, 1.0),
    (None, 1.0, 2.0, 1.0), (["rb2605"], 1.0, 2.0, 1.0),
], ids=repr)
def test_market_data_with_bad_values(args: tuple) -> None:
    p = Pair(config("ignore"))
    p.call("market_data", *args, T0)
    p.check()


@pytest.mark.parametrize(("scope", "key"), [
    (KillScope.ACCOUNT, "ZZ"), (KillScope.GROUP, "nope"), (KillScope.INSTRUMENT, "nope"),
    (KillScope.PRODUCT, "nope"), (KillScope.SESSION, "x"), (KillScope.SESSION, None),
    (7, "A1"), (0, ""), (KillScope.FIRM, "ignored"), (2.0, "A1"), (KillScope.SESSION, 2**70),
], ids=repr)
def test_admin_calls_with_bad_keys_fail_alike(scope: object, key: object) -> None:
    p = Pair(config("ignore"))
    for name, args in [("kill", (scope, key)), ("open_orders", (scope, key)),
                       ("reset", (scope, key)), ("killed", ())]:
        p.call(name, *args)
        p.check()
    for name, args in [("set_status", (key, 2)), ("set_status", ("A1", 9)),
                       ("set_programmatic", (key, 2)), ("set_programmatic", ("A1", -1)),
                       ("account_view", (key,))]:
        p.call(name, *args)


ANY = st.one_of(
    st.sampled_from(WRONG), st.none(), st.booleans(), st.integers(), st.floats(),
    st.text(max_size=3), st.binary(max_size=2), st.decimals(allow_nan=True),
)


def _field(good: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(good, good, good, ANY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    account=_field(st.sampled_from(["A1", "A2", "D1", "R1"])),
    symbol=_field(st.sampled_from(SYMBOLS)),
    side=_field(st.sampled_from([1, 2])),
    offset=_field(st.sampled_from([1, 2, 3, 4])),
    hedge=_field(st.sampled_from([1, 2, 3])),
    ord_type=_field(st.sampled_from([1, 2])),
    tif=_field(st.sampled_from([1, 2, 3])),
    price=_field(st.integers(2800, 3600).map(float) | st.sampled_from([640.02, 3500.2])),
    qty=_field(st.integers(1, 12)),
)
def test_any_mix_of_good_and_bad_fields(pair: Pair, **fields: object) -> None:
    _same_decision(pair, _order(**fields))


class ReorderedOrder(msgspec.Struct):
    """The same fields as NewOrder in another order: other slot offsets."""

    qty: object
    price: object
    tif: object
    ord_type: object
    hedge: object
    offset: object
    side: object
    symbol: object
    account: object


class PartialOrder(msgspec.Struct):
    account: object
    symbol: object


def test_struct_types_with_other_layouts(pair: Pair) -> None:
    """Order fields are read from member slots: the offsets must follow the order's type."""
    for k in range(6):
        values = dict(GOOD, price=3200.0 - k, qty=1 + k % 3)
        new_order = _order(**values)
        reordered = ReorderedOrder(**values)
        first, second = _same_decision(pair, new_order), _same_decision(pair, reordered)
        assert (first.reason, first.text) == (second.reason, second.text)
    for values in ({"account": "A1", "symbol": "zz"}, {"account": "A1", "symbol": "rb2605"}):
        order = PartialOrder(**values)
        assert outcome_of(pair.c.decide, order, T0) == outcome_of(pair.ref.decide, order, T0)


def test_malformed_limits_fail_alike() -> None:
    """set_limits with an object lacking fields raises half-way in both, leaving the same."""
    p = Pair(config("ignore"))
    partial = types.SimpleNamespace(max_order_qty=3, max_notional=None, max_orders_per_sec=1)
    p.call("set_limits", "A1", partial)
    p.check()
    p.call("decide", _order(qty=5), T0)
    p.call("decide", _order(qty=2), T0)
    p.call("decide", _order(qty=2, price=3199.0), T0)
    p.check()


def test_an_unset_field_raises_where_the_reference_reads_it(pair: Pair) -> None:
    """A Struct with a field deleted: the reference refuses an unknown account before it
    reads the symbol, so the slot fast path must not read ahead and raise."""
    order = _order(account="ZZ")
    try:
        del order.symbol
    except AttributeError:
        pytest.skip("this msgspec does not let a field be deleted")
    assert outcome_of(pair.c.decide, order, T0) == outcome_of(pair.ref.decide, order, T0)
    order = _order()
    del order.qty
    assert outcome_of(pair.c.decide, order, T0) == outcome_of(pair.ref.decide, order, T0)
