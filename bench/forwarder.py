"""The bare forwarder: the physical limit of a Python order proxy, for the benchmark to compare with.

It is the gateway with everything that makes it a risk gateway taken out: uvloop, the same
``asyncio.Protocol`` plumbing, the same msgspec codec (``gateway.protocol``) — every frame is
decoded into its message and re-encoded, as the gateway must to look inside it — and nothing
else: no checks, no sessions, no journal, no id mapping, no logging on the hot path. Whatever
throughput and added latency it shows is what any Python proxy on this machine costs before it
does any work of its own (docs/ARCHITECTURE.md §9).

Two topologies:

``pipe`` (default)
    Each client connection gets its own upstream connection to the exchange; bytes are relayed
    both ways message by message, so ``Logon``/``LogonAck`` and every report reach the right
    client with no state at all. One ``write`` per direction per ``data_received``.

``mux``
    Every client shares one upstream seat, as the gateway's exchange link does: client
    ``Logon`` is answered locally, each ``NewOrder`` remembers which client sent it (the one
    piece of state any multiplexer needs) and reports are routed back by ``cl_ord_id``.
    ``MarketData`` is consumed, as the gateway consumes it. Use it to compare topologies; the
    benchmark's headline figures use ``pipe``.

Backpressure: when one side's transport is congested, reading from the other side pauses,
so a slow peer bounds memory instead of growing a buffer.

Run: ``python -m bench.forwarder --upstream 127.0.0.1:7001 [--port 0] [--mode pipe|mux]``;
it prints ``forwarder listening on HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import time

from gateway.protocol import (
    ExecReport,
    FrameDecoder,
    Heartbeat,
    Logon,
    LogonAck,
    MarketData,
    NewOrder,
    ProtocolError,
    encode_into,
)

MAX_FRAME = 1 << 24
_FINAL = frozenset((2, 4, 5))  # FILLED, CANCELED, REJECTED: checks.enums.OrdStatus values


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Side(asyncio.Protocol):
    """One end of a relay: decodes what arrives, re-encodes it, writes it to ``peer``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.decoder = FrameDecoder(MAX_FRAME)
        self.out = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        try:
            messages = self.decoder.feed(data)
        except ProtocolError:
            self.close()
            return
        if peer is None or peer.transport is None:
            return
        out = self.out
        for msg in messages:
            encode_into(msg, out)
        peer.transport.write(bytes(out))
        out.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer is not None:
            self.peer.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # The peer cannot take more: stop reading from this side until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _PipeClient(_Side):
    """A client connection in ``pipe`` mode: opens its own upstream and relays to it."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.pending = bytearray()  # bytes that arrived before the upstream was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(_Side, self.host, self.port)
        except OSError:
            self.close()
            return
        up.peer, self.peer = self, up
        if self.transport is None:
            up.close()
        elif self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending += data
            return
        super().data_received(data)


class _Mux:
    """``mux`` mode: one upstream seat shared by every client (see the module docstring)."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self.host, self.port, self.user = host, port, user
        self.up: _MuxUpstream | None = None
        self.routes: dict[str, _MuxClient] = {}
        self.sessions = 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.up = await loop.create_connection(lambda: _MuxUpstream(self), self.host, self.port)
        buf = bytearray()
        encode_into(Logon(self.user, "", [], 30.0, False), buf)
        self.up.transport.write(bytes(buf))  # type: ignore[union-attr]
        await self.up.logged_on


class _MuxUpstream(asyncio.Protocol):
    def __init__(self, mux: _Mux) -> None:
        self.mux = mux
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(MAX_FRAME)
        self.logged_on: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        routes = self.mux.routes
        touched: list[_MuxClient] = []
        for msg in self.decoder.feed(data):
            cls = msg.__class__
            if cls is ExecReport:
                client = (routes.pop(msg.cl_ord_id, None) if msg.status in _FINAL
                          else routes.get(msg.cl_ord_id))
                if client is None or client.transport is None:
                    continue
                if not client.out:
                    touched.append(client)
                encode_into(msg, client.out)
            elif cls is LogonAck and not self.logged_on.done():
                self.logged_on.set_result(None)
            # MarketData, heartbeats and the rest are consumed, as the gateway consumes them.
        for client in touched:
            if client.transport is not None:
                client.transport.write(bytes(client.out))
            client.out.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.logged_on.done():
            self.logged_on.set_exception(ConnectionError("exchange closed the seat"))


class _MuxClient(asyncio.Protocol):
    def __init__(self, mux: _Mux) -> None:
        self.mux = mux
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(MAX_FRAME)
        self.out = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        mux = self.mux
        up = mux.up
        if up is None or up.transport is None:
            return
        out = bytearray()
        routes = mux.routes
        for msg in self.decoder.feed(data):
            cls = msg.__class__
            if cls is NewOrder:
                routes[msg.cl_ord_id] = self
                encode_into(msg, out)
            elif cls is Logon:
                mux.sessions += 1
                encode_into(LogonAck(mux.sessions, 0, time.time_ns()), self.out)
            elif cls is Heartbeat or cls is MarketData:
                continue
            else:
                encode_into(msg, out)
        if out:
            up.transport.write(bytes(out))
        if self.out and self.transport is not None:
            self.transport.write(bytes(self.out))
            self.out.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, upstream: tuple[str, int], mode: str) -> None:
    loop = asyncio.get_running_loop()
    if mode == "mux":
        mux = _Mux(*upstream, user="FWD")
        await mux.connect()
        server = await loop.create_server(lambda: _MuxClient(mux), host, port)
    else:
        server = await loop.create_server(lambda: _PipeClient(*upstream), host, port)
    bound = server.sockets[0].getsockname()
    print(f"forwarder listening on {bound[0]}:{bound[1]} ({mode})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(prog="python -m bench.forwarder", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--upstream", required=True, metavar="HOST:PORT")
    p.add_argument("--mode", choices=("pipe", "mux"), default="pipe")
    args = p.parse_args(argv)
    host, _, up_port = args.upstream.rpartition(":")
    uvloop.run(serve(args.host, args.port, (host, int(up_port)), args.mode))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
