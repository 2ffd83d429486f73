"""FIX 4.4 tag=value codec: framing, parsing and encoding, sans-IO.

Theory of operation
-------------------
A FIX stream is a sequence of messages ``8=FIX.4.4<SOH>9=<len><SOH>35=...<SOH> ... 10=<sum><SOH>``.
``FixDecoder.feed(data)`` takes whatever bytes the socket produced (any split, any size) and
returns, in order, the messages it could frame: a ``FixMessage`` for each well-framed one and a
``Garbled`` for each that is not. What counts as *garbled* follows the FIX session protocol
(Volume 2, "garbled message"): a BeginString other than ``FIX.4.4``, a BodyLength that does
not end on the ``10=`` field, a wrong CheckSum, or BeginString/BodyLength/MsgType not the
first three fields. A garbled message is skipped: the decoder resynchronises on the next
``8=FIX.4.4<SOH>`` and the gap it leaves is recovered by the session's resend logic. Only a
message larger than ``max_message`` (or a buffer that grows past it without a frame) is fatal:
``FixDecoder`` raises ``Oversized`` and the session logs out.

A well-framed message may still be *invalid* (a tag that is not a number, a tag without a
value, a tag repeated, a header tag out of place): parsing notes the first such problem in
``FixMessage.problem`` as (SessionRejectReason 373, RefTagID 371, text), so the session answers
with Reject (35=3) and carries on. Nothing here knows what messages mean.

Encoding: ``encode(header, body)`` builds BodyLength and CheckSum around pre-joined fields; the
session keeps the constant parts of its header (``8``, ``49``, ``56``) as bytes, so a report
costs one join and one ``sum``.

Cost: parsing is ``bytes.split`` plus one ``partition`` per field, a few microseconds for an
order; no regular expressions and no per-field objects beyond the (tag, value) pairs.
"""

from __future__ import annotations

import math
import re
import time
from typing import NamedTuple
from zlib import adler32

SOH = b"\x01"
BEGIN = b"8=FIX.4.4\x01"
DEFAULT_MAX_MESSAGE = 64 * 1024

# SessionRejectReason (373) values used here.
R_INVALID_TAG = 0
R_REQUIRED_MISSING = 1
R_UNDEFINED_TAG = 3
R_NO_VALUE = 4
R_BAD_VALUE = 5
R_BAD_FORMAT = 6
R_DUPLICATE_TAG = 13
R_OUT_OF_ORDER = 14
R_INVALID_MSGTYPE = 11
R_SENDING_TIME = 10
R_COMPID = 9
R_OTHER = 99

_FIELD = re.compile(rb"(\d+)=([^\x01]+)\x01")
_HEADER_ONLY = frozenset({8, 9, 35, 49, 56, 34, 52, 43, 97, 122, 50, 57, 115, 128, 142, 143,
                          144, 145, 212, 213, 347, 369, 627})


class Garbled(NamedTuple):
    """A message the session protocol says to ignore (counted, logged; resend recovers it)."""

    why: str
    size: int


class Oversized(Exception):
    """A message (or unframed data) longer than ``max_message``: the session must end."""


class FixMessage:
    """One well-framed message: the first value of each tag, in order.

    ``problem`` is None for a message whose fields are well formed, else
    (SessionRejectReason, RefTagID, text) for the Reject the session owes."""

    __slots__ = ("msg_type", "fields", "problem", "raw")

    def __init__(self, msg_type: bytes, fields: dict[int, bytes],
                 problem: tuple[int, int, str] | None, raw: bytes) -> None:
        self.msg_type = msg_type
        self.fields = fields
        self.problem = problem
        self.raw = raw

    def get(self, tag: int, default: bytes | None = None) -> bytes | None:
        return self.fields.get(tag, default)

    def text(self, tag: int, default: str = "") -> str:
        v = self.fields.get(tag)
        return default if v is None else v.decode("utf-8", "replace")

    @property
    def seq(self) -> int:
        """MsgSeqNum (34), or 0 if missing or not a positive number."""
        v = self.fields.get(34)
        # At most 18 digits: a number the store's 8-byte field holds (FIX's are far smaller).
        return int(v) if v is not None and v.isdigit() and len(v) <= 18 else 0

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"FixMessage({self.raw.replace(SOH, b'|')!r})"


def checksum(data: bytes | bytearray | memoryview) -> bytes:
    """The three-digit CheckSum (10) of ``data``: the sum of its bytes modulo 256.

    Summed 256 bytes at a time with ``zlib.adler32``, whose low half is 1 + the byte sum
    modulo 65521 — exact for 256 bytes (at most 65,280) — in C instead of a Python ``sum``
    over the bytes (5-10× cheaper for a report)."""
    mv = memoryview(data)
    total = 0
    for start in range(0, len(mv), 256):
        total += (adler32(mv[start:start + 256]) & 0xFFFF) - 1
    return b"%03d" % (total & 0xFF)


