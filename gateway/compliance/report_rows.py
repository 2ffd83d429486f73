"""The rows of the daily surveillance report (``gateway.compliance.report``) and the report.

One dataclass per table; ``report_csv`` writes them, ``report_html`` draws them. What each
column counts is in ``gateway.compliance.report``'s docstring and the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ContractRow:
    account: str
    symbol: str
    exchange: str = ""
    orders: int = 0
    refused: int = 0
    fak_fok: int = 0
    cancels: int = 0
    fak_cancels: int = 0
    cancel_limit: int = 0
    large_order_qty: int = 0
    large_cancels: int = 0
    large_cancel_limit: int = 0
    fills: int = 0
    filled_lots: int = 0
    self_trades: int = 0
    self_trade_refusals: int = 0
    self_trade_limit: int = 0
    max_per_sec: int = 0
    busy_seconds: int = 0
    open_volume: int = 0
    group_open_volume: int = 0  # the account group's, on this contract: what 交易限额 limits
    open_limit: int | None = None
    times: list[int] = field(default_factory=list, repr=False)  # messages (not in the CSV)


@dataclass
class AccountRow:
    account: str
    group: str = ""
    registration: str = ""
    orders: int = 0
    refused: int = 0
    cancels: int = 0
    messages: int = 0
    fills: int = 0
    max_per_sec: int = 0
    busy_seconds: int = 0
    programmatic_standard: bool = False
    hft_standard: bool = False
    needs_correction: bool = False
    stops: int = 0


@dataclass
class ProductRow:
    account: str
    product: str
    messages: int = 0
    filled_orders: int = 0
    otr: float = 0.0
    message_fee: float = 0.0


@dataclass
class ActionRow:
    ts_ns: int
    operator: str
    action: str
    scope: str
    key: str
    reason: str
    detail: str
    emergency: bool


@dataclass
class SeatRow:
    account: str
    users: str
    sessions: int
    seats: str
    apps: str = ""  # registered application ids the sessions logged on with
    terminals: str = ""  # the terminals' "ip/mac" as their Logons reported them


@dataclass
class DailyReport:
    firm: str
    trading_day: str  # YYYY-MM-DD
    start_ns: int
    end_ns: int
    contracts: list[ContractRow]
    accounts: list[AccountRow]
    products: list[ProductRow]
    actions: list[ActionRow]
    seats: list[SeatRow]
    corrections: list[tuple[str, int, str]]  # (account, ts_ns, alert text)
    records: int
    damage: str = ""

    def firm_totals(self) -> dict[str, int | float]:
        c, p = self.contracts, self.products
        return {"accounts": len({r.account for r in c} | {r.account for r in self.accounts
                                                          if r.orders or r.stops}),
                "orders": sum(r.orders for r in c), "refused": sum(r.refused for r in c),
                "fak_fok": sum(r.fak_fok for r in c), "cancels": sum(r.cancels for r in c),
                "large_cancels": sum(r.large_cancels for r in c),
                "fills": sum(r.fills for r in c), "filled_lots": sum(r.filled_lots for r in c),
                "self_trades": sum(r.self_trades for r in c),
                "self_trade_refusals": sum(r.self_trade_refusals for r in c),
                "messages": sum(r.messages for r in p),
                "message_fee": round(sum(r.message_fee for r in p), 2),
                "programmatic_accounts": sum(r.programmatic_standard for r in self.accounts),
                "hft_accounts": sum(r.hft_standard for r in self.accounts),
                "needs_correction": sum(r.needs_correction for r in self.accounts),
                "stops": len(self.actions)}
