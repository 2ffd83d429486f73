"""A framed connection: the asyncio ``Protocol`` base of client sessions and the exchange link.

It owns the sans-IO ``FrameDecoder`` for inbound bytes and an outbound buffer that coalesces
every frame produced in one event-loop turn into a single ``transport.write`` (one syscall for
a burst of reports instead of one each); the compiled order path writes a read's frames when
the read ends (``read_done``). Subclasses implement ``on_message`` and
``on_protocol_error``; nothing here knows what the messages mean.

Backpressure: when the transport's write buffer passes its high-water mark, ``pause_writing``
marks the connection congested; subclasses decide the policy (a client session that stays
congested past ``max_buffer`` is dropped as a slow consumer, the exchange link pauses intake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.protocol import FrameDecoder, ProtocolError, encode_into

_log = structlog.get_logger("fengkong.framed")


class FramedProtocol(asyncio.Protocol):
    def __init__(self, max_frame: int, before_write: Callable[[], None] | None = None) -> None:
        # Called before any bytes leave for the peer: the audit log's write-ahead flush.
        self.before_write = before_write
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame)
        self._out = bytearray()
        # The same buffer, by the name the compiled order path looks for: a connection that
        # has it takes native frames encoded straight into it (then ``queued``); any other
        # session (FIX) is sent message objects.
        self.frame_buffer = self._out
        self._flush_scheduled = False
        # The transport's own buffer as it was after the last write: it only shrinks until the
        # next one, so ``_buffered + len(_out)`` bounds what is held (a cheap test per frame).
        self._buffered = 0
        self.congested = False
        self.closed = False
        self.peer: str = ""
        # Takes each read's bytes instead of ``data_received``'s decode-and-dispatch loop: the
        # compiled router's ``client_data`` / ``exchange_data`` (gateway.fastroute), which split
        # and read the frames themselves, keep this loop's rules (a bad frame anywhere in the
        # read is a protocol error before any message of it is handled; stop when closed; a bug
        # in one message is that message's ``on_internal_error``) and count ``messages_in``.
        self.on_data: Callable[[FramedProtocol, bytes], None] | None = None
        # Messages received, ever (counted once a read, whichever path takes them): the
        # console's per-session rate is this count's change.
        self.messages_in = 0

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.on_connected()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.on_data is not None:
            self.on_data(self, data)
            return
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as err:
            self.on_protocol_error(str(err))
            return
        self.messages_in += len(messages)
        for msg in messages:
            if self.closed:
                break
            try:
                self.on_message(msg)
            except Exception as exc:  # a bug handling one message must not take the link down
                self.on_internal_error(msg, exc)

    def eof_received(self) -> bool | None:
        try:
            self.decoder.close()
        except ProtocolError as err:
            self.on_protocol_error(str(err))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        self.transport = None
        self._out.clear()
        self.on_disconnected(exc, was_closed)

    def pause_writing(self) -> None:
        self.congested = True
        self.on_congested()

    def resume_writing(self) -> None:
        self.congested = False
        self.on_decongested()

    # -- sending
    def send(self, msg) -> None:  # noqa: ANN001 - any protocol message
        """Queue one frame; every frame queued this loop turn leaves in one write."""
        if self.closed:
            return
        start = len(self._out)
        encode_into(msg, self._out)
        self.queued(start)

    def queued(self, start: int) -> None:
        """Frames were appended to ``_out`` from ``start`` on (by ``send``, or encoded there
        directly by the compiled order path): they leave with this loop turn's write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def read_done(self, start: int) -> None:
        """The compiled order path ended a read that encoded frames into ``frame_buffer`` from
        ``start``: they leave now, in one write after the journal's write-ahead flush, instead
        of at the end of the loop turn (which cost a scheduled callback and a loop iteration
        more per read, in latency too)."""
        self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.closed:
            if self.before_write is not None:
                self.before_write()
            self.transport.write(bytes(self._out))
            self._out.clear()
            self._buffered = self.transport.get_write_buffer_size()

    def write_buffer_size(self) -> int:
        t = self.transport
        return (t.get_write_buffer_size() if t is not None else 0) + len(self._out)

    def close(self) -> None:
        """Flush what is queued, then close."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- for subclasses
    def on_connected(self) -> None: ...

    def on_message(self, msg) -> None: ...  # noqa: ANN001

    def on_protocol_error(self, text: str) -> None: ...

    def on_internal_error(self, msg, exc: Exception) -> None:  # noqa: ANN001
        _log.exception("internal error handling a message", msg_type=type(msg).__name__,
                       peer=self.peer, exc_info=exc)

    def on_disconnected(self, exc: Exception | None, closed_by_us: bool) -> None: ...

    def on_congested(self) -> None: ...

    def on_decongested(self) -> None: ...
