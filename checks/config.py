"""Load and validate risk configuration (TOML) into a resolved ``RiskConfig``.

Two stages, both naming the file and the field path on failure:
1. msgspec decodes the TOML into typed structs (wrong type, unknown field, missing field);
2. ``resolve`` checks what types cannot say (duplicates, references to unknown exchanges,
   products or groups, impossible numbers) and merges limits firm <- group <- account.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypeVar

import msgspec

from checks.calendar import parse_hhmm
from checks.enums import AccountStatus, ProgReg
from checks.exchanges import DEFAULT_EXCHANGES, ExchangeRules
from checks.model import (
    Instrument,
    Limits,
    ResolvedAccount,
    RiskConfig,
    RiskConfigFile,
)

T = TypeVar("T")


class ConfigError(ValueError):
    """A config mistake: says which file, which field, and what was expected."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")


def decode_toml(data: bytes | str, type_: type[T], source: str) -> T:
    """Decode TOML text into ``type_``; a mistake raises ``ConfigError`` naming the field."""
    try:
        return msgspec.toml.decode(data, type=type_)
    except msgspec.ValidationError as err:
        text = str(err)
        path = ""
        if " - at `" in text:
            text, _, at = text.partition(" - at `")
            path = at.rstrip("`").removeprefix("$").removeprefix(".")
        if text.startswith("Invalid enum value"):
            choices = _literal_choices(type_, path)
            if choices:
                text += f"; expected one of {', '.join(map(repr, choices))}"
        raise ConfigError(source, path, text) from None
    except msgspec.DecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None


def _literal_choices(type_: type, path: str) -> tuple | None:
    """The allowed values of the Literal field at ``path`` (e.g. 'users[0].role'), if any."""
    import re

    from msgspec import inspect as mi

    info: mi.Type = mi.type_info(type_)
    for name in re.findall(r"[^.\[\]]+", path):
        while isinstance(info, mi.UnionType):  # Optional[...]: the non-None member
            info = next((t for t in info.types if not isinstance(t, mi.NoneType)), info)
            if isinstance(info, mi.UnionType):
                return None
        if isinstance(info, mi.StructType):
            field = next((f for f in info.fields if f.name == name), None)
            if field is None:
                return None
            info = field.type
        elif isinstance(info, (mi.ListType, mi.TupleType, mi.VarTupleType)) and name.isdigit():
            info = info.item_type if hasattr(info, "item_type") else info.item_types[int(name)]
        elif isinstance(info, mi.DictType):
            info = info.value_type
        else:
            return None
    return info.values if isinstance(info, mi.LiteralType) else None


def load_risk_config(path: str | Path) -> RiskConfig:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), "", f"cannot read the file: {err.strerror}") from None
    return resolve(decode_toml(data, RiskConfigFile, str(path)), str(path))


# Upper bounds that keep the engines' int64 arithmetic exact: counts and windows (a window in ms
# becomes ns), and amounts of money in yuan (they become fen). ``null`` means "no limit".
MAX_LIMIT_COUNT = 10**12
MAX_LIMIT_AMOUNT = 1e15


def merge_limits(base: Limits, overrides: dict, source: str, where: str) -> Limits:
    """``base`` with ``overrides`` (limit name -> value) applied, checked as a whole: the one
    validation of limits, for the config file and for runtime changes (the admin plane, the
    journal's replay of them). A mistake raises ``ConfigError`` naming ``where.<limit>``."""
    merged = msgspec.structs.asdict(base)
    for key, value in overrides.items():
        if key not in merged:
            known = ", ".join(sorted(merged))
            raise ConfigError(source, f"{where}.{key}", f"unknown limit; known limits: {known}")
        merged[key] = value
    try:
        limits = msgspec.convert(merged, Limits)
    except msgspec.ValidationError as err:
        text, _, at = str(err).partition(" - at `")
        raise ConfigError(source, f"{where}{at.rstrip('`').removeprefix('$')}", text) from None
    _check_limits(limits, source, where)
    return limits


def _check_limits(limits: Limits, source: str, where: str) -> None:
    for name, value in msgspec.structs.asdict(limits).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(source, f"{where}.{name}", f"expected a finite number, got {value}")
        if value < 0:
            raise ConfigError(source, f"{where}.{name}", f"expected a number >= 0, got {value}")
        if isinstance(value, int) and value > MAX_LIMIT_COUNT:
            raise ConfigError(source, f"{where}.{name}", f"expected a whole number <= "
                                                         f"{MAX_LIMIT_COUNT:.0e} (null: no limit), got {value}")
        if isinstance(value, float) and value > MAX_LIMIT_AMOUNT:
            raise ConfigError(source, f"{where}.{name}", f"expected a number <= "
                                                         f"{MAX_LIMIT_AMOUNT:.0e} (null: no limit), got {value}")
    if not 0 < limits.warn_fraction <= 1:
        raise ConfigError(source, f"{where}.warn_fraction", "expected a fraction in (0, 1]")


