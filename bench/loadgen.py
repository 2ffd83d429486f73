"""The load generator: N order-entry sessions in one process, pipelined, batched, measured.

How it fits
-----------
``bench.harness`` starts this as its own process (pinned to a core) once per measurement, with
a ``LoadSpec`` as JSON; it writes a ``LoadResult`` as JSON and exits. The same generator drives
every path — straight to the simulated exchange, through the bare forwarder, through the
gateway — so the paths differ only in what sits between the client and the exchange.

It is built for low overhead rather than convenience (the client library keeps an
``OrderHandle`` per order and writes once per message; here that would make the generator the
bottleneck): ``asyncio.Protocol`` sessions on uvloop, the project's frame codec for sending,
and a *lean* decoder for what comes back — structs with the same tags that declare only the
leading fields the generator reads (msgspec skips the rest of an ``array_like`` frame without
building it).

Pacing
------
*Open loop* (``rate > 0``): an interval timer (SIGALRM, every ``tick_s``, default 100 µs)
works out how many orders are due since the start at ``rate`` per second and sends them on
the next session in turn, in one ``write``. The event loop's own timers round to whole
milliseconds, which would send 10,000 orders/s as bursts of ten; the interval timer lets them
leave one by one (it costs the generator ~25 % of a core at 10 kHz on these VMs). A late tick
sends the backlog at once, so the offered rate does not sag when something is slow; the lag
behind the ideal schedule is reported (``lag_us``) to show the generator kept up.
*Closed loop* (``rate == 0``, max throughput): on the same timer, each session is topped up
to ``window`` orders in flight — small top-ups every tick keep every process in the pipeline
busy at once (topping up on each batch of acks instead makes one window-sized batch bounce
between the processes, each idle while another works).

Measuring
---------
Latency is order -> first report (the ack, or a reject), from the moment the order's batch was
written to the moment the batch of reports holding its ack was read, on ``perf_counter_ns``
(CLOCK_MONOTONIC). Values are kept in µs in an array while measuring and put into an
HdrHistogram afterwards (recording one value costs ~1.6 µs in ``hdrh``, too much for the hot
path). Only orders sent after ``warmup`` count; throughput is acks received per second in the
measurement window. Orders never acknowledged within ``drain_s`` after the end are ``lost``.

The order flow (see ``bench.benchconfig``): per account and instrument, BUY OPEN below the
reference price alternates with SELL CLOSE of the same size above it, ticks and sizes rotating,
consecutive orders of an account on different instruments — accepted by every check.

``--kill`` runs the kill-switch timing instead (``run_kill``): rest ``kill_orders`` orders in
one account, ask the admin plane to kill the account, and time the cancels and the first
rejected order afterwards.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import collections
import functools
import json
import operator
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field

import msgspec

from checks.enums import ExecType, Hedge, Offset, OrdType, Side, Tif
from gateway.protocol import Heartbeat, Logon, NewOrder, ProtocolError, encode_into

_NEW, _TRADE = int(ExecType.NEW), int(ExecType.TRADE)
_CANCELED, _REJECTED = int(ExecType.CANCELED), int(ExecType.REJECTED)
_BUY, _SELL = int(Side.BUY), int(Side.SELL)
_OPEN, _CLOSE = int(Offset.OPEN), int(Offset.CLOSE)
_SPEC, _LIMIT, _GFD = int(Hedge.SPEC), int(OrdType.LIMIT), int(Tif.GFD)


# ---------------------------------------------------------------------------- the lean decoder
class _L(msgspec.Struct, array_like=True, gc=False):
    """Same tags as ``gateway.protocol``; only the leading fields the generator reads."""


class _ExecReport(_L, tag="ExecReport"):
    cl_ord_id: str
    order_id: str
    account: str
    symbol: str
    status: int
    exec_type: int
    reason: int = 0


class _LogonAck(_L, tag="LogonAck"):
    session_id: int = 0


class _LogonReject(_L, tag="LogonReject"):
    reason: int = 0
    text: str = ""


class _Logout(_L, tag="Logout"):
    text: str = ""
    reason: int = 0


class _CancelReject(_L, tag="CancelReject"):
    cl_ord_id: str = ""


class _Other(_L):
    pass


_LEAN = (_ExecReport, _LogonAck, _LogonReject, _Logout, _CancelReject,
         *(msgspec.defstruct(f"_{name}", [], bases=(_Other,), tag=name)
           for name in ("Alert", "Heartbeat", "MarketData", "OrderStatusEnd", "Logon",
                        "NewOrder", "CancelOrder", "OrderStatusRequest")))
# Every tag the protocol has must be here, or a frame of that type would fail to decode.
_decoder = msgspec.msgpack.Decoder(functools.reduce(operator.or_, _LEAN))
_HEADER = 4


def feed(buf: bytearray, data: bytes) -> list:
    """Split ``buf + data`` into decoded lean messages; the remainder stays in ``buf``."""
    buf += data
    out = []
    pos, end = 0, len(buf)
    decode = _decoder.decode
    while end - pos >= _HEADER:
        length = int.from_bytes(buf[pos:pos + 4], "big")
        start = pos + _HEADER
        if start + length > end:
            break
        out.append(decode(buf[start:start + length]))
        pos = start + length
    if pos:
        del buf[:pos]
    return out


# ---------------------------------------------------------------------------- spec and result
class InstrumentSpec(msgspec.Struct, array_like=True):
    symbol: str
    tick: float
    reference: float


class LoadSpec(msgspec.Struct, kw_only=True):
    label: str
    host: str
    port: int
    user: str
    secret: str
    accounts: list[str]
    instruments: list[InstrumentSpec]
    sessions: int = 4
    # Straight to the exchange (or a pipe forwarder) each session is its own seat: the
    # simulator gives a second logon of the same user the seat and drops the first.
    seat_per_session: bool = False
    # "native": the msgpack protocol; "fix": the gateway's FIX 4.4 port (``port``), session k
    # with SenderCompID ``bench.benchconfig.fix_comp_id(k)``.
    front: str = "native"
    rate: float = 10_000.0  # orders/s over all sessions; 0 = closed loop (max throughput)
    window: int = 256  # closed loop: orders in flight per session
    duration: float = 5.0
    warmup: float = 1.0
    drain_s: float = 10.0
    tick_s: float = 0.0001  # open loop: pacing interval (SIGALRM interval timer)
    # --kill
    kill_orders: int = 0
    kill_rate: float = 3_000.0
    admin_port: int = 0
    token: str = ""
    tls_ca: str = ""  # connect over TLS, trusting this CA (the harness's gateway-tls path)


class LoadResult(msgspec.Struct, kw_only=True):
    label: str
    mode: str  # "open" (fixed rate) or "closed" (max throughput)
    rate_target: float
    sessions: int
    window: int
    duration_s: float
    sent: int  # orders sent in the measurement window
    acked: int  # acks (NEW) received in the measurement window
    throughput: float  # acks per second in the measurement window
    offered_rate: float  # orders sent per second in the measurement window
    rejected: int
    reject_reasons: dict[str, int]
    lost: int
    fills: int
    latency_us: dict[str, float]  # p50 p90 p99 p99.9 max mean, order -> first report
    histogram: str  # base64 HdrHistogram of latency in µs
    lag_us: dict[str, float]  # open loop: how late batches left vs the ideal schedule
    loadgen_cpu_pct: float
    errors: list[str] = []


class KillResult(msgspec.Struct, kw_only=True):
    orders: int  # resting orders in the account when the kill was sent
    place_s: float
    cancels_sent: int  # as the gateway reported it
    gateway_elapsed_ms: float  # engine + queuing every cancel, inside the gateway
    response_ms: float  # command -> HTTP answer at the client
    last_cancel_ack_ms: float  # command -> the last CANCELED report read by the client
    canceled: int  # CANCELED reports the client received
    first_reject_ms: float  # command -> reject of the first order sent after the answer
    reject_reason: int
    accepted_after_kill: int  # must be 0
    errors: list[str] = []


# Printed when the measurement window opens and closes: the harness samples the CPU time of
# the other processes at these lines.
WINDOW_OPEN, WINDOW_CLOSED = "loadgen: measurement window open", "loadgen: measurement window closed"
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def summarize(values_us: array.array) -> tuple[dict[str, float], str]:
    """Percentiles and the encoded HdrHistogram of latencies in µs."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, 60_000_000, 3)
    for value, count in collections.Counter(values_us).items():
        hist.record_value(max(1, value), count)
    if hist.get_total_count() == 0:
        return {k: 0.0 for k in ("p50", "p90", "p99", "p99.9", "max", "mean")}, ""
    out = {name: float(hist.get_value_at_percentile(p)) for name, p in PERCENTILES}
    out["max"] = float(hist.get_max_value())
    out["mean"] = round(hist.get_mean_value(), 1)
    return out, base64.b64encode(hist.encode()).decode()


