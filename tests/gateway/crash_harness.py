"""Crash-recovery harness: kill -9 the gateway at seeded random points, restart it, compare.

Used by ``tests/gateway/test_crash_property.py`` (the suite's >= 20 crash points) and by
``bench/crash_soak.py`` (as many as you like, with restart timings). Not a test module itself.

What runs
---------
- the **exchange**: the simulator (``simulator.exchange.serve_exchange``) on a free loopback
  port, in this process, so its book is the *truth* read directly: the seat's working and
  finished orders, each with its executions (``Order.execs``, the ids every TRADE report
  carried) — exactly what ``OrderStatusRequest(open_only=False, trades=True)`` would answer;
- a **link proxy** (``LinkProxy``) on another free port, between the gateway's exchange link
  and the exchange. It is how a test drops the link: ``cut()`` aborts the connection and holds
  every new one (the gateway's logon waits, as behind a dead router) until ``restore()``.
  It also splits the byte stream into frames, so a crash point can be *exact on the wire*:
  ``arm(direction, k)`` forwards k more frames that way and then freezes both directions —
  nothing more reaches the gateway or the exchange — and the test kills the gateway there;
- the **gateway**: a real process (``python -m gateway serve``, Cython engine unless
  FENGKONG_TEST_ENGINE=reference) with its journal in a directory of the run, killed with
  SIGKILL and restarted on the same journal again and again;
- **clients**: ``algo1`` (accounts A001, A004, A005, H001; cancel-on-disconnect drawn per
  session) and sometimes ``manual1`` (A003, cancel-on-disconnect by configuration) through the
  gateway, and a counterparty seat ``CP`` connected straight to the exchange that crosses the
  gateway's resting orders — also while the gateway's link is down, so fills happen that the
  gateway only learns of by reconciliation.

Crash points (one per cycle, kind drawn from the seeded RNG)
------------------------------------------------------------
- ``flow-wire``: mid-flow, after exactly k frames in one direction (exchange->gateway, or
  gateway->exchange: then orders the gateway journaled as sent never reach the exchange);
- ``flow-client``: mid-flow, after the client has seen its j-th report (no freeze: whatever
  the gateway had written still arrives);
- ``outage``: during a link outage, after fills at the exchange and cancels held by the gateway;
  the link comes back before the restart or only after it;
- ``reconnect-wire``: after an outage with fills, the link comes back and the gateway is killed
  after exactly k frames of the reconnect (logon answer, market data, its reconciliation);
- ``after-reconnect``: the link came back and reconciled; killed at once or mid-flow;
- ``restart-recon``: killed, restarted, and killed *again* after exactly k frames of the
  reconciliation that follows the replay (a crash during recovery).

After every crash point
-----------------------
The journal is copied and replayed offline by the *reference* engine (``checks.engine``); the
gateway is restarted on the journal, its link waits up and reconciled, and once its held
cancels are answered the test checks, each failure naming the seed and the crash point:

1. recovery is exact: ``/v1/recovery`` (records, digest of the Cython book, no disagreements)
   equals the offline reference replay of the journal as it was at the crash;
2. working orders at the gateway (``/v1/orders``) == the exchange's working orders of the
   seat, by exchange id, with equal leaves and cum qty;
3. positions per account and instrument, today/yesterday split, == the start-of-day snapshot
   plus the exchange's executions for the seat (no execution lost, none applied twice);
4. the gateway booked exactly the exchange's executions: its fill count equals their number,
   and the set of execution ids in its (replayed) book equals the exchange's;
5. every order's cum qty and final status equal the exchange's; an order the exchange never
   had is closed (REJECTED) with nothing filled; no order of the seat is unknown to the gateway;
6. the book is sound (``checks.invariants.book_violations``): frozen margin and fees are the
   sums over working orders (zero with none), frozen lots and pending lots are what the working
   orders hold, available funds follow the identity — on a reference replay of the journal
   taken after the restart, whose account views must equal the live gateway's too;
7. the gateway raised no EXCHANGE_SURPRISE / UNKNOWN_EXCHANGE_ORDER alert.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from checks.calendar import trading_day_number
from checks.config import load_risk_config
from checks.engine import Engine as ReferenceEngine
from checks.enums import AccountStatus, Offset, OrdStatus, Side, Tif
from checks.invariants import book_violations
from checks.reasons import Reason
from gateway import journal as jr
from gateway.config import load_gateway_config
from gateway.journal import Journal
from gateway.protocol import CancelOrder, FrameDecoder
from gateway.recovery import RecoveryReport, replay_journal
from simulator.client import Client, ClientError, OrderHandle
from simulator.exchange import ExchangeServer, serve_exchange
from tests.conftest import EXAMPLES, Proc

T = 15.0  # generous timeout for one wait on a loaded 2-core machine (never asserted on)
# Restart and reconciliation grow with the day's journal (a soak's reach minutes): wait longer.
T_START = 120.0
SEAT = "GW1"  # examples/gateway.toml [exchange].user
CP, CP_ACCOUNT = "CP", "CP01"  # the counterparty seat, straight on the exchange
ALGO_ACCOUNTS = ("A001", "A004", "A005", "H001")
MANUAL_ACCOUNT = "A003"
REF_PRICE = {"rb2605": 3200.0, "m2605": 2900.0}
DISTINCT = {"rb2605"}  # SHFE: CLOSE_TODAY takes today's lots, CLOSE / CLOSE_YESTERDAY yesterday's
VIEWER = {"Authorization": "Bearer demo-viewer-token"}
RISK = {"Authorization": "Bearer demo-risk-token"}
KINDS = ("flow-wire", "flow-client", "outage", "reconnect-wire", "after-reconnect",
         "restart-recon")
LIVE = (OrdStatus.PENDING_NEW, OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED)
BAD_ALERTS = {int(Reason.EXCHANGE_SURPRISE), int(Reason.UNKNOWN_EXCHANGE_ORDER)}


# ---------------------------------------------------------------------------------- link proxy
class _End(asyncio.Protocol):
    """One socket of a proxied connection: "gw" (accepted) or "ex" (to the exchange)."""

    def __init__(self, pipe: _Pipe, side: str) -> None:
        self.pipe = pipe
        self.side = side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe.made(self.side, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.pipe.data(self.side, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.kill()


class _Pipe:
    """One gateway connection through the proxy, forwarded frame by frame."""

    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.gw: asyncio.Transport | None = None
        self.ex: asyncio.Transport | None = None
        self.pending = bytearray()  # frames for the exchange while it is not connected yet
        self.partial = {"gw": bytearray(), "ex": bytearray()}
        self.connecting = False
        self.dead = False

    def made(self, side: str, transport: asyncio.Transport) -> None:
        if side == "gw":
            self.gw = transport
            self.proxy.pipes.add(self)
            if self.proxy.is_open:
                self.connect()
            return
        self.ex = transport
        if self.dead:
            transport.abort()
        elif self.pending:
            transport.write(bytes(self.pending))
            self.pending.clear()

    def connect(self) -> None:
        if not self.connecting and not self.dead:
            self.connecting = True
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: _End(self, "ex"), "127.0.0.1", self.proxy.upstream_port)
        except OSError:
            self.kill()

    def data(self, side: str, data: bytes) -> None:
        if self.dead:
            return
        buf = self.partial[side]
        buf += data
        direction = "up" if side == "gw" else "down"
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + n:
                break
            frame = bytes(buf[:4 + n])
            del buf[:4 + n]
            if not self.proxy.passes(direction, frame):
                continue
            out = self.gw if side == "ex" else self.ex
            if out is None:
                self.pending += frame  # the exchange side is still connecting
            elif not out.is_closing():
                out.write(frame)

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        for t in (self.gw, self.ex):
            if t is not None:
                t.abort()
        self.proxy.pipes.discard(self)


class LinkProxy:
    """A TCP proxy for the gateway's exchange link that a test can cut, hold and freeze."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.pipes: set[_Pipe] = set()
        self.is_open = True
        self.frozen = False
        self.frozen_event = asyncio.Event()
        self.frozen_at = ""
        self._arm: list[Any] | None = None  # [direction, frames still to forward, armed with]
        self.frames = Counter()  # frames forwarded per direction
        self.recent: deque[str] = deque(maxlen=4)  # what went last (for crash descriptions)
        self._decoder = FrameDecoder(16 * 1024 * 1024)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _End(_Pipe(self), "gw"), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        self.reset(open_=False)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _name(self, frame: bytes) -> str:
        try:
            msgs = self._decoder.feed(frame)
            return type(msgs[0]).__name__ if msgs else "?"
        except Exception:  # noqa: BLE001 - a description only
            self._decoder = FrameDecoder(16 * 1024 * 1024)
            return "?"

    def passes(self, direction: str, frame: bytes) -> bool:
        if self.frozen:
            return False
        arm = self._arm
        if arm is not None and arm[0] == direction:
            if arm[1] <= 0:
                self.freeze(f"after {arm[2]} frame(s) {'to the exchange' if direction == 'up' else 'to the gateway'}"
                            f" (last: {', '.join(self.recent) or 'none'}; next held: "
                            f"{self._name(frame)})")
                return False
            arm[1] -= 1
        self.frames[direction] += 1
        self.recent.append(("->ex " if direction == "up" else "->gw ") + self._name(frame))
        return True

    def arm(self, direction: str, frames: int) -> None:
        """Forward ``frames`` more frames towards ``direction`` ("up": the exchange, "down":
        the gateway), then freeze: nothing more passes either way."""
        self._arm = [direction, frames, frames]
        self.frozen = False
        self.frozen_event.clear()
        self.recent.clear()

    def freeze(self, why: str) -> None:
        if not self.frozen:
            self.frozen = True
            self.frozen_at = why
            self.frozen_event.set()

    def cut(self) -> None:
        """The link drops now (connections aborted) and stays down until ``restore()``: new
        connections are accepted and held, their bytes waiting."""
        self.is_open = False
        for p in list(self.pipes):
            p.kill()

    def restore(self) -> None:
        self.is_open = True
        for p in list(self.pipes):
            p.connect()

    def reset(self, open_: bool) -> None:
        """After a kill: every connection closed, nothing armed or frozen."""
        for p in list(self.pipes):
            p.kill()
        self._arm = None
        self.frozen = False
        self.frozen_event.clear()
        self.frozen_at = ""
        self.is_open = open_


