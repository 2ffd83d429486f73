"""Rule corrections of issue 10, held in both engines at their edges (the random histories reach
them only by chance): the daily count limits restrict opening only (703-705, 707, 708), the price
band is compared on whole ticks and the collar can be off (501-503), and the position limit
counts an account group's combined position (902), repeated orders are counted within the
window however other orders interleave (710).
"""

from __future__ import annotations

import msgspec
import pytest
from diffbook import INSTRUMENTS, MS, T0, Pair, config, raw_config

from checks.config import resolve
from checks.model import RiskConfigFile
from checks.reasons import Reason as R
from checks.state import REPEAT_KEYS
from gateway.protocol import NewOrder


def _order(symbol: str, price: float, qty: int = 1, side: int = 1, account: str = "A1",
           offset: int = 1) -> NewOrder:
    return NewOrder("f", account, symbol, side, offset, 1, 1, 1, price, qty)


def _limits(p: Pair, account: str, **changes: object) -> None:
    a = p.ref.acct_ids[account]
    p.call("set_limits", account, msgspec.structs.replace(p.ref.cfg.accounts[a].limits, **changes))


def _cancel(p: Pair, d, now: int) -> None:  # noqa: ANN001
    assert d.accepted, d.text
    p.call("cancel_request", d.ref, now)
    p.call("apply_canceled", d.ref, now)


# ---------------------------------------------------------------- 703-705, 707, 708: openings only
@pytest.mark.parametrize("limit", ["cancels", "large", "messages", "otr", "self_trades"])
def test_count_limits_refuse_openings_and_pass_closes_in_both_engines(limit: str) -> None:
    """A1 holds 8 long rb2605 from yesterday. Each daily count is driven to its limit; then an
    opening is refused with the count's reason and a closing SELL passes, in both engines."""
    p = Pair(config("ignore"))
    _limits(p, "A1", max_orders_per_sec=None, max_cancels_per_sec=None, max_repeats=None,
            max_open_orders=None, max_messages_per_product=None, max_otr=None)
    now = T0
    if limit == "cancels":  # rb2605: 8 cancels a day
        for k in range(8):
            now += 200 * MS
            _cancel(p, p.call("decide", _order("rb2605", 3200.0 - k), now), now)
        want, open_qty, close_qty = R.CONTRACT_CANCEL_LIMIT, 1, 3
    elif limit == "large":  # large = 6 lots, 2 large cancels a day on SHFE
        for k in range(2):
            now += 200 * MS
            _cancel(p, p.call("decide", _order("rb2605", 3200.0 - k, qty=6), now), now)
        want, open_qty, close_qty = R.LARGE_CANCEL_LIMIT, 6, 6
    elif limit == "messages":
        _limits(p, "A1", max_messages_per_product=4)
        for k in range(2):
            now += 200 * MS
            d = p.call("decide", _order("rb2605", 3200.0 - k), now)
            p.call("cancel_request", d.ref, now)
        want, open_qty, close_qty = R.MESSAGE_LIMIT, 1, 2
    elif limit == "otr":
        _limits(p, "A1", max_otr=1.0, otr_min_messages=1)
        now += 10 * MS
        d = p.call("decide", _order("rb2605", 3200.0), now)
        p.call("cancel_request", d.ref, now)
        want, open_qty, close_qty = R.OTR_LIMIT, 1, 2
    else:  # SHFE: 2 self-trades a day
        for k in range(2):
            now += 200 * MS
            d = p.call("decide", _order("rb2605", 3200.0 - k), now)
            p.fill(d.ref, 1, 3200.0 - k, now, True)
        want, open_qty, close_qty = R.SELF_TRADE_LIMIT, 1, 3
    p.check()
    now += 10 * MS
    for side in (1, 2):
        d = p.call("decide", _order("rb2605", 3195.0 if side == 1 else 3205.0, open_qty, side),
                   now)
        assert d.reason == want, d.text
    d = p.call("decide", _order("rb2605", 3205.0, close_qty, side=2, offset=2), now)
    assert d.accepted, d.text
    p.check()


# ---------------------------------------------------------------- 501/502 on ticks, collar off
@pytest.mark.parametrize("pct", [0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.15])
def test_the_band_is_compared_on_ticks_in_both_engines(pct: float) -> None:
    """Band limits computed as reference x (1 +/- pct), a hair off the tick grid; orders at the
    float-computed limit, on the grid at it, and a tick either side: same answers, and the limit
    price itself is never refused 501/502."""
    p = Pair(config("ignore"))
    now = T0
    for spec in INSTRUMENTS:
        symbol, tick, ref_px = spec["symbol"], spec["tick"], spec["reference_price"]
        for last in (ref_px, ref_px + 7 * tick, ref_px - 3 * tick):
            upper, lower = last * (1 + pct), last * (1 - pct)
            p.call("market_data", symbol, last, upper, lower, now)
            qty = 2 if symbol == "m2609" else 1
            for side, edge in ((1, upper), (2, lower)):
                grid = round(edge / tick) * tick
                for price in (edge, grid, grid - tick, grid + tick, round(grid + tick, 6)):
                    now += 300 * MS
                    d = p.call("decide", _order(symbol, price, qty, side, "R1"), now)
                    if abs(price - edge) <= tick * 1e-6:
                        assert d.reason not in (R.PRICE_ABOVE_UPPER_LIMIT,
                                                R.PRICE_BELOW_LOWER_LIMIT), (symbol, price)
                    if d.accepted:
                        p.call("apply_reject", d.ref, now)
    p.check()


