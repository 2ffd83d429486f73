"""The native wire protocol: message types and a sans-IO frame codec.

Theory of operation
-------------------
A connection carries frames: a 4-byte big-endian unsigned length, then that many bytes of
msgpack. Each body is one message, a msgspec ``Struct`` from the tagged union ``Message``,
encoded ``array_like`` (``[tag, field1, field2, ...]``) to keep frames small.

``FrameDecoder.feed(data)`` takes whatever bytes the socket produced (any split, any size) and
returns the complete messages in order; ``encode(msg)`` returns one whole frame. Neither touches a
socket, so every edge case is a unit test.

Errors: anything wrong with the stream raises ``ProtocolError`` (and only that) with a sentence
naming the problem — oversize length, unknown tag, missing field, wrong field type (by field
name), trailing bytes inside a frame, a truncated frame at end of stream. After an error the
decoder is *poisoned*: a length-prefixed stream cannot be resynchronised, so the owner answers
with ``Logout`` and closes that connection only.

Enumerated fields of orders (side, offset, ...) travel as plain ints and quantities as numbers:
a bad *value* in an order is not a broken stream but a bad order, which the risk engine rejects
with its own reason code while the session carries on.
"""

from __future__ import annotations

import re
import struct

import msgspec

DEFAULT_MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class _Msg(msgspec.Struct, array_like=True, tag=True, frozen=False, gc=False):
    """Base of every wire message (tagged by class name, encoded as an array)."""


class Logon(_Msg):
    user: str
    secret: str
    accounts: list[str] = []
    heartbeat_s: float = 5.0
    cancel_on_disconnect: bool = True


class LogonAck(_Msg):
    session_id: int
    trading_day: int
    server_time_ns: int


class LogonReject(_Msg):
    reason: int
    text: str


class NewOrder(_Msg):
    cl_ord_id: str
    account: str
    symbol: str
    side: int
    offset: int
    hedge: int
    ord_type: int
    tif: int
    price: float
    qty: int | float


class CancelOrder(_Msg):
    cl_ord_id: str
    orig_cl_ord_id: str
    account: str


class ExecReport(_Msg):
    cl_ord_id: str
    order_id: str
    account: str
    symbol: str
    status: int
    exec_type: int
    reason: int = 0
    text: str = ""
    last_qty: int = 0
    last_px: float = 0.0
    cum_qty: int = 0
    leaves_qty: int = 0
    ts_ns: int = 0
    side: int = 0
    price: float = 0.0
    qty: int = 0
    # Set by the exchange on a trade whose both sides carry the same client account (自成交).
    self_trade: bool = False


class CancelReject(_Msg):
    cl_ord_id: str
    orig_cl_ord_id: str
    reason: int
    text: str


class Alert(_Msg):
    level: int
    code: int
    scope: str
    text: str
    ts_ns: int = 0


class Heartbeat(_Msg):
    ts_ns: int = 0


class Logout(_Msg):
    text: str = ""
    reason: int = 0


class MarketData(_Msg):
    symbol: str
    last_px: float
    bid_px: float
    ask_px: float
    upper_limit: float
    lower_limit: float
    ts_ns: int = 0


class OrderStatusRequest(_Msg):
    """Ask for the state of working orders (reconciliation after a reconnect).

    The answer is one ``ExecReport`` with ``exec_type=STATUS`` per matching order, then
    ``OrderStatusEnd`` with the same ``req_id``. An empty ``account`` means every account of
    the connection.
    """

    req_id: str
    account: str = ""
    open_only: bool = True


class OrderStatusEnd(_Msg):
    req_id: str
    count: int


Message = (
    Logon
    | LogonAck
    | LogonReject
    | NewOrder
    | CancelOrder
    | ExecReport
    | CancelReject
    | Alert
    | Heartbeat
    | Logout
    | MarketData
    | OrderStatusRequest
    | OrderStatusEnd
)
MESSAGE_TYPES: tuple[type[_Msg], ...] = Message.__args__  # type: ignore[attr-defined]
_FIELDS = {cls.__name__: cls.__struct_fields__ for cls in MESSAGE_TYPES}