def parse_fields(msg_type: bytes, body: bytes, raw: bytes) -> FixMessage:
    """Fields after ``35=``: ``body`` is everything from the field after MsgType up to (not
    including) the CheckSum field, ending with SOH (or empty). The common, well-formed message
    takes the fast path (one regex ``findall`` and a dict built in C); anything odd is parsed
    field by field to name the first problem."""
    if body:
        kv = _FIELD.findall(body)
        tags, values = zip(*kv, strict=True) if kv else ((), ())
        # Every byte of the body inside a well-formed field (the regex skips anything else:
        # a piece without "=", a tag that is not digits, an empty value)?
        if sum(map(len, tags)) + sum(map(len, values)) + 2 * len(kv) != len(body):
            return _parse_slowly(msg_type, body, raw)
        fields = {35: msg_type}
        fields.update(zip(map(int, tags), values, strict=True))
        if len(fields) != len(kv) + 1:  # a repeated tag
            return _parse_slowly(msg_type, body, raw)
        in_header = True
        for tag in fields:
            if tag in _HEADER_ONLY:
                if not in_header or tag in (8, 9):
                    return _parse_slowly(msg_type, body, raw)
            else:
                in_header = False
        if 10 in fields:
            return _parse_slowly(msg_type, body, raw)
        return FixMessage(msg_type, fields, None, raw)
    return FixMessage(msg_type, {35: msg_type}, None, raw)


def _parse_slowly(msg_type: bytes, body: bytes, raw: bytes) -> FixMessage:
    parts = body.split(SOH)
    parts.pop()  # the empty piece after the last SOH
    fields: dict[int, bytes] = {35: msg_type}
    problem: tuple[int, int, str] | None = None
    in_header = True
    for part in parts:
        tag_b, eq, value = part.partition(b"=")
        if not tag_b.isdigit() or not eq:
            if problem is None:
                problem = (R_INVALID_TAG, 0, f"field {part[:40]!r} is not tag=value "
                           "with a numeric tag")
            continue
        tag = int(tag_b)
        if not value:
            if problem is None:
                problem = (R_NO_VALUE, tag, f"tag {tag} has no value")
            continue
        if tag in fields:
            if problem is None:
                problem = (R_DUPLICATE_TAG, tag, f"tag {tag} appears more than once")
            continue
        if tag in _HEADER_ONLY:
            if not in_header and problem is None:
                problem = (R_OUT_OF_ORDER, tag, f"header tag {tag} after the body began")
        elif in_header:
            in_header = False
        if tag in (8, 9, 10) and problem is None:
            problem = (R_OUT_OF_ORDER, tag, f"tag {tag} is out of its place")
        fields[tag] = value
    return FixMessage(msg_type, fields, problem, raw)


