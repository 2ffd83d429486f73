"""The risk model: instruments, accounts, limits — as configured, and as the engines use them.

Config (TOML) decodes into the ``*Config`` structs below with msgspec, which validates types at
the edge; ``checks.config.load_config`` then checks the cross-references and resolves every
account's effective limits (firm defaults <- group overrides <- account overrides), so both
engines start from the same, fully validated ``RiskConfig`` and never re-check it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from checks.exchanges import ExchangeRules

DAY_SESSIONS = (("09:00", "10:15"), ("10:30", "11:30"), ("13:30", "15:00"))

# "No limit" for count limits, after resolution (fits a C int64 with room for arithmetic).
UNLIMITED = 1 << 60


class Fees(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Exchange + broker fees for one instrument, per lot and/or by turnover."""

    open_per_lot: float = 0.0
    open_ratio: float = 0.0
    close_per_lot: float = 0.0
    close_ratio: float = 0.0
    close_today_per_lot: float = 0.0
    close_today_ratio: float = 0.0
    per_order: float = 0.0  # charged for every order submitted (申报费), where an exchange charges it
    per_cancel: float = 0.0  # charged for every cancel


class Instrument(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    symbol: str
    exchange: str
    product: str
    multiplier: float
    tick: float
    upper_limit: float
    lower_limit: float
    reference_price: float  # last trade or settlement; moved by MarketData
    margin_long: float = 0.0  # margin by money: fraction of notional
    margin_short: float = 0.0
    margin_per_lot: float = 0.0  # margin by volume
    fees: Fees = Fees()
    min_limit_qty: int = 1
    max_limit_qty: int = 1000
    min_market_qty: int = 1
    max_market_qty: int = 100
    # Trading sessions as local (UTC+8) 'HH:MM' pairs; a pair whose end is earlier than its
    # start crosses midnight. Night sessions belong to the next trading day.
    sessions: list[tuple[str, str]] = msgspec.field(default_factory=lambda: list(DAY_SESSIONS))
    position_limit: int | None = None  # per account per contract (持仓限额)
    # Fat-finger collar around the reference price, as a fraction: 5 % unless the instrument
    # says otherwise; 0 switches it off (an order at a daily limit further than the collar from
    # the reference price, e.g. on a limit-up day, then passes on the band alone).
    collar_pct: float | None = 0.05
    collar_ticks: int | None = None  # ... or as a number of ticks (the tighter applies; 0 = off)
    cancel_limit: int | None = None  # overrides the exchange's daily cancel limit per contract
    large_order_qty: int | None = None  # overrides the exchange's large-order size


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Per-account limits. ``None`` means no limit. Firm defaults live in ``[limits]``."""

    max_order_qty: int | None = 500
    max_notional: float | None = 50_000_000.0
    max_orders_per_sec: int | None = 100
    max_cancels_per_sec: int | None = 100
    max_open_orders: int | None = 1000
    max_open_volume_per_contract: int | None = None  # per account group per day (交易限额)
    max_messages_per_product: int | None = 20_000  # per day (信息量)
    max_otr: float | None = None  # messages / orders-with-fill - 1, per product per day
    otr_min_messages: int = 500  # the OTR cap applies from this many messages on
    message_fee: float = 0.0  # estimated fee per message above the free quota
    message_fee_free: int = 10_000
    # Repeated identical orders (same instrument, side, offset, price, qty) in a window.
    max_repeats: int | None = 20
    repeat_window_ms: int = 1000
    # Repeated automated executions (MiFID RTS 6 art. 15(3)): fills in a window.
    max_executions: int | None = None
    execution_window_ms: int = 1000
    loss_limit: float | None = None  # intraday loss (realised + marked) that stops the account
    # Programmatic behaviour of an unregistered account.
    programmatic_per_sec: int = 10
    programmatic_occasions: int = 10
    stop_unregistered_programmatic: bool = False
    warn_fraction: float = 0.8


class HftRegistration(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_per_sec: int
    max_per_day: int


class PositionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Start-of-day (yesterday's) position of an account in one instrument."""

    symbol: str
    long: int = 0
    short: int = 0
    long_price: float = 0.0  # settlement price the position is carried at
    short_price: float = 0.0


StatusName = Literal["ACTIVE", "CLOSE_ONLY", "SUSPENDED"]
ProgRegName = Literal["NONE", "REPORTED", "CONFIRMED"]
OrdTypeName = Literal["LIMIT", "MARKET"]


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    id: str
    balance: float
    group: str = ""  # accounts under common control (实际控制关系); "" = its own group
    status: StatusName = "ACTIVE"
    programmatic: ProgRegName = "NONE"
    hft: HftRegistration | None = None
    direct_access: bool = False
    products: list[str] = []  # allow-list; empty = every product
    order_types: list[OrdTypeName] = msgspec.field(default_factory=lambda: ["LIMIT", "MARKET"])
    limits: dict[str, int | float | bool | None] = {}
    positions: list[PositionConfig] = []


class GroupConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str
    limits: dict[str, int | float | bool | None] = {}


class FirmConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str = "fengkong"
    # "enforce": orders outside the instrument's sessions are refused; "ignore": for simulators
    # and demos that run at any hour.
    trading_hours: Literal["enforce", "ignore"] = "enforce"
    day_boundary: str = "17:00"  # from this local time on, activity belongs to the next day


class RiskConfigFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The risk part of a config file, exactly as written (before resolution)."""

    firm: FirmConfig = FirmConfig()
    limits: Limits = Limits()
    exchanges: dict[str, dict[str, int | float | bool | None]] = {}
    instruments: list[Instrument] = []
    groups: list[GroupConfig] = []
    accounts: list[AccountConfig] = []


class ResolvedAccount(msgspec.Struct, kw_only=True):
    """An account with its effective limits (firm <- group <- account)."""

    id: str
    group: str  # never empty after resolution: an ungrouped account is its own group
    balance: float
    status: int  # AccountStatus
    programmatic: int  # ProgReg
    hft_max_per_sec: int  # 0 when not registered for HFT
    hft_max_per_day: int
    hft_registered: bool
    direct_access: bool
    products: frozenset[str]  # empty = all
    market_allowed: bool
    limit_allowed: bool
    limits: Limits
    positions: list[PositionConfig]


class RiskConfig(msgspec.Struct, kw_only=True):
    """Everything an engine needs, validated and resolved."""

    firm: FirmConfig
    enforce_hours: bool
    day_boundary_s: int
    exchanges: dict[str, ExchangeRules]
    instruments: list[Instrument]
    accounts: list[ResolvedAccount]
    session_seconds: dict[str, list[tuple[int, int]]]  # symbol -> [(start_s, end_s)]
