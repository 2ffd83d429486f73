"""Memory soak (issue 10, item 5): RSS across 1 M orders through the router and the Cython engine.

In-process, no sockets: the real ``Router`` and Cython ``Engine`` of a ``Gateway`` built from
``examples/bench-gateway.toml`` (every check on; ``--accounts`` of its accounts × its 8
instruments), a fake client session and a fake exchange link that keep nothing, and the journal
off (``--journal DIR`` turns it on). Each order lives its whole life: accepted and acknowledged,
then three in four fill (one execution each, alternately BUY OPEN below and SELL CLOSE above the
reference, so the positions stay flat) and one in four is cancelled by the client and the cancel
confirmed — spread evenly, so no account reaches a limit (the exchanges' 500 cancels per
contract and day included) and every order is accepted.

The engine's rate windows keep the last N timestamps per account (N = the limit: orders and
cancels per second, executions per window, messages), allocated as they fill, so memory grows
until each account has sent N of each — a bounded warm-up. The default, 8 accounts and 100,000
orders a day, fills them on the first day, which is therefore the warm-up.

The orders are spread over ``--days`` trading days (weekdays of December 2026, one millisecond
apart within a day), because the gateway must remember every cl_ord_id and execution id for
the whole trading day (duplicates are refused all day) and forgets them at the day's start —
bounded per day by ``gateway.router``'s memory caps. Flat memory therefore means: what the
first day (the warm-up) leaves behind is what every later day leaves behind. RSS is read from
``/proc/self/status`` at the end of every day, after a ``gc.collect()``, with the number of live
Python memory blocks (``sys.getallocatedblocks()``: flat means no Python object leaks); with
``--trim`` glibc's ``malloc_trim(0)`` runs first, which separates memory freed but kept by the
allocator from memory still in use.

    .venv/bin/python -m bench.soak                 # 1,000,000 orders over 10 days
    .venv/bin/python -m bench.soak --orders 200000 --days 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import sys
import time
from pathlib import Path
from typing import Any

from bench.benchconfig import GATEWAY_TOML, load_bench_universe
from checks.calendar import ns_from_local
from checks.enums import ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from gateway.config import load_gateway_config
from gateway.logs import configure_logging
from gateway.protocol import CancelOrder, ExecReport, NewOrder
from gateway.server import Gateway

# Weekdays of December 2026 (no exchange holiday among them): one simulated trading day each.
DAYS = [d for d in range(1, 32) if dt.date(2026, 12, d).weekday() < 5]
MS = 1_000_000


class NullSession:
    """A logged-on client that reads everything and keeps nothing."""

    def __init__(self, accounts: frozenset[str]) -> None:
        self.session_id = 1
        self.user = "bench"
        self.accounts = accounts
        self.cancel_on_disconnect = False
        self.automated = True
        self.closed = False
        self.received = 0

    def send(self, msg: Any) -> None:
        self.received += 1


class NullLink:
    """An exchange link that is up and keeps only the last message sent."""

    def __init__(self) -> None:
        self.up = True
        self.last: Any = None

    def send(self, msg: Any) -> bool:
        self.last = msg
        return True


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(orders: int, days: int, journal: str | None = None, trim: bool = False,
        n_accounts: int = 8) -> dict[str, Any]:
    cfg = load_gateway_config(GATEWAY_TOML)
    if journal:
        import msgspec

        cfg = msgspec.structs.replace(cfg, journal=msgspec.structs.replace(cfg.journal,
                                                                            dir=journal))
    universe = load_bench_universe()
    gw = Gateway(cfg)
    router, engine = gw.router, gw.engine
    if gw.audit is not None:
        router.audit = gw.audit
    link = router.link = NullLink()
    accounts = universe.accounts[:n_accounts]
    session = NullSession(frozenset(accounts))
    engine.register_session(session.session_id, True)
    router.add_session(session)
    insts = universe.instruments
    pairs = len(accounts) * len(insts)
    per_day = orders // days
    outcome = {"accepted": 0, "rejected": 0, "filled": 0, "cancelled": 0}
    rows: list[tuple[int, int, float, dict[str, int]]] = []
    started = time.perf_counter()
    n = 0
    for day in range(days):
        now = ns_from_local(2026, 12, DAYS[day], 9, 30)
        for _ in range(per_day):
            now += MS
            acct = accounts[n % len(accounts)]
            inst = insts[(n // len(accounts)) % len(insts)]
            k = n // pairs  # how many orders this account sent on this instrument before
            buy = k % 2 == 0
            ticks = 1 + k % 5
            price = inst.reference - ticks * inst.tick if buy else inst.reference + ticks * inst.tick
            qty = 1 + k % 3
            clid = f"s{n:x}"
            link.last = None
            router.new_order(session, NewOrder(clid, acct, inst.symbol,
                                               Side.BUY if buy else Side.SELL,
                                               Offset.OPEN if buy else Offset.CLOSE, Hedge.SPEC,
                                               OrdType.LIMIT, Tif.GFD, price, qty), now)
            sent = link.last
            n += 1
            if type(sent) is not NewOrder:
                outcome["rejected"] += 1
                continue
            outcome["accepted"] += 1
            x = sent.cl_ord_id
            router.exchange_report(ExecReport(x, f"X{n}", acct, inst.symbol, OrdStatus.NEW,
                                              ExecType.NEW), now + 1000)
            if k % 8 < 6:  # fills: BUY, SELL, ... three pairs; then a BUY and a SELL cancelled
                router.exchange_report(ExecReport(x, f"X{n}", acct, inst.symbol, OrdStatus.FILLED,
                                                  ExecType.TRADE, last_qty=qty, last_px=price,
                                                  exec_id=f"E{n:x}"), now + 2000)
                outcome["filled"] += 1
            else:
                router.cancel(session, CancelOrder(f"c{n:x}", clid, acct), now + 2000)
                router.exchange_report(ExecReport(x, f"X{n}", acct, inst.symbol,
                                                  OrdStatus.CANCELED, ExecType.CANCELED),
                                       now + 3000)
                outcome["cancelled"] += 1
        gc.collect()
        if trim:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        sizes = {"blocks": sys.getallocatedblocks(),"used_clids": sum(len(v) for v in router.used_clids.values()),
                 "exec_ids": len(router.exec_ids), "finished": len(router.finished),
                 "cancels": len(router.cancels), "orders": len(router.orders),
                 "alerts": len(router.alerts)}
        rows.append((day + 1, n, rss_mb(), sizes))
        print(f"day {day + 1:2d}: {n:>9,} orders  RSS {rows[-1][2]:7.1f} MB  {sizes}",
              flush=True)
    elapsed = time.perf_counter() - started
    if gw.audit is not None:
        gw.audit.close()
    warm = rows[0][2]
    end = rows[-1][2]
    return {"rows": rows, "warm_mb": warm, "end_mb": end, "growth": (end - warm) / warm,
            "elapsed_s": elapsed, "outcome": outcome, "orders": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=10, help=f"trading days (at most {len(DAYS)})")
    ap.add_argument("--journal", help="journal directory (default: journal off)")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) before each reading")
    ap.add_argument("--accounts", type=int, default=8, help="accounts trading (of 256)")
    args = ap.parse_args(argv)
    if not 1 <= args.days <= len(DAYS):
        ap.error(f"--days must be 1 .. {len(DAYS)}")
    configure_logging("error")  # the engine's threshold warnings are not what is measured
    print(f"start: RSS {rss_mb():.1f} MB", flush=True)
    res = run(args.orders, args.days, args.journal, args.trim, args.accounts)
    print(f"{res['orders']:,} orders in {res['elapsed_s']:.1f} s {res['outcome']}")
    print(f"RSS after the warm-up day {res['warm_mb']:.1f} MB, at the end {res['end_mb']:.1f} MB:"
          f" {res['growth'] * 100:+.1f} % (target <= +10 %)")
    return 0 if res["growth"] <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
