"""The simulated exchange: the matching engine behind the native wire protocol on TCP.

How it fits
-----------
The gateway's exchange link (or any client built on ``simulator.client``) connects here as a
*member seat*, exactly as it would to a real exchange adapter. Each TCP connection is an
``asyncio.Protocol`` (``_SeatConnection``): bytes go through a ``FrameDecoder``; each message
is dispatched to a handler on ``ExchangeServer``; the engine's reports are encoded straight
into per-connection output buffers, and every buffer touched is written once at the end of the
callback — one ``write`` per connection per batch however many reports a batch caused.

Seats and ownership
-------------------
A connection must send ``Logon`` first (user/secret from ``[sim] members``; any user is
accepted when no members are configured) and gets ``LogonAck`` plus a ``MarketData`` snapshot
of every instrument. Orders belong to the *seat* (the user), not to the TCP connection: when a
connection drops, its orders stay in the book, and a later connection of the same user receives
their reports and sees them with ``OrderStatusRequest``. A second logon of a user already
connected takes the seat over (the old connection gets ``Logout`` and is closed) — that is what
makes a fast reconnect after a half-noticed drop work.

Reports go only to the owning seat; ``MarketData`` goes to every logged-on seat after each batch
that traded a symbol and every ``md_interval_s`` seconds.

Status and trade queries
------------------------
``OrderStatusRequest`` is answered with one ``exec_type=STATUS`` report per matching order (the
working ones; with ``open_only=False`` the remembered finished ones first), then
``OrderStatusEnd(req_id, count)`` where ``count`` is the number of orders. With ``trades=True``
each order's STATUS report is preceded by every execution of that order sent again as the
TRADE report first sent for it, with the same ``exec_id`` (``MatchingEngine.trade_reports``):
a member that missed fills while it was away books each exactly once, keyed by that id.

Errors
------
A malformed frame (bad length, undecodable body, unknown tag, wrong field type) or a message a
member may not send closes *that* connection only, after a ``Logout`` whose text names the
problem (reason ``PROTOCOL_ERROR``, 108). Everything else carries on.

Latency and faults
------------------
``LatencyModel`` delays order entry and each report leg; ``FaultPlan`` rejects a seeded fraction
of orders, adds latency, drops connections after N messages, or stops acknowledging. Both can
be swapped at run time (``set_latency``, ``set_faults``); ``drop()`` closes seats on demand.
Delays go through ``simulator.delay_line.DelayLine``, one FIFO and one timer per seat, so delayed messages to a
seat are never reordered (asyncio's timer heap does not promise FIFO for equal deadlines).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from checks.calendar import day_as_yyyymmdd, trading_day_number
from checks.enums import ExecType, OrdStatus
from checks.model import RiskConfig
from checks.reasons import Reason
from gateway.protocol import (
    CancelOrder,
    CancelReject,
    ExecReport,
    FrameDecoder,
    Heartbeat,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
    ProtocolError,
    TerminalInfo,
    encode,
    encode_into,
)
from simulator.config import (
    FaultPlan,
    LatencyModel,
    SimConfig,
    check_sim_config,
    load_sim_config,
    tls_context,
)
from simulator.delay_line import DelayLine
from simulator.matching import AckOnlyEngine, Engine, MatchingEngine, Report

log = logging.getLogger("fengkong.sim.exchange")
TERMINAL_INFOS_KEPT = 10_000

_X_TRADE, _X_CANCELED = int(ExecType.TRADE), int(ExecType.CANCELED)
_REJECTED, _X_REJECTED = int(OrdStatus.REJECTED), int(ExecType.REJECTED)


@dataclass
class ExchangeStats:
    connections: int = 0
    logons: int = 0
    orders: int = 0
    cancels: int = 0
    reports: int = 0
    protocol_errors: int = 0
    injected_rejects: int = 0
    swallowed: int = 0
    drops: int = 0
    terminal_infos: int = 0


class _SeatConnection(asyncio.Protocol):
    """One member TCP connection; all decisions are the server's."""

    def __init__(self, server: ExchangeServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(server.sim.max_frame)
        self.user: str | None = None
        self.out = bytearray()
        self.dirty = False
        self.closing = False  # close once the pending output is written
        self.dead = False
        self.received = 0  # messages after Logon (for FaultPlan.drop_after)
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server._connected(self)

    def data_received(self, data: bytes) -> None:
        self.server._on_data(self, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self.server._lost(self)

    # A seat that does not read its reports stops being read, instead of buffering forever.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.dead:
            self.transport.resume_reading()


class ExchangeServer:
    """The simulated exchange; create with ``serve_exchange``."""

    def __init__(self, risk: RiskConfig, sim: SimConfig) -> None:
        self.risk = risk
        self.sim = sim
        self.engine: Engine = (
            AckOnlyEngine(risk.instruments, risk.exchanges, fill=sim.fill_on_ack)
            if sim.ack_only else MatchingEngine(risk.instruments, risk.exchanges))
        self.members = {m.user: m.secret for m in sim.members}
        self.stats = ExchangeStats()
        self._latency = sim.latency
        self._faults = sim.faults
        self._rng = random.Random(sim.faults.seed)
        self._seats: dict[str, _SeatConnection] = {}  # logged-on connection of each user
        self._conns: set[_SeatConnection] = set()
        self._dirty: list[_SeatConnection] = []
        self._md_dirty: set[str] = set()
        self._session_ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        self._lines = DelayLine(self._loop, self._flush)
        self._server: asyncio.base_events.Server | None = None
        self._md_timer: asyncio.TimerHandle | None = None
        self._handlers: dict[type, Callable[[_SeatConnection, Any], None]] = {
            NewOrder: self._on_new_order,
            CancelOrder: self._on_cancel,
            OrderStatusRequest: self._on_status,
            Heartbeat: self._on_heartbeat,
            Logon: self._on_logon,
            Logout: self._on_logout,
            TerminalInfo: self._on_terminal_info,
        }
        # Terminal information relayed by members (穿透式监管): the newest kept, each told to
        # ``on_terminal_info`` (``fengkong sim exchange`` prints it: the simulator's own log).
        self.terminal_infos: deque[tuple[str, TerminalInfo]] = deque(maxlen=TERMINAL_INFOS_KEPT)
        self.on_terminal_info: Callable[[str, TerminalInfo], None] | None = None
        self._update_delays()

    # -- public API --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def faults(self) -> FaultPlan:
        return self._faults

    @property
    def latency(self) -> LatencyModel:
        return self._latency

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan now; the reject RNG restarts from the plan's seed."""
        self._faults = check_sim_config(SimConfig(faults=plan), "set_faults").faults
        self._rng = random.Random(plan.seed)
        self._update_delays()

    def set_latency(self, model: LatencyModel) -> None:
        self._latency = check_sim_config(SimConfig(latency=model), "set_latency").latency
        self._update_delays()

    def drop(self, user: str | None = None) -> int:
        """Drop (abort, no Logout) the connection of ``user``, or every connection; return how many."""
        victims = [c for c in self._conns if user is None or c.user == user]
        for conn in victims:
            self._abort(conn)
        return len(victims)

    def logged_on(self) -> list[str]:
        return list(self._seats)

    async def start(self, host: str, port: int) -> None:
        self._server = await self._loop.create_server(lambda: _SeatConnection(self), host, port,
                                                      ssl=tls_context(self.sim.tls))
        if self.sim.md_interval_s > 0:
            self._md_timer = self._loop.call_later(self.sim.md_interval_s, self._md_tick)

    async def close(self) -> None:
        """Stop listening, close every connection, cancel every timer."""
        if self._md_timer is not None:
            self._md_timer.cancel()
        self._lines.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # -- connection events -------------------------------------------------------------------

    def _connected(self, conn: _SeatConnection) -> None:
        self._conns.add(conn)
        self.stats.connections += 1

    def _lost(self, conn: _SeatConnection) -> None:
        self._conns.discard(conn)
        if conn.user is not None and self._seats.get(conn.user) is conn:
            del self._seats[conn.user]  # the seat's orders stay in the book
        try:
            conn.decoder.close()
        except ProtocolError as err:
            log.info("seat %s (%s) closed mid-frame: %s", conn.user, conn.peer, err)

    def _on_data(self, conn: _SeatConnection, data: bytes) -> None:
        if conn.closing or conn.dead:
            return
        try:
            messages = conn.decoder.feed(data)
        except ProtocolError as err:
            self._protocol_error(conn, str(err))
            self._flush()
            return
        handlers = self._handlers
        plan = self._faults
        for msg in messages:
            if conn.closing or conn.dead:
                break
            handler = handlers.get(type(msg))
            if handler is None:
                self._protocol_error(conn, f"a member may not send {type(msg).__name__}")
                break
            if conn.user is None and type(msg) is not Logon:
                self._send(conn, Logout(f"{type(msg).__name__} before Logon: log on first",
                                        int(Reason.NOT_LOGGED_ON)))
                conn.closing = True
                break
            if conn.user is not None:
                if plan.drop_after is not None and conn.received >= plan.drop_after \
                        and plan.applies_to(conn.user):
                    self._abort(conn)
                    break
                conn.received += 1
            handler(conn, msg)
        self._flush()

    def _protocol_error(self, conn: _SeatConnection, text: str) -> None:
        self.stats.protocol_errors += 1
        log.warning("protocol error from seat %s (%s): %s", conn.user, conn.peer, text)
        self._send(conn, Logout(f"protocol error: {text}", int(Reason.PROTOCOL_ERROR)))
        conn.closing = True

    def _abort(self, conn: _SeatConnection) -> None:
        self.stats.drops += 1
        conn.closing = True
        conn.out.clear()
        if conn.transport is not None:
            conn.transport.abort()

    # -- handlers ----------------------------------------------------------------------------

    def _on_logon(self, conn: _SeatConnection, msg: Logon) -> None:
        if conn.user is not None:
            self._send(conn, LogonReject(int(Reason.ALREADY_LOGGED_ON), f"already logged on as {conn.user!r}"))
            return
        if self.members:
            secret = self.members.get(msg.user)
            if secret is None or not hmac.compare_digest(secret.encode(), msg.secret.encode()):
                self._send(conn, LogonReject(int(Reason.AUTH_FAILED),
                                             f"unknown member user {msg.user!r} or wrong secret"))
                conn.closing = True
                return
        elif not msg.user:
            self._send(conn, LogonReject(int(Reason.AUTH_FAILED), "empty user name"))
            conn.closing = True
            return
        old = self._seats.get(msg.user)
        if old is not None:
            self._send(old, Logout("another connection logged on as this seat", int(Reason.ALREADY_LOGGED_ON)))
            old.closing = True
        conn.user = msg.user
        self._seats[msg.user] = conn
        self.stats.logons += 1
        now = time.time_ns()
        day = day_as_yyyymmdd(trading_day_number(now, self.risk.day_boundary_s))
        self._send(conn, LogonAck(next(self._session_ids), day, now))
        for symbol in self.engine.symbols:
            self._send(conn, self.engine.market_data(symbol))

    def _on_logout(self, conn: _SeatConnection, msg: Logout) -> None:
        self._send(conn, Logout("logged out"))
        conn.closing = True

    def _on_terminal_info(self, conn: _SeatConnection, msg: TerminalInfo) -> None:
        """A member relays the terminal of one of its client sessions: recorded, not answered."""
        self.stats.terminal_infos += 1
        seat: str = conn.user  # type: ignore[assignment]
        self.terminal_infos.append((seat, msg))
        if self.on_terminal_info is not None:
            try:
                self.on_terminal_info(seat, msg)
            except Exception:  # a listener's bug must not cost the member its seat
                log.exception("terminal information listener failed")

    def _on_heartbeat(self, conn: _SeatConnection, msg: Heartbeat) -> None:
        self._send(conn, Heartbeat(time.time_ns()))

    def _on_new_order(self, conn: _SeatConnection, msg: NewOrder) -> None:
        self.stats.orders += 1
        user: str = conn.user  # type: ignore[assignment]
        plan = self._faults
        if self._fault_checks and plan.applies_to(user):
            if plan.silent:
                self.stats.swallowed += 1
                return
            if plan.reject_fraction and self._rng.random() < plan.reject_fraction:
                self.stats.injected_rejects += 1
                qty = msg.qty if isinstance(msg.qty, int) else 0
                self._deliver([(user, ExecReport(
                    msg.cl_ord_id, "", msg.account, msg.symbol, _REJECTED, _X_REJECTED,
                    int(Reason.EXCHANGE_REJECT), "exchange: rejected by fault injection",
                    ts_ns=time.time_ns(), side=msg.side, price=msg.price, qty=qty))])
                return
        if self._entry_s:
            self._lines.push(("in", user), self._entry_s, self._enter_order, user, msg)
        else:
            self._deliver(self.engine.submit(user, msg))

    def _enter_order(self, user: str, msg: NewOrder) -> None:
        self._deliver(self.engine.submit(user, msg))

    def _on_cancel(self, conn: _SeatConnection, msg: CancelOrder) -> None:
        self.stats.cancels += 1
        user: str = conn.user  # type: ignore[assignment]
        if self._fault_checks and self._faults.silent and self._faults.applies_to(user):
            self.stats.swallowed += 1
            return
        if self._entry_s:
            self._lines.push(("in", user), self._entry_s, self._enter_cancel, user, msg)
        else:
            self._deliver(self.engine.cancel(user, msg))

    def _enter_cancel(self, user: str, msg: CancelOrder) -> None:
        self._deliver(self.engine.cancel(user, msg))

    def _on_status(self, conn: _SeatConnection, msg: OrderStatusRequest) -> None:
        user: str = conn.user  # type: ignore[assignment]
        orders = self.engine.working(user, msg.account)
        if not msg.open_only:  # how the orders that already ended, ended (fills included)
            orders = self.engine.finished(user, msg.account) + orders
        elif msg.orders:  # how these ended, if they did
            orders = self.engine.finished_named(user, msg.orders, msg.account) + orders
        engine = self.engine
        reports: list[Report] = []
        for o in orders:
            if msg.trades:
                reports += [(user, r) for r in engine.trade_reports(o)]
            reports.append((user, engine.status_report(o)))
        reports.append((user, OrderStatusEnd(msg.req_id, len(orders))))  # type: ignore[arg-type]
        self._deliver(reports, status=True)

    # -- output ------------------------------------------------------------------------------

    def _update_delays(self) -> None:
        lat, plan = self._latency, self._faults
        extra = plan.extra_latency_ms
        self._entry_s = lat.entry_ms / 1000.0
        self._legs = (lat.ack_ms / 1000.0, lat.fill_ms / 1000.0, lat.cancel_ms / 1000.0, extra / 1000.0)
        self._delayed = not lat.zero or extra > 0
        self._fault_checks = plan.active

    def _deliver(self, reports: list[Report], status: bool = False) -> None:
        """Route reports to their owners, through the delay line when a latency applies."""
        seats = self._seats
        md_dirty = self._md_dirty
        self.stats.reports += len(reports)
        for owner, msg in reports:
            # A trade said again in a query answer moved no price: no market data for it.
            if msg.__class__ is ExecReport and msg.exec_type == _X_TRADE and not status:
                md_dirty.add(msg.symbol)
            delay = self._delay_of(owner, msg, status) if self._delayed else 0.0
            if delay or self._lines.busy(("out", owner)):
                self._lines.push(("out", owner), delay, self._send_owner, owner, msg)
                continue
            conn = seats.get(owner)
            if conn is not None:
                self._send(conn, msg)

    def _delay_of(self, owner: str, msg: Any, status: bool) -> float:
        if status:
            return 0.0
        ack, fill, cancel, extra = self._legs
        if not self._faults.applies_to(owner):
            extra = 0.0
        if msg.__class__ is CancelReject:
            return cancel + extra
        x = msg.exec_type
        return (fill if x == _X_TRADE else cancel if x == _X_CANCELED else ack) + extra

    def _send_owner(self, owner: str, msg: Any) -> None:
        conn = self._seats.get(owner)
        if conn is not None:  # an offline seat misses the report; its order state is kept
            self._send(conn, msg)

    def _send(self, conn: _SeatConnection, msg: Any) -> None:
        encode_into(msg, conn.out)
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)

    def _publish_md(self, symbols: Any) -> None:
        seats = list(self._seats.values())
        for symbol in symbols:
            frame = encode(self.engine.market_data(symbol))
            for conn in seats:
                conn.out += frame
                if not conn.dirty:
                    conn.dirty = True
                    self._dirty.append(conn)

    def _flush(self) -> None:
        if self._md_dirty:
            self._publish_md(sorted(self._md_dirty))
            self._md_dirty.clear()
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.dirty = False
            transport = conn.transport
            if conn.dead or transport is None or transport.is_closing():
                conn.out.clear()
                continue
            if conn.out:
                transport.write(bytes(conn.out))
                conn.out.clear()
            if conn.closing:
                transport.close()  # after the buffered Logout / LogonReject is written

    def _md_tick(self) -> None:
        self._publish_md(self.engine.symbols)
        self._flush()
        self._md_timer = self._loop.call_later(self.sim.md_interval_s, self._md_tick)


async def serve_exchange(config: RiskConfig | str | Path, host: str = "127.0.0.1", port: int = 0,
                         *, sim: SimConfig | None = None, **overrides: Any) -> ExchangeServer:
    """Start a simulated exchange and return it once it listens (``.port``, ``.close()``).

    ``config`` is a resolved ``RiskConfig`` or the path of a TOML file (its ``[sim]`` table is
    read too). ``overrides`` replace fields of the ``SimConfig``: ``ack_only``, ``fill_on_ack``,
    ``members``, ``md_interval_s``, ``latency=LatencyModel(...)``, ``faults=FaultPlan(...)``.
    """
    if isinstance(config, RiskConfig):
        risk, file_sim = config, SimConfig()
    else:
        risk, file_sim = load_sim_config(config)
    sim = sim if sim is not None else file_sim
    if overrides:
        sim = msgspec.structs.replace(sim, **overrides)
    server = ExchangeServer(risk, check_sim_config(sim))
    await server.start(host, port)
    return server


def main(argv: list[str] | None = None) -> int:
    """``fengkong sim exchange ...`` (the flags live in ``simulator.exchange_cli``)."""
    from simulator.exchange_cli import main as cli_main

    return cli_main(argv)
