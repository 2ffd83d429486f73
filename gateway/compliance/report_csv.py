"""The daily surveillance report as CSV: one file per table, byte for byte reproducible.

UTF-8, ``\\n`` line ends, a header row, rows in the report's order (sorted by their key
columns), integers as integers, ratios with 4 decimals, money with 2, times as China time
``YYYY-MM-DD HH:MM:SS.ffffff``; a text cell that a spreadsheet would take for a formula starts
with an apostrophe. ``COLUMNS`` is the layout (and the README's table).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

from checks.calendar import CST_OFFSET_S, NS
from gateway.compliance.report_rows import DailyReport

COLUMNS: dict[str, tuple[str, ...]] = {
    "contracts": ("account", "symbol", "exchange", "orders", "refused", "fak_fok", "cancels",
                  "fak_cancels", "cancel_limit", "large_order_qty", "large_cancels",
                  "large_cancel_limit",
                  "fills", "filled_lots", "self_trades", "self_trade_refusals",
                  "self_trade_limit", "max_per_sec", "busy_seconds", "open_volume",
                  "group_open_volume", "open_limit"),
    "accounts": ("account", "group", "registration", "orders", "refused", "cancels", "messages",
                 "fills", "max_per_sec", "busy_seconds", "programmatic_standard",
                 "hft_standard", "needs_correction", "stops"),
    "products": ("account", "product", "messages", "filled_orders", "otr", "message_fee"),
    "actions": ("time", "operator", "action", "scope", "key", "reason", "detail", "emergency"),
    "seats": ("account", "users", "sessions", "seats", "apps", "terminals"),
    "corrections": ("account", "time", "text"),
    "firm": ("trading_day", "firm", "measure", "value"),
}


def format_time(ts_ns: int) -> str:
    secs, ns = divmod(ts_ns, NS)
    t = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=secs + CST_OFFSET_S, microseconds=ns // 1000)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def cell(value: Any) -> str:
    """One value as its CSV text (the formatting rules of the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_rows(report: DailyReport, table: str) -> list[list[str]]:
    """The rows of one CSV table as strings (the layout of ``COLUMNS[table]``)."""
    if table == "contracts":
        return [[cell(getattr(r, c)) for c in COLUMNS[table]] for r in report.contracts]
    if table == "accounts":
        return [[cell(getattr(r, c)) for c in COLUMNS[table]] for r in report.accounts]
    if table == "products":
        return [[r.account, r.product, str(r.messages), str(r.filled_orders), f"{r.otr:.4f}",
                 f"{r.message_fee:.2f}"] for r in report.products]
    if table == "actions":
        return [[format_time(a.ts_ns), a.operator, a.action, a.scope, a.key, a.reason, a.detail,
                 cell(a.emergency)] for a in report.actions]
    if table == "seats":
        return [[r.account, r.users, str(r.sessions), r.seats, r.apps, r.terminals]
                for r in report.seats]
    if table == "corrections":
        return [[a, format_time(ts), text] for a, ts, text in report.corrections]
    if table == "firm":
        totals = report.firm_totals()
        return [[report.trading_day, report.firm, k,
                 f"{v:.2f}" if isinstance(v, float) else str(v)] for k, v in totals.items()]
    raise KeyError(table)


def _inert(cell: str) -> str:
    """A text cell a spreadsheet would run as a formula (an account or symbol a client chose,
    an operator's reason) gets a leading apostrophe; numbers, negative ones too, stay as they
    are."""
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(cell)
        except ValueError:
            return "'" + cell
    return cell


def to_csv(report: DailyReport, table: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS[table])
    w.writerows([_inert(c) for c in row] for row in table_rows(report, table))
    return buf.getvalue().encode()


def write_csv(report: DailyReport, out: str | Path) -> list[Path]:
    """Write every table as ``daily-YYYYMMDD-<table>.csv`` in ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "daily-" + report.trading_day.replace("-", "")
    paths = []
    for table in COLUMNS:
        p = out / f"{stem}-{table}.csv"
        p.write_bytes(to_csv(report, table))
        paths.append(p)
    return paths
