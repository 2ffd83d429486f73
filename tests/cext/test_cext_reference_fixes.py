"""The reference's later fixes, held in both engines at their edges (the random histories reach
them only by chance): the trading week, prices and notionals exactly at a limit despite float
drift, the warnings before the OTR cap and the repeated-order and -execution stops, the HFT
warning's label, and the intraday loss limit (its daily baseline and its stop request from
market data and fills).
"""

from __future__ import annotations

from diffbook import INSTRUMENTS, Pair, config

from checks.calendar import DAY_S, NS, ns_from_local, session_open
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
