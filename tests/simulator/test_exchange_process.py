"""``python -m simulator exchange`` as a real subprocess: it prints its port, trades, stops cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from simulator.client import Client

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on [\d.]+:(\d+)")


@asynccontextmanager
async def exchange_process(*flags: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "exchange", "--config", str(ROOT / "examples" / "risk.toml"),
        "--port", "0", "--md-interval", "0", *flags,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        m = LISTENING.search(line)
        assert m, f"no port in {line!r}; stderr: {(await proc.stderr.read()) if proc.stderr else b''!r}"
        yield proc, int(m.group(1))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_exchange_subprocess_trades_and_stops_on_sigterm() -> None:
    async with exchange_process() as (proc, port):
        a = await Client.connect("127.0.0.1", port, "a", "")
        b = await Client.connect("127.0.0.1", port, "b", "")
        ask = await a.send_order(account="A001", symbol="SR605", side=Side.SELL, price=5601, qty=2)
        await ask.acked(10)
        bid = await b.send_order(account="H001", symbol="SR605", side=Side.BUY, price=5601, qty=2)
        assert (await bid.wait_done(10)).status == OrdStatus.FILLED
        assert (await ask.wait_done(10)).status == OrdStatus.FILLED
        await a.close()
        await b.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert b"stopped: 2 logons, 2 orders" in out


async def test_exchange_subprocess_honours_fault_and_mode_flags() -> None:
    async with exchange_process("--ack-only", "--fill") as (_, port):
        client = await Client.connect("127.0.0.1", port, "u", "")
        h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3333, qty=3)
        done = await h.wait_done(10)
        assert (done.status, done.last_px, done.cum_qty) == (OrdStatus.FILLED, 3333.0, 3)
        await client.close()
    async with exchange_process("--reject-fraction", "1", "--latency-ms", "1") as (_, port):
        client = await Client.connect("127.0.0.1", port, "u", "")
        h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200, qty=1)
        rep = await h.acked(10)
        assert (rep.status, rep.reason) == (OrdStatus.REJECTED, Reason.EXCHANGE_REJECT)
        await client.close()


async def test_bad_config_is_reported_with_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "examples" / "risk.toml").read_text() + "\n[sim]\nmd_interval_s = -1\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "exchange", "--config", str(bad), "--port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"{bad}: sim.md_interval_s".encode() in out
