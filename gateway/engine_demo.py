"""The risk-engine walk-through: a scripted sequence of orders through the Cython engine.

``fengkong demo --engine-only`` runs it: load the sample config, send orders that exercise the
checks one by one, and print what the engine decided and why. It needs no sockets, so it is
also the quickest way to see what a configuration change does to real decisions.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from cext.engine import Engine
from checks.calendar import ns_from_local
from checks.config import load_risk_config
from checks.enums import Hedge, Offset, OrdType, Side, Tif
from checks.reasons import Reason
from gateway.protocol import NewOrder

SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "risk.toml"

B, S = Side.BUY, Side.SELL
OPEN, C, CT = Offset.OPEN, Offset.CLOSE, Offset.CLOSE_TODAY
LMT, MKT = OrdType.LIMIT, OrdType.MARKET


def _order(n: int, account: str, symbol: str, side: int, offset: int, price: float, qty: int | float,
           ord_type: int = LMT, tif: int = Tif.GFD) -> NewOrder:
    return NewOrder(f"demo-{n}", account, symbol, side, offset, Hedge.SPEC, ord_type, tif, price, qty)


# (what it shows, account, symbol, side, offset, price, qty[, ord_type, tif])
SCRIPT: list[tuple] = [
    ("an ordinary opening buy", "A001", "rb2605", B, OPEN, 3200.0, 5),
    ("price off the tick grid", "A001", "rb2605", B, OPEN, 3200.5, 1),
    ("fat finger: outside the 5 % collar", "A001", "rb2605", B, OPEN, 3380.0, 1),
    ("above the daily upper limit", "A001", "rb2605", B, OPEN, 3430.0, 1),
    ("SHFE takes no market orders", "A001", "rb2605", B, OPEN, 0.0, 1, MKT, Tif.IOC),
    ("DCE market order (FAK)", "A001", "m2605", B, OPEN, 0.0, 2, MKT, Tif.IOC),
    ("close yesterday's long (SHFE: CLOSE = close-yesterday)", "A001", "rb2605", S, C, 3210.0, 10),
    ("CLOSE_TODAY with no position opened today", "A001", "rb2605", S, CT, 3210.0, 1),
    ("closing more than the account holds", "A001", "rb2605", S, C, 3210.0, 20),
    ("gold, price on the 0.02 tick (no float drift)", "A001", "au2606", B, OPEN, 640.02, 1),
    ("CFFEX IF on its 0.2 tick", "A001", "IF2612", B, OPEN, 3900.2, 1),
    ("a close-only account tries to open", "A002", "m2605", B, OPEN, 2900.0, 1),
    ("... and may still close", "A002", "m2605", S, C, 2900.0, 5),
    ("product outside the account's allow-list", "A003", "au2606", B, OPEN, 640.0, 1),
    ("quantity above the instrument maximum", "A001", "IF2612", B, OPEN, 3900.0, 21),
    ("non-integer quantity", "A001", "rb2605", B, OPEN, 3200.0, 1.5),
    ("NaN price", "A001", "rb2605", B, OPEN, float("nan"), 1),
    ("unknown account", "Z999", "rb2605", B, OPEN, 3200.0, 1),
    ("unknown instrument", "A001", "rb9999", B, OPEN, 3200.0, 1),
    ("group account rests a sell", "A004", "SR605", S, OPEN, 5610.0, 3),
    ("its sibling would buy into it: self-trade", "A005", "SR605", B, OPEN, 5612.0, 3),
    ("not enough funds for the margin", "A003", "rb2605", B, OPEN, 3200.0, 300),
]


def run(config: Path = SAMPLE_CONFIG, console: Console | None = None) -> list[tuple[str, int]]:
    """Run the script; print the decision table; return (what, reason code) per order."""
    console = console or Console(width=max(Console().width, 140))
    cfg = load_risk_config(config)
    engine = Engine(cfg)
    now = ns_from_local(2026, 11, 30, 9, 30)  # Monday 09:30, day session open
    table = Table(title=f"fengkong risk engine — {cfg.firm.name} ({config.name})", show_lines=False)
    for col in ("#", "what it shows", "account", "order", "decision", "code", "why"):
        table.add_column(col, overflow="fold")
    results: list[tuple[str, int]] = []
    for n, (what, account, symbol, side, offset, price, qty, *rest) in enumerate(SCRIPT, 1):
        order = _order(n, account, symbol, side, offset, price, qty, *rest)
        now += 1_000_000  # a millisecond apart
        decision = engine.decide(order, now)
        code = int(decision.reason)
        desc = (f"{Side(side).name} {Offset(offset).name} {qty} {symbol} "
                f"@ {'MKT' if order.ord_type == MKT else price}")
        verdict = "[green]ACCEPT[/]" if decision.accepted else "[red]REJECT[/]"
        why = Reason(code).name if decision.accepted else decision.text
        table.add_row(str(n), what, account, desc, verdict, str(code), why)
        results.append((what, code))
        if decision.accepted:
            engine.apply_ack(decision.ref, now)
    console.print(table)
    view = engine.account_view("A001")
    console.print(f"A001 after the script: available {view['available']:,.2f}, "
                  f"frozen margin {view['frozen_margin']:,.2f}, open orders {view['open_orders']}")
    return results
