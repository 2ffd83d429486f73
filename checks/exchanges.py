"""Exchange rule defaults: the one home for what differs between SHFE, INE, DCE, CZCE, CFFEX, GFEX.

These numbers come from each exchange's own rules on abnormal trading (异常交易) and change by
exchange notice, so they are *defaults*: a deployment overrides any of them per exchange in its
config (``[exchanges.SHFE]``), and the per-instrument fields of ``Instrument`` (``cancel_limit``,
``large_order_qty``) override them again per contract. The thresholds, per client and per
contract and trading day (the exchanges count by 交易编码; the engine counts per account):

========  ==========  ==========================================  ===========  ==========
exchange  cancels     large cancel: an order of at least          large        self-
          (频繁报撤单)  (大额报撤单)                                  cancels      trades
========  ==========  ==========================================  ===========  ==========
SHFE      500         300 lots                                    50           5
INE       500         300 lots                                    50           5
DCE       500         80 % of the contract's max limit-order size  50           5
CZCE      500         800 lots                                    50           5
CFFEX     400         80 % of the contract's max limit-order size  100          5
GFEX      500         80 % of the contract's max limit-order size  50           5
========  ==========  ==========================================  ===========  ==========

Sources: SHFE 《上海期货交易所异常交易行为管理办法》 and its 监控指引 (频繁报撤单 ≥ 500,
大额报撤单 of ≥ 300 lots ≥ 50 times, 自成交 ≥ 5); INE 《上海国际能源交易中心异常交易行为管理办法》
(the same thresholds as SHFE); DCE 《大连商品交易所异常交易管理办法》 (≥ 500; large: ≥ 80 % of the
maximum limit-order size, ≥ 50 times); CZCE 《郑州商品交易所异常交易行为管理办法》 (≥ 500; large:
≥ 800 lots, ≥ 50 times); CFFEX 《中国金融期货交易所异常交易监控指引》 for index futures (≥ 400;
large: ≥ 80 % of the maximum limit-order size, ≥ 100 times) — its treasury futures have their own
counts, set them per contract with ``cancel_limit``; GFEX 《广州期货交易所异常交易行为管理办法》
(as DCE). High frequency: the exchanges' programmatic-trading rules (2025) after the CSRC's
《期货市场程序化交易管理规定》: ≥ 300 orders + cancels in a second or ≥ 20,000 in a day.

Exemptions: the exchanges count the cancels a client *requests*; the system's cancel of an
unfilled FAK/FOK remainder is an order-type outcome, and whether it counts is
``fak_counts_as_cancel`` (default: counted — the conservative choice; set it ``false`` for an
exchange whose current notice excludes it). Cancels of hedging orders (套期保值) are counted like
any other: the engines have no exemption for them, which errs on the safe side.
"""

from __future__ import annotations

import msgspec


class ExchangeRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # Order types: SHFE/INE accept limit orders only; the others also take market orders.
    market_orders: bool = True
    # SHFE/INE keep today's and yesterday's positions apart: CLOSE_TODAY / CLOSE_YESTERDAY draw on
    # each separately and plain CLOSE means close-yesterday. Elsewhere CLOSE closes oldest first.
    close_today_distinct: bool = False
    # A "large order" for the large-cancel count: a fixed lot size (SHFE/INE 300, CZCE 800), or
    # a fraction of the instrument's maximum limit-order volume (DCE/CFFEX/GFEX: 80 %).
    large_order_qty: int | None = None
    large_order_fraction: float | None = 0.8
    # Daily cancels on one contract that the exchange flags (500; CFFEX index futures: 400).
    cancel_limit_per_contract: int = 500
    # Daily cancels of large orders on one contract (50; CFFEX: 100).
    large_cancel_limit: int = 50
    # Daily self-trades on one contract (flagged at >= 5 on every exchange).
    self_trade_limit: int = 5
    # Whether the automatic cancel of an unfilled FAK/FOK remainder counts as a cancel.
    fak_counts_as_cancel: bool = True
    # High-frequency standard: orders + cancels per second / per day (300 / 20,000).
    hft_per_sec: int = 300
    hft_per_day: int = 20_000


# Each exchange spelled out in full (not left to the field defaults), so the table above and
# this one can be read side by side and a change of one default never moves an exchange silently.
DEFAULT_EXCHANGES: dict[str, ExchangeRules] = {
    # SHFE: limit orders only; close-today apart; 500 cancels; 50 cancels of >= 300 lots.
    "SHFE": ExchangeRules(market_orders=False, close_today_distinct=True, large_order_qty=300,
                          large_order_fraction=None, cancel_limit_per_contract=500,
                          large_cancel_limit=50, self_trade_limit=5),
    # INE: SHFE's rules.
    "INE": ExchangeRules(market_orders=False, close_today_distinct=True, large_order_qty=300,
                         large_order_fraction=None, cancel_limit_per_contract=500,
                         large_cancel_limit=50, self_trade_limit=5),
    # DCE: 500 cancels; 50 cancels of >= 80 % of the max limit-order size.
    "DCE": ExchangeRules(large_order_qty=None, large_order_fraction=0.8,
                         cancel_limit_per_contract=500, large_cancel_limit=50, self_trade_limit=5),
    # CZCE: 500 cancels; 50 cancels of >= 800 lots.
    "CZCE": ExchangeRules(large_order_qty=800, large_order_fraction=None,
                          cancel_limit_per_contract=500, large_cancel_limit=50,
                          self_trade_limit=5),
    # CFFEX (index futures): 400 cancels; 100 cancels of >= 80 % of the max limit-order size.
    "CFFEX": ExchangeRules(large_order_qty=None, large_order_fraction=0.8,
                           cancel_limit_per_contract=400, large_cancel_limit=100,
                           self_trade_limit=5),
    # GFEX: DCE's thresholds.
    "GFEX": ExchangeRules(large_order_qty=None, large_order_fraction=0.8,
                          cancel_limit_per_contract=500, large_cancel_limit=50, self_trade_limit=5),
}