# ---------------------------------------------------------------------------- sessions
def build_flow(accounts: list[str], instruments: list[InstrumentSpec]) -> list[tuple]:
    """One period of the order flow for a slice of accounts (see the module docstring)."""
    pairs = [(a, ins) for ins in instruments for a in accounts]
    flow = []
    for n in range(60):  # lcm of the side (2), tick (10) and size (3) rotations
        k, q = 1 + (n // 2) % 10, 1 + (n // 2) % 3
        for account, ins in pairs:
            if n % 2 == 0:
                flow.append((account, ins.symbol, _BUY, _OPEN, round(ins.reference - k * ins.tick, 6), q))
            else:
                flow.append((account, ins.symbol, _SELL, _CLOSE, round(ins.reference + k * ins.tick, 6), q))
    return flow


@dataclass
class Counters:
    lat: array.array = field(default_factory=lambda: array.array("q"))
    acked: int = 0  # acks of orders sent in the measurement window
    acks_all: int = 0  # every ack, whenever its order was sent
    rejected: int = 0
    reasons: collections.Counter = field(default_factory=collections.Counter)
    fills: int = 0
    canceled: int = 0
    last_cancel_ns: int = 0
    errors: list[str] = field(default_factory=list)


class Session(asyncio.Protocol):
    def __init__(self, gen: Generator, index: int, accounts: list[str]) -> None:
        self.gen = gen
        self.index = index
        self.accounts = accounts
        self.flow = build_flow(accounts, gen.spec.instruments)
        self.pos = 0
        self.seq = 0
        self.prefix = f"{gen.run_id}s{index}."
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out = bytearray()
        self.sent: dict[str, int] = {}  # cl_ord_id -> send time, until its first report
        self.logged_on: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gen.stopping:
            self.gen.c.errors.append(f"session {self.index}: connection lost ({exc or 'closed'})")
        if not self.logged_on.done():
            self.logged_on.set_exception(ConnectionError(f"session {self.index} closed"))

    def logon(self, user: str, secret: str) -> None:
        encode_into(Logon(user, secret, self.accounts, 5.0, False), self.out)
        self.flush()

    def queue(self, n: int, now: int) -> None:
        """Encode ``n`` orders into the outgoing buffer, all stamped ``now``."""
        flow, pos, sent, out = self.flow, self.pos, self.sent, self.out
        size = len(flow)
        for _ in range(n):
            account, symbol, side, offset, price, qty = flow[pos]
            pos = pos + 1 if pos + 1 < size else 0
            self.seq += 1
            clid = f"{self.prefix}{self.seq:x}"
            sent[clid] = now
            encode_into(NewOrder(clid, account, symbol, side, offset, _SPEC, _LIMIT, _GFD,
                                 price, qty), out)
        self.pos = pos

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(bytes(self.out))
        self.out.clear()

    def heartbeat(self) -> None:
        encode_into(Heartbeat(time.time_ns()), self.out)
        self.flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        try:
            messages = feed(self.buf, data)
        except (msgspec.DecodeError, ProtocolError) as err:
            self.gen.c.errors.append(f"session {self.index}: undecodable frame: {err}")
            self.transport.abort()  # type: ignore[union-attr]
            return
        self.handle(messages, now)

    def handle(self, messages: list, now: int) -> None:
        gen = self.gen
        c = gen.c
        sent = self.sent
        measure_from = gen.measure_from
        lat = c.lat
        for msg in messages:
            cls = msg.__class__
            if cls is _ExecReport:
                et = msg.exec_type
                if et == _NEW or et == _REJECTED:
                    if et == _NEW:
                        c.acks_all += 1
                    t0 = sent.pop(msg.cl_ord_id, 0)
                    if t0 and t0 >= measure_from:
                        lat.append((now - t0 + 500) // 1000)
                        if et == _NEW:
                            c.acked += 1
                    if et == _REJECTED:
                        c.rejected += 1
                        c.reasons[str(msg.reason)] += 1
                        gen.on_reject(msg, now)
                elif et == _TRADE:
                    c.fills += 1
                elif et == _CANCELED:
                    c.canceled += 1
                    c.last_cancel_ns = now
                    gen.on_canceled(now)
            elif cls is _LogonAck:
                if not self.logged_on.done():
                    self.logged_on.set_result(None)
            elif cls is _LogonReject or cls is _Logout:
                text = f"session {self.index}: {cls.__name__[1:]} {msg.reason}: {msg.text}"
                if not self.logged_on.done():
                    self.logged_on.set_exception(ConnectionError(text))
                elif not gen.stopping:
                    c.errors.append(text)


class FixSession(Session):
    """The same session over the gateway's FIX port: NewOrderSingle out, ExecutionReports in
    (parsed with the gateway's own FIX codec and handed to the same accounting as lean
    native reports), so the FIX front is measured on exactly the native flow."""

    _ET = {b"0": _NEW, b"8": _REJECTED, b"F": _TRADE, b"4": _CANCELED}
    _SIDE = {_BUY: b"1", _SELL: b"2"}
    _OFFSET = {_OPEN: b"0", _CLOSE: b"1"}

    def __init__(self, gen: Generator, index: int, accounts: list[str]) -> None:
        from bench.benchconfig import fix_comp_id
        from gateway.fix.codec import FixDecoder

        super().__init__(gen, index, accounts)
        self.decoder = FixDecoder(1 << 20)
        self.fixed = b"49=%s\x0156=FENGKONG\x01" % fix_comp_id(index).encode()
        self.out_seq = 1

    def _emit(self, msg_type: bytes, body: bytes) -> None:
        from gateway.fix.codec import frame, now_timestamp

        self.out += frame(msg_type, self.fixed + b"34=%d\x0152=%s\x01" % (self.out_seq,
                                                                      now_timestamp()), body)
        self.out_seq += 1

    def logon(self, user: str, secret: str) -> None:
        self._emit(b"A", b"98=0\x01108=30\x01141=Y\x01553=%s\x01554=%s\x01"
                   % (user.encode(), secret.encode()))
        self.flush()

    def heartbeat(self) -> None:
        self._emit(b"0", b"")
        self.flush()

    def queue(self, n: int, now: int) -> None:
        from gateway.fix.codec import format_float, frame, now_timestamp

        flow, pos, sent, out = self.flow, self.pos, self.sent, self.out
        size = len(flow)
        ts = now_timestamp()
        fixed, side_of, offset_of = self.fixed, self._SIDE, self._OFFSET
        for _ in range(n):
            account, symbol, side, offset, price, qty = flow[pos]
            pos = pos + 1 if pos + 1 < size else 0
            self.seq += 1
            clid = f"{self.prefix}{self.seq:x}"
            sent[clid] = now
            out += frame(b"D", fixed + b"34=%d\x0152=%s\x01" % (self.out_seq, ts),
                         b"11=%s\x011=%s\x0155=%s\x0154=%s\x0138=%d\x0140=2\x0144=%s\x01"
                         b"59=0\x0120002=%s\x0160=%s\x01" % (
                             clid.encode(), account.encode(), symbol.encode(), side_of[side],
                             qty, format_float(price), offset_of[offset], ts))
            self.out_seq += 1
        self.pos = pos

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        try:
            items = self.decoder.feed(data)
        except Exception as err:  # Oversized: nothing the gateway should ever send
            self.gen.c.errors.append(f"session {self.index}: bad FIX: {err}")
            self.transport.abort()  # type: ignore[union-attr]
            return
        messages = []
        et_of = self._ET
        for m in items:
            mt = getattr(m, "msg_type", None)
            if mt == b"8":
                f = m.fields
                et = et_of.get(f.get(150, b""))
                if et is not None:
                    reason = f.get(20001)
                    messages.append(_ExecReport(f.get(11, b"").decode(), "", "", "", 0, et,
                                                int(reason) if reason else 0))
            elif mt == b"A":
                messages.append(_LogonAck())
            elif mt == b"5":
                messages.append(_Logout(m.text(58)))
            elif mt == b"1":
                self._emit(b"0", b"112=" + m.fields.get(112, b"") + b"\x01")
                self.flush()
        self.handle(messages, now)


class Generator:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.run_id = f"{time.time_ns() // 1000 % 10**9:x}"
        self.c = Counters()
        self.sessions: list[Session] = []
        self.closed_loop = spec.rate <= 0
        self.sending = False
        self.stopping = False
        self.measure_from = 1 << 62  # nothing counts until the warm-up is over
        self.acked_in_window = 0
        self.kill_probe: asyncio.Future[tuple[int, int]] | None = None
        self.cancel_target = 0
        self.all_canceled: asyncio.Future[None] | None = None

    # hooks for the kill test
    def on_reject(self, msg: _ExecReport, now: int) -> None:
        if self.kill_probe is not None and not self.kill_probe.done():
            self.kill_probe.set_result((now, msg.reason))

    def on_canceled(self, now: int) -> None:
        if self.all_canceled is not None and self.c.canceled >= self.cancel_target \
                and not self.all_canceled.done():
            self.all_canceled.set_result(None)

    async def connect(self, accounts_per_session: list[list[str]], user: str, secret: str) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        tls = ssl.create_default_context(cafile=spec.tls_ca) if spec.tls_ca else None
        for k, accounts in enumerate(accounts_per_session):
            cls = FixSession if spec.front == "fix" else Session
            _, s = await loop.create_connection(
                lambda k=k, accounts=accounts, cls=cls: cls(self, k, accounts), spec.host,
                spec.port, ssl=tls, server_hostname=spec.host if tls is not None else None)
            self.sessions.append(s)
            name = f"{user}{k + 1}" if spec.seat_per_session else user
            s.logon(name, secret)
        await asyncio.wait_for(asyncio.gather(*(s.logged_on for s in self.sessions)), 60.0)

    def close(self) -> None:
        self.stopping = True
        for s in self.sessions:
            if s.transport is not None:
                s.transport.close()

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            for s in self.sessions:
                s.heartbeat()

    async def run_load(self) -> LoadResult:
        spec = self.spec
        n = max(1, min(spec.sessions, len(spec.accounts)))
        slices = [spec.accounts[k::n] for k in range(n)]
        await self.connect(slices, spec.user, spec.secret)
        hb = asyncio.get_running_loop().create_task(self.heartbeats())
        lags = array.array("q")
        start = time.perf_counter_ns()
        self.measure_from = start + int(spec.warmup * 1e9)
        end = self.measure_from + int(spec.duration * 1e9)
        self.sending = True
        # SIGALRM every ``tick_s`` from an interval timer (precise to a few µs, where the event
        # loop's own timers round to whole milliseconds) drives sending in both modes, so
        # orders leave in a steady trickle: at 10,000/s with a 100 µs tick one by one, not in
        # bursts of ten; at max throughput every stage of the pipeline keeps working at once
        # instead of one window-sized batch bouncing between the processes.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        rate, window, closed = spec.rate, spec.window, self.closed_loop
        sessions = self.sessions
        st = {"issued": 0, "rr": 0, "measuring": False, "cpu0": 0.0, "sent0": 0, "acked0": 0}

        def pace() -> None:
            now = time.perf_counter_ns()
            if not st["measuring"] and now >= self.measure_from:
                st.update(measuring=True, cpu0=time.process_time(), sent0=st["issued"],
                          acked0=self.c.acks_all)
                print(WINDOW_OPEN, flush=True)
            if now >= end:
                if not done.done():
                    done.set_result(None)
                return
            issued = st["issued"]
            if closed:  # top every session up to ``window`` orders in flight
                for s in sessions:
                    room = window - len(s.sent)
                    if room > 0:
                        s.queue(room, now)
                        s.flush()
                        issued += room
                st["issued"] = issued
                return
            due = int((now - start) * rate / 1e9) - issued
            if due <= 0:
                return
            if st["measuring"]:
                lags.append((now - start - int(issued * 1e9 / rate)) // 1000)
            s = sessions[st["rr"]]
            st["rr"] = (st["rr"] + 1) % len(sessions)
            s.queue(due, now)
            s.flush()
            st["issued"] = issued + due

        loop.add_signal_handler(signal.SIGALRM, pace)
        signal.setitimer(signal.ITIMER_REAL, spec.tick_s, spec.tick_s)
        try:
            await done
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            loop.remove_signal_handler(signal.SIGALRM)
        issued, cpu0, sent_at_start = st["issued"], st["cpu0"], st["sent0"]
        acked_at_start = st["acked0"]
        self.sending = False
        print(WINDOW_CLOSED, flush=True)
        cpu = time.process_time() - cpu0
        window_s = (time.perf_counter_ns() - self.measure_from) / 1e9
        acked_total = self.c.acks_all
        # The measured window's acks: for open loop everything sent in it; give stragglers time.
        deadline = time.perf_counter_ns() + int(spec.drain_s * 1e9)
        while any(s.sent for s in self.sessions) and time.perf_counter_ns() < deadline:
            await asyncio.sleep(0.01)
        lost = sum(1 for s in self.sessions for t in s.sent.values() if t >= self.measure_from)
        hb.cancel()
        self.close()
        latency, hist = summarize(self.c.lat)
        if self.closed_loop:
            # Closed loop: acks read during the window; each one let a new order go.
            sent = acked = acked_total - acked_at_start
        else:
            sent = issued - sent_at_start
            acked = self.c.acked
        lag, _ = summarize(lags) if lags else ({}, "")
        return LoadResult(
            label=spec.label, mode="closed" if self.closed_loop else "open",
            rate_target=spec.rate, sessions=n, window=spec.window if self.closed_loop else 0,
            duration_s=round(window_s, 3), sent=sent, acked=acked,
            throughput=round(acked / window_s, 1), offered_rate=round(sent / window_s, 1),
            rejected=self.c.rejected, reject_reasons=dict(self.c.reasons), lost=lost,
            fills=self.c.fills, latency_us=latency, histogram=hist,
            lag_us={k: lag[k] for k in ("p50", "p99", "max")} if lag else {},
            loadgen_cpu_pct=round(100.0 * cpu / window_s, 1), errors=self.c.errors[:20])

    # ------------------------------------------------------------------------ kill switch
    async def run_kill(self) -> KillResult:
        spec = self.spec
        errors: list[str] = []
        await self.connect([spec.accounts[:1]], spec.user, spec.secret)
        s = self.sessions[0]
        ins = spec.instruments[0]
        # Resting buys on one contract, below the market, never the same price twice in a row.
        s.flow = [(spec.accounts[0], ins.symbol, _BUY, _OPEN,
                   round(ins.reference - (1 + k) * ins.tick, 6), 1) for k in range(100)]
        self.measure_from = 0
        t_place = time.perf_counter_ns()
        placed = 0
        while placed < spec.kill_orders:
            now = time.perf_counter_ns()
            due = min(spec.kill_orders, int((now - t_place) * spec.kill_rate / 1e9) + 1) - placed
            if due > 0:
                s.queue(due, now)
                s.flush()
                placed += due
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 60
        while s.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        place_s = (time.perf_counter_ns() - t_place) / 1e9
        if self.c.rejected or s.sent:
            errors.append(f"{self.c.rejected} of {spec.kill_orders} resting orders rejected "
                          f"({dict(self.c.reasons)}), {len(s.sent)} unanswered")
        resting = self.c.acked
        self.cancel_target = resting
        loop = asyncio.get_running_loop()
        self.all_canceled = loop.create_future()
        self.kill_probe = loop.create_future()
        body = json.dumps({"scope": "account", "key": spec.accounts[0],
                           "reason": "benchmark: kill-switch timing"})
        t_cmd = time.perf_counter_ns()
        answer = await http_post(spec.host, spec.admin_port, "/v1/kill", body, spec.token)
        t_resp = time.perf_counter_ns()
        acked_before_probe = self.c.acked
        s.queue(1, time.perf_counter_ns())  # the first new order after the command's answer
        s.flush()
        try:
            t_reject, reason = await asyncio.wait_for(self.kill_probe, 10.0)
        except TimeoutError:
            t_reject, reason = 0, 0
            errors.append("the order sent after the kill was not rejected within 10 s")
        try:
            await asyncio.wait_for(self.all_canceled, 60.0)
        except TimeoutError:
            errors.append(f"only {self.c.canceled} of {resting} cancels acknowledged in 60 s")
        accepted_after = self.c.acked - acked_before_probe
        self.close()
        ms = 1e-6
        elapsed_ms = float(answer.get("elapsed_us", 0.0)) / 1000.0
        return KillResult(
            orders=resting, place_s=round(place_s, 3),
            cancels_sent=int(answer.get("cancels_sent", -1)),
            gateway_elapsed_ms=round(elapsed_ms, 3),
            response_ms=round((t_resp - t_cmd) * ms, 3),
            last_cancel_ack_ms=round((self.c.last_cancel_ns - t_cmd) * ms, 3)
            if self.c.last_cancel_ns else 0.0,
            canceled=self.c.canceled,
            first_reject_ms=round((t_reject - t_cmd) * ms, 3) if t_reject else 0.0,
            reject_reason=reason, accepted_after_kill=accepted_after,
            errors=errors + self.c.errors[:10])


async def http_post(host: str, port: int, path: str, body: str, token: str) -> dict:
    """One JSON POST over a fresh connection: no client library between us and the timing."""
    reader, writer = await asyncio.open_connection(host, port)
    data = body.encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + data)
    raw = await asyncio.wait_for(reader.read(), 60.0)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head else "?"
    if status != "200":
        raise RuntimeError(f"POST {path} answered {status}: {payload[:300]!r}")
    return json.loads(payload)


async def _main(spec: LoadSpec, kill: bool) -> bytes:
    gen = Generator(spec)
    try:
        result = await (gen.run_kill() if kill else gen.run_load())
    finally:
        gen.close()
    return msgspec.json.encode(result)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="LoadSpec as a JSON file")
    p.add_argument("--out", required=True, help="where to write the result (JSON)")
    p.add_argument("--kill", action="store_true", help="run the kill-switch timing")
    args = p.parse_args(argv)
    with open(args.spec, "rb") as f:
        spec = msgspec.json.decode(f.read(), type=LoadSpec)
    data = uvloop.run(_main(spec, args.kill))
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"loadgen {spec.label}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
