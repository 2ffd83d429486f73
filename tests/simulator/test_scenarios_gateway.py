"""Every scenario's *gateway* expectations, against the real risk gateway in front of the simulator.

Both run as real processes on free loopback ports with the sample config (``examples/
gateway.toml``: user ``algo1`` for the programmatic accounts, ``manual1`` for A003), and are
always stopped. The scenarios run back to back on one gateway, with a pause between them so
one scenario's rolling-second rate window does not count against the next; the
unregistered-programmatic scenario (a burst a second until the gateway flags it) runs
alongside them, since its account and user are its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.replay import Login
from simulator.scenarios import ScenarioResult, list_scenarios, run_scenario

ROOT = Path(__file__).resolve().parents[2]
ALGO = Login("algo1", "algo-secret")
LOGINS = {"seller": ALGO, "buyer": ALGO, "algo": ALGO, "desk": ALGO, "group": ALGO,
          "manual": Login("manual1", "manual-secret")}
SLOW = "unregistered-programmatic"

pytestmark = pytest.mark.slow


async def _start(args: list[str], ready: str, also: str | None = None) -> tuple[asyncio.subprocess.Process, re.Match]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    match = None
    seen = []
    while match is None or also is not None:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line:
            proc.kill()
            raise RuntimeError(f"{args[:3]} exited early: {''.join(seen)}")
        seen.append(line)
        match = match or re.search(ready, line)
        if also is not None and also in line:
            also = None
    return proc, match


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def gateway_port() -> AsyncIterator[int]:
    procs = []
    try:
        exchange, m = await _start(["-m", "simulator", "exchange", "--config",
                                    str(ROOT / "examples" / "risk.toml"), "--port", "0"],
                                   r"listening on [\d.]+:(\d+)")
        procs.append(exchange)
        gateway, g = await _start(["-m", "gateway", "serve", "--config", str(ROOT / "examples" / "gateway.toml"),
                                   "--port", "0", "--admin-port", "0", "--exchange", f"127.0.0.1:{m.group(1)}",
                                   "--log-level", "error"],
                                  r"clients on [\d.]+:(\d+)", also="exchange link up")
        procs.append(gateway)
        # Keep draining their output so a chatty child never blocks on a full pipe.
        drains = [asyncio.ensure_future(p.stdout.read()) for p in procs if p.stdout is not None]
        yield int(g.group(1))
        for d in drains:
            d.cancel()
    finally:
        for p in reversed(procs):
            await _stop(p)


async def test_every_scenario_meets_its_gateway_expectations(gateway_port: int) -> None:
    async def run(name: str) -> ScenarioResult:
        return await run_scenario(name, "127.0.0.1", gateway_port, "gateway", seed=1,
                                  logins=LOGINS, timeout=10)

    slow = asyncio.ensure_future(run(SLOW))
    results = []
    for i, spec in enumerate(s for s in list_scenarios() if s.name != SLOW):
        if i:
            await asyncio.sleep(1.1)  # the previous scenario's rate window empties
        results.append(await run(spec.name))
    results.append(await slow)
    failures = {r.name: (r.error, [c for c in r.checks if not c.passed]) for r in results if not r.passed}
    assert not failures, failures
    assert len(results) == len(list_scenarios())
