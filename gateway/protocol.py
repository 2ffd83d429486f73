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
with ``Logout`` and closes that connection only. msgspec can let ``UnicodeDecodeError`` (a string
that is not UTF-8) and ``RecursionError`` (absurdly nested values) escape; ``feed`` turns them into
``ProtocolError`` too, since a peer must never be able to crash the gateway with a frame.

Schema evolution: fields are only ever added at the end, with a default. A frame may omit trailing
fields that have defaults, and msgspec ignores extra trailing elements, so an older peer and a
newer one still understand each other.

Enumerated fields of orders (side, offset, ...) travel as plain ints and quantities as numbers:
a bad *value* in an order is not a broken stream but a bad order, which the risk engine rejects
with its own reason code while the session carries on.
"""

from __future__ import annotations

import re
import struct
from typing import NoReturn

import msgspec

DEFAULT_MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class _Msg(msgspec.Struct, array_like=True, tag=True, frozen=False, gc=False):
    """Base of every wire message (tagged by class name, encoded as an array)."""


# Terminal information (穿透式监管): what the client collected about the machine it runs on.
# Bounded (``terminal_problem``): a Logon over these is refused with 111 TERMINAL_INFO_INVALID.
MAX_APP_ID_BYTES = 64
MAX_AUTH_CODE_BYTES = 128
MAX_TERMINAL_FIELD_BYTES = 256
MAX_TERMINAL_EXTRA_BYTES = 2048


class TerminalData(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The client's terminal as it collected it (fields it could not collect stay empty)."""

    ip: str = ""  # the terminal's own address (behind NAT it differs from the peer address)
    mac: str = ""
    device_name: str = ""  # host name / device model
    device_id: str = ""  # hardware serials (CPU, disk) or a device fingerprint
    os: str = ""  # operating system name and version
    extra: str = ""  # anything else collected, e.g. a vendor's encrypted system-info blob


class Logon(_Msg):
    user: str
    secret: str
    accounts: list[str] = []
    heartbeat_s: float = 5.0
    cancel_on_disconnect: bool = True
    app_id: str = ""  # the client application's registered id (穿透式监管)
    auth_code: str = ""  # its auth code (never journaled)
    terminal: TerminalData | None = None


class TerminalInfo(_Msg):
    """Gateway -> exchange, once per client session (and again after the link reconnects):
    who traded through the seat, from which application and terminal, as a relay must report.
    ``peer`` is the address the gateway saw the client connect from."""

    session_id: int
    user: str
    app_id: str
    peer: str
    terminal: TerminalData
    accounts: list[str] = []
    ts_ns: int = 0


