"""``fengkong demo``: the whole product on loopback, with nothing to configure.

It starts the exchange simulator and the gateway as real processes on free ports (the sample
config in ``examples/``), then:

1. replays a recorded sample flow (``examples/flows/sample.csv``) through the gateway;
2. lets a runaway algo loose on account A001: one of its sessions leaves bids resting at the
   exchange, another storms orders as fast as the socket takes them, which the per-second
   order limit refuses at once and the reject-storm guard stops (that session only);
3. has the risk officer hit the kill switch for A001 (the admin plane, as ``fengkong kill``
   does), which cancels the bids A001 still has resting at the exchange and refuses what
   follows;
4. prints what happened, and the gateway's live status.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from gateway.admin_client import admin_call
from gateway.cli import account_state
from simulator.client import Client
from simulator.replay import FlowAction, Login, load_flow, print_summary, replay

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RISK_TOKEN = "demo-risk-token"  # the sample config's risk officer (see examples/gateway.toml)
RESTING = 20  # bids the runaway algo leaves resting for the kill switch to cancel


class _Child:
    """A child process and the first stdout line that matches ``ready``."""

    def __init__(self, args: list[str], ready: str, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env)
        deadline = time.monotonic() + timeout
        assert self.p.stdout is not None
        for line in self.p.stdout:
            m = re.search(ready, line)
            if m:
                self.match = m
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(f"{' '.join(args[2:4])} did not start (exit code {self.p.poll()})")

    def wait_line(self, pattern: str) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            if re.search(pattern, line):
                return
        raise RuntimeError(f"{pattern!r} never appeared")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def main() -> int:
    console = Console()
    console.rule("[bold]fengkong demo[/]: exchange simulator + risk gateway on loopback")
    exchange = _Child([sys.executable, "-m", "simulator", "exchange", "--config",
                       str(EXAMPLES / "risk.toml"), "--port", "0"], r"listening on [\d.]+:(\d+)")
    gateway = None
    try:
        ex_port = int(exchange.match.group(1))
        gateway = _Child([sys.executable, "-m", "gateway", "serve", "--config",
                          str(EXAMPLES / "gateway.toml"), "--port", "0", "--admin-port", "0",
                          "--exchange", f"127.0.0.1:{ex_port}", "--log-level", "error"],
                         r"clients on [\d.]+:(\d+), admin on [\d.]+:(\d+)")
        gateway.wait_line("exchange link up")
        gw_port, admin_port = int(gateway.match.group(1)), int(gateway.match.group(2))
        console.print(f"exchange simulator on 127.0.0.1:{ex_port}; gateway clients on "
                      f"127.0.0.1:{gw_port}, admin plane on 127.0.0.1:{admin_port}")
        ok = asyncio.run(_script(console, gw_port, f"http://127.0.0.1:{admin_port}"))
    finally:
        if gateway is not None:
            gateway.stop()
        exchange.stop()
    console.rule("[green]demo finished[/]" if ok else "[red]demo finished with surprises[/]")
    return 0 if ok else 1


async def _script(console: Console, port: int, admin: str) -> bool:
    ok = True
    # 1. a recorded flow
    console.rule("1. replay examples/flows/sample.csv")
    flow = load_flow(EXAMPLES / "flows" / "sample.csv")
    logins = {s: Login("algo1", "algo-secret") for s in {a.session for a in flow}}
    summary = await replay(flow, "127.0.0.1", port, logins=logins, speed=0, sync_sessions=True)
    print_summary(summary)

    # 2. a runaway algo
    console.rule(f"2. runaway algo: {RESTING} bids left resting on A001, then 300 orders as fast "
                 "as the socket takes them")
    # Its quiet session leaves bids below the market: they rest at the exchange until someone
    # cancels them (the reject-storm guard below stops the other session only).
    quiet = await Client.connect("127.0.0.1", port, "algo1", "algo-secret", ["A001"])
    bids = [await quiet.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                   price=3100.0 + n, qty=1, cl_ord_id=f"rest-{n}")
            for n in range(RESTING)]
    rested = sum([OrdStatus((await h.acked(timeout=10)).status) == OrdStatus.NEW for h in bids])
    console.print(f"[bold]{rested}[/] bids resting on A001 at the exchange")
    ok &= rested == RESTING
    storm = [FlowAction(t_ms=0, session="runaway", action="new", cl_ord_id=f"storm-{n}",
                        account="A001", symbol="rb2605", side=int(Side.BUY),
                        price=3150.0 + (n % 40), qty=1) for n in range(300)]
    summary = await replay(storm, "127.0.0.1", port, logins={"runaway": Login("algo1", "algo-secret")},
                           speed=0, cancel_on_disconnect=False)
    print_summary(summary)
    def count(name: str) -> int:
        return sum(n for key, n in summary.rejected.items() if key.endswith(name))

    rate_limited, storm_killed = count("ORDER_RATE"), count("KILLED_SESSION")
    console.print(f"[bold]{summary.accepted}[/] accepted, then the per-second order limit refused "
                  f"[bold]{rate_limited}[/]; at {rate_limited} rejects in a second the reject-storm "
                  f"guard killed the session (cancelling its resting orders at the exchange: "
                  f"{summary.canceled} CANCELED reports) and refused the last [bold]{storm_killed}[/]")
    ok &= rate_limited > 0

    # 3. the risk officer's kill switch
    console.rule("3. risk officer: fengkong kill --account A001")
    result = admin_call(admin, RISK_TOKEN, "POST", "/v1/kill",
                        {"scope": "account", "key": "A001", "reason": "runaway algo (demo)"})
    console.print(f"kill switch: [bold]{result['cancels_sent']}[/] cancels sent to the exchange in "
                  f"{result['elapsed_us'] / 1000:.2f} ms (the bids the algo left resting)")
    ok &= result["cancels_sent"] == rested
    canceled = sum([OrdStatus((await h.wait_done(timeout=10)).status) == OrdStatus.CANCELED
                    for h in bids])
    console.print(f"the exchange confirmed [bold]{canceled}[/] of them CANCELED")
    ok &= canceled == rested
    await quiet.close()
    client = await Client.connect("127.0.0.1", port, "algo1", "algo-secret", ["A001", "A004"])
    after = Counter()
    for n in range(5):
        h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                    price=3190.0, qty=1, cl_ord_id=f"after-kill-{n}")
        after[Reason((await h.wait_done(timeout=10)).reason).name] += 1
    other = await client.send_order(account="A004", symbol="rb2605", side=Side.BUY, price=3190.0, qty=1)
    other_status = OrdStatus((await other.acked(timeout=10)).status).name
    await client.close()
    table = Table(title="after the kill")
    table.add_column("what")
    table.add_column("result")
    table.add_row("new orders on A001", ", ".join(f"{k} x{v}" for k, v in after.items()))
    table.add_row("a new order on another account (A004)", other_status)
    console.print(table)
    ok &= after == Counter({"KILLED_ACCOUNT": 5}) and other_status == "NEW"

    # 4. live status, as `fengkong status` shows it
    console.rule("4. fengkong status")
    status = admin_call(admin, RISK_TOKEN, "GET", "/v1/status")
    working_a001 = sum(1 for o in admin_call(admin, RISK_TOKEN, "GET", "/v1/orders?account=A001"))
    t = Table(title="accounts")
    for col in ("account", "status", "available", "used margin", "working", "messages"):
        t.add_column(col, justify="right")
    for a in status["accounts"]:
        t.add_row(a["account"], account_state(a, status["kills"]), f"{a['available']:,.2f}",
                  f"{a['used_margin']:,.2f}", str(a["open_orders"]), str(a["messages_today"]))
    console.print(t)
    console.print("kill switch: " + ("; ".join(f"{k['scope']} {k['key']} ({k['mode']})".strip()
                                               for k in status["kills"]) or "nothing killed"))
    console.print(f"A001 working orders after the kill: {working_a001}")
    ok &= working_a001 == 0
    for alert in status["alerts"][-4:]:
        console.print(f"alert {alert['code']} ({Reason(alert['code']).name}) {alert['scope']}: "
                      f"{alert['text']}")
    return bool(ok)
