"""The reference's later fixes, held in both engines at their edges (the random histories reach
them only by chance): the trading week, prices and notionals exactly at a limit despite float
drift, the warnings before the OTR cap and the repeated-order and -execution stops, the HFT
warning's label, and the intraday loss limit (its daily baseline and its stop request from
market data and fills).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from diffbook import INSTRUMENTS, MS, Pair, S, config, raw_config

from checks.calendar import DAY_S, NS, ns_from_local, session_open
from checks.config import resolve
from checks.model import RiskConfig, RiskConfigFile
from checks.reasons import Reason as R
from gateway.protocol import NewOrder


def _order(symbol: str, price: float, qty: int = 1, side: int = 1, account: str = "R1",
           offset: int = 1) -> NewOrder:
    return NewOrder("f", account, symbol, side, offset, 1, 1, 1, price, qty)


# ---------------------------------------------------------------- 402 and the weekday
def test_the_trading_week_is_the_same_in_both_engines() -> None:
    """Every session edge (and a second before it) of every instrument on every day from
    Friday to Tuesday, and a 10-minute grid: same answer, and MARKET_CLOSED exactly when
    ``checks.calendar.session_open`` says closed."""
    p = Pair(config("enforce"))
    friday = ns_from_local(2026, 3, 13)
    times = set(range(friday, friday + 5 * DAY_S * NS, 600 * NS))
    for spec in INSTRUMENTS:
        for pair in spec["sessions"]:
            for hhmm in pair:
                hh, mm = map(int, hhmm.split(":"))
                for day in range(5):
                    edge = friday + (day * DAY_S + hh * 3600 + mm * 60) * NS
                    times |= {edge - NS, edge, edge + NS - 1}
    sessions = p.ref.cfg.session_seconds
    for now in sorted(times):
        for spec in INSTRUMENTS:
            symbol = spec["symbol"]
            qty = 2 if symbol == "m2609" else 1
            d = p.call("decide", _order(symbol, spec["reference_price"], qty), now)
            assert (d.reason == R.MARKET_CLOSED) == (not session_open(now, sessions[symbol]))
            if d.accepted:
                p.call("apply_reject", d.ref, now)
    p.check()


# ---------------------------------------------------------------- 503 collar and 602 notional
def _r1_limits(p: Pair, **changes: object) -> None:
    a = p.ref.acct_ids["R1"]
    p.call("set_limits", "R1", msgspec.structs.replace(p.ref.cfg.accounts[a].limits, **changes))


COLLARS = [("au2606", 0.03, None), ("au2606", None, 10), ("IF2612", None, 7),
           ("IF2612", 0.013, None), ("m2605", 0.017, None), ("rb2605", 0.01, None)]


def _collared(symbol: str, pct: float | None, ticks: int | None) -> RiskConfig:
    raw = raw_config("ignore")
    spec = next(i for i in raw["instruments"] if i["symbol"] == symbol)
    spec["collar_pct"], spec["collar_ticks"] = pct, ticks
    return resolve(msgspec.convert(raw, RiskConfigFile), "<collar>")


@pytest.mark.parametrize(("symbol", "pct", "ticks"), COLLARS, ids=str)
def test_collar_edges_with_fractional_ticks_are_the_same_in_both_engines(
        symbol: str, pct: float | None, ticks: int | None) -> None:
    """Reference prices moved tick by tick; orders from two ticks inside to two ticks past each
    collar edge: the edge itself is inside, one tick past is outside, in both engines — also
    where float arithmetic puts the edge a hair outside (counted in ``drifted``)."""
    p = Pair(_collared(symbol, pct, ticks))
    _r1_limits(p, max_open_orders=None, max_messages_per_product=None, max_otr=None,
               max_repeats=None)
    now = ns_from_local(2026, 3, 10, 10, 0)
    spec = next(i for i in INSTRUMENTS if i["symbol"] == symbol)
    tick = Decimal(str(spec["tick"]))
    qty = 2 if symbol == "m2609" else 1
    drifted = 0
    for ref_steps in range(-6, 7):
        n = round(Decimal(str(spec["reference_price"])) / tick) + ref_steps
        ref_px = float(n * tick)  # (as a client would write it: the nearest double)
        p.call("market_data", symbol, ref_px, ref_px * 1.5, ref_px * 0.5, now)
        width = n * tick * Decimal(str(pct)) if pct else ticks * tick
        edge = int(width // tick)  # the farthest whole tick inside, in exact arithmetic
        float_width = ref_px * pct if pct else ticks * spec["tick"]
        for k in range(edge - 2, edge + 3):
            for side, sign in ((1, 1), (2, -1)):
                now += 200 * MS  # under every per-second limit
                price = float((n + sign * k) * tick)
                drifted += k == edge and abs(price - ref_px) > float_width
                d = p.call("decide", _order(symbol, price, qty, side), now)
                assert (d.reason == R.PRICE_OUTSIDE_COLLAR) == (k > edge), (price, ref_px, d)
                if d.accepted:
                    p.call("apply_reject", d.ref, now)
    assert drifted or symbol in ("m2605", "rb2605") or pct == 0.013
    p.check()


def test_notional_at_the_maximum_in_whole_fen_is_the_same_in_both_engines() -> None:
    """Orders whose notional is exactly the maximum (float products drift above it) pass, one
    fen less of maximum refuses them, in both engines."""
    p = Pair(config("ignore"))
    now = ns_from_local(2026, 3, 10, 10, 0)
    p.call("market_data", "au2606", 690.0, 700.0, 600.0, now)
    cases = [("au2606", 691.2, 3), ("au2606", 689.98, 7), ("IF2612", 3500.2, 3),
             ("IF2612", 3499.8, 5), ("m2605", 2901.0, 9), ("rb2605", 3199.0, 11)]
    for symbol, price, qty in cases:
        mult = next(s["multiplier"] for s in INSTRUMENTS if s["symbol"] == symbol)
        exact = Decimal(str(price)) * qty * Decimal(str(mult))
        for cap, accepted in ((exact, True), (exact - Decimal("0.01"), False)):
            _r1_limits(p, max_notional=float(cap), max_order_qty=None)
            now += S
            d = p.call("decide", _order(symbol, price, qty), now)
            assert (d.reason != R.NOTIONAL_ABOVE_MAX) == accepted, (symbol, price, qty, cap, d)
            if d.accepted:
                p.call("apply_reject", d.ref, now)
    p.check()


# ---------------------------------------------------------------- 1301 before 802 / 803 / 804
@pytest.mark.parametrize(("account", "label"), [
    ("A1", "HFT_UNREGISTERED"), ("U1", "HFT_UNREGISTERED"), ("R1", "HFT_UNREGISTERED"),
    ("D1", "HFT_DIRECT_ACCESS"), ("A2", "HFT_LIMIT")])
def test_daily_hft_warning_is_labelled_by_what_the_account_is(account: str, label: str) -> None:
    """Order and cancel once a second until the daily count refuses: the warning at the
    fraction names the refusal that follows (802 unregistered, 803 direct access, 804 a
    registered HFT's own maximum), in both engines."""
    p = Pair(config("ignore"))
    a = p.ref.acct_ids[account]
    p.call("set_limits", account, msgspec.structs.replace(
        p.ref.cfg.accounts[a].limits, max_messages_per_product=None, max_otr=None,
        max_repeats=None, max_orders_per_sec=None, max_cancels_per_sec=None,
        max_open_orders=None, programmatic_per_sec=3))
    now = ns_from_local(2026, 3, 10, 9, 0)
    warned: list[str] = []
    for k in range(200):
        now += 1100 * MS  # two messages a second: under every per-second standard
        d = p.call("decide", _order("m2609", 3000.0 - k % 5, 2, account=account), now)
        answers = [d]
        if d.accepted:
            answers.append(p.call("cancel_request", d.ref, now))
            p.call("apply_canceled", d.ref, now)
        warned += [x.text for y in answers for x in y.alerts or ()
                   if "orders+cancels today" in x.text]
        if not d.accepted:
            break
    assert d.reason == R[label], d
    assert len(warned) == 1 and warned[0].startswith(f"{label}: "), warned
    p.check()


# ---------------------------------------------------------------- 1002 / 1305: the intraday loss
def test_loss_baseline_and_stop_requests_are_the_same_in_both_engines() -> None:
    """R1 (loss limit 500) trades and is marked over three trading days: the baseline saved
    at each roll, today's warning, the stop requested by market data and by a fill, once a
    day — answer for answer and snapshot for snapshot."""
    p = Pair(config("ignore"))
    now = ns_from_local(2026, 3, 10, 10, 0)
    d = p.call("decide", _order("rb2605", 3200.0, 4), now)
    p.fill(d.ref, 4, 3200.0, now, False)
    answers = []
    for day, marks in enumerate([(3195.0, 3190.0, 3188.0, 3200.0, 3186.0),  # -400 .. -560
                                 (3180.0, 3176.0, 3172.0),  # a new day: counts from -560
                                 (3175.0, 3190.0)]):
        now = ns_from_local(2026, 3, 10 + day, 10, 0)
        for px in marks:
            now += S
            answers.append(p.call("market_data", "rb2605", px, 3300.0, 3100.0, now))
            p.check()
        d = p.call("decide", _order("rb2605", marks[-1], 1), now)
        answers.append(d)
        if d.accepted:
            p.call("apply_reject", d.ref, now)
        p.check()
    pnl_base = p.ref.snapshot()["accounts"]["R1"][-2]
    assert pnl_base == p.c.snapshot()["accounts"]["R1"][-2] != 0
    assert [a.reason for a in answers if hasattr(a, "reason")] == [
        R.LOSS_LIMIT, R.LOSS_LIMIT, R.ACCEPTED]  # Thursday's P&L counts from Wednesday's
    triggered = [a.triggers for a in answers if getattr(a, "triggers", None)]
    assert triggered == [[("R1", R.LOSS_LIMIT)], [("R1", R.LOSS_LIMIT)]]  # Tuesday, Wednesday
    # a closing fill that realises today's loss: the stop comes from the fill
    now = ns_from_local(2026, 3, 13, 10, 0)
    p.call("market_data", "rb2605", 3200.0, 3300.0, 3100.0, now)
    d = p.call("decide", _order("rb2605", 3170.0, 4, side=2, offset=2), now)
    assert d.accepted, d
    out = p.fill(d.ref, 4, 3170.0, now + S, False)
    assert out.trigger == R.LOSS_LIMIT
    p.check()