def terminal_problem(msg: Logon) -> str | None:
    """Why a Logon's application and terminal fields cannot be taken (None: they can)."""
    def too_long(name: str, text: str, limit: int) -> str | None:
        n = len(text.encode())
        return f"{name} is {n} bytes; at most {limit} are allowed" if n > limit else None

    problem = (too_long("app_id", msg.app_id, MAX_APP_ID_BYTES)
               or too_long("auth_code", msg.auth_code, MAX_AUTH_CODE_BYTES))
    if problem or msg.terminal is None:
        return problem
    for name in TerminalData.__struct_fields__:
        limit = MAX_TERMINAL_EXTRA_BYTES if name == "extra" else MAX_TERMINAL_FIELD_BYTES
        problem = too_long(f"terminal.{name}", getattr(msg.terminal, name), limit)
        if problem:
            return problem
    return None


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
    # The exchange's execution id on a TRADE (unique per exchange and trading day): the key
    # that makes applying a fill idempotent, live and on replay.
    exec_id: str = ""
    # The order's terms beyond side/price/qty, on a STATUS answer (0: not given). A gateway
    # needs them to adopt an order it did not know into its risk book.
    offset: int = 0
    hedge: int = 0
    ord_type: int = 0
    tif: int = 0


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
    the connection; ``open_only=False`` adds every finished order the exchange remembers,
    ``orders`` just the named ones. With ``trades`` the exchange first sends every execution of each listed
    order again as an ``exec_type=TRADE`` report with its ``exec_id`` (a trade query): a member
    that missed fills books each one exactly once, keyed by execution id.
    """

    req_id: str
    account: str = ""
    open_only: bool = True
    trades: bool = False
    # And these orders (by the member's cl_ord_id) in whatever state, finished ones included:
    # a member reconnecting asks for the orders it still thinks working, so it learns how each
    # ended without the whole day's finished orders again.
    orders: list[str] = []


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
    | TerminalInfo
)
MESSAGE_TYPES: tuple[type[_Msg], ...] = Message.__args__  # type: ignore[attr-defined]
_FIELDS = {cls.__name__: cls.__struct_fields__ for cls in MESSAGE_TYPES}
# Fields without a default, which a frame must carry (array_like: always a prefix of the fields).
_REQUIRED = {
    cls.__name__: cls.__struct_fields__[: len(cls.__struct_fields__) - len(cls.__struct_defaults__)]
    for cls in MESSAGE_TYPES
}
_SHAPE = "[type, field, ...]"
_TAG_SHOWN = 64  # an unknown tag is echoed, but never a whole 64 KiB of it


class ProtocolError(Exception):
    """The byte stream is not a valid sequence of frames; the text says what and where."""


# msgspec ends an error with its path, e.g. "... - at `$[3][1]`"; the first index is the array
# slot. Anchored at the end: an echoed tag string may itself contain text that looks like a path.
_PATH_INDEX = re.compile(r"- at `\$\[(\d+)\][^`]*`$")


def _peek(body: bytes | bytearray) -> tuple[int | None, str | None]:
    """Read the top-level array length and string tag straight from the msgpack header.

    Only used on the error path, and deliberately not a full decode: a body that failed
    validation may be deeply nested (RecursionError), contain bad UTF-8 or be cut short.
    """
    size = len(body)
    if not size:
        return None, None
    b = body[0]
    if 0x90 <= b <= 0x9F:
        count, pos = b & 0x0F, 1
    elif b == 0xDC and size >= 3:
        count, pos = int.from_bytes(body[1:3], "big"), 3
    elif b == 0xDD and size >= 5:
        count, pos = int.from_bytes(body[1:5], "big"), 5
    else:
        return None, None
    if pos >= size:
        return count, None
    b = body[pos]
    if 0xA0 <= b <= 0xBF:
        n, pos = b & 0x1F, pos + 1
    elif b in (0xD9, 0xDA, 0xDB):
        width = 1 << (b - 0xD9)
        if pos + 1 + width > size:
            return count, None
        n, pos = int.from_bytes(body[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
    else:
        return count, None
    if pos + n > size:
        return count, None
    return count, bytes(body[pos : pos + n]).decode("utf-8", "replace")


def _show_tag(tag: str) -> str:
    return repr(tag) if len(tag) <= _TAG_SHOWN else f"{tag[:_TAG_SHOWN]!r}... ({len(tag)} chars)"


def _explain(err: msgspec.ValidationError, body: bytes | bytearray) -> str:
    """Turn msgspec's ``$[3]`` paths into field names: 'NewOrder.price: Expected float...'."""
    text = str(err)
    count, tag = _peek(body)
    m = _PATH_INDEX.search(text)
    if m is None:
        # No path: the top-level value itself is wrong (not an array, or too short).
        if "at least length" not in text:
            return f"frame body must be a msgpack array {_SHAPE}: {text}"
        if not count:
            return f"empty message array; expected {_SHAPE}"
        if tag is None or tag not in _FIELDS:  # pragma: no cover - msgspec checks the tag first
            return text
        missing = _REQUIRED[tag][count - 1 :]
        return (
            f"{tag} is missing required field(s): {', '.join(missing)} "
            f"(got {count - 1} of {len(_REQUIRED[tag])})"
        )
    index = int(m.group(1))
    if index == 0 or tag is None or tag not in _FIELDS:
        expected = f"expected one of {', '.join(_FIELDS)}"
        if tag is not None:  # msgspec's own text would echo the whole tag
            return f"unknown message type {_show_tag(tag)} ({expected})"
        return f"the message type must be a string ({expected}): {text}"
    fields = _FIELDS[tag]
    name = fields[index - 1] if index - 1 < len(fields) else f"[{index}]"
    return f"{tag}.{name}: {text}"


