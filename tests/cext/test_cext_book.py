"""The C book's own machinery, pushed past what the random histories reach, against the reference.

- the order pool grows past its first allocation, reuses slots last-freed-first and bumps their
  generation, exactly as the reference numbers its references;
- the rolling-window rings grow on demand and shrink (newest kept) when limits change;
- the public API is the reference's, method for method;
- the reference fixes made alongside the Cython engine hold in both engines: a limit of 0
  allows nothing, the opening volume carried across the trading day never goes negative, an
  absurd limit price is "not on tick" instead of an exception, absurd fill/market prices are
  refused.
"""

from __future__ import annotations

import random

import msgspec
from diffbook import ACCOUNT_IDS, MS, T0, Pair, S, config, next_local

from cext.engine import Engine as CEngine
from checks.engine import Engine as RefEngine
from checks.enums import Hedge, KillScope
from checks.model import Limits
from checks.reasons import Reason as R
from gateway.protocol import NewOrder


def _order(price: float, qty: int = 1, side: int = 1, account: str = "R1",
           symbol: str = "rb2605", offset: int = 1, hedge: int = 1) -> NewOrder:
    return NewOrder("c", account, symbol, side, offset, hedge, 1, 1, price, qty)


def test_public_api_is_the_references() -> None:
    ref_api = {n for n in vars(RefEngine) if not n.startswith("_")}
    c_api = {n for n in dir(CEngine) if not n.startswith("_")}
    assert ref_api <= c_api
    c = CEngine(config())
    assert c.day == -1 and c.cfg is not None


def test_pool_growth_lifo_reuse_and_generations() -> None:
    p = Pair(config("ignore"))
    p.call("set_limits", "R1", msgspec.convert({"max_open_orders": None, "max_repeats": None,
                                                "max_messages_per_product": None,
                                                "max_order_qty": None}, Limits))
    rng = random.Random(7)
    now = T0
    live: list[int] = []
    for _round in range(3):
        for k in range(70):  # under the DCE HFT standard: 8/s, 250/day
            now += 150 * MS
            symbol = ("rb2605", "m2605", "m2609")[k % 3]  # under each position limit
            ref_px = {"rb2605": 3200.0, "m2605": 2900.0, "m2609": 3000.0}[symbol]
            side = 1 + (k // 3) % 2
            price = ref_px - 1 - k % 20 if side == 1 else ref_px + 1 + k % 20  # never crossing
            qty = 2 if symbol == "m2609" else 1  # (its minimum)
            d = p.call("decide", _order(price, qty=qty, side=side, symbol=symbol), now)
            assert d.accepted, d
            if d.accepted:
                live.append(d.ref)
        rng.shuffle(live)
        for ref in live[: len(live) * 2 // 3]:  # finish in random order: a scrambled free list
            p.call(rng.choice(["apply_canceled", "apply_reject"]), ref, now)
        del live[: len(live) * 2 // 3]
        p.check()
    assert max(p.ref.slot_gen) > 0 and len(p.ref.slot_gen) > 64
    assert p.call("open_orders", KillScope.ACCOUNT, "R1") == sorted(live)


def test_rings_grow_and_shrink_with_the_limits() -> None:
    p = Pair(config("ignore"))
    loose = msgspec.convert({"max_orders_per_sec": 300, "max_cancels_per_sec": 300,
                             "max_repeats": 200, "max_executions": 100, "max_open_orders": None,
                             "max_order_qty": None, "max_messages_per_product": None,
                             "max_otr": None}, Limits)
    p.call("set_limits", "A1", loose)
    now = T0
    for k in range(120):
        now += MS
        price = 3150.0 + (k % 40) if k % 2 else 3250.0 - (k % 40)  # sells high, buys low
        d = p.call("decide", _order(price, account="A1", side=1 + k % 2), now)
        if d.accepted:
            p.call("cancel_request", d.ref, now)
            p.fill(d.ref, 1, price, now, False)
    p.check()
    tight = msgspec.convert({"max_orders_per_sec": 5, "max_cancels_per_sec": 3, "max_repeats": 2,
                             "max_executions": 4}, Limits)
    p.call("set_limits", "A1", tight)  # the newest timestamps stay, the rest go
    p.check()
    for _ in range(10):
        now += 50 * MS
        p.call("decide", _order(3190.0, account="A1"), now)
        p.check()
    p.call("set_limits", "A1", loose)
    p.check()


def test_a_limit_of_zero_allows_nothing() -> None:
    p = Pair(config("ignore"))
    zero = msgspec.convert({"max_orders_per_sec": 0}, Limits)
    p.call("set_limits", "A1", zero)
    d = p.call("decide", _order(3200.0, account="A1"), T0)
    assert d.reason == R.ORDER_RATE
    p.call("set_limits", "A1", msgspec.convert({"max_repeats": 0}, Limits))
    assert p.call("decide", _order(3200.0, account="A1"), T0).accepted
    d = p.call("decide", _order(3200.0, account="A1"), T0 + 5 * S)
    assert d.reason == R.REPEATED_ORDERS  # 0 repeats: the same order twice is refused
    p.check()


def test_opening_volume_carried_across_the_day_never_goes_negative() -> None:
    p = Pair(config("ignore"))
    now = T0
    refs = [p.call("decide", _order(3190.0 - k, qty=3, account="A2"), now + k).ref
            for k in range(4)]
    hedged = p.call("decide", _order(3180.0, qty=2, account="A2", hedge=Hedge.HEDGE), now + 9)
    assert hedged.accepted
    p.fill(refs[0], 1, 3190.0, now + 10, False)
    now = next_local(now, 17 * 3600) + MS  # the next trading day
    p.call("cancel_request", -1, now)  # (rolls the day)
    g = p.ref.group_ids["G1"]
    carried = p.ref.snapshot()["groups"][(g, "rb2605")][0]
    assert carried == 2 + 3 * 3  # working openings' leaves, not the hedge
    for ref in refs + [hedged.ref]:
        p.call("apply_canceled", ref, now)
    assert (g, "rb2605") not in p.ref.snapshot()["groups"]  # back to 0, not below
    p.check()


def test_absurd_prices_are_refused_not_raised() -> None:
    p = Pair(config("ignore"))
    d = p.call("decide", _order(1.7e308, account="A1", symbol="IF2612"), T0)
    assert d.reason == R.PRICE_NOT_ON_TICK
    d = p.call("decide", _order(3200.0, account="A1"), T0)
    for px in (1e300, 1.7e308, 1e9 + 1):
        assert not p.fill(d.ref, 1, px, T0, False).known
    out = p.call("market_data", "rb2605", 1.7e308, 3300.0, 3100.0, T0)
    assert out.known and p.ref.instruments[0].ref_price == 3200.0
    p.call("market_data", "rb2605", 3210.0, 1.7e308, 1.0, T0)
    assert p.ref.instruments[0].upper == 3300.0
    p.check()


def test_market_data_marks_many_holders_in_account_order() -> None:
    """Holders are marked (and warned) in account order, as the reference's sorted() does."""
    p = Pair(config("ignore"))
    now = T0
    for account in ACCOUNT_IDS:  # every account takes a position in m2605
        d = p.call("decide", _order(2900.0, account=account, symbol="m2605", side=2), now)
        if d.accepted:
            p.fill(d.ref, 1, 2900.0, now, False)
        now += 10 * MS
    for px in (2990.0, 2810.0, 2800.0, 2999.0):
        p.call("market_data", "m2605", px, 3000.0, 2800.0, now)
        p.check()
