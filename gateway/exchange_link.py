"""The exchange link: the gateway's member connection (seat) to the exchange.

It connects, logs on, *reconciles* (asks for the status of every order of the seat and lets
the router catch up on fills and cancels it missed), and only then reports itself up: until
then new orders are refused with EXCHANGE_UNAVAILABLE. When the connection drops it goes
down at once, raises an alert, and reconnects with exponential backoff. New orders are never
queued while it is down (a stale order released minutes late is worse than a clear reject);
cancels are held by the router and sent first once the link is back and reconciled.

Seat takeover: an exchange lets a second connection log on as a seat that is already logged
on, and logs the first out (``Logout`` reason ALREADY_LOGGED_ON). If the link answered that by
reconnecting, two gateways configured with one seat would take it from each other for ever,
each refusing orders every time it lost. So a link logged out for that reason raises one
CRITICAL alert (SEAT_TAKEN_OVER), stays down — new orders refused as for any down link,
``state`` reads "taken over" — and does not reconnect until an operator calls ``resume()``
(the admin plane's ``POST /v1/link/reconnect``).

Backpressure: if the exchange stops reading, the link pauses reading from every client
session until the exchange catches up, so memory stays bounded and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from checks.enums import AlertLevel
from checks.reasons import Reason
from gateway.framed import FramedProtocol
from gateway.protocol import (
    CancelReject,
    ExecReport,
    Heartbeat,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    MarketData,
    OrderStatusEnd,
)
from gateway.tls import client_context

if TYPE_CHECKING:
    from gateway.config import ExchangeLinkConfig
    from gateway.router import Router

log = structlog.get_logger("fengkong.exchange_link")


class _LinkProtocol(FramedProtocol):
    def __init__(self, link: ExchangeLink) -> None:
        super().__init__(16 * 1024 * 1024, link.router.before_write)
        self.link = link
        # The compiled router takes each read's bytes (reports it handles itself; every other
        # message comes back to ``on_message``).
        self.on_data = getattr(link.router, "exchange_data", None)

    def on_message(self, msg: Any) -> None:
        self.link.on_message(msg)

    def on_protocol_error(self, text: str) -> None:
        log.error("exchange sent a malformed stream", error=text)
        self.abort()

    def on_disconnected(self, exc: Exception | None, closed_by_us: bool) -> None:
        self.link.on_disconnected(exc)

    def on_congested(self) -> None:
        self.link.set_client_reading(False)

    def on_decongested(self) -> None:
        self.link.set_client_reading(True)


class ExchangeLink:
    def __init__(self, router: Router, cfg: ExchangeLinkConfig) -> None:
        self.router = router
        self.cfg = cfg
        self.up = False
        self.proto: _LinkProtocol | None = None
        self.connects = 0
        self._logon: asyncio.Future[Any] | None = None
        self._status_req = ""
        self._status_done: asyncio.Future[int] | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hb_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.changed = asyncio.Condition()
        # Why the link is held down after another connection took the seat (None: it is not);
        # ``_resume`` is set by the operator action that lets it try again.
        self.taken_over: str | None = None
        self._resume = asyncio.Event()
        # TLS to the exchange (``[exchange.tls]``; None: plaintext). A handshake that fails (a
        # certificate the CA did not sign, a wrong name) is a failed connect: logged, retried.
        self._ssl = client_context(cfg.tls, where="exchange.tls")
        self._server_name = (cfg.tls.server_name or cfg.host) if self._ssl is not None else None
        self.on_up: Callable[[], Any] | None = None  # called each time the link is up again
        router.link = self

    # -- lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="exchange-link")
        self._hb_task = asyncio.create_task(self._heartbeats(), name="exchange-link-heartbeat")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._hb_task):
            if task is not None:
                task.cancel()
        # Python 3.11's wait_for can swallow a cancel that lands as its inner future completes
        # (a SIGTERM during the logon or reconciliation): the loop then waits on, and stop()
        # with it, for ever. With _stopping set, waking its waits ends the loop anyway.
        self._lost.set()
        self._resume.set()
        for task in (self._task, self._hb_task):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self.proto is not None:
            self.proto.close()

    async def wait_up(self, timeout: float) -> None:
        await self.wait_state("up", timeout)

    async def wait_state(self, state: str, timeout: float) -> None:
        """Until ``self.state`` is ``state`` (TimeoutError after ``timeout`` seconds)."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.state == state), timeout)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _run(self) -> None:
        backoff = self.cfg.reconnect_min_s
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await self._connect_once(loop)
                backoff = self.cfg.reconnect_min_s
                await self._lost.wait()
            except (TimeoutError, OSError, ConnectionError, LinkRefused) as err:
                log.warning("exchange link connect failed", error=str(err) or type(err).__name__,
                            retry_in_s=round(backoff, 3))
                if self.proto is not None:
                    self.proto.abort()
            if self.taken_over is not None:
                # Taking the seat back would only make the other connection take it back in
                # turn: stay down until an operator says to try again.
                log.error("exchange link held down: the seat was taken over; not reconnecting "
                          "until an operator resumes it (POST /v1/link/reconnect)",
                          seat=self.cfg.user)
                await self._resume.wait()
                backoff = self.cfg.reconnect_min_s
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    async def _connect_once(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lost.clear()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _LinkProtocol(self), self.cfg.host, self.cfg.port,
                                   ssl=self._ssl, server_hostname=self._server_name), 5.0)
        self.proto = proto
        self._logon = loop.create_future()
        proto.send(Logon(self.cfg.user, self.cfg.secret, [], self.cfg.heartbeat_s, False))
        answer = await asyncio.wait_for(self._logon, 5.0)
        if isinstance(answer, LogonReject):
            raise LinkRefused(f"exchange refused logon: {answer.text} ({answer.reason})")
        self.connects += 1
        # Reconcile before accepting new orders: learn what happened while we were away (each
        # order's state and its executions, booked once by execution id), then send the cancels
        # held while the link was down, and only then let new orders through.
        req = self.router.recon_request(f"recon-{time.time_ns()}")
        self._status_req = req.req_id
        self._status_done = loop.create_future()
        self.router.recon_begin(req)
        proto.send(req)
        lost = await asyncio.wait_for(self._status_done, 10.0)
        resent = self.router.link_restored()
        self.up = True
        if self.on_up is not None:  # e.g. the terminal information of every live session
            self.on_up()
        log.info("exchange link up", host=self.cfg.host, port=self.cfg.port,
                 connects=self.connects, reconciled_lost=lost, held_cancels_sent=resent)
        if self.connects > 1:
            self.router.alert(AlertLevel.WARNING, Reason.LINK_STATUS, "firm",
                              f"exchange link is back (reconnect {self.connects - 1}); "
                              f"{lost} orders unknown to the exchange were closed, {resent} held "
                              "cancels sent")
        await self._notify()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            if self.proto is not None and not self.proto.closed:
                self.proto.send(Heartbeat(time.time_ns()))

    # -- inbound
    def on_message(self, msg: Any) -> None:
        t = type(msg)
        if t is ExecReport:
            self.router.exchange_report(msg)
        elif t is MarketData:
            self.router.market_data(msg)
        elif t is CancelReject:
            self.router.cancel_reject(msg)
        elif t is OrderStatusEnd:
            if msg.req_id == self._status_req and self._status_done is not None \
                    and not self._status_done.done():
                lost = self.router.reconciled(msg)
                self._status_done.set_result(lost)
        elif t in (LogonAck, LogonReject):
            if self._logon is not None and not self._logon.done():
                self._logon.set_result(msg)
        elif t is Logout:
            if msg.reason == Reason.ALREADY_LOGGED_ON:
                self._seat_taken_over(msg.text)
            else:
                log.warning("exchange logged us out", text=msg.text)
        elif t is Heartbeat:
            pass
        else:
            log.warning("unexpected message from the exchange", type=t.__name__)

    def on_disconnected(self, exc: Exception | None) -> None:
        was_up = self.up
        self.up = False
        self.proto = None
        self._lost.set()
        for fut in (self._logon, self._status_done):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("exchange closed the connection"))
        self.set_client_reading(True)
        if was_up and not self._stopping:
            log.error("exchange link lost", error=str(exc) if exc else "closed by the exchange")
            self.router.alert(AlertLevel.CRITICAL, Reason.LINK_STATUS, "firm",
                              "exchange link lost: new orders are refused until it is back")
        asyncio.get_running_loop().create_task(self._notify())

    def _seat_taken_over(self, text: str) -> None:
        """Another connection logged on as our seat: go down now, say so once, do not fight."""
        if self.taken_over is not None:
            return
        self.taken_over = text or "another connection logged on as this seat"
        self._resume.clear()
        # Down at once, not when the close arrives: the exchange drops whatever we send now.
        self.up = False
        log.error("exchange seat taken over", seat=self.cfg.user, text=text)
        self.router.alert(AlertLevel.CRITICAL, Reason.SEAT_TAKEN_OVER, "firm",
                          f"exchange seat {self.cfg.user!r} was taken over by another connection "
                          f"({self.taken_over}); this gateway does not fight for it: the link "
                          "stays down and new orders are refused until an operator reconnects it")
        if self.proto is not None:
            self.proto.close()
        asyncio.get_running_loop().create_task(self._notify())

    def resume(self) -> bool:
        """Operator action: try the seat again after a takeover (it takes the seat back).

        Returns False, changing nothing, when the link is not held down by a takeover (it is
        up, or reconnecting on its own).
        """
        if self.taken_over is None:
            return False
        log.warning("exchange link resumed by an operator: reconnecting", seat=self.cfg.user)
        self.taken_over = None
        self._resume.set()
        asyncio.get_running_loop().create_task(self._notify())
        return True

    @property
    def state(self) -> str:
        """"up", "taken over" (held down until ``resume()``) or "down" (reconnecting)."""
        if self.up:
            return "up"
        return "down" if self.taken_over is None else "taken over"

    # -- outbound
    def send(self, msg: Any) -> bool:
        """Send to the exchange; False (and an error logged) when there is no connection. The
        router only sends while the link is up and holds cancels itself, so a False here means
        the connection dropped in this very turn: the router's held-cancel pass covers it."""
        if self.proto is None or self.proto.closed:
            log.error("no exchange connection: message not sent", type=type(msg).__name__,
                      id=getattr(msg, "cl_ord_id", ""))
            return False
        self.proto.send(msg)
        return True

    def set_client_reading(self, on: bool) -> None:
        for s in list(self.router.sessions.values()):
            t = getattr(s, "transport", None)
            if t is not None and not s.closed:
                t.resume_reading() if on else t.pause_reading()


class LinkRefused(Exception):
    pass
