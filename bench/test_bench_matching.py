"""Simulator benchmarks: the matching engine alone, and the exchange server end to end.

Run: ``.venv/bin/python -m pytest bench/test_bench_matching.py --benchmark-only
--benchmark-columns=min,median,mean,ops,rounds``. Figures go in
``bench/RESULTS-simulator.md``; ``extra_info`` of each benchmark holds the per-order figure
(orders/s or µs per round trip) computed from the median.

- *Engine*: a seeded, realistic flow over five instruments — 60 % passive limit orders a few
  ticks from the reference price, 25 % cancels of resting orders (some already filled: those
  answer with a cancel reject, as in life), 15 % aggressive IOC orders that cross — through a
  fresh ``MatchingEngine``, reports built but not encoded.
- *Loopback floor*: the same placement with a 20-line uvloop echo server instead of the
  exchange, one 70-byte frame at a time — what a round trip costs before any protocol work; the
  ping-pong figures are read against it (``extra_info["x_echo"]``).
- *Exchange end to end*: ``python -m simulator exchange`` in its own process (pinned to CPU 1
  when there are two), the client library here (pinned to CPU 0), loopback TCP. *Pipelined*:
  a burst of N orders (buy/sell pairs at one price, so every pair trades — three reports per
  order on average in matching mode) sent in one write, timed until the last order's final
  report. *Ping-pong*: one order at a time, send to ack.

Benchmarks report; they assert nothing about speed.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from checks.config import load_risk_config
from checks.enums import OrdType, Side, Tif
from gateway.protocol import CancelOrder, NewOrder
from simulator.client import Client
from simulator.matching import AckOnlyEngine, MatchingEngine

ROOT = Path(__file__).resolve().parents[1]
RISK = load_risk_config(ROOT / "examples" / "risk.toml")
SYMBOLS = ["rb2605", "m2605", "SR605", "IF2612", "au2606"]
FLOW_SIZE = 20_000
BURST = 2_000
PING_PONGS = 200
TWO_CORES = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def make_flow(n: int, seed: int = 1) -> list[tuple[str, str, NewOrder | CancelOrder]]:
    """``(kind, owner, message)`` actions: the realistic add / cancel / match mix."""
    rng = random.Random(seed)
    insts = {i.symbol: i for i in RISK.instruments}
    live: list[tuple[str, str]] = []
    flow: list[tuple[str, str, NewOrder | CancelOrder]] = []
    for i in range(n):
        owner = f"seat{rng.randint(1, 4)}"
        r = rng.random()
        if r < 0.25 and live:
            cl_owner, cl = live.pop(rng.randrange(len(live)))
            flow.append(("cancel", cl_owner, CancelOrder(f"x{i}", cl, "A001")))
            continue
        inst = insts[rng.choice(SYMBOLS)]
        ref = round(inst.reference_price / inst.tick)
        side = rng.choice((Side.BUY, Side.SELL))
        sign = 1 if side == Side.BUY else -1
        if r < 0.40:  # aggressive: crosses up to three ticks through the reference price
            ticks, tif, qty = ref + sign * rng.randint(0, 3), Tif.IOC, rng.randint(1, 5)
        else:  # passive: rests a few ticks away on its own side
            ticks, tif, qty = ref - sign * rng.randint(1, 10), Tif.GFD, rng.randint(1, 10)
            live.append((owner, f"o{i}"))
        flow.append(("new", owner, NewOrder(f"o{i}", "A001", inst.symbol, int(side), 1, 1,
                                            int(OrdType.LIMIT), int(tif),
                                            round(ticks * inst.tick, 2), qty)))
    return flow


FLOW = make_flow(FLOW_SIZE)


def run_flow(engine: MatchingEngine | AckOnlyEngine, flow: list) -> int:
    submit, cancel = engine.submit, engine.cancel
    reports = 0
    for kind, owner, msg in flow:
        reports += len(submit(owner, msg) if kind == "new" else cancel(owner, msg))
    return reports


def _per_second(benchmark: BenchmarkFixture, actions: int) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info["actions_per_s"] = round(actions / median)
    benchmark.extra_info["us_per_action"] = round(median / actions * 1e6, 3)


def test_engine_realistic_mix(benchmark: BenchmarkFixture) -> None:
    benchmark.group = f"matching engine: {FLOW_SIZE:,} actions (60% add, 25% cancel, 15% cross)"

    def setup() -> tuple[tuple, dict]:
        return (MatchingEngine(RISK.instruments, RISK.exchanges), FLOW), {}

    reports = benchmark.pedantic(run_flow, setup=setup, rounds=15, warmup_rounds=1)
    benchmark.extra_info["reports"] = reports
    _per_second(benchmark, FLOW_SIZE)


def test_engine_ack_only(benchmark: BenchmarkFixture) -> None:
    benchmark.group = f"ack-only engine: {FLOW_SIZE:,} actions (fill on ack)"
    orders = [a for a in FLOW if a[0] == "new"]

    def setup() -> tuple[tuple, dict]:
        return (AckOnlyEngine(RISK.instruments, RISK.exchanges, fill=True), orders), {}

    benchmark.pedantic(run_flow, setup=setup, rounds=15, warmup_rounds=1)
    _per_second(benchmark, len(orders))


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    original = os.sched_getaffinity(0) if TWO_CORES else None
    if TWO_CORES:
        os.sched_setaffinity(0, {0})  # the client here, the exchange on the other core
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()
    if original is not None:
        os.sched_setaffinity(0, original)


@pytest.fixture(scope="module", params=["matching", "ack-only"])
def session(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Iterator[Client]:
    flags = ["--ack-only", "--fill"] if request.param == "ack-only" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "exchange", "--config", str(ROOT / "examples" / "risk.toml"),
         "--port", "0", "--md-interval", "0", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if TWO_CORES else None)
    try:
        assert proc.stdout is not None
        port = int(re.search(r":(\d+) ", proc.stdout.readline()).group(1))  # type: ignore[union-attr]
        client = loop.run_until_complete(Client.connect("127.0.0.1", port, "bench", "",
                                                        report_queue=0, heartbeat_s=0))
        client.mode = request.param  # type: ignore[attr-defined]
        yield client
        loop.run_until_complete(client.close())
    finally:
        proc.terminate()
        proc.wait(10)


ECHO_SERVER = """
import asyncio, sys, uvloop
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    s = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print("listening on 127.0.0.1:%d " % s.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""
_echo_median: dict[str, float] = {}


class _EchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending <= 0 and self.waiter is not None:
            self.waiter.set_result(None)


def test_loopback_echo_ping_pong(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = f"exchange end to end: {PING_PONGS} sequential order -> ack round trips"
    benchmark.name = "ping-pong[loopback echo floor]"
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if TWO_CORES else None)
    try:
        assert proc.stdout is not None
        port = int(re.search(r":(\d+) ", proc.stdout.readline()).group(1))  # type: ignore[union-attr]
        _, echo = loop.run_until_complete(loop.create_connection(_EchoClient, "127.0.0.1", port))
        frame = b"x" * 70  # about one NewOrder frame

        async def ping_pong() -> None:
            for _ in range(PING_PONGS):
                echo.waiter = loop.create_future()
                echo.pending = len(frame)
                echo.transport.write(frame)
                await echo.waiter

        benchmark.pedantic(lambda: loop.run_until_complete(ping_pong()), rounds=10, warmup_rounds=2)
        median = benchmark.stats.stats.median
        _echo_median["floor"] = median
        benchmark.extra_info["us_per_round_trip"] = round(median / PING_PONGS * 1e6, 1)
        echo.transport.close()
    finally:
        proc.terminate()
        proc.wait(10)


async def _burst(client: Client, n: int) -> None:
    with client.batched():
        for _ in range(n // 2):
            client.send_order_nowait(account="A001", symbol="m2605", side=Side.BUY, price=2900, qty=1)
            last = client.send_order_nowait(account="H001", symbol="m2605", side=Side.SELL,
                                            price=2900, qty=1)
    # Reports on one connection keep order: the last order finished means all did.
    await last.wait_done(60)


def test_exchange_pipelined_burst(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop,
                                  session: Client) -> None:
    benchmark.group = f"exchange end to end: burst of {BURST:,} orders, one connection"
    benchmark.name = f"burst[{session.mode}]"  # type: ignore[attr-defined]
    benchmark.pedantic(lambda: loop.run_until_complete(_burst(session, BURST)), rounds=10,
                       warmup_rounds=2)
    _per_second(benchmark, BURST)
    benchmark.extra_info["placement"] = "client CPU 0, exchange CPU 1" if TWO_CORES else "unpinned"


async def _ping_pong(client: Client, n: int) -> None:
    for i in range(n):
        side = Side.BUY if i % 2 == 0 else Side.SELL
        h = client.send_order_nowait(account="A001" if i % 2 == 0 else "H001", symbol="m2605",
                                     side=side, price=2900, qty=1)
        await h.acked(10)


def test_exchange_ping_pong(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop,
                                  session: Client) -> None:
    benchmark.group = f"exchange end to end: {PING_PONGS} sequential order -> ack round trips"
    benchmark.name = f"ping-pong[{session.mode}]"  # type: ignore[attr-defined]
    benchmark.pedantic(lambda: loop.run_until_complete(_ping_pong(session, PING_PONGS)),
                       rounds=10, warmup_rounds=2)
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_round_trip"] = round(median / PING_PONGS * 1e6, 1)
    if "floor" in _echo_median:
        benchmark.extra_info["x_echo"] = round(median / _echo_median["floor"], 2)
    benchmark.extra_info["placement"] = "client CPU 0, exchange CPU 1" if TWO_CORES else "unpinned"
