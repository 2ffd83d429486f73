"""The asyncio client library algo teams use against the gateway (and the simulated exchange).

Quick start::

    from checks.enums import OrdStatus, Side
    from simulator.client import Client

    client = await Client.connect("127.0.0.1", 7000, "desk1", "secret", accounts=["A001"])
    order = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                    price=3200.0, qty=2)
    first = await order.acked()                      # NEW, or REJECTED with .reason / .text
    await order.wait_status(OrdStatus.FILLED, timeout=5)   # or the final state if it ends otherwise
    await client.cancel(order.cl_ord_id)
    async for report in client.reports():            # every ExecReport / CancelReject, in order
        ...
    await client.close()                             # sends Logout

How it fits
-----------
A ``Client`` is one session: one TCP connection, an ``asyncio.Protocol`` feeding a
``gateway.protocol.FrameDecoder``. Every ``ExecReport`` updates the ``OrderHandle`` of its order
(looked up by cl_ord_id), wakes whoever waits on it, then goes to ``on_report`` (a callback) and
to a bounded report queue read by ``next_report()`` / ``reports()``. ``Alert`` and
``MarketData`` have their own callbacks (and ``alerts`` / ``quotes`` keep the latest).

Memory stays bounded: the client tracks an order only while it works (a finished order is
forgotten at once; the handle you hold keeps its final state), the report and alert queues have
a maximum length (the oldest entries are dropped and counted in ``dropped_reports``), and
``quotes`` holds one entry per symbol. Set ``report_queue=0`` when you only use handles or the
callback.

Fills carry the exchange's execution id (``ExecReport.exec_id``); each handle keeps its order's
in ``executions`` and counts an execution once however often it is reported.
``request_status(trades=True)`` is a trade query: the answer lists, for each order, every
execution again as a TRADE report, then its STATUS report. Those TRADE reports also reach the
handles (which ignore the ones they already hold), ``on_report`` and the report queue, as
everything the server sends does: key fills by ``exec_id`` there.

Heartbeats: the client sends one every ``heartbeat_s`` and closes the session with
``ConnectionClosed`` when nothing at all arrived for three intervals.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from checks.enums import ExecType, Hedge, Offset, OrdType, Side, Tif
from checks.reasons import Reason
from gateway.protocol import (
    DEFAULT_MAX_FRAME,
    Alert,
    CancelOrder,
    CancelReject,
    ExecReport,
    FrameDecoder,
    Heartbeat,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    MarketData,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
    ProtocolError,
    TerminalData,
    encode,
    encode_into,
)
from simulator.order_handle import FINISHED_INTS as _FINISHED
from simulator.order_handle import OrderHandle

__all__ = ["Client", "ClientError", "ConnectionClosed", "LogonRejected", "OrderHandle"]

_X_STATUS, _X_TRADE = int(ExecType.STATUS), int(ExecType.TRADE)


class ClientError(Exception):
    """Base of the client library's errors."""


class LogonRejected(ClientError):
    """The server refused the logon; ``reason`` is the code from ``checks.reasons``."""

    def __init__(self, reason: int, text: str) -> None:
        self.reason = reason
        try:
            name = Reason(reason).name
        except ValueError:
            name = "UNKNOWN"
        super().__init__(f"logon rejected: {reason} {name}: {text}")
        self.text = text


class ConnectionClosed(ClientError):
    """The session ended; ``reason`` is the server's Logout reason code (0 if none)."""

    def __init__(self, text: str, reason: int = 0) -> None:
        super().__init__(text)
        self.reason = reason


class ClientProtocol(asyncio.Protocol):
    """The connection under a ``Client`` (``simulator.fix_client`` swaps in a FIX decoder)."""

    def __init__(self, max_frame: int) -> None:
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame)
        self.early: list[Any] = []  # messages before the Client object exists (none, normally)
        self.paused: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as err:
            if self.client is not None:
                self.client._on_lost(ConnectionClosed(f"protocol error from the server: {err}",
                                                      int(Reason.PROTOCOL_ERROR)))
            if self.transport is not None:
                self.transport.abort()
            return
        if self.client is None:
            self.early.extend(messages)
            return
        self.client._on_messages(messages)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        if self.client is not None:
            self.client._on_lost(ConnectionClosed(f"connection lost: {exc}" if exc else "connection closed by the server"))

    def pause_writing(self) -> None:
        self.paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.paused = None


