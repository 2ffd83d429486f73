"""The daily surveillance report for people: an HTML page with charts drawn by matplotlib.

matplotlib comes with the ``report`` extra (``pip install 'fengkong[report]'``); the CSV needs
nothing. ``charts_available()`` says whether it is installed, so the CLI can say so in one line
and still write the CSV. Charts are PNGs embedded in the page (base64), so the HTML is one file
a compliance officer can mail or archive. ``render_png`` draws the same charts and the firm
totals as one image (the README's sample, ``docs/report.png``).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from gateway.compliance.report_csv import COLUMNS, table_rows
from gateway.compliance.report_rows import DailyReport


def charts_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "fengkong", "font.size": 9})
    return plt


def _activity(ax: Any, report: DailyReport) -> None:
    names = [a.account for a in report.accounts]
    x = range(len(names))
    w = 0.27
    ax.bar([i - w for i in x], [a.orders for a in report.accounts], w, label="orders")
    ax.bar(list(x), [a.cancels for a in report.accounts], w, label="cancels")
    ax.bar([i + w for i in x], [a.fills for a in report.accounts], w, label="fills")
    ax.set_xticks(list(x), names)
    ax.set_title("Orders, cancels and fills per account")
    ax.legend()


def _rates(ax: Any, report: DailyReport) -> None:
    names = [a.account for a in report.accounts]
    colors = ["tab:red" if a.programmatic_standard or a.hft_standard else "tab:blue"
              for a in report.accounts]
    ax.bar(names, [a.max_per_sec for a in report.accounts], color=colors)
    ax.axhline(10, color="tab:orange", linestyle="--", label="programmatic standard (10/s)")
    for i, a in enumerate(report.accounts):
        ax.annotate(f"{a.busy_seconds} busy s", (i, a.max_per_sec), ha="center", va="bottom")
    ax.set_title("Most orders + cancels in one second (red: standard met)")
    ax.legend()


def _thresholds(ax: Any, report: DailyReport) -> None:
    rows = [r for r in report.contracts if r.cancel_limit]
    labels = [f"{r.account}\n{r.symbol}" for r in rows]
    cancels = [100.0 * r.cancels / r.cancel_limit for r in rows]
    large = [100.0 * r.large_cancels / r.large_cancel_limit if r.large_cancel_limit else 0.0
             for r in rows]
    selft = [100.0 * r.self_trades / r.self_trade_limit if r.self_trade_limit else 0.0
             for r in rows]
    x = range(len(rows))
    w = 0.27
    ax.bar([i - w for i in x], cancels, w, label="cancels")
    ax.bar(list(x), large, w, label="large cancels")
    ax.bar([i + w for i in x], selft, w, label="self-trades")
    ax.axhline(100, color="tab:red", linestyle="--", label="exchange threshold")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("% of the exchange's threshold")
    ax.set_title("Counts against each exchange's thresholds, per contract")
    ax.legend()


_CHARTS = (_activity, _rates, _thresholds)


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def chart_pngs(report: DailyReport) -> list[bytes]:
    plt = _pyplot()
    out = []
    for draw in _CHARTS:
        fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
        draw(ax, report)
        out.append(_png(plt, fig))
    return out


def render_png(report: DailyReport, path: str | Path) -> None:
    """The report's totals and charts as one image."""
    plt = _pyplot()
    fig = plt.figure(figsize=(10, 12.5), layout="constrained")
    grid = fig.add_gridspec(4, 1, height_ratios=[1.1, 1, 1, 1])
    fig.suptitle(f"{report.firm} — daily surveillance report, trading day {report.trading_day}",
                 fontsize=13)
    ax = fig.add_subplot(grid[0])
    ax.axis("off")
    totals = report.firm_totals()
    cells = [[k.replace("_", " "), f"{v:.2f}" if isinstance(v, float) else str(v)]
             for k, v in totals.items()]
    half = (len(cells) + 1) // 2
    left, right = cells[:half], cells[half:] + [["", ""]] * (2 * half - len(cells))
    table = ax.table(cellText=[a + b for a, b in zip(left, right, strict=True)],
                     colLabels=["firm total", "", "firm total", ""], loc="center")
    table.scale(1, 1.25)
    for n, draw in enumerate(_CHARTS, start=1):
        draw(fig.add_subplot(grid[n]), report)
    fig.savefig(path, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)


def _table(report: DailyReport, name: str, title: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS[name])
    rows = table_rows(report, name)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                   for r in rows) or f"<tr><td colspan='{len(COLUMNS[name])}'>none</td></tr>"
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def to_html(report: DailyReport, charts: bool = True) -> str:
    imgs = ""
    if charts:
        imgs = "".join(f"<img alt='chart' src='data:image/png;base64,"
                       f"{base64.b64encode(p).decode()}'>" for p in chart_pngs(report))
    flagged = [a.account for a in report.accounts if a.needs_correction]
    warn = (f"<p class='warn'>Reports needing correction: {html.escape(', '.join(flagged))}</p>"
            if flagged else "")
    damage = (f"<p class='warn'>The journal is damaged; figures stop at: "
              f"{html.escape(report.damage)}</p>" if report.damage else "")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Daily surveillance report {report.trading_day}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
        "th{background:#eee}.warn{color:#b00;font-weight:bold}img{display:block;"
        "margin:1em 0}</style></head><body>",
        f"<h1>{html.escape(report.firm)} — daily surveillance report (日报), "
        f"trading day {report.trading_day}</h1>",
        f"<p>From the audit journal ({report.records} records read). Programmatic standard: "
        "≥ 10 occasions a day with ≥ 10 orders + cancels in one second; HFT standard: "
        "≥ 300 in a second or ≥ 20,000 a day.</p>",
        warn, damage,
        _table(report, "firm", "Firm totals"), imgs,
        _table(report, "accounts", "Accounts"),
        _table(report, "contracts", "Accounts and contracts"),
        _table(report, "products", "Messages, order-to-trade ratio and estimated fees"),
        _table(report, "actions", "Kills, resets and stops"),
        _table(report, "corrections", "Reports needing correction"),
        _table(report, "seats", "Colocation and seats of programmatic clients (art. 20-21)"),
        "</body></html>",
    ]
    return "\n".join(parts)
