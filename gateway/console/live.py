"""The console's live view: Server-Sent Events from ``GET /v1/events``, a snapshot then changes.

Theory of operation
-------------------
One ``LiveFeed`` per gateway, however many consoles are open. While at least one console
listens, a single task builds the view (``views.Sections``) every ``interval`` seconds and
compares each section (firm, accounts, sessions) with what it last sent, as encoded JSON: only
the sections that changed go out, in one ``change`` event, with the alerts raised since (found
by identity in the router's alert deque, so none is sent twice and none is missed unless more
than the deque holds arrived in one interval). The cost is one build per interval for all
consoles together, and nothing at all when no console is open; the browser never polls.

A console that connects gets ``snapshot``: the sections as last sent and the recent alerts up
to the same point, so the changes that follow apply to it exactly.

Each console has a bounded queue (``QUEUE``); one that does not read falls behind, and when its
queue is full it is disconnected rather than buffered without end (the browser reconnects and
starts again from a snapshot). At most ``MAX_LISTENERS`` consoles listen at once (503 past
that); a console that went away is noticed within ``GONE_CHECK_S`` even when nothing is written
to it. A comment line goes out every ``KEEPALIVE_S`` so idle proxies and the browser see the
stream alive. At shutdown every stream is ended, so the admin plane stops at once.

The stream is authenticated like every admin read (``Authorization: Bearer``, viewer role): the
console reads it with ``fetch()`` and a stream reader, since ``EventSource`` cannot send that
header and a token must never travel in a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from aiohttp import web

from gateway.console.views import ALERTS_IN_SNAPSHOT, Sections, alert_view

if TYPE_CHECKING:
    from gateway.server import Gateway

log = structlog.get_logger("fengkong.console")

INTERVAL_S = 0.25  # how often the view is rebuilt while a console listens
QUEUE = 64  # events a console may fall behind by before it is disconnected
MAX_LISTENERS = 32
KEEPALIVE_S = 15.0
GONE_CHECK_S = 1.0  # how soon a console that went away quietly gives its place back
_encode = msgspec.json.Encoder().encode


def sse(event: str, data: bytes) -> bytes:
    """One SSE event; ``data`` is single-line JSON (msgspec never writes a newline in it)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class Listener:
    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.closed = ""  # why the feed ended this stream ("" while open)

    def push(self, item: bytes) -> None:
        if self.closed:
            return
        if len(self.queue) >= QUEUE:
            self.end("too slow: the console fell behind the live view")
            return
        self.queue.append(item)
        self.ready.set()

    def end(self, why: str) -> None:
        self.closed = why
        self.queue.clear()
        self.ready.set()


class LiveFeed:
    def __init__(self, gw: Gateway, interval: float = INTERVAL_S) -> None:
        self.gw = gw
        self.interval = interval
        self.sections = Sections(gw)
        self.listeners: set[Listener] = set()
        self.last: dict[str, bytes] = {}  # section -> JSON as last sent
        self.recent: deque[dict[str, Any]] = deque(maxlen=ALERTS_IN_SNAPSHOT)
        self._marker: Any = None  # the newest alert already sent (by identity)
        self._task: asyncio.Task[None] | None = None
        self.builds = 0

    def _new_alerts(self) -> list[dict[str, Any]]:
        fresh = []
        for a in reversed(self.gw.router.alerts):
            if a is self._marker:
                break
            fresh.append(a)
        if fresh:
            self._marker = fresh[0]
        out = [alert_view(a) for a in reversed(fresh)]
        self.recent.extend(out)
        return out

    def _tick(self) -> bytes | None:
        """Build the view; the change event to send, or None when nothing changed."""
        self.builds += 1
        built = {k: _encode(v) for k, v in self.sections.build().items()}
        changed = {k: v for k, v in built.items() if self.last.get(k) != v}
        self.last = built
        alerts = self._new_alerts()
        if not changed and not alerts:
            return None
        body = b",".join(b'"' + k.encode() + b'":' + v for k, v in changed.items())
        if alerts:
            body += (b"," if body else b"") + b'"alerts":' + _encode(alerts)
        return sse("change", b"{" + body + b"}")

    def snapshot(self) -> bytes:
        body = b",".join(b'"' + k.encode() + b'":' + v for k, v in self.last.items())
        return sse("snapshot", b"{" + body + b',"alerts":' + _encode(list(self.recent)) + b"}")

    def subscribe(self) -> Listener:
        if len(self.listeners) >= MAX_LISTENERS:
            raise OverflowError(f"{MAX_LISTENERS} consoles are listening already")
        if self._task is None:
            self._tick()  # the state now, not as the last console saw it
            self._task = asyncio.create_task(self._run(), name="console-live-feed")
        listener = Listener()
        listener.push(self.snapshot())
        self.listeners.add(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    async def _run(self) -> None:
        try:
            while self.listeners:
                await asyncio.sleep(self.interval)
                try:
                    event = self._tick()
                except Exception:  # a view that cannot be built must not end the feed
                    log.exception("console live view could not be built")
                    continue
                if event is not None:
                    for listener in list(self.listeners):
                        listener.push(event)
        finally:
            self._task = None

    async def close(self, _app: web.Application | None = None) -> None:
        """End every stream (the admin plane is shutting down)."""
        for listener in list(self.listeners):
            listener.end("the gateway is shutting down")
        self.listeners.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def stream(request: web.Request, feed: LiveFeed) -> web.StreamResponse:
    """Write ``feed``'s events to one console until it goes away or the feed ends it."""
    listener = feed.subscribe()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        quiet = 0.0
        while True:
            try:
                await asyncio.wait_for(listener.ready.wait(), GONE_CHECK_S)
            except TimeoutError:
                if _gone(request):  # its slot is free at once, not at the next write
                    break
                quiet += GONE_CHECK_S
                if quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    await resp.write(b": keepalive\n\n")
                continue
            quiet = 0.0
            listener.ready.clear()
            if listener.closed:
                await resp.write(sse("end", _encode({"reason": listener.closed})))
                break
            while listener.queue:
                await resp.write(listener.queue.popleft())
    except ConnectionError:
        pass  # the console went away
    finally:
        feed.unsubscribe(listener)
    return resp
