"""What the certification suite puts between the parts: a recording proxy and a link relay.

The client system connects to the **recording proxy** as if it were the gateway; the proxy
opens its own connection to the gateway for each one and copies bytes both ways unchanged,
decoding a copy of each direction's frames (``gateway.protocol.FrameDecoder``) into ``Wire``:
every message exchanged, with the time the proxy saw it and its direction. That is the
evidence of each case, whatever the client is written in and whatever the gateway journals.
``cut()`` drops every client connection at once (the disconnect case).

The **link relay** sits between the gateway's exchange link and the simulator; ``cut()`` drops
the link and refuses new connections until ``restore()`` (the link-loss case).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from gateway.protocol import DEFAULT_MAX_FRAME, FrameDecoder, ProtocolError

CLIENT = "client"  # client system -> gateway
GATEWAY = "gateway"  # gateway -> client system
SUITE = "suite"  # what the suite did (kill, cut, ...), as a note


@dataclass
class WireEvent:
    t_ns: int
    dir: str
    msg: Any  # a protocol message, or a str note
    conn: int = 0  # which client connection (1, 2, ... in order of connecting)


class Wire:
    def __init__(self) -> None:
        self.events: list[WireEvent] = []
        self.changed = asyncio.Event()

    def add(self, direction: str, msg: Any, conn: int = 0) -> None:
        self.events.append(WireEvent(time.time_ns(), direction, msg, conn))
        self.changed.set()

    def note(self, text: str) -> None:
        self.add(SUITE, text)

    def since(self, index: int) -> list[WireEvent]:
        return self.events[index:]

    async def wait_for(self, pred: Any, since: int, timeout: float) -> WireEvent:
        """The first event from ``since`` on that satisfies ``pred``."""
        async def scan() -> WireEvent:
            i = since
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(scan(), timeout)


class _Pipe(asyncio.Protocol):
    """One direction's socket: forwards what it reads to ``peer`` and records decoded frames."""

    def __init__(self, wire: Wire | None, direction: str, conn: int) -> None:
        self.wire = wire
        self.direction = direction
        self.conn = conn
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.decoder = FrameDecoder(DEFAULT_MAX_FRAME) if wire is not None else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.buffer.append(data)
        else:
            self.peer.write(data)
        if self.decoder is not None and self.wire is not None:
            try:
                for msg in self.decoder.feed(data):
                    self.wire.add(self.direction, msg, self.conn)
            except ProtocolError as err:
                self.wire.add(self.direction, f"undecodable frame: {err}", self.conn)
                self.decoder = None

    def attach(self, peer: asyncio.Transport) -> None:
        self.peer = peer
        for data in self.buffer:
            peer.write(data)
        self.buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class Relay:
    """A TCP relay on 127.0.0.1: a recording proxy when given a ``Wire``, a plain relay if not."""

    def __init__(self, target: tuple[str, int], wire: Wire | None = None) -> None:
        self.target = target
        self.wire = wire
        self.port = 0
        self.server: asyncio.Server | None = None
        self.pairs: list[tuple[asyncio.Transport, asyncio.Transport]] = []
        self.connections = 0

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accept, "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def _accept(self) -> asyncio.Protocol:
        self.connections += 1
        conn = self.connections
        inner = _Pipe(self.wire, CLIENT, conn)
        asyncio.get_running_loop().create_task(self._connect(inner, conn))
        return inner

    async def _connect(self, inner: _Pipe, conn: int) -> None:
        loop = asyncio.get_running_loop()
        outer = _Pipe(self.wire, GATEWAY, conn)
        try:
            await loop.create_connection(lambda: outer, *self.target)
        except OSError:
            if inner.transport is not None:
                inner.transport.close()
            return
        assert inner.transport is not None and outer.transport is not None
        outer.peer = inner.transport
        inner.attach(outer.transport)
        self.pairs.append((inner.transport, outer.transport))

    def cut(self) -> int:
        """Drop every connection (abruptly, as a network fault does); returns how many."""
        n = 0
        for a, b in self.pairs:
            if not a.is_closing() or not b.is_closing():
                n += 1
            a.abort()
            b.abort()
        self.pairs.clear()
        return n

    async def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def close(self) -> None:
        await self.stop_listening()
        self.cut()