# ---------------------------------------------------------------------------------- the run
class DayChanged(Exception):
    """The trading day changed during the run (the comparison would not mean anything)."""


@dataclass
class Point:
    index: int
    kind: str
    detail: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.detail.append(text)

    def __str__(self) -> str:
        return f"crash point #{self.index} [{self.kind}: {'; '.join(self.detail)}]"


@dataclass
class Truth:
    """The exchange's view of the seat."""

    orders: dict[str, Any]  # exchange id (the gateway's) -> simulator Order
    working: dict[str, tuple[int, int]]  # exchange id -> (leaves, cum)
    execs: dict[str, tuple[str, int]]  # exec_id -> (exchange id, lots)
    positions: dict[tuple[str, str], list[int]]  # (account, symbol) -> [ltd, lyd, std, syd]


@dataclass
class PointResult:
    index: int
    kind: str
    description: str
    replayed_records: int
    replay_s: float
    link_up_s: float
    working: int
    executions: int


class CrashRun:
    """One exchange, one journal, ``points`` crash/restart cycles of one gateway."""

    def __init__(self, workdir: Path, seed: int, points: int,
                 log: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.seed = seed
        self.points = points
        self.log = log or (lambda s: None)
        self.journal_dir = workdir / "journal"
        self.cfg = load_gateway_config(EXAMPLES / "gateway.toml")
        risk = load_risk_config(EXAMPLES / "risk.toml")
        self.risk = risk
        self.accounts = [a.id for a in self.cfg.risk.accounts]
        self.statuses = {a.id: AccountStatus(a.status).name for a in self.cfg.risk.accounts}
        self.initial = {(a.id, p.symbol): (p.long, p.short)
                        for a in self.cfg.risk.accounts for p in a.positions}
        self.ex: ExchangeServer | None = None
        self.proxy: LinkProxy | None = None
        self.cp: Client | None = None
        self.gw: Proc | None = None
        self.gw_count = 0
        self.procs: list[Proc] = []  # every gateway process ever spawned (killed at the end)
        self._starting: asyncio.Future[Proc] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.sessions = 0
        self.killed: set[str] = set()  # accounts a risk officer stopped (until the next cycle)
        self.placed: dict[str, list[tuple[str, str]]] = {"algo1": [], "manual1": []}
        self.results: list[PointResult] = []
        self.day = -1
        self.reproduce = ""  # how to run this seed again (set by the caller)

    # -- set-up and clean-up
    async def __aenter__(self) -> CrashRun:
        try:
            # No periodic market data: every frame on the link is caused by the test.
            self.ex = await serve_exchange(self.risk, md_interval_s=0)
            self.proxy = LinkProxy(self.ex.port)
            await self.proxy.start()
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T))
            self.cp = await Client.connect("127.0.0.1", self.ex.port, CP, "cp", report_queue=0,
                                           id_prefix=f"cp{self.seed}-")
            self.day = self._trading_day()
            await self._start_gateway()
            await self._wait_line("exchange link up")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    def _trading_day(self) -> int:
        return trading_day_number(time.time_ns(), self.cfg.risk.day_boundary_s)

    def check_day(self) -> None:
        """The exchange simulator has no trading-day end, the gateway does: a run that crosses
        the boundary compares two different days. Say so instead of failing."""
        if self._trading_day() != self.day:
            raise DayChanged("the run crossed the trading-day boundary: the gateway started a "
                             "new day, the simulated exchange did not")

    async def __aexit__(self, *exc: object) -> None:
        if self._starting is not None and not self._starting.done():
            try:  # a start interrupted by a cancel: let it spawn, then stop it
                await asyncio.wait_for(asyncio.shield(self._starting), T_START)
            except BaseException:  # noqa: BLE001 - cleaning up whatever happened
                pass
        for p in self.procs:
            p.kill9()
        self._save_logs()
        if self.http is not None:
            await self.http.close()
        if self.cp is not None:
            self.cp.abort()
        if self.proxy is not None:
            await self.proxy.close()
        if self.ex is not None:
            await self.ex.close()

    def _save_logs(self) -> None:
        for n, p in enumerate(self.procs, 1):
            try:
                (self.workdir / f"gateway-{n}.log").write_text("".join(p.output))
            except OSError:
                pass

    def _spawn_gateway(self) -> Proc:
        """``tests.conftest.start_gateway`` with our journal, registered for clean-up the
        moment it is spawned — before it is ready — so no failure or interruption leaves it
        running."""
        assert self.proxy is not None
        procs = self.procs

        class Registered(Proc):
            def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
                if self not in procs:
                    procs.append(self)
                return super().wait_for(pattern, timeout)

        engine = os.environ.get("FENGKONG_TEST_ENGINE", "cython")
        return Registered(
            [sys.executable, "-m", "gateway", "serve", "--config", str(EXAMPLES / "gateway.toml"),
             "--port", "0", "--admin-port", "0", "--exchange", f"127.0.0.1:{self.proxy.port}",
             "--engine", engine, "--journal", str(self.journal_dir)],
            r"clients on [\d.]+:(\d+), admin on [\d.]+:(\d+)", timeout=T_START)

    async def _start_gateway(self) -> None:
        self._starting = asyncio.ensure_future(asyncio.to_thread(self._spawn_gateway))
        self.gw = await asyncio.shield(self._starting)
        self.gw_count += 1

    async def _wait_line(self, pattern: str) -> None:
        assert self.gw is not None
        await asyncio.to_thread(self.gw.wait_for, pattern, T_START)

    def _kill(self, point: Point, why: str) -> None:
        assert self.gw is not None
        self.gw.kill9()
        point.say(f"kill -9 {why}")

    # -- admin plane
    async def get(self, path: str) -> Any:
        assert self.gw is not None and self.http is not None
        url = f"http://127.0.0.1:{self.gw.match.group(2)}{path}"
        async with self.http.get(url, headers=VIEWER) as resp:
            body = await resp.json()
            assert resp.status == 200, f"GET {path}: {resp.status} {body}"
            return body

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        assert self.gw is not None and self.http is not None
        url = f"http://127.0.0.1:{self.gw.match.group(2)}{path}"
        async with self.http.post(url, json=body, headers=RISK) as resp:
            answer = await resp.json()
            assert resp.status == 200, f"POST {path} {body}: {resp.status} {answer}"
            return answer

    async def wait_link(self, state: str, point: Point | None = None) -> None:
        """Until the gateway's exchange link is ``state``: the admin plane answers when it
        changes (``GET /v1/link?wait=``), or 408 after ``T`` seconds."""
        assert self.gw is not None and self.http is not None
        url = f"http://127.0.0.1:{self.gw.match.group(2)}/v1/link?wait={state}&timeout_s={T}"
        async with self.http.get(url, headers=VIEWER) as resp:
            body = await resp.json()
        where = f"{self.where(point)}: " if point is not None else ""
        assert resp.status == 200, f"{where}the exchange link did not become {state!r}: {body}"

    async def wait_link_up(self, point: Point) -> None:
        await self.wait_link("up", point)

    async def wait_seat_gone(self) -> None:
        """The exchange has noticed the drop (its next reports to the seat go nowhere)."""
        assert self.ex is not None
        deadline = asyncio.get_running_loop().time() + T
        while SEAT in self.ex.logged_on():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the exchange still has the seat logged on after the cut")
            await asyncio.sleep(0.002)

    def where(self, point: Point) -> str:
        return f"seed {self.seed}, {point}{self.reproduce}"

    # -- clients and flows
    async def connect(self, user: str, cancel_on_disconnect: bool, tag: str) -> Client:
        assert self.gw is not None
        self.sessions += 1
        secret = "algo-secret" if user == "algo1" else "manual-secret"
        return await Client.connect("127.0.0.1", int(self.gw.match.group(1)), user, secret,
                                    cancel_on_disconnect=cancel_on_disconnect,
                                    id_prefix=f"{tag}{self.sessions}-")

    def positions_now(self) -> dict[tuple[str, str], list[int]]:
        return self.truth().positions

    def _new_order(self, rng: random.Random, client: Client, user: str,
                   pos: dict[tuple[str, str], list[int]]) -> OrderHandle:
        account = MANUAL_ACCOUNT if user == "manual1" else rng.choice(ALGO_ACCOUNTS)
        symbol = "rb2605" if user == "manual1" or rng.random() < 0.8 else "m2605"
        side, offset = rng.choice((Side.BUY, Side.SELL)), Offset.OPEN
        if symbol in DISTINCT and rng.random() < 0.35:  # a closing order where lots are held
            ltd, lyd, std, syd = pos.get((account, symbol), [0, 0, 0, 0])
            choices = [(Side.SELL, Offset.CLOSE_TODAY)] * (ltd > 0) \
                + [(Side.SELL, Offset.CLOSE)] * (lyd > 0) \
                + [(Side.BUY, Offset.CLOSE_TODAY)] * (std > 0) \
                + [(Side.BUY, Offset.CLOSE_YESTERDAY)] * (syd > 0)
            if choices:
                side, offset = rng.choice(choices)
        price = REF_PRICE[symbol] + rng.randint(-3, 3)
        h = client.send_order_nowait(account=account, symbol=symbol, side=side, offset=offset,
                                     price=price, qty=rng.randint(1, 3))
        self.placed[user].append((h.cl_ord_id, account))
        return h

    def _cancel(self, rng: random.Random, client: Client, user: str) -> None:
        recent = self.placed[user][-40:]
        if recent:
            cl_ord_id, account = rng.choice(recent)
            # It may have finished meanwhile: the cancel then meets "finished", as in life.
            client.cancel_nowait(cl_ord_id, account=account)

    def cp_action(self, rng: random.Random) -> None:
        """The counterparty crosses a resting order of the seat (IOC, some or all of it), or
        rests an order of its own near the touch for the gateway's orders to meet."""
        assert self.ex is not None and self.cp is not None
        working = self.ex.engine.working(SEAT)
        if working and rng.random() < 0.75:
            o = rng.choice(working)
            side = Side.SELL if o.side == Side.BUY else Side.BUY
            self.cp.send_order_nowait(account=CP_ACCOUNT, symbol=o.symbol, side=side,
                                      price=o.price, qty=rng.randint(1, o.leaves), tif=Tif.IOC)
            return
        mine = self.ex.engine.working(CP)
        if len(mine) > 12:  # keep the counterparty's own resting orders few
            for o in mine[:4]:
                self.cp.cancel_nowait(o.cl_ord_id, account=CP_ACCOUNT)
        symbol = "rb2605" if rng.random() < 0.8 else "m2605"
        self.cp.send_order_nowait(account=CP_ACCOUNT, symbol=symbol,
                                  side=rng.choice((Side.BUY, Side.SELL)),
                                  price=REF_PRICE[symbol] + rng.randint(-3, 3),
                                  qty=rng.randint(1, 2))

    async def flow(self, rng: random.Random, clients: dict[str, Client], n: int,
                   cp_share: float = 0.2) -> int:
        """``n`` actions — orders and cancels from the clients, crosses from the counterparty —
        in small bursts; returns once every order sent has its first answer (or the session
        ended). Returns how many client orders were sent."""
        pos = self.positions_now()
        handles: list[OrderHandle] = []
        users = list(clients)
        try:
            for _ in range(n):
                r = rng.random()
                user = users[0] if len(users) == 1 or rng.random() < 0.85 else users[1]
                if r < cp_share:
                    self.cp_action(rng)
                elif r < cp_share + 0.2:
                    self._cancel(rng, clients[user], user)
                else:
                    handles.append(self._new_order(rng, clients[user], user, pos))
                if rng.random() < 0.3:
                    await asyncio.sleep(0)  # let the other side move: a burst ends here
            for h in handles:
                await h.acked(T)
        except (ClientError, TimeoutError):
            pass  # the gateway died under it (that is the point), or the link froze
        return len(handles)

    async def outage(self, plan: random.Random, rng: random.Random, point: Point,
                     clients: dict[str, Client]) -> None:
        """Drop the link; the counterparty fills resting orders of the seat while it is down;
        a risk officer may stop an account; the clients ask for cancels (held) and send
        orders (refused: link down)."""
        assert self.proxy is not None and self.cp is not None
        crosses, kill = plan.randint(1, 5), plan.random() < 0.3
        cancels_per_client = [plan.randint(0, 3) for _ in clients]
        self.proxy.cut()
        await self.wait_seat_gone()
        before = len(self.truth().execs)
        for _ in range(crosses):
            self.cp_action(rng)
        await self._cp_sync()
        fills = len(self.truth().execs) - before
        point.say(f"link cut, {fills} execution(s) of the seat at the exchange during the "
                  "outage")
        if kill:  # a risk officer stops an account now: its cancels wait for the link
            account = rng.choice(ALGO_ACCOUNTS)
            res = await self.post("/v1/kill", {"scope": "account", "key": account,
                                               "reason": "crash test: kill while the link is down"})
            self.killed.add(account)
            point.say(f"account {account} killed while down ({res['cancels_pending']} cancel(s) "
                      "held)")
        handles = []
        try:
            for (user, c), cancels in zip(clients.items(), cancels_per_client, strict=True):
                for _ in range(cancels):
                    self._cancel(rng, c, user)
                # An order now is refused (link down) — its answer also says the cancels
                # before it on this session were handled (held).
                handles.append(self._new_order(rng, c, user, {}))
            for h in handles:
                await h.acked(T)
        except (ClientError, TimeoutError):
            pass
        point.say(f"{sum(cancels_per_client)} client cancel(s) and {len(handles)} order(s) "
                  "while down")

    @staticmethod
    async def _drain_reports(client: Client) -> None:
        """Forget the reports already queued (a crash point counts the ones that follow)."""
        try:
            while True:
                await client.next_report(timeout=0)
        except (ClientError, TimeoutError):
            pass

    @staticmethod
    async def _until_report(client: Client, j: int, flow: asyncio.Task[int]) -> int:
        """Wait for the client's j-th report from now, or for the flow to be answered;
        returns how many reports came."""
        seen = 0
        while seen < j:
            nxt = asyncio.ensure_future(client.next_report(timeout=T))
            done, _ = await asyncio.wait({nxt, flow}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                break
            try:
                nxt.result()
            except (ClientError, TimeoutError):
                break
            seen += 1
        return seen

    async def _cp_sync(self) -> None:
        """Every order the counterparty sent has been handled by the exchange (a status
        round trip on its connection comes back after them)."""
        assert self.cp is not None
        await self.cp.request_status(timeout=T)

    # -- the exchange's truth
    def truth(self) -> Truth:
        assert self.ex is not None
        eng = self.ex.engine
        working = eng.working(SEAT)
        orders = {o.cl_ord_id: o for o in eng.finished(SEAT) + working}
        execs: dict[str, tuple[str, int]] = {}
        pos: dict[tuple[str, str], list[int]] = {
            k: [0, long, 0, short] for k, (long, short) in self.initial.items()}
        for o in orders.values():
            for x in o.execs or ():
                execs[x.exec_id] = (o.cl_ord_id, x.qty)
                p = pos.setdefault((o.account, o.symbol), [0, 0, 0, 0])
                buy = o.side == Side.BUY
                if o.offset == Offset.OPEN:
                    p[0 if buy else 2] += x.qty
                elif o.symbol in DISTINCT and o.offset == Offset.CLOSE_TODAY:
                    p[2 if buy else 0] -= x.qty
                elif o.symbol in DISTINCT:
                    p[3 if buy else 1] -= x.qty
                else:  # not used by the flows: closes take the oldest lots first
                    raise AssertionError(f"unexpected closing order on {o.symbol}")
        return Truth(orders, {o.cl_ord_id: (o.leaves, o.cum_qty) for o in working}, execs, pos)

    def recon_frames(self) -> int:
        """Frames the exchange sends a reconnecting seat: logon answer, one market data per
        instrument, then per order its executions and status, and the end of the answer."""
        assert self.ex is not None
        t = self.truth()
        return 1 + len(self.ex.engine.symbols) + len(t.orders) + len(t.execs) + 1

    # -- one cycle per crash point
    async def run(self) -> list[PointResult]:
        for i in range(1, self.points + 1):
            await self.cycle(i)
        return self.results

    async def cycle(self, index: int) -> None:
        self.check_day()
        # Kinds go round in a seeded order, so every run of >= 6 points meets each of them.
        kinds = list(KINDS)
        random.Random(self.seed).shuffle(kinds)
        point = Point(index, kinds[(index - 1) % len(kinds)])
        # Where and how the point strikes comes from its own RNG, drawn before anything runs,
        # so it is the same on every run of the seed whatever the timing did before it; the
        # flows draw from another (what they meet depends on the book they find).
        plan = random.Random(f"{self.seed}/{index}")
        rng = random.Random(f"{self.seed}/{index}/flow")
        self.log(f"seed {self.seed} point {index}: {point.kind}")
        clients: dict[str, Client] = {}
        restore_after_restart = False
        algo_cod, with_manual = plan.random() < 0.5, plan.random() < 0.3
        # Whatever stopped an account or a session in the last cycle (a risk officer, or the
        # gateway's own triggers) is lifted, so the flows trade again.
        for k in (await self.get("/v1/status"))["kills"]:
            await self.post("/v1/reset", {"scope": k["scope"], "key": k["key"],
                                          "reason": "crash test: next cycle"})
        for account, status in self.statuses.items():
            if (await self.get(f"/v1/accounts/{account}"))["status"] != status:
                await self.post(f"/v1/accounts/{account}/status",
                                {"status": status, "reason": "crash test: next cycle"})
        self.killed.clear()
        try:
            clients["algo1"] = await self.connect("algo1", algo_cod, f"p{index}a")
            if with_manual:
                clients["manual1"] = await self.connect("manual1", True, f"p{index}m")
            crash = getattr(self, "_crash_" + point.kind.replace("-", "_"))
            restore_after_restart = await crash(plan, rng, point, clients)
        finally:
            for c in clients.values():
                c.abort()
            for p in self.procs:  # whatever happened, no gateway of this cycle lives on
                p.kill9()
        await self.restart_and_verify(point, restore_after_restart)

    async def _crash_flow_wire(self, plan: random.Random, rng: random.Random, point: Point,
                               clients: dict[str, Client]) -> bool:
        assert self.proxy is not None
        n = plan.randint(15, 70)
        direction = plan.choice(("up", "down"))
        k = plan.randint(0, max(1, n // 2))
        self.proxy.arm(direction, k)
        task = asyncio.create_task(self.flow(rng, clients, n))
        frozen = asyncio.create_task(self.proxy.frozen_event.wait())
        await asyncio.wait({task, frozen}, timeout=T, return_when=asyncio.FIRST_COMPLETED)
        if not self.proxy.frozen:
            self.proxy.freeze(f"the flow was answered before frame {k} {direction}")
        point.say(f"{n} actions; frozen {self.proxy.frozen_at}")
        self._kill(point, "there")
        frozen.cancel()
        await task
        return False

    async def _crash_flow_client(self, plan: random.Random, rng: random.Random, point: Point,
                                 clients: dict[str, Client]) -> bool:
        n = plan.randint(15, 70)
        j = plan.randint(1, n)
        task = asyncio.create_task(self.flow(rng, clients, n))
        seen = await self._until_report(clients["algo1"], j, task)
        self._kill(point, f"after the client's report {seen} of a {n}-action flow")
        await task
        return False

    async def _crash_outage(self, plan: random.Random, rng: random.Random, point: Point,
                            clients: dict[str, Client]) -> bool:
        n, later = plan.randint(10, 40), plan.random() < 0.5
        await self.flow(rng, clients, n)
        await self.outage(plan, rng, point, clients)
        self._kill(point, "during the outage")
        point.say("link back only after the restart" if later else "link back before the restart")
        return later

    async def _crash_reconnect_wire(self, plan: random.Random, rng: random.Random, point: Point,
                                    clients: dict[str, Client]) -> bool:
        assert self.proxy is not None
        n, where = plan.randint(10, 40), plan.random()
        await self.flow(rng, clients, n)
        await self.outage(plan, rng, point, clients)
        total = self.recon_frames()
        k = int(where * (total + 3))
        self.proxy.arm("down", k)
        self.proxy.restore()
        try:
            await asyncio.wait_for(self.proxy.frozen_event.wait(), T)
        except TimeoutError:
            self.proxy.freeze(f"no frame {k} came (of ~{total} expected)")
        point.say(f"link back; frozen {self.proxy.frozen_at} of ~{total} reconnect frames")
        self._kill(point, "there")
        return False

    async def _crash_after_reconnect(self, plan: random.Random, rng: random.Random, point: Point,
                                     clients: dict[str, Client]) -> bool:
        assert self.proxy is not None
        n, at_once = plan.randint(10, 40), plan.random() < 0.3
        m = plan.randint(10, 40)
        j = plan.randint(1, m)
        await self.flow(rng, clients, n)
        await self.outage(plan, rng, point, clients)
        self.proxy.restore()
        await self.wait_link_up(point)
        point.say("link back up and reconciled")
        if at_once:
            self._kill(point, "right after the reconnect")
            return False
        await self._drain_reports(clients["algo1"])
        task = asyncio.create_task(self.flow(rng, clients, m))
        seen = await self._until_report(clients["algo1"], j, task)
        self._kill(point, f"after report {seen} of a {m}-action flow after the reconnect")
        await task
        return False

    async def _crash_restart_recon(self, plan: random.Random, rng: random.Random, point: Point,
                                   clients: dict[str, Client]) -> bool:
        assert self.proxy is not None
        n, with_outage, where = plan.randint(10, 40), plan.random() < 0.6, plan.random()
        await self.flow(rng, clients, n)
        if with_outage:
            await self.outage(plan, rng, point, clients)
        self._kill(point, "once")
        for c in clients.values():
            c.abort()
        self.proxy.reset(open_=True)
        total = self.recon_frames()
        k = int(where * (total + 3))
        self.proxy.arm("down", k)
        await self._start_gateway()
        try:
            await asyncio.wait_for(self.proxy.frozen_event.wait(), T)
        except TimeoutError:
            self.proxy.freeze(f"no frame {k} came (of ~{total} expected)")
        point.say(f"restarted; its reconnect frozen {self.proxy.frozen_at} of ~{total}")
        self._kill(point, "again, during recovery")
        return False

    # -- restart and compare
    async def restart_and_verify(self, point: Point, restore_after_restart: bool) -> None:
        assert self.proxy is not None
        self.proxy.reset(open_=not restore_after_restart)
        at_crash = self.workdir / "at-crash"
        expected = self.offline_replay(at_crash)
        assert not expected.disagreements, \
            f"{self.where(point)}: the reference replay disagrees: {expected.disagreements[:5]}"
        started = time.perf_counter()
        await self._start_gateway()
        if restore_after_restart:
            self.proxy.restore()
        await self._wait_line("exchange link up")
        link_up_s = time.perf_counter() - started
        rec = await self.get("/v1/recovery")
        problems: list[str] = []
        if (rec["records"], rec["digest"]) != (expected.records, expected.digest):
            problems.append(f"recovery rebuilt {rec['records']} records, digest {rec['digest']}; "
                            f"the reference replay of the same journal: {expected.records}, "
                            f"{expected.digest}")
        if rec["disagreements"]:
            problems.append(f"recovery disagreements: {rec['disagreements'][:5]}")
        await self.settle()
        self.check_day()
        problems += await self.compare()
        if problems:
            raise AssertionError(f"{self.where(point)}:\n  - " + "\n  - ".join(problems)
                                 + f"\n  (gateway logs: {self.workdir}/gateway-*.log)")
        t = self.truth()
        self.results.append(PointResult(point.index, point.kind, str(point), rec["records"],
                                        rec["elapsed_s"], link_up_s, len(t.working),
                                        len(t.execs)))
        self.log(f"  ok: {point} — replayed {rec['records']} records in "
                 f"{rec['elapsed_s']:.3f} s, link up after {link_up_s:.2f} s, "
                 f"{len(t.working)} working, {len(t.execs)} executions")

    def offline_replay(self, dest: Path) -> RecoveryReport:
        return self._replay_copy(dest)[0]

    def _replay_copy(self, dest: Path) -> tuple[RecoveryReport, Any]:
        """Copy the journal and rebuild its book with the reference engine."""
        from gateway.server import Gateway

        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.journal_dir, dest, ignore=shutil.ignore_patterns("LOCK"))
        offline = Gateway(self.cfg, engine_cls=ReferenceEngine)
        with Journal.open(dest) as j:
            report = replay_journal(offline, j)
            # Every cancel the gateway decided to send (client, kill switch, disconnect), sent
            # at once or held for the link: the exchange ids of the orders concerned.
            offline.cancels_requested = {  # type: ignore[attr-defined]
                rec.msg.orig_cl_ord_id for _, rec in j.read(0)
                if type(rec) is jr.Outbound and rec.session == jr.EXCHANGE_LINK
                and type(rec.msg) is CancelOrder}
        return report, offline

    async def settle(self) -> None:
        """Until the gateway's held cancels are answered and its working orders are the
        exchange's (or the deadline passes: the comparison then says what differs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + T
        while loop.time() < deadline:
            orders = await self.get("/v1/orders")
            mine = {o["exch_id"]: (o["leaves"], o["cum"]) for o in orders}
            if mine == self.truth().working and not any(o["cancel_id"] for o in orders):
                return
            await asyncio.sleep(0.005)

    async def compare(self) -> list[str]:
        problems: list[str] = []
        truth = self.truth()
        orders = await self.get("/v1/orders")
        status = await self.get("/v1/status")
        views = {a: await self.get(f"/v1/accounts/{a}") for a in self.accounts}

        # Working orders, by exchange id, with leaves and cum.
        mine = {o["exch_id"]: (o["leaves"], o["cum"]) for o in orders}
        if mine != truth.working:
            only_gw = {k: v for k, v in mine.items() if truth.working.get(k) != v}
            only_ex = {k: v for k, v in truth.working.items() if mine.get(k) != v}
            problems.append(f"working orders differ: gateway {only_gw} vs exchange {only_ex} "
                            "(exch id: (leaves, cum))")
        pending = [o["exch_id"] for o in orders if o["cancel_id"]]
        if pending:
            problems.append(f"cancels still unanswered at the gateway: {pending[:10]}")

        # Positions: start of day + the exchange's executions, today/yesterday split.
        for account in self.accounts:
            got = views[account]["positions"]
            for (acc, sym), want in truth.positions.items():
                if acc != account:
                    continue
                p = got.get(sym, {})
                have = [p.get("long_td", 0), p.get("long_yd", 0), p.get("short_td", 0),
                        p.get("short_yd", 0)]
                if have != want:
                    problems.append(f"position {account}/{sym} (long td, yd, short td, yd) "
                                    f"{have} != start of day + exchange executions {want}")
            for sym in got:
                if (account, sym) not in truth.positions and any(
                        got[sym].get(f, 0) for f in ("long_td", "long_yd", "short_td", "short_yd")):
                    problems.append(f"position {account}/{sym} {got[sym]} has no execution at "
                                    "the exchange")

        # Stops stay in force across the crash.
        kills = {(k["scope"], k["key"]) for k in status["kills"]}
        lost = {("account", a) for a in self.killed} - kills
        if lost:
            problems.append(f"kill switch lost over the restart: {sorted(lost)} (in force: "
                            f"{sorted(kills)})")

        # Executions booked == the exchange's executions (count).
        fills = status["stats"]["fills"]
        if fills != len(truth.execs):
            problems.append(f"the gateway booked {fills} fills; the exchange has "
                            f"{len(truth.execs)} executions for the seat "
                            f"(duplicates dropped: {status['stats']['duplicate_fills']})")
        if status["stats"]["surprises"]:
            problems.append(f"{status['stats']['surprises']} exchange surprise(s) at the gateway")
        bad = [a for a in await self.get("/v1/alerts?limit=1000") if a["code"] in BAD_ALERTS]
        if bad:
            problems.append(f"{len(bad)} EXCHANGE_SURPRISE/UNKNOWN_EXCHANGE_ORDER alert(s): "
                            + " | ".join(a["text"] for a in bad[:3]))

        # The book as its own journal rebuilds it now, checked against the exchange and the
        # book's identities, and against the live views.
        report, offline = self._replay_copy(self.workdir / "after-restart")
        if report.disagreements:
            problems.append(f"reference replay disagreements: {report.disagreements[:5]}")
        engine, router = offline.engine, offline.router
        snap = engine.snapshot()
        totals = {k: (v[0] + v[1], v[2] + v[3]) for k, v in truth.positions.items()}
        off_views = {a: engine.account_view(a) for a in self.accounts}
        violations = book_violations(snap, [a.group for a in engine.accounts], totals, off_views)
        problems += [f"book invariant: {v}" for v in violations[:20]]
        for a in self.accounts:
            live = {k: v for k, v in views[a].items() if k not in ("positions", "orders",
                                                                    "limits")}
            if live != off_views[a]:
                diff = {k: (live.get(k), off_views[a].get(k)) for k in set(live) | set(off_views[a])
                        if live.get(k) != off_views[a].get(k)}
                problems.append(f"account {a}: live view != reference replay of its journal "
                                f"(live, replay): {diff}")
            if not views[a]["orders"] and (views[a]["frozen_margin"] or views[a]["frozen_fee"]):
                problems.append(f"account {a}: no working orders but frozen margin "
                                f"{views[a]['frozen_margin']} / fees {views[a]['frozen_fee']}")

        # Every execution booked once, by id; every order's cum and end as the exchange has it.
        booked = set(router.exec_ids)
        if booked != set(truth.execs):
            missing = sorted(set(truth.execs) - booked)
            extra = sorted(booked - set(truth.execs))
            problems.append(f"execution ids booked != the exchange's: missing {missing[:10]}, "
                            f"not at the exchange {extra[:10]}")
        # A cancel once requested is never dropped: after the restart none of those orders
        # still works at the exchange.
        uncancelled = sorted(set(truth.working) & offline.cancels_requested)
        if uncancelled:
            problems.append(f"cancels requested before the crash never took effect: "
                            f"{uncancelled[:10]} still work at the exchange")
        known = {o.exch_id: o for o in router.finished.values()}
        known.update({o.exch_id: o for o in router.orders.values()})
        for exch_id, xo in truth.orders.items():
            o = known.get(exch_id)
            if o is None:
                problems.append(f"order {exch_id} ({xo.account} {xo.symbol}, cum {xo.cum_qty}) is "
                                "at the exchange but unknown to the gateway")
            elif (o.cum, int(o.status)) != (xo.cum_qty, int(xo.status)):
                problems.append(f"order {exch_id} ({o.account} {o.cl_ord_id}): gateway cum "
                                f"{o.cum} {OrdStatus(o.status).name}, exchange cum {xo.cum_qty} "
                                f"{OrdStatus(xo.status).name}")
        for exch_id, o in known.items():
            if exch_id not in truth.orders and (o.cum or o.status != OrdStatus.REJECTED):
                problems.append(f"order {exch_id} ({o.account} {o.cl_ord_id}) never reached the "
                                f"exchange but is {OrdStatus(o.status).name} with cum {o.cum}")
        return problems


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default