class FrameDecoder:
    """Sans-IO decoder: bytes in, messages out (see the module docstring)."""

    __slots__ = ("_buf", "_max_frame", "_decoder", "_error")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError(f"max_frame must be at least 1 byte, got {max_frame}")
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
        max_frame = self._max_frame
        decode = self._decoder.decode
        unpack_from = _HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            (length,) = unpack_from(buf, pos)
            if length > max_frame or length == 0:
                self.check_length(length)
            start = pos + HEADER_SIZE
            pos = start + length
            if pos > end:
                pos = start - HEADER_SIZE
                break
            # One copy (a bytearray slice); a memoryview would pin ``buf`` against resizing.
            body = buf[start:pos]
            try:
                out.append(decode(body))
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
                    RecursionError) as err:
                self._failed_body(body, err)
        if pos:
            del buf[:pos]
        return out

    def decode_body(self, body: bytes | bytearray) -> _Msg:
        """One frame's body (without its length header) as its message; ``ProtocolError`` as
        ``feed`` raises it. For a reader that splits frames itself (``gateway.fastroute``)."""
        if self._error is not None:
            raise ProtocolError(f"stream already failed: {self._error}")
        try:
            return self._decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
                RecursionError) as err:
            self._failed_body(body, err)

    def check_length(self, length: int) -> None:
        """``ProtocolError`` for a frame length ``feed`` would refuse (for the same readers)."""
        if length > self._max_frame:
            self._fail(f"frame length {length} exceeds the maximum of {self._max_frame} bytes")
        if length == 0:
            self._fail("empty frame (length 0); every frame carries one message")

    def _failed_body(self, body: bytes | bytearray, err: Exception) -> NoReturn:
        if isinstance(err, msgspec.ValidationError):
            self._fail(f"invalid message: {_explain(err, body)}")
        if isinstance(err, msgspec.DecodeError):
            self._fail(f"malformed msgpack in frame body: {err}")
        if isinstance(err, UnicodeDecodeError):
            # msgspec lets this escape for a str with bad UTF-8; it is still a bad frame.
            tag = _peek(body)[1]
            where = f"{tag} frame" if tag in _FIELDS else "frame"
            self._fail(f"malformed msgpack in frame body: a string in the {where} is not UTF-8"
                       f" ({err.reason})")
        # msgspec recurses to skip nested values (e.g. extra trailing elements).
        self._fail("malformed msgpack in frame body: arrays or maps nested too deeply")

    def close(self) -> None:
        """Call at end of stream: a partial frame still buffered is a truncated frame.

        A no-op once the decoder has failed: that error was already raised from ``feed``.
        """
        if self._error is None and self._buf:
            n = len(self._buf)
            if n < HEADER_SIZE:
                self._fail(f"connection closed inside a frame header ({n} of {HEADER_SIZE} bytes)")
            (length,) = _HEADER.unpack_from(self._buf, 0)
            self._fail(
                f"connection closed inside a frame ({n - HEADER_SIZE} of {length} body bytes"
                f" received, {n} bytes unread)"
            )

    def _fail(self, text: str) -> NoReturn:
        self._error = text
        self._buf.clear()
        raise ProtocolError(text)


_encoder = msgspec.msgpack.Encoder()


def encode(msg: _Msg) -> bytes:
    """One whole frame for ``msg``."""
    body = _encoder.encode(msg)
    return _HEADER.pack(len(body)) + body


def fit_frame(msg: _Msg, max_frame: int) -> _Msg:
    """``msg``, or a copy with its longest text fields cut so that its frame body fits in
    ``max_frame`` bytes: the peer's decoder closes the stream on an over-long frame, so no
    sender may ever write one (echoed client texts are the usual culprit). Raises ValueError
    if even empty text fields do not fit."""
    body = len(_encoder.encode(msg))
    if body <= max_frame:
        return msg
    msg = msgspec.structs.replace(msg)
    while body > max_frame:
        name = max(msg.__struct_fields__, key=lambda f: len(getattr(msg, f))
                   if type(getattr(msg, f)) is str else -1)
        text = getattr(msg, name)
        if type(text) is not str or not text:
            raise ValueError(f"{type(msg).__name__} is {body} bytes without its texts; the "
                             f"frame limit is {max_frame}")
        raw = text.encode()
        keep = max(0, len(raw) - (body - max_frame) - 8)  # room for the marker and msgpack
        setattr(msg, name, raw[:keep].decode(errors="ignore") + "\u2026")
        body = len(_encoder.encode(msg))
    return msg


def encode_into(msg: _Msg, out: bytearray) -> None:
    """Append the frame for ``msg`` to ``out`` (lets a sender batch frames into one write)."""
    start = len(out)
    out += b"\0\0\0\0"
    _encoder.encode_into(msg, out, start + HEADER_SIZE)
    _HEADER.pack_into(out, start, len(out) - start - HEADER_SIZE)