class FixDecoder:
    """Sans-IO framer: bytes in, ``FixMessage`` / ``Garbled`` out (see the module docstring)."""

    __slots__ = ("_buf", "max_message")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_message = max_message

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[FixMessage | Garbled]:
        buf = self._buf
        buf += data
        out: list[FixMessage | Garbled] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if not buf.startswith(BEGIN, pos):
                tail = bytes(buf[pos:pos + len(BEGIN)])
                if len(tail) < len(BEGIN) and BEGIN.startswith(tail):
                    break  # a begin string still arriving
                nxt = buf.find(BEGIN, pos + 1)
                why = ("BeginString is not FIX.4.4" if tail.startswith(b"8=")
                       else "bytes outside any message")
                if nxt < 0:
                    # Keep a tail that may be the start of the next begin string.
                    keep = end
                    for k in range(max(pos + 1, end - len(BEGIN) + 1), end):
                        if BEGIN.startswith(bytes(buf[k:end])):
                            keep = k
                            break
                    out.append(Garbled(why, keep - pos))
                    pos = keep
                    break
                out.append(Garbled(why, nxt - pos))
                pos = nxt
                continue
            p9 = pos + len(BEGIN)
            if end - p9 < 3:
                break
            if not buf.startswith(b"9=", p9):
                nxt = buf.find(BEGIN, pos + 1)
                out.append(Garbled("BodyLength (9) is not the second field",
                                   (nxt if nxt >= 0 else end) - pos))
                if nxt < 0:
                    pos = end
                    break
                pos = nxt
                continue
            soh = buf.find(SOH, p9 + 2, p9 + 2 + 9)
            if soh < 0:
                if end - p9 > 11:
                    nxt = buf.find(BEGIN, pos + 1)
                    out.append(Garbled("BodyLength (9) is not a number",
                                       (nxt if nxt >= 0 else end) - pos))
                    pos = nxt if nxt >= 0 else end
                    continue
                break
            digits = bytes(buf[p9 + 2:soh])
            if not digits.isdigit():
                nxt = buf.find(BEGIN, pos + 1)
                out.append(Garbled(f"BodyLength (9) {digits[:12]!r} is not a number",
                                   (nxt if nxt >= 0 else end) - pos))
                pos = nxt if nxt >= 0 else end
                continue
            length = int(digits)
            body_start = soh + 1
            body_end = body_start + length
            total = body_end + 7 - pos
            if total > self.max_message:
                buf.clear()
                raise Oversized(f"message of {total} bytes (BodyLength {length}); the most "
                                f"accepted is {self.max_message}")
            if end < body_end + 7:
                break  # not all here yet
            if not (buf.startswith(b"10=", body_end) and buf[body_end + 6] == 1):
                # BodyLength does not end on the CheckSum field: resync after this begin.
                nxt = buf.find(BEGIN, pos + 1)
                out.append(Garbled(f"BodyLength {length} does not end on the CheckSum field",
                                   (nxt if nxt >= 0 else end) - pos))
                pos = nxt if nxt >= 0 else end
                continue
            if buf[body_end + 3:body_end + 6] != checksum(memoryview(buf)[pos:body_end]):
                out.append(Garbled(f"CheckSum {bytes(buf[body_end + 3:body_end + 6])!r} is "
                                   "wrong", total))
                pos = body_end + 7
                continue
            raw = bytes(buf[pos:body_end + 7])
            body = raw[body_start - pos:body_end - pos]
            pos = body_end + 7
            if not body.startswith(b"35="):
                out.append(Garbled("MsgType (35) is not the third field", len(raw)))
                continue
            t_end = body.find(SOH)
            msg_type = body[3:t_end]
            if not msg_type:
                out.append(Garbled("MsgType (35) is empty", len(raw)))
                continue
            out.append(parse_fields(msg_type, body[t_end + 1:], raw))
        if pos:
            del buf[:pos]
        if len(buf) > self.max_message:
            buf.clear()
            raise Oversized(f"more than {self.max_message} bytes without a complete message")
        return out


def utc_timestamp(ns: int | None = None) -> bytes:
    """UTCTimestamp with milliseconds: ``YYYYMMDD-HH:MM:SS.sss``."""
    ns = time.time_ns() if ns is None else ns
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(secs)).encode() + b".%03d" % (rem // 1_000_000)


_TS_CACHE: list = [-1, b""]


def now_timestamp() -> bytes:
    """``utc_timestamp`` of now, reusing the formatted second (one strftime a second)."""
    ns = time.time_ns()
    secs, rem = divmod(ns, 1_000_000_000)
    if secs != _TS_CACHE[0]:
        _TS_CACHE[0] = secs
        _TS_CACHE[1] = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(secs)).encode()
    return _TS_CACHE[1] + b".%03d" % (rem // 1_000_000)


def fields_bytes(fields: list[tuple[int, object]]) -> bytes:
    """``tag=value<SOH>`` for each pair (values: bytes, str, int or float)."""
    out = []
    for tag, value in fields:
        if type(value) is bytes:
            out.append(b"%d=%s\x01" % (tag, value))
        elif type(value) is str:
            out.append(b"%d=%s\x01" % (tag, value.encode()))
        elif type(value) is float:
            out.append(b"%d=%s\x01" % (tag, format_float(value)))
        else:
            out.append(b"%d=%d\x01" % (tag, value))
    return b"".join(out)


def format_float(value: float) -> bytes:
    """A price or quantity as FIX wants it: no exponent, no trailing zeros beyond one (a NaN
    or infinity, which FIX cannot say, as 0: only ever an echo of a refused order)."""
    if not math.isfinite(value):
        return b"0"
    if value == int(value) and abs(value) < 1e15:
        return b"%d" % int(value)
    return (b"%.8f" % value).rstrip(b"0").rstrip(b".")


def frame(msg_type: bytes, header: bytes, body: bytes) -> bytes:
    """One whole message: ``header`` is the header fields after MsgType (49, 56, 34, 52 ...),
    ``body`` the rest; both already ``tag=value<SOH>``."""
    inner = b"35=" + msg_type + SOH + header + body
    head = b"8=FIX.4.4\x019=%d\x01" % len(inner)
    msg = head + inner
    return msg + b"10=" + checksum(msg) + SOH
