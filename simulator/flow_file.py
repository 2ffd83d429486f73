"""The order-flow file format the replayer reads (``simulator.replay``).

File format
-----------
One row per action, as CSV with a header row, JSON lines (``.jsonl`` / ``.ndjson``: one JSON
object per line), or msgpack (``.msgpack``: one array of such objects). Columns:

==============  =====================================================================
t_ms            time offset of the action from the start, milliseconds (rows are replayed
                in t_ms order; ties keep file order)
session         which client session sends it; each distinct value is one connection
action          ``new`` or ``cancel``
cl_ord_id       the order's id (new) or the cancel's own id (cancel; optional)
account         account id (cancel: optional, defaults to the cancelled order's account)
symbol          instrument (new)
side            BUY / SELL (new)
offset          OPEN / CLOSE / CLOSE_TODAY / CLOSE_YESTERDAY (default OPEN)
hedge           SPEC / ARB / HEDGE (default SPEC)
ord_type        LIMIT / MARKET (default LIMIT)
tif             GFD / IOC (alias FAK) / FOK (default GFD)
price           limit price (new; ignored for MARKET)
qty             lots (new)
orig_cl_ord_id  the cl_ord_id of the order to cancel (cancel)
==============  =====================================================================

Enumerations may be written by name (any case) or by their number from ``checks.enums``; an
empty cell takes the default. A mistake is reported as ``file:line: field: problem``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec

from checks.enums import Hedge, Offset, OrdType, Side, Tif

_ENUMS: dict[str, type[IntEnum]] = {"side": Side, "offset": Offset, "hedge": Hedge,
                                    "ord_type": OrdType, "tif": Tif}
_ALIASES = {"FAK": "IOC", "B": "BUY", "S": "SELL"}
_DEFAULTS = {"offset": int(Offset.OPEN), "hedge": int(Hedge.SPEC),
             "ord_type": int(OrdType.LIMIT), "tif": int(Tif.GFD)}


class ReplayFormatError(ValueError):
    """A bad row in a flow file: names the file, the line and the field."""


class FlowAction(msgspec.Struct, kw_only=True):
    t_ms: float
    session: str
    action: str
    cl_ord_id: str = ""
    account: str = ""
    symbol: str = ""
    side: int = 0
    offset: int = int(Offset.OPEN)
    hedge: int = int(Hedge.SPEC)
    ord_type: int = int(OrdType.LIMIT)
    tif: int = int(Tif.GFD)
    price: float = 0.0
    qty: int = 0
    orig_cl_ord_id: str = ""
    line: int = 0  # where the row came from, for messages


def _row_error(source: str, line: int, fieldname: str, problem: str) -> ReplayFormatError:
    where = f"{source}:{line}"
    return ReplayFormatError(f"{where}: {fieldname}: {problem}" if fieldname else f"{where}: {problem}")


def _parse_row(row: Mapping[str, Any], source: str, line: int) -> FlowAction:
    def bad(fieldname: str, problem: str) -> ReplayFormatError:
        return _row_error(source, line, fieldname, problem)

    vals: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            raise bad("", "more cells than header columns")
        key = key.strip()
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                continue
        if value is None:
            continue
        vals[key] = value
    unknown = set(vals) - set(FlowAction.__struct_fields__) - {"line"}
    if unknown:
        raise bad(sorted(unknown)[0], f"unknown column; known: {', '.join(FlowAction.__struct_fields__[:-1])}")
    for name, enum in _ENUMS.items():
        if name not in vals:
            continue
        value = vals[name]
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            key = _ALIASES.get(value.upper(), value.upper())
            if key not in enum.__members__:
                raise bad(name, f"{value!r} is not one of {', '.join(enum.__members__)}")
            vals[name] = int(enum[key])
        else:
            vals[name] = int(value)
    action = str(vals.get("action", "")).lower()
    vals["action"] = action
    vals.setdefault("session", "default")
    vals["session"] = str(vals["session"])
    for name in ("cl_ord_id", "orig_cl_ord_id", "account", "symbol"):
        if name in vals:
            vals[name] = str(vals[name])
    if "t_ms" not in vals:
        raise bad("t_ms", "missing")
    try:
        act = msgspec.convert(vals, FlowAction, strict=False)
    except msgspec.ValidationError as err:
        text, _, at = str(err).partition(" - at `")
        raise bad(at.rstrip("`").removeprefix("$."), text) from None
    act.line = line
    if not (math.isfinite(act.t_ms) and act.t_ms >= 0):
        raise bad("t_ms", f"expected a time offset >= 0, got {act.t_ms}")
    if action == "new":
        for name in ("cl_ord_id", "account", "symbol"):
            if not getattr(act, name):
                raise bad(name, "required for a new order")
        if act.side == 0:
            raise bad("side", "required for a new order")
    elif action == "cancel":
        if not act.orig_cl_ord_id:
            raise bad("orig_cl_ord_id", "required for a cancel")
    else:
        raise bad("action", f"expected 'new' or 'cancel', got {action!r}")
    return act


def load_flow(path: str | Path) -> list[FlowAction]:
    """Read a flow file (CSV / JSON lines / msgpack by suffix), checked, in replay order."""
    path = Path(path)
    source = str(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows = [(i + 2, r) for i, r in enumerate(csv.DictReader(f))]
        elif suffix in (".jsonl", ".ndjson", ".json"):
            rows = []
            for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as err:
                    raise _row_error(source, i, "", f"not valid JSON: {err.msg}") from None
                if not isinstance(obj, dict):
                    raise _row_error(source, i, "", "expected a JSON object")
                rows.append((i, obj))
        elif suffix == ".msgpack":
            data = msgspec.msgpack.decode(path.read_bytes())
            if not isinstance(data, list):
                raise _row_error(source, 0, "", "expected a msgpack array of maps")
            rows = [(i + 1, r) for i, r in enumerate(data)]
        else:
            raise ReplayFormatError(f"{source}: unknown flow format {suffix!r} (use .csv, .jsonl or .msgpack)")
    except OSError as err:
        raise ReplayFormatError(f"{source}: cannot read the file: {err.strerror}") from None
    actions = [_parse_row(row, source, line) for line, row in rows]
    seen: dict[tuple[str, str], int] = {}
    for act in actions:
        if act.action == "new":
            key = (act.session, act.cl_ord_id)
            if key in seen:
                raise _row_error(source, act.line, "cl_ord_id",
                                 f"{act.cl_ord_id!r} already used in session {act.session!r} at line {seen[key]}")
            seen[key] = act.line
    actions.sort(key=lambda a: a.t_ms)  # stable: ties keep file order
    return actions


