"""Crash recovery with real processes: kill -9 the gateway mid-flow, restart it on its journal.

What must hold after the restart:
- the book rebuilt from the journal equals an independent replay of the same journal by the
  *reference* engine (so recovery is exact up to the last durable record);
- no fill is lost: every account's position equals its initial position plus the fills the
  exchange reports for the gateway's seat;
- working orders are reconciled: the gateway's working orders are exactly the exchange's.
"""

from __future__ import annotations

import json
import random
import shutil
import urllib.request
from collections import Counter

import pytest

from checks.config import load_risk_config
from checks.engine import Engine as ReferenceEngine
from checks.enums import Offset, OrdStatus, Side
from gateway.config import load_gateway_config
from gateway.journal import Journal
from gateway.recovery import replay_journal
from simulator.client import Client
from tests.conftest import EXAMPLES, start_exchange, start_gateway

T = 15.0
ACCOUNTS = ("A001", "A004", "A005", "H001")


def _admin(port: int, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": "Bearer demo-viewer-token"})
    with urllib.request.urlopen(req, timeout=T) as resp:
        return json.loads(resp.read())


def _flow(client: Client, rng: random.Random, n: int) -> None:
    """Crossing and resting orders and cancels, without waiting for answers (a busy client)."""
    working: list[tuple[str, str]] = []
    for i in range(n):
        r = rng.random()
        if r < 0.15 and working:
            # The order may have filled meanwhile: the cancel then meets "finished", as in life.
            cl_ord_id, account = working.pop(rng.randrange(len(working)))
            client.cancel_nowait(cl_ord_id, account=account)
            continue
        account = ACCOUNTS[i % len(ACCOUNTS)]
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        price = 3200.0 + rng.randint(-3, 3)
        h = client.send_order_nowait(account=account, symbol="rb2605", side=side,
                                     offset=Offset.OPEN, price=price, qty=rng.randint(1, 3))
        working.append((h.cl_ord_id, account))


def _exchange_positions(reports) -> Counter:
    """Net filled lots per (account, side) from the exchange's own order records."""
    pos: Counter = Counter()
    for rep in reports:
        if rep.cum_qty:
            pos[(rep.account, rep.side)] += rep.cum_qty
    return pos


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_mid_flow_then_restart_rebuilds_the_exact_book(tmp_path, seed):
    rng = random.Random(seed)
    journal_dir = tmp_path / "journal"
    ex = start_exchange()
    ex_port = int(ex.match.group(1))
    gw = start_gateway(ex_port, "--journal", str(journal_dir))
    try:
        gw.wait_for("exchange link up")
        client = await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret",
                                      cancel_on_disconnect=False)
        _flow(client, rng, rng.randint(60, 200))
        for _ in range(rng.randint(1, 60)):  # the crash point varies: after the k-th answer
            await client.next_report(timeout=T)
        gw.kill9()
        client.abort()

        # An independent rebuild of what was durable at the crash: the reference engine.
        crash_copy = tmp_path / "at-crash"
        shutil.copytree(journal_dir, crash_copy, ignore=shutil.ignore_patterns("LOCK"))
        cfg = load_gateway_config(EXAMPLES / "gateway.toml")
        from gateway.server import Gateway

        offline = Gateway(cfg, engine_cls=ReferenceEngine)
        with Journal.open(crash_copy) as j:
            expected = replay_journal(offline, j)
        assert expected.records > 0 and not expected.disagreements

        gw = start_gateway(ex_port, "--journal", str(journal_dir))
        gw.wait_for("exchange link up", T)
        admin_port = int(gw.match.group(2))
        recovered = _admin(admin_port, "/v1/recovery")
        assert recovered["records"] == expected.records
        assert recovered["digest"] == expected.digest  # Cython book == reference book
        assert recovered["disagreements"] == []

        # The gateway's view after recovery and reconciliation...
        views = {a: _admin(admin_port, f"/v1/accounts/{a}") for a in ACCOUNTS}
        gateway_open = {o["exch_id"] for o in _admin(admin_port, "/v1/orders")}
        gw.stop()  # (the seat is the gateway's: query the exchange once it has let go)
        # ...against the exchange's own records: no fill lost, working orders reconciled.
        seat = await Client.connect("127.0.0.1", ex_port, "GW1", "seat-secret", heartbeat_s=0)
        orders = await seat.request_status(open_only=False, timeout=T)
        await seat.close()
        filled = _exchange_positions(orders)
        assert sum(filled.values()) > 0
        risk = load_risk_config(EXAMPLES / "risk.toml")
        initial = {(a.id, p.symbol): (p.long, p.short) for a in risk.accounts for p in a.positions}
        for account in ACCOUNTS:
            pos = views[account]["positions"].get("rb2605", {})
            long0, short0 = initial.get((account, "rb2605"), (0, 0))
            assert pos.get("long_td", 0) + pos.get("long_yd", 0) == long0 + filled[(account, Side.BUY)]
            assert pos.get("short_td", 0) + pos.get("short_yd", 0) == short0 + filled[(account, Side.SELL)]
        exchange_open = {o.cl_ord_id for o in orders
                         if o.status in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED)}
        assert gateway_open == exchange_open
    finally:
        gw.stop()
        ex.stop()


async def test_a_torn_journal_tail_is_reported_and_skipped_on_start(tmp_path):
    journal_dir = tmp_path / "journal"
    ex = start_exchange()
    ex_port = int(ex.match.group(1))
    gw = start_gateway(ex_port, "--journal", str(journal_dir))
    try:
        gw.wait_for("exchange link up")
        client = await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret",
                                      cancel_on_disconnect=False)
        h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3199.0, qty=1)
        await h.acked(timeout=T)
        await client.close()
        gw.stop()
        segment = sorted(journal_dir.glob("*.journal"))[-1]
        with open(segment, "ab") as f:
            f.write(b"\x00\x00\x01\x00torn")  # a record header promising bytes that never came
        gw = start_gateway(ex_port, "--journal", str(journal_dir))
        gw.wait_for("exchange link up", T)  # the gateway carries on...
        assert any("damaged_tail_truncated" in line for line in gw.output)  # ...having said so
        rec = _admin(int(gw.match.group(2)), "/v1/recovery")
        assert rec["working_orders"] == 1 and rec["disagreements"] == []
    finally:
        gw.stop()
        ex.stop()
