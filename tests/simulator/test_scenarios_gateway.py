"""Every scenario's *gateway* expectations, against the real risk gateway in front of the simulator.

Both run as real processes on free loopback ports with the sample config (``examples/
gateway.toml``: user ``algo1`` for the programmatic accounts, ``manual1`` for A003), and are
always stopped. Each scenario gets a gateway of its own (its own seat at one shared exchange),
so one scenario's rolling-second rate windows and kills can never count against the next and
no test waits for a window to empty; the unregistered-programmatic scenario (a burst a second
until the gateway flags it) runs alongside the others on its own gateway.
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


class _Fleet:
    """One exchange process; gateways started on demand, each with its own seat."""

    def __init__(self, exchange_port: int) -> None:
        self.exchange_port = exchange_port
        self.procs: list[asyncio.subprocess.Process] = []
        self.drains: list[asyncio.Future] = []

    async def gateway(self, seat: str) -> int:
        gateway, g = await _start(["-m", "gateway", "serve", "--config",
                                   str(ROOT / "examples" / "gateway.toml"), "--port", "0",
                                   "--admin-port", "0", "--exchange", f"127.0.0.1:{self.exchange_port}",
                                   "--seat", seat, "--id", seat, "--log-level", "error"],
                                  r"clients on [\d.]+:(\d+)", also="exchange link up")
        self._keep(gateway)
        return int(g.group(1))

    def _keep(self, proc: asyncio.subprocess.Process) -> None:
        self.procs.append(proc)
        # Keep draining its output so a chatty child never blocks on a full pipe.
        if proc.stdout is not None:
            self.drains.append(asyncio.ensure_future(proc.stdout.read()))


@pytest.fixture
async def fleet() -> AsyncIterator[_Fleet]:
    exchange, m = await _start(["-m", "simulator", "exchange", "--config",
                                str(ROOT / "examples" / "risk.toml"), "--port", "0"],
                               r"listening on [\d.]+:(\d+)")
    f = _Fleet(int(m.group(1)))
    f._keep(exchange)
    try:
        yield f
    finally:
        for d in f.drains:
            d.cancel()
        for p in reversed(f.procs):
            await _stop(p)


async def test_every_scenario_meets_its_gateway_expectations(fleet: _Fleet) -> None:
    async def run(name: str) -> ScenarioResult:
        port = await fleet.gateway(f"GW-{name}")
        return await run_scenario(name, "127.0.0.1", port, "gateway", seed=1,
                                  logins=LOGINS, timeout=10)

    slow = asyncio.ensure_future(run(SLOW))
    results = [await run(spec.name) for spec in list_scenarios() if spec.name != SLOW]
    results.append(await slow)
    failures = {r.name: (r.error, [c for c in r.checks if not c.passed]) for r in results if not r.passed}
    assert not failures, failures
    assert len(results) == len(list_scenarios())