def test_an_order_at_the_limit_on_a_limit_up_day_passes_with_the_collar_off() -> None:
    """m2609 has its collar switched off (collar_pct = 0), m2605 a 2 % collar: at the upper
    limit 3.3 % above the reference, the first passes and the second is refused 503."""
    p = Pair(config("ignore"))
    d = p.call("decide", _order("m2609", 3100.0, 2, account="R1"), T0)
    assert d.accepted, d.text
    d = p.call("decide", _order("m2605", 3000.0, 2, account="R1"), T0 + MS)
    assert d.reason == R.PRICE_OUTSIDE_COLLAR, d.text
    p.check()


# ---------------------------------------------------------------- 902 across an account group
def _group_pair() -> Pair:
    """The diffbook config with G1 (A2, A3) free to open: A3 active, no group opening volume."""
    raw = raw_config("ignore")
    raw["groups"] = [{"name": "G1"}]
    for acc in raw["accounts"]:
        if acc["id"] == "A3":
            acc["status"] = "ACTIVE"
    p = Pair(resolve(msgspec.convert(raw, RiskConfigFile), "<group>"))
    for account in ("A2", "A3"):
        _limits(p, account, max_orders_per_sec=None, max_repeats=None, max_order_qty=None,
                max_notional=None)
    return p


def test_position_limit_counts_the_groups_combined_position_in_both_engines() -> None:
    """rb2605: limit 30. A3 holds 3 long from yesterday; A2 (same group) opens 27 long in
    orders of up to 20 lots (filled and pending); then neither may open one more long, while
    the short side and A1 (another group) are unaffected; a close by A3 makes room."""
    p = _group_pair()
    now = T0
    d = p.call("decide", _order("rb2605", 3200.0, 20, account="A2"), now)
    assert d.accepted, d.text
    p.fill(d.ref, 20, 3200.0, now, False)
    now += 300 * MS
    d = p.call("decide", _order("rb2605", 3199.0, 7, account="A2"), now)  # pending: 3 + 20 + 7
    assert d.accepted, d.text
    for account in ("A2", "A3"):
        now += 300 * MS
        d = p.call("decide", _order("rb2605", 3198.0, 1, account=account), now)
        assert d.reason == R.POSITION_LIMIT, d.text
    now += 300 * MS
    d = p.call("decide", _order("rb2605", 3198.0, 1, account="A1"), now)
    assert d.accepted, d.text
    now += 300 * MS
    d = p.call("decide", _order("rb2605", 3201.0, 2, side=2, account="A3", offset=2), now)
    assert d.accepted, d.text
    p.fill(d.ref, 2, 3201.0, now, False)
    now += 300 * MS
    d = p.call("decide", _order("rb2605", 3198.0, 2, account="A2"), now)
    assert d.accepted, d.text
    now += 300 * MS
    d = p.call("decide", _order("rb2605", 3197.0, 1, account="A3"), now)
    assert d.reason == R.POSITION_LIMIT, d.text
    p.check()


# ---------------------------------------------------------------- 710 within the window
@pytest.mark.parametrize("keys", [2, 3, REPEAT_KEYS, REPEAT_KEYS + 1, REPEAT_KEYS + 3])
def test_repeats_interleaved_with_other_orders_in_both_engines(keys: int) -> None:
    """Orders cycling through ``keys`` distinct keys (prices), 100 ms apart (under the HFT
    standard), with a limit of 3 in 1 s then 3 in 5 s: same answers and the same repeat table in both engines, the
    interleaved repeats caught while the keys fit the table, and slots given up as they expire
    or are least recently used."""
    p = Pair(config("ignore"))
    now = T0
    caught = 0
    for window in (1000, 5000):
        _limits(p, "R1", max_repeats=3, repeat_window_ms=window, max_messages_per_product=None)
        for n in range(6 * keys):
            now += 100 * MS
            d = p.call("decide", _order("rb2605", 3200.0 - n % keys, account="R1"), now)
            if d.reason == R.REPEATED_ORDERS:
                caught += 1
                p.call("set_status", "R1", 1)  # (the gateway suspends; put it back to go on)
            elif d.accepted:
                p.call("apply_reject", d.ref, now)
            p.check()
    if keys <= REPEAT_KEYS:
        assert caught
