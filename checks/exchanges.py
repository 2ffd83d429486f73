"""Exchange rule defaults: the one home for what differs between SHFE, INE, DCE, CZCE, CFFEX, GFEX.

These numbers come from published exchange practice and change by exchange notice, so they are
*defaults*: a deployment overrides any of them per exchange in its config (``[exchanges.SHFE]``),
and the per-instrument fields of ``Instrument`` override them again per contract.
"""

from __future__ import annotations

import msgspec


class ExchangeRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # Order types: SHFE/INE accept limit orders only; the others also take market orders.
    market_orders: bool = True
    # SHFE/INE keep today's and yesterday's positions apart: CLOSE_TODAY / CLOSE_YESTERDAY draw on
    # each separately and plain CLOSE means close-yesterday. Elsewhere CLOSE closes oldest first.
    close_today_distinct: bool = False
    # A "large order" for the large-cancel count: a fixed lot size, or a fraction of the
    # instrument's maximum limit-order volume (DCE/CFFEX use 80 %).
    large_order_qty: int | None = None
    large_order_fraction: float | None = 0.8
    # Daily cancels on one contract that the exchange flags (CFFEX index futures: 400).
    cancel_limit_per_contract: int = 500
    # Daily cancels of large orders on one contract (flagged at 50-100 a day).
    large_cancel_limit: int = 50
    # Daily self-trades on one contract (flagged at >= 5).
    self_trade_limit: int = 5
    # Whether the automatic cancel of an unfilled FAK/FOK remainder counts as a cancel.
    fak_counts_as_cancel: bool = True
    # High-frequency standard: orders + cancels per second / per day.
    hft_per_sec: int = 300
    hft_per_day: int = 20_000


DEFAULT_EXCHANGES: dict[str, ExchangeRules] = {
    "SHFE": ExchangeRules(market_orders=False, close_today_distinct=True, large_order_qty=300,
                          large_order_fraction=None),
    "INE": ExchangeRules(market_orders=False, close_today_distinct=True, large_order_qty=300,
                         large_order_fraction=None),
    "DCE": ExchangeRules(),
    "CZCE": ExchangeRules(large_order_qty=800, large_order_fraction=None),
    "CFFEX": ExchangeRules(cancel_limit_per_contract=400),
    "GFEX": ExchangeRules(),
}