def collect_terminal(ip: str = "") -> TerminalData:
    """This machine's terminal information as the standard library can see it: the local
    address of the connection (``ip``), the MAC address, host name, a machine id where the OS
    has one, and the OS name and version. A client with its own collector (CPU and disk
    serials, a vendor's system-info blob) builds ``TerminalData`` itself."""
    import platform
    import socket
    import uuid
    from pathlib import Path

    node = uuid.getnode()
    mac = ":".join(f"{(node >> s) & 0xFF:02x}" for s in range(40, -1, -8))
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()[:64]
    except OSError:
        machine_id = ""
    return TerminalData(ip=ip, mac=mac, device_name=socket.gethostname()[:255],
                        device_id=machine_id, os=platform.platform()[:255])


class Client:
    """One logged-on session. Create with ``await Client.connect(...)``."""

    def __init__(self, proto: ClientProtocol, user: str, *, report_queue: int,
                 on_report: Callable[[ExecReport | CancelReject], None] | None,
                 on_alert: Callable[[Alert], None] | None,
                 on_market_data: Callable[[MarketData], None] | None, id_prefix: str | None) -> None:
        self._proto = proto
        self._transport: asyncio.Transport = proto.transport  # type: ignore[assignment]
        self.user = user
        self.session_id = 0
        self.trading_day = 0
        self.on_report = on_report
        self.on_alert = on_alert
        self.on_market_data = on_market_data
        self.quotes: dict[str, MarketData] = {}
        self.alerts: deque[Alert] = deque(maxlen=1000)
        self.logout: Logout | None = None  # the server's Logout, if it sent one
        self.dropped_reports = 0
        self._queue_max = report_queue
        self._reports: deque[ExecReport | CancelReject] = deque()
        self._report_event = asyncio.Event()
        self._alert_event = asyncio.Event()
        self._orders: dict[str, OrderHandle] = {}
        # Pending status requests, answered in order: (req_id, reports so far, future, trades?).
        self._status_reqs: deque[tuple[str, list[ExecReport], asyncio.Future[list[ExecReport]], bool]] = deque()
        self._prefix = id_prefix if id_prefix is not None else secrets.token_hex(3) + "-"
        self._next_id = 0
        self._logon: asyncio.Future[LogonAck] = asyncio.get_running_loop().create_future()
        self._closed: ConnectionClosed | None = None
        self._closed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_recv = time.monotonic()
        self._hb_task: asyncio.Task[None] | None = None
        self._batch: bytearray | None = None  # frames held back inside ``batched()``

    # -- session -----------------------------------------------------------------------------

    @classmethod
    async def connect(cls, host: str, port: int, user: str, secret: str,
                      accounts: Iterable[str] = (), heartbeat_s: float = 5.0,
                      cancel_on_disconnect: bool = True, *, timeout: float = 10.0,
                      report_queue: int = 10_000,
                      on_report: Callable[[ExecReport | CancelReject], None] | None = None,
                      on_alert: Callable[[Alert], None] | None = None,
                      on_market_data: Callable[[MarketData], None] | None = None,
                      id_prefix: str | None = None, max_frame: int = DEFAULT_MAX_FRAME,
                      tls: ssl.SSLContext | None = None,
                      server_hostname: str | None = None,
                      app_id: str = "", auth_code: str = "",
                      terminal: TerminalData | str | None = None) -> Client:
        """Connect, log on and return the session; ``LogonRejected`` names the reason code.

        ``id_prefix`` starts every generated cl_ord_id (default: 6 random hex digits and '-',
        so ids stay unique per session per trading day across reconnects).

        ``tls``: connect over TLS with this client context (e.g.
        ``ssl.create_default_context(cafile="gateway-ca.pem")``, plus ``load_cert_chain`` for a
        client certificate when the gateway asks for one); the server's certificate is checked
        against ``server_hostname`` (default: ``host``). A refused handshake raises
        ``ssl.SSLError``.

        ``app_id`` / ``auth_code``: the application's registration with the broker (穿透式监管;
        required when the user has registered applications). ``terminal``: the terminal
        information to send, or ``"collect"`` to gather it here (``collect_terminal``).
        """
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: ClientProtocol(max_frame), host, port, ssl=tls,
                                   server_hostname=(server_hostname or host) if tls else None),
            timeout)
        client = cls(proto, user, report_queue=report_queue, on_report=on_report,
                     on_alert=on_alert, on_market_data=on_market_data, id_prefix=id_prefix)
        proto.client = client
        if terminal == "collect":
            sock = proto.transport.get_extra_info("sockname") if proto.transport else None
            terminal = collect_terminal(sock[0] if sock else "")
        elif isinstance(terminal, str):
            raise ValueError(f"terminal: expected TerminalData, 'collect' or None, got {terminal!r}")
        await client._log_on(proto, Logon(user, secret, list(accounts), heartbeat_s,
                                          cancel_on_disconnect, app_id, auth_code, terminal),
                             timeout)
        return client

    async def _log_on(self, proto: Any, logon: Logon, timeout: float) -> None:
        """Send ``logon``, take what arrived before this object existed, wait for the answer
        and start heartbeats (``simulator.fix_client`` logs on the same way over FIX)."""
        self._write(logon)
        if proto.early:
            self._on_early(proto.early)
            proto.early = []
        try:
            ack = await asyncio.wait_for(asyncio.shield(self._logon), timeout)
        except (TimeoutError, ClientError):
            self.abort()
            raise
        self.session_id, self.trading_day = ack.session_id, ack.trading_day
        if logon.heartbeat_s > 0:
            self._hb_task = asyncio.get_running_loop().create_task(
                self._heartbeats(logon.heartbeat_s))

    def _on_early(self, messages: list[Any]) -> None:
        self._on_messages(messages)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _closed_error(self) -> ConnectionClosed:
        return self._closed or ConnectionClosed("session closed")

    async def close(self, text: str = "bye", timeout: float = 2.0) -> None:
        """Log out politely (Logout, wait for the server's answer or close), then close."""
        if self._closed is None:
            self._write(Logout(text))
            try:
                await asyncio.wait_for(asyncio.shield(self._closed_fut), timeout)
            except TimeoutError:
                pass
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without Logout (what a crashed client looks like)."""
        self._transport.abort()
        self._on_lost(ConnectionClosed("closed by the client"))

    async def wait_closed(self, timeout: float | None = None) -> ConnectionClosed:
        await asyncio.wait_for(asyncio.shield(self._closed_fut), timeout)
        return self._closed_error()

    # -- orders ------------------------------------------------------------------------------

    def new_cl_ord_id(self) -> str:
        self._next_id += 1
        return f"{self._prefix}{self._next_id}"

    def send_order_nowait(self, *, account: str, symbol: str, side: Side | int, qty: int,
                          price: float = 0.0, offset: Offset | int = Offset.OPEN,
                          hedge: Hedge | int = Hedge.SPEC, ord_type: OrdType | int = OrdType.LIMIT,
                          tif: Tif | int = Tif.GFD, cl_ord_id: str | None = None) -> OrderHandle:
        """Send a new order now (no back-pressure wait) and return its handle."""
        if self._closed is not None:
            raise self._closed
        cl = cl_ord_id if cl_ord_id is not None else self.new_cl_ord_id()
        if cl in self._orders:
            raise ValueError(f"cl_ord_id {cl!r} is already used by a working order of this session")
        msg = NewOrder(cl, account, symbol, int(side), int(offset), int(hedge), int(ord_type),
                       int(tif), float(price), qty)
        handle = OrderHandle(self, msg, time.perf_counter_ns())
        self._orders[cl] = handle
        self._write(msg)
        return handle

    async def send_order(self, **kwargs: Any) -> OrderHandle:
        """``send_order_nowait`` that first waits while the socket's send buffer is full.

        Keyword arguments: ``account, symbol, side, qty, price=0.0, offset=OPEN, hedge=SPEC,
        ord_type=LIMIT, tif=GFD, cl_ord_id=None`` (enums from ``checks.enums``).
        """
        await self.drain()
        return self.send_order_nowait(**kwargs)

    def cancel_nowait(self, orig_cl_ord_id: str, *, account: str | None = None,
                      cl_ord_id: str | None = None) -> str:
        """Ask to cancel a working order; returns the cancel's own cl_ord_id.

        The outcome arrives as a CANCELED report on the order's handle, or a ``CancelReject``
        (in ``next_report()`` and on the handle's ``cancel_reject``).
        """
        if self._closed is not None:
            raise self._closed
        handle = self._orders.get(orig_cl_ord_id)
        if account is None:
            if handle is None:
                raise ValueError(f"no working order {orig_cl_ord_id!r} known to this session: pass account=")
            account = handle.order.account
        cl = cl_ord_id if cl_ord_id is not None else self.new_cl_ord_id()
        self._write(CancelOrder(cl, orig_cl_ord_id, account))
        return cl

    async def cancel(self, orig_cl_ord_id: str, *, account: str | None = None,
                     cl_ord_id: str | None = None) -> str:
        await self.drain()
        return self.cancel_nowait(orig_cl_ord_id, account=account, cl_ord_id=cl_ord_id)

    def order(self, cl_ord_id: str) -> OrderHandle | None:
        """The handle of a working order of this session."""
        return self._orders.get(cl_ord_id)

    @property
    def working(self) -> list[OrderHandle]:
        return list(self._orders.values())

    async def request_status(self, account: str = "", open_only: bool = True,
                             timeout: float | None = 10.0, *, trades: bool = False) -> list[ExecReport]:
        """Ask the server for its working orders (reconciliation); adopt the ones not tracked.

        Returns the STATUS reports. With ``trades=True`` (a trade query) the list also holds
        each order's TRADE reports, before its STATUS report, as the server sent them — and any
        live TRADE report that arrived while the answer was coming: key them by ``exec_id``.
        """
        req_id = self.new_cl_ord_id()
        fut: asyncio.Future[list[ExecReport]] = asyncio.get_running_loop().create_future()
        self._status_reqs.append((req_id, [], fut, trades))
        self._write(OrderStatusRequest(req_id, account, open_only, trades))
        return await asyncio.wait_for(fut, timeout)

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Send every order / cancel made inside the block in one socket write.

        For baskets and bursts: one system call instead of one per message. Nothing is sent
        until the block ends (the block should not await the orders' reports).
        """
        if self._batch is not None:  # nested: the outer block sends
            yield
            return
        self._batch = bytearray()
        try:
            yield
        finally:
            data, self._batch = self._batch, None
            if data and self._closed is None:
                self._transport.write(bytes(data))

    async def drain(self) -> None:
        paused = self._proto.paused
        if paused is not None:
            await paused
        if self._closed is not None:
            raise self._closed

    # -- reports -----------------------------------------------------------------------------

    async def next_report(self, timeout: float | None = None) -> ExecReport | CancelReject:
        """The next ExecReport / CancelReject in arrival order (needs ``report_queue > 0``)."""
        while not self._reports:
            if self._closed is not None:
                raise self._closed
            self._report_event.clear()
            await asyncio.wait_for(self._report_event.wait(), timeout)
        return self._reports.popleft()

    async def reports(self) -> AsyncIterator[ExecReport | CancelReject]:
        """Every report until the session closes (then the iteration simply ends)."""
        while True:
            try:
                yield await self.next_report()
            except ConnectionClosed:
                return

    async def next_alert(self, timeout: float | None = None) -> Alert:
        while not self.alerts:
            if self._closed is not None:
                raise self._closed
            self._alert_event.clear()
            await asyncio.wait_for(self._alert_event.wait(), timeout)
        return self.alerts.popleft()

    # -- internals ---------------------------------------------------------------------------

    def _write(self, msg: Any) -> None:
        if self._batch is not None:
            encode_into(msg, self._batch)
        else:
            self._transport.write(encode(msg))

    def _on_messages(self, messages: list[Any]) -> None:
        self._last_recv = time.monotonic()
        for msg in messages:
            cls = msg.__class__
            if cls is ExecReport:
                self._on_exec(msg)
            elif cls is CancelReject:
                handle = self._orders.get(msg.orig_cl_ord_id)
                if handle is not None:
                    handle.cancel_reject = msg
                self._enqueue(msg)
            elif cls is MarketData:
                self.quotes[msg.symbol] = msg
                if self.on_market_data is not None:
                    self.on_market_data(msg)
            elif cls is Alert:
                self.alerts.append(msg)
                self._alert_event.set()
                if self.on_alert is not None:
                    self.on_alert(msg)
            elif cls is OrderStatusEnd:
                if self._status_reqs:
                    _, got, fut, _ = self._status_reqs.popleft()
                    if not fut.done():
                        fut.set_result(got)
            elif cls is LogonAck:
                if not self._logon.done():
                    self._logon.set_result(msg)
            elif cls is LogonReject:
                if not self._logon.done():
                    self._logon.set_exception(LogonRejected(msg.reason, msg.text))
            elif cls is Logout:
                self.logout = msg
                self._transport.close()
                self._on_lost(ConnectionClosed(f"logged out by the server: {msg.text}", msg.reason))
            # Heartbeat: nothing to do; _last_recv was refreshed above.

    def _on_exec(self, rep: ExecReport) -> None:
        reqs = self._status_reqs
        if rep.exec_type == _X_STATUS:
            got = reqs[0][1] if reqs else []
            if rep.cl_ord_id not in self._orders and rep.status not in _FINISHED:
                order = NewOrder(rep.cl_ord_id, rep.account, rep.symbol, rep.side, 0, 0, 0, 0,
                                 rep.price, rep.qty)
                handle = self._orders[rep.cl_ord_id] = OrderHandle(self, order, 0)
                # A trade query sent the order's executions just before: the adopted handle
                # knows them, so it never counts them again.
                for r in got:
                    if r.exec_type == _X_TRADE and r.cl_ord_id == rep.cl_ord_id and r.exec_id:
                        handle.executions[r.exec_id] = r
                handle.fills = len(handle.executions)
                handle._update(rep)
            if reqs:
                got.append(rep)
            return
        if rep.exec_type == _X_TRADE and reqs and reqs[0][3]:
            reqs[0][1].append(rep)
        handle = self._orders.get(rep.cl_ord_id)
        if handle is not None:
            handle._update(rep)
            if rep.status in _FINISHED:
                del self._orders[rep.cl_ord_id]
        self._enqueue(rep)

    def _enqueue(self, rep: ExecReport | CancelReject) -> None:
        if self.on_report is not None:
            self.on_report(rep)
        if self._queue_max:
            if len(self._reports) >= self._queue_max:
                self._reports.popleft()
                self.dropped_reports += 1
            self._reports.append(rep)
            self._report_event.set()

    def _on_lost(self, err: ConnectionClosed) -> None:
        if self._closed is not None:
            return
        self._closed = err
        if not self._logon.done():
            self._logon.set_exception(err)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
        for handle in self._orders.values():
            handle._fail(err)
        for _, _, fut, _ in self._status_reqs:
            if not fut.done():
                fut.set_exception(err)
        self._status_reqs.clear()
        self._report_event.set()
        self._alert_event.set()
        if self._hb_task is not None and self._hb_task is not asyncio.current_task():
            self._hb_task.cancel()

    async def _heartbeats(self, interval: float) -> None:
        while self._closed is None:
            await asyncio.sleep(interval)
            if self._closed is not None:
                return
            if time.monotonic() - self._last_recv > 3 * interval:
                self._transport.abort()
                self._on_lost(ConnectionClosed(f"no message from the server for {3 * interval:g} s"))
                return
            self._write(Heartbeat(time.time_ns()))