class ProtocolError(Exception):
    """The byte stream is not a valid sequence of frames; the text says what and where."""


_PATH_INDEX = re.compile(r"`\$\[(\d+)\]")


def _explain(err: msgspec.ValidationError | msgspec.DecodeError, body: bytes) -> str:
    """Turn msgspec's ``$[3]`` paths into field names: 'NewOrder.price: Expected float...'."""
    text = str(err)
    m = _PATH_INDEX.search(text)
    if m is None:
        missing = _missing_fields(text, body)
        return missing or text
    try:
        raw = msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        return text
    tag = raw[0] if isinstance(raw, list) and raw else None
    fields = _FIELDS.get(tag) if isinstance(tag, str) else None
    index = int(m.group(1))
    if index == 0 or fields is None:
        return f"unknown message type {tag!r} (expected one of {', '.join(_FIELDS)})"
    name = fields[index - 1] if index - 1 < len(fields) else f"[{index}]"
    return f"{tag}.{name}: {text}"


def _missing_fields(text: str, body: bytes) -> str | None:
    """'Expected array of at least length N' means required fields are missing: name them."""
    if "at least length" not in text:
        return None
    try:
        raw = msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        return None
    if not (isinstance(raw, list) and raw and isinstance(raw[0], str) and raw[0] in _FIELDS):
        return None
    fields = _FIELDS[raw[0]]
    missing = fields[len(raw) - 1 :]
    return f"{raw[0]} is missing field(s): {', '.join(missing)}"


class FrameDecoder:
    """Sans-IO decoder: bytes in, messages out (see the module docstring)."""

    __slots__ = ("_buf", "_max_frame", "_decoder", "_error")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame
        self._decoder = msgspec.msgpack.Decoder(Message)
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[_Msg]:
        """Append ``data`` and return every complete message, in order.

        Raises ``ProtocolError`` for the first bad frame; messages decoded before it in the
        same call are lost with the connection, which is what closing the session means.
        """
        if self._error is not None:
            raise ProtocolError(f"stream already failed: {self._error}")
        buf = self._buf
        buf += data
        out: list[_Msg] = []
        pos = 0
        end = len(buf)
        decode = self._decoder.decode
        while end - pos >= HEADER_SIZE:
            (length,) = _HEADER.unpack_from(buf, pos)
            if length > self._max_frame:
                self._fail(f"frame length {length} exceeds the maximum of {self._max_frame} bytes")
            if length == 0:
                self._fail("empty frame (length 0)")
            if end - pos - HEADER_SIZE < length:
                break
            body = bytes(buf[pos + HEADER_SIZE : pos + HEADER_SIZE + length])
            pos += HEADER_SIZE + length
            try:
                out.append(decode(body))
            except msgspec.ValidationError as err:
                self._fail(f"invalid message: {_explain(err, body)}")
            except msgspec.DecodeError as err:
                self._fail(f"undecodable frame body: {err}")
        if pos:
            del buf[:pos]
        return out

    def close(self) -> None:
        """Call at end of stream: a partial frame still buffered is a truncated frame."""
        if self._error is None and self._buf:
            self._fail(f"connection closed inside a frame ({len(self._buf)} bytes of a frame unread)")

    def _fail(self, text: str) -> None:
        self._error = text
        self._buf.clear()
        raise ProtocolError(text)


_encoder = msgspec.msgpack.Encoder()


def encode(msg: _Msg) -> bytes:
    """One whole frame for ``msg``."""
    body = _encoder.encode(msg)
    return _HEADER.pack(len(body)) + body


def encode_into(msg: _Msg, out: bytearray) -> None:
    """Append the frame for ``msg`` to ``out`` (lets a sender batch frames into one write)."""
    start = len(out)
    out += b"\0\0\0\0"
    _encoder.encode_into(msg, out, start + HEADER_SIZE)
    _HEADER.pack_into(out, start, len(out) - start - HEADER_SIZE)