def _check_instrument(inst: Instrument, exchanges: dict, source: str, where: str) -> None:
    def bad(field: str, problem: str) -> ConfigError:
        return ConfigError(source, f"{where}.{field}", problem)

    if inst.exchange not in exchanges:
        raise bad("exchange", f"unknown exchange {inst.exchange!r}; known: {', '.join(sorted(exchanges))}")
    for field in ("multiplier", "tick", "upper_limit", "lower_limit", "reference_price"):
        value = getattr(inst, field)
        if not (math.isfinite(value) and value > 0):
            raise bad(field, f"expected a finite number > 0, got {value}")
    if inst.lower_limit > inst.upper_limit:
        raise bad("lower_limit", f"lower limit {inst.lower_limit} is above upper limit {inst.upper_limit}")
    for field in ("margin_long", "margin_short", "margin_per_lot"):
        if getattr(inst, field) < 0:
            raise bad(field, "expected a number >= 0")
    for field in ("min_limit_qty", "max_limit_qty", "min_market_qty", "max_market_qty"):
        if getattr(inst, field) < 1:
            raise bad(field, "expected a whole number >= 1")
    if inst.min_limit_qty > inst.max_limit_qty:
        raise bad("min_limit_qty", "above max_limit_qty")
    if inst.min_market_qty > inst.max_market_qty:
        raise bad("min_market_qty", "above max_market_qty")
    # 0 switches a collar off explicitly (e.g. so that an order at the limit price can pass on
    # a limit-up day, when the limit is further from the reference price than the collar).
    if inst.collar_pct is not None and not (math.isfinite(inst.collar_pct)
                                            and 0 <= inst.collar_pct < 1):
        raise bad("collar_pct", "expected a fraction in [0, 1); 0 switches the collar off")
    if inst.collar_ticks is not None and inst.collar_ticks < 0:
        raise bad("collar_ticks", "expected a whole number >= 0; 0 switches the tick collar off")
    for name, value in msgspec.structs.asdict(inst.fees).items():
        if not (math.isfinite(value) and value >= 0):
            raise bad(f"fees.{name}", f"expected a finite number >= 0, got {value}")


def resolve(file: RiskConfigFile, source: str = "<config>") -> RiskConfig:
    """Validate cross-references and resolve effective limits (see the module docstring)."""
    exchanges: dict[str, ExchangeRules] = dict(DEFAULT_EXCHANGES)
    for name, overrides in file.exchanges.items():
        base = msgspec.structs.asdict(exchanges.get(name, ExchangeRules()))
        for key in overrides:
            if key not in base:
                raise ConfigError(source, f"exchanges.{name}.{key}",
                                  f"unknown exchange rule; known: {', '.join(sorted(base))}")
        base.update(overrides)
        try:
            exchanges[name] = msgspec.convert(base, ExchangeRules)
        except msgspec.ValidationError as err:
            raise ConfigError(source, f"exchanges.{name}", str(err)) from None

    _check_limits(file.limits, source, "limits")
    sessions: dict[str, list[tuple[int, int]]] = {}
    products: set[str] = set()
    for i, inst in enumerate(file.instruments):
        where = f"instruments[{i}]"
        if inst.symbol in sessions:
            raise ConfigError(source, f"{where}.symbol", f"duplicate instrument {inst.symbol!r}")
        _check_instrument(inst, exchanges, source, where)
        try:
            sessions[inst.symbol] = [(parse_hhmm(a), parse_hhmm(b)) for a, b in inst.sessions]
        except ValueError as err:
            raise ConfigError(source, f"{where}.sessions", str(err)) from None
        products.add(inst.product)

    group_limits: dict[str, Limits] = {}
    for i, group in enumerate(file.groups):
        if group.name in group_limits:
            raise ConfigError(source, f"groups[{i}].name", f"duplicate group {group.name!r}")
        group_limits[group.name] = merge_limits(file.limits, group.limits, source, f"groups[{i}].limits")

    accounts: list[ResolvedAccount] = []
    seen: set[str] = set()
    for i, acc in enumerate(file.accounts):
        where = f"accounts[{i}]"
        if acc.id in seen:
            raise ConfigError(source, f"{where}.id", f"duplicate account {acc.id!r}")
        seen.add(acc.id)
        if not (math.isfinite(acc.balance) and acc.balance >= 0):
            raise ConfigError(source, f"{where}.balance", f"expected a finite number >= 0, got {acc.balance}")
        if acc.group and acc.group not in group_limits:
            group_limits[acc.group] = file.limits  # a group needs no section unless it has limits
        base = group_limits[acc.group] if acc.group else file.limits
        limits = merge_limits(base, acc.limits, source, f"{where}.limits")
        for j, product in enumerate(acc.products):
            if product not in products:
                raise ConfigError(source, f"{where}.products[{j}]", f"unknown product {product!r}")
        for j, pos in enumerate(acc.positions):
            if pos.symbol not in sessions:
                raise ConfigError(source, f"{where}.positions[{j}].symbol", f"unknown instrument {pos.symbol!r}")
            if pos.long < 0 or pos.short < 0:
                raise ConfigError(source, f"{where}.positions[{j}]", "positions must be >= 0")
        if acc.hft is not None and (acc.hft.max_per_sec < 1 or acc.hft.max_per_day < 1):
            raise ConfigError(source, f"{where}.hft", "reported HFT maxima must be >= 1")
        accounts.append(ResolvedAccount(
            id=acc.id,
            group=acc.group or f"~{acc.id}",
            balance=acc.balance,
            status=int(AccountStatus[acc.status]),
            programmatic=int(ProgReg[acc.programmatic]),
            hft_registered=acc.hft is not None,
            hft_max_per_sec=acc.hft.max_per_sec if acc.hft else 0,
            hft_max_per_day=acc.hft.max_per_day if acc.hft else 0,
            direct_access=acc.direct_access,
            products=frozenset(acc.products),
            market_allowed="MARKET" in acc.order_types,
            limit_allowed="LIMIT" in acc.order_types,
            limits=limits,
            positions=list(acc.positions),
        ))

    try:
        boundary = parse_hhmm(file.firm.day_boundary)
    except ValueError as err:
        raise ConfigError(source, "firm.day_boundary", str(err)) from None
    return RiskConfig(
        firm=file.firm,
        enforce_hours=file.firm.trading_hours == "enforce",
        day_boundary_s=boundary,
        exchanges=exchanges,
        instruments=list(file.instruments),
        accounts=accounts,
        session_seconds=sessions,
    )
