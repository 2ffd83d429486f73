# cython: language_level=3
"""The router's order path, compiled: ``gateway.router.Router``'s hot handlers, typed.

``gateway.router`` holds the reference: ``RouterBase`` (sessions, reconciliation, alerts, views:
everything rare) and ``Router``, which adds the order path in plain Python. ``FastRouter``
(``gateway.fast_router``) is ``RouterCore`` (this module) + the same ``RouterBase``: the rare cases run
the one readable implementation, and only what every order, cancel and exchange report goes
through is here — the same steps in the same order as ``Router``'s methods of the same names,
with the order's state in a typed ``Order`` and the router's tables in typed attributes, so
each step is a C field access or a dict lookup rather than a Python attribute search.

The two must decide, send and journal identically: ``tests/gateway/test_fastroute.py`` drives
hypothesis-generated flows through both and compares every byte sent, every journal record
and the engine's book. Change one, change both.
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport PyObject
from cpython.unicode cimport (
    PyUnicode_AsUTF8AndSize, PyUnicode_DATA, PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8,
    PyUnicode_GET_LENGTH,
)
from libc.stdio cimport snprintf
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from cext.engine cimport Engine as CEngine
from gateway.idtable cimport IdTable

from checks.enums import AlertLevel, ExecType, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.lifecycle import TRANSITIONS, Action, Event
from gateway.protocol import CancelOrder, CancelReject, ExecReport, Message, NewOrder, ProtocolError

from gateway.router import (
    NS,
    cancel_field_problem,
    echo,
    order_field_problem,
)

import msgspec
import structlog
from collections import deque
from time import monotonic_ns

from gateway.session import State

_ACTIVE = State.ACTIVE
_decode = msgspec.msgpack.Decoder(Message).decode  # a canonical frame: decodes as it reads

log = structlog.get_logger("fengkong.router")

from gateway import router as _reference


# Identifier caps (gateway.router): C constants here, checked against the reference at import.
DEF MAX_ID_BYTES = 64
DEF MAX_ACCOUNT_BYTES = 32
DEF MAX_SYMBOL_BYTES = 32
if (_reference.MAX_ID_BYTES, _reference.MAX_ACCOUNT_BYTES, _reference.MAX_SYMBOL_BYTES) != \
        (MAX_ID_BYTES, MAX_ACCOUNT_BYTES, MAX_SYMBOL_BYTES):
    raise ImportError("gateway/fastroute.pyx: identifier caps differ from gateway.router's; "
                      "change both")

# Order statuses, exec types and lifecycle events/actions as C constants (checks.enums,
# gateway.lifecycle: the values are part of the wire protocol and cannot change).
cdef int S_PENDING_NEW = OrdStatus.PENDING_NEW
cdef int S_NEW = OrdStatus.NEW
cdef int S_PARTIALLY_FILLED = OrdStatus.PARTIALLY_FILLED
cdef int S_FILLED = OrdStatus.FILLED
cdef int S_CANCELED = OrdStatus.CANCELED
cdef int S_REJECTED = OrdStatus.REJECTED
cdef int ET_NEW = ExecType.NEW
cdef int ET_TRADE = ExecType.TRADE
cdef int ET_CANCELED = ExecType.CANCELED
cdef int ET_REJECTED = ExecType.REJECTED
cdef int ET_STATUS = ExecType.STATUS
cdef int EV_ACK = Event.ACK
cdef int EV_PARTIAL_FILL = Event.PARTIAL_FILL
cdef int EV_FULL_FILL = Event.FULL_FILL
cdef int EV_CANCELED = Event.CANCELED
cdef int EV_REJECTED = Event.REJECTED
cdef int A_APPLY = Action.APPLY
cdef int A_SURPRISE = Action.SURPRISE
cdef int A_REPEAT = Action.REPEAT
cdef int A_LATE = Action.LATE
cdef int R_EXCHANGE_UNAVAILABLE = Reason.EXCHANGE_UNAVAILABLE
cdef int R_EXCHANGE_REJECT = Reason.EXCHANGE_REJECT
cdef int R_INVALID_FIELD = Reason.INVALID_FIELD

# The lifecycle table (gateway.lifecycle.TRANSITIONS) as a C array: [status][event] ->
# next status * 8 + action; -1 where the table has no row (it has one for every pair).
cdef int _STEP[8][8]


cdef void _load_table():
    cdef int s, e
    for s in range(8):
        for e in range(8):
            _STEP[s][e] = -1
    for (s, e), (nxt, action) in TRANSITIONS.items():
        _STEP[s][e] = int(nxt) * 8 + int(action)


_load_table()


cdef inline bint _fits(object text, Py_ssize_t limit):
    """Surely 1..limit UTF-8 bytes: a str of at most limit / 4 characters (no character takes
    more than four bytes). Anything else is asked of ``gateway.router``'s exact check."""
    return type(text) is str and 0 < len(<str>text) <= limit // 4


cdef inline bint _final(int status):
    return status == S_FILLED or status == S_CANCELED or status == S_REJECTED


# ---------------------------------------------------------------------------- the wire, in C
# The order path reads its three messages (a client's NewOrder, the exchange's ExecReport and,
# as a frame to re-send, nothing else) straight from the bytes of the read, and writes the
# frames it sends and the journal records of what it received straight into their buffers.
#
# It takes a frame only when the frame is exactly what ``gateway.protocol``'s msgspec codec
# would encode for the message it holds ("canonical": the shortest msgpack form of every int
# and string header, float64 for a float, every field present, ASCII strings, finite prices).
# Then the journal's record of it can be the frame's own bytes spliced into the record, and
# be byte-for-byte what the reference router journals after decoding and re-encoding it.
# Every other frame (non-ASCII text, a float quantity, a missing trailing field, anything
# unexpected) is decoded by msgspec and takes the object path, which is the reference's.

# (typed: a literal past 2**31 would be a Python int in Cython)
cdef int64_t U32_MAX = 0xffffffff
cdef int64_t I32_MIN = -0x80000000
cdef int64_t I64_MAX = 0x7fffffffffffffff


cdef struct Str:                # a string inside the read's bytes: ASCII, not copied
    const char* p
    Py_ssize_t n


cdef struct OrderIn:            # gateway.protocol.NewOrder
    Str cl_ord_id
    Str account
    Str symbol
    int64_t side, offset, hedge, ord_type, tif, qty
    double price
    Py_ssize_t tail             # where ``account`` starts in the body (the exchange's copy)


cdef struct ReportIn:           # gateway.protocol.ExecReport
    Str cl_ord_id, order_id, account, symbol, text, exec_id
    int64_t status, exec_type, reason, last_qty, cum_qty, leaves_qty, ts_ns, side, qty
    int64_t offset, hedge, ord_type, tif
    double last_px, price
    bint self_trade


DEF K_OTHER = 0                 # decoded by msgspec: the object path
DEF K_ORDER = 1
DEF K_REPORT = 2


cdef union Fields:
    OrderIn order
    ReportIn report


cdef struct Item:               # one frame of a read, between the two passes of a read
    int kind
    Py_ssize_t start            # the body's offset in the read's bytes
    Py_ssize_t length
    Fields f                    # its fields (order or report, as ``kind`` says)


cdef struct Reader:
    const uint8_t* p
    const uint8_t* end


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>_be32(p) << 32) | _be32(p + 4)


cdef inline bint r_str(Reader* r, Str* out) noexcept nogil:
    """A canonical str of ASCII characters."""
    cdef const uint8_t* p = r.p
    cdef Py_ssize_t n, k
    if p >= r.end:
        return False
    if 0xa0 <= p[0] <= 0xbf:
        n = p[0] & 0x1f
        p += 1
    elif p[0] == 0xd9:
        if r.end - p < 2:
            return False
        n = p[1]
        if n < 32:
            return False
        p += 2
    elif p[0] == 0xda:
        if r.end - p < 3:
            return False
        n = (<Py_ssize_t>p[1] << 8) | p[2]
        if n < 256:
            return False
        p += 3
    else:
        return False  # (str32: longer than any frame the order path takes)
    if r.end - p < n:
        return False
    for k in range(n):
        if p[k] >= 0x80:
            return False
    out.p = <const char*>p
    out.n = n
    r.p = p + n
    return True


cdef inline bint r_int(Reader* r, int64_t* out) noexcept nogil:
    """A canonical int that fits int64 (msgspec: unsigned forms for >= 0, signed below)."""
    cdef const uint8_t* p = r.p
    cdef uint8_t b
    cdef int64_t v
    cdef uint64_t u
    if p >= r.end:
        return False
    b = p[0]
    if b <= 0x7f:
        out[0] = b
        r.p = p + 1
        return True
    if b >= 0xe0:
        out[0] = <int8_t>b
        r.p = p + 1
        return True
    if b == 0xcc:
        if r.end - p < 2 or p[1] < 0x80:
            return False
        out[0] = p[1]
        r.p = p + 2
        return True
    if b == 0xcd:
        if r.end - p < 3:
            return False
        v = (<int64_t>p[1] << 8) | p[2]
        if v < 0x100:
            return False
        out[0] = v
        r.p = p + 3
        return True
    if b == 0xce:
        if r.end - p < 5:
            return False
        v = _be32(p + 1)
        if v < 0x10000:
            return False
        out[0] = v
        r.p = p + 5
        return True
    if b == 0xcf:
        if r.end - p < 9:
            return False
        u = _be64(p + 1)
        if u <= <uint64_t>U32_MAX or u > <uint64_t>I64_MAX:
            return False
        out[0] = <int64_t>u
        r.p = p + 9
        return True
    if b == 0xd0:
        if r.end - p < 2:
            return False
        v = <int8_t>p[1]
        if v >= -32:
            return False
        out[0] = v
        r.p = p + 2
        return True
    if b == 0xd1:
        if r.end - p < 3:
            return False
        v = <int16_t>((<uint16_t>p[1] << 8) | p[2])
        if v >= -128:
            return False
        out[0] = v
        r.p = p + 3
        return True
    if b == 0xd2:
        if r.end - p < 5:
            return False
        v = <int32_t>_be32(p + 1)
        if v >= -32768:
            return False
        out[0] = v
        r.p = p + 5
        return True
    if b == 0xd3:
        if r.end - p < 9:
            return False
        v = <int64_t>_be64(p + 1)
        if v >= I32_MIN:
            return False
        out[0] = v
        r.p = p + 9
        return True
    return False


cdef inline bint r_float(Reader* r, double* out) noexcept nogil:
    """A finite float64 (msgspec writes every float so)."""
    cdef uint64_t u
    if r.end - r.p < 9 or r.p[0] != 0xcb:
        return False
    u = _be64(r.p + 1)
    memcpy(out, &u, 8)
    if not isfinite(out[0]):
        return False
    r.p += 9
    return True


cdef inline bint r_bool(Reader* r, bint* out) noexcept nogil:
    if r.p >= r.end or (r.p[0] != 0xc2 and r.p[0] != 0xc3):
        return False
    out[0] = r.p[0] == 0xc3
    r.p += 1
    return True


cdef inline bint r_tag(Reader* r, const char* tag, Py_ssize_t n) noexcept nogil:
    cdef Str s
    return r_str(r, &s) and s.n == n and memcmp(s.p, tag, n) == 0


cdef int parse_frame(const uint8_t* body, Py_ssize_t length, Item* item, int want) noexcept nogil:
    """The kind of one frame's body: ``want`` (K_ORDER or K_REPORT, fields in ``item``) when it
    is a canonical NewOrder / ExecReport, K_OTHER for anything else (msgspec decodes it)."""
    cdef Reader r
    cdef OrderIn* o = &item.f.order
    cdef ReportIn* e = &item.f.report
    r.p = body
    r.end = body + length
    if want == K_ORDER and length > 1 and body[0] == 0x9b and body[1] == 0xa8:  # an array of 11, tag of 8
        r.p += 1
        if not (r_tag(&r, "NewOrder", 8) and r_str(&r, &o.cl_ord_id)):
            return K_OTHER
        o.tail = r.p - body
        if (r_str(&r, &o.account) and r_str(&r, &o.symbol) and r_int(&r, &o.side)
                and r_int(&r, &o.offset) and r_int(&r, &o.hedge) and r_int(&r, &o.ord_type)
                and r_int(&r, &o.tif) and r_float(&r, &o.price) and r_int(&r, &o.qty)
                and r.p == r.end):
            return K_ORDER
        return K_OTHER
    if want == K_REPORT and length > 3 and body[0] == 0xdc and body[1] == 0 and body[2] == 23 and body[3] == 0xaa:
        r.p += 3
        if (r_tag(&r, "ExecReport", 10) and r_str(&r, &e.cl_ord_id) and r_str(&r, &e.order_id)
                and r_str(&r, &e.account) and r_str(&r, &e.symbol) and r_int(&r, &e.status)
                and r_int(&r, &e.exec_type) and r_int(&r, &e.reason) and r_str(&r, &e.text)
                and r_int(&r, &e.last_qty) and r_float(&r, &e.last_px)
                and r_int(&r, &e.cum_qty) and r_int(&r, &e.leaves_qty) and r_int(&r, &e.ts_ns)
                and r_int(&r, &e.side) and r_float(&r, &e.price) and r_int(&r, &e.qty)
                and r_bool(&r, &e.self_trade) and r_str(&r, &e.exec_id)
                and r_int(&r, &e.offset) and r_int(&r, &e.hedge) and r_int(&r, &e.ord_type)
                and r_int(&r, &e.tif) and r.p == r.end):
            return K_REPORT
    return K_OTHER


@cython.final
@cython.no_gc  # never part of a reference cycle: not scanned by the cyclic collector
cdef class Order:
    """``gateway.router.RoutedOrder``, typed: what the gateway knows of one order.

    The cyclic garbage collector does not track it: an order refers to its owner session, its
    strings and a list of cancel ids, none of which refers back, so it cannot be in a cycle; a
    day's orders (working, and the finished ones remembered for late reports) are then not
    walked by every full collection."""

    cdef public int64_t ref
    cdef public object owner
    cdef public int64_t session_id
    cdef public str user
    cdef public str cl_ord_id
    cdef public str exch_id
    cdef public str order_id
    cdef public str account
    cdef public str symbol
    cdef public int side
    cdef public double price
    cdef public int64_t qty
    cdef public int64_t cum
    cdef public int64_t leaves
    cdef public int status
    cdef public int64_t ts_ns
    cdef public str cancel_id
    cdef public bint adopted
    cdef public object old_cancels
    cdef int64_t seq                 # the exchange id's counter (0: not the router's index)

    def __init__(self, int64_t ref, owner, str user, str cl_ord_id, str exch_id, str account,
                 str symbol, int side, double price, int64_t qty, int64_t now):
        self._set(ref, owner, user, cl_ord_id, exch_id, account, symbol, side, price, qty, now)

    cdef int _set(self, int64_t ref, owner, str user, str cl_ord_id, str exch_id, str account,
                  str symbol, int side, double price, int64_t qty, int64_t now) except -1:
        self.ref = ref
        self.owner = owner
        self.session_id = owner.session_id if owner is not None else 0
        self.user = user
        self.cl_ord_id = cl_ord_id
        self.exch_id = exch_id
        self.order_id = ""
        self.account = account
        self.symbol = symbol
        self.side = side
        self.price = price
        self.qty = qty
        self.cum = 0
        self.leaves = qty
        self.status = S_PENDING_NEW
        self.ts_ns = now
        self.cancel_id = ""
        self.adopted = False
        self.old_cancels = None
        self.seq = 0
        return 0

    def view(self):
        return {s: getattr(self, s) for s in _VIEW_FIELDS}


cdef Order _new_order(int64_t ref, owner, str user, str cl_ord_id, str exch_id, str account,
                      str symbol, int side, double price, int64_t qty, int64_t now):
    """``Order(...)`` without the call's argument parsing (every accepted order makes one)."""
    cdef Order o = Order.__new__(Order)
    o._set(ref, owner, user, cl_ord_id, exch_id, account, symbol, side, price, qty, now)
    return o


# Writing: the shortest msgpack forms, as msgspec writes them (positive ints unsigned).

cdef inline Py_ssize_t _int_size(int64_t v) noexcept nogil:
    if v >= 0:
        return 1 if v <= 0x7f else 2 if v <= 0xff else 3 if v <= 0xffff else \
            5 if v <= U32_MAX else 9
    return 1 if v >= -32 else 2 if v >= -128 else 3 if v >= -32768 else \
        5 if v >= I32_MIN else 9


cdef inline Py_ssize_t _str_size(Py_ssize_t n) noexcept nogil:
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


cdef inline uint8_t* w_be(uint8_t* p, uint64_t v, int n) noexcept nogil:
    cdef int k
    for k in range(n):
        p[k] = (v >> (8 * (n - 1 - k))) & 0xff
    return p + n


cdef inline uint8_t* w_int(uint8_t* p, int64_t v) noexcept nogil:
    if v >= 0:
        if v <= 0x7f:
            p[0] = <uint8_t>v
            return p + 1
        if v <= 0xff:
            p[0] = 0xcc
            return w_be(p + 1, <uint64_t>v, 1)
        if v <= 0xffff:
            p[0] = 0xcd
            return w_be(p + 1, <uint64_t>v, 2)
        if v <= U32_MAX:
            p[0] = 0xce
            return w_be(p + 1, <uint64_t>v, 4)
        p[0] = 0xcf
        return w_be(p + 1, <uint64_t>v, 8)
    if v >= -32:
        p[0] = <uint8_t>(v & 0xff)
        return p + 1
    if v >= -128:
        p[0] = 0xd0
        return w_be(p + 1, <uint64_t>v, 1)
    if v >= -32768:
        p[0] = 0xd1
        return w_be(p + 1, <uint64_t>v, 2)
    if v >= I32_MIN:
        p[0] = 0xd2
        return w_be(p + 1, <uint64_t>v, 4)
    p[0] = 0xd3
    return w_be(p + 1, <uint64_t>v, 8)


cdef inline uint8_t* w_str(uint8_t* p, const char* s, Py_ssize_t n) noexcept nogil:
    if n < 32:
        p[0] = 0xa0 | <uint8_t>n
        p += 1
    elif n < 256:
        p[0] = 0xd9
        p = w_be(p + 1, <uint64_t>n, 1)
    elif n < 65536:
        p[0] = 0xda
        p = w_be(p + 1, <uint64_t>n, 2)
    else:
        p[0] = 0xdb
        p = w_be(p + 1, <uint64_t>n, 4)
    memcpy(p, s, n)
    return p + n


cdef inline uint8_t* w_float(uint8_t* p, double v) noexcept nogil:
    cdef uint64_t u
    memcpy(&u, &v, 8)
    p[0] = 0xcb
    return w_be(p + 1, u, 8)


cdef inline Str _utf8(str text) except *:
    """A str's UTF-8 bytes (for an ASCII str, its own storage: nothing is copied)."""
    cdef Str s
    s.p = PyUnicode_AsUTF8AndSize(text, &s.n)
    return s


cdef inline str _ascii(Str s):
    return PyUnicode_DecodeASCII(s.p, s.n, NULL)


# Accounts and symbols repeat on every order: the str of each is made once and kept here (by a
# hash of its bytes; a colliding name replaces the one kept), so an order's names cost no
# allocation and their hashes are computed once. A cache of immutable strs, shared by routers.
DEF NAME_SLOTS = 1024
DEF BY_SEQ_SLOTS = 65536          # RouterCore._by_seq: the working orders most reports are for
cdef list _names = [None] * NAME_SLOTS


cdef str _name(Str s):
    """``_ascii(s)`` for a name that recurs (an account, a symbol): the same str each time.
    Only names within the identifier caps are kept (a client's over-long junk is not)."""
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t k
    if s.n > MAX_ACCOUNT_BYTES or s.n > MAX_SYMBOL_BYTES:
        return _ascii(s)
    for k in range(s.n):  # FNV-1a
        h = (h ^ <uint8_t>s.p[k]) * 16777619u
    kept = <object>PyList_GET_ITEM(_names, h & (NAME_SLOTS - 1))
    if (kept is not None and PyUnicode_GET_LENGTH(kept) == s.n
            and memcmp(PyUnicode_DATA(kept), s.p, s.n) == 0):
        return kept
    made = _ascii(s)
    _names[h & (NAME_SLOTS - 1)] = made
    return made


cdef str _with_hex(str prefix, int64_t n):
    """``prefix + format(n, "x")``, for n >= 0 (the gateway's exchange ids)."""
    cdef char buf[600]
    cdef Str p = _utf8(prefix)
    cdef int k
    if p.n > 512 or n < 0:
        return prefix + format(n, "x")
    memcpy(buf, p.p, p.n)
    k = snprintf(buf + p.n, 40, "%llx", <unsigned long long>n)
    return PyUnicode_DecodeUTF8(buf, p.n + k, NULL)


cdef bytes inbound_record(int64_t now, int64_t session, const uint8_t* body, Py_ssize_t n):
    """``journal.Inbound(now, session, msg)`` encoded, ``body`` being ``msg``'s canonical frame."""
    cdef bytes rec = PyBytes_FromStringAndSize(NULL, 4 + _int_size(now) + _int_size(session)
                                               + n + 2)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(rec)
    p[0] = 0x95  # [tag, ts_ns, session, msg, raw]
    p = w_str(p + 1, "in", 2)
    p = w_int(w_int(p, now), session)
    memcpy(p, body, n)
    p[n] = 0xc4  # raw: b""
    p[n + 1] = 0
    return rec


cdef bytes exchange_record(int64_t now, const uint8_t* body, Py_ssize_t n, int64_t session,
                           str client_id):
    """``journal.ExchangeEvent(now, report, "", session, client_id)`` encoded, ``body`` being
    the report's canonical frame."""
    cdef Str c = _utf8(client_id)
    cdef bytes rec = PyBytes_FromStringAndSize(NULL, 6 + _int_size(now) + n + 1
                                               + _int_size(session) + _str_size(c.n))
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(rec)
    p[0] = 0x96  # [tag, ts_ns, report, link, session, client_id]
    p = w_str(p + 1, "exch", 4)
    p = w_int(p, now)
    memcpy(p, body, n)
    p += n
    p[0] = 0xa0  # link: ""
    p = w_int(p + 1, session)
    w_str(p, c.p, c.n)
    return rec


cdef inline uint8_t* _reserve(bytearray out, Py_ssize_t start, Py_ssize_t most) except NULL:
    PyByteArray_Resize(out, start + most)
    return <uint8_t*>PyByteArray_AS_STRING(out) + start


cdef inline Py_ssize_t _close_frame(bytearray out, Py_ssize_t start, uint8_t* end) except -1:
    """Cut ``out`` to the frame written from ``start`` to ``end``, write its length header and
    return the body's length."""
    cdef uint8_t* base = <uint8_t*>PyByteArray_AS_STRING(out)
    cdef Py_ssize_t length = end - base - start - 4
    w_be(base + start, <uint64_t>length, 4)
    PyByteArray_Resize(out, end - base)
    return length


cdef Py_ssize_t put_exchange_order(bytearray out, str exch_id, const uint8_t* body,
                                   OrderIn* f, Py_ssize_t length) except -1:
    """The client's NewOrder frame with the gateway's id for its cl_ord_id (every other field is
    the client's, as the reference sends them), appended to ``out`` as one frame."""
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    cdef Str x = _utf8(exch_id)
    cdef Py_ssize_t tail = length - f.tail
    cdef uint8_t* p = _reserve(out, start, 4 + 10 + _str_size(x.n) + tail)
    p[4] = 0x9b
    p = w_str(p + 5, "NewOrder", 8)
    p = w_str(p, x.p, x.n)
    memcpy(p, body + f.tail, tail)
    return _close_frame(out, start, p + tail)


cdef Py_ssize_t put_report(bytearray out, Order o, int status, ReportIn* f, bint trade,
                           int64_t now) except -1:
    """The client's ExecReport for exchange report ``f`` on order ``o`` (``_settle``'s
    ``out``, field by field), appended to ``out`` as one frame; the body's length."""
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    cdef Str clid = _utf8(o.cl_ord_id), oid = _utf8(o.order_id)
    cdef Str acct = _utf8(o.account), sym = _utf8(o.symbol)
    cdef uint8_t* p = _reserve(out, start, 4 + 3 + 11 + _str_size(clid.n) + _str_size(oid.n)
                               + _str_size(acct.n) + _str_size(sym.n) + _str_size(f.text.n)
                               + _str_size(f.exec_id.n) + 17 * 9 + 1)
    p[4] = 0xdc  # an array of 23: the tag and 22 fields
    p[5] = 0
    p[6] = 23
    p = w_str(p + 7, "ExecReport", 10)
    p = w_str(p, clid.p, clid.n)
    p = w_str(p, oid.p, oid.n)
    p = w_str(p, acct.p, acct.n)
    p = w_str(p, sym.p, sym.n)
    p = w_int(p, status)
    p = w_int(p, f.exec_type)
    p = w_int(p, 0)  # reason: only a reject or a cancel has one (not on this path)
    p = w_str(p, f.text.p, f.text.n)
    p = w_int(p, f.last_qty if trade else 0)
    p = w_float(p, f.last_px if trade else 0.0)
    p = w_int(p, o.cum)
    p = w_int(p, o.leaves)
    p = w_int(p, now)
    p = w_int(p, o.side)
    p = w_float(p, o.price)
    p = w_int(p, o.qty)
    p[0] = 0xc3 if f.self_trade else 0xc2
    p = w_str(p + 1, f.exec_id.p, f.exec_id.n)
    p[0] = p[1] = p[2] = p[3] = 0  # offset, hedge, ord_type, tif: a STATUS answer's only
    return _close_frame(out, start, p + 4)


cdef object _order_msg(str clid, str account, str symbol, OrderIn* f):
    """The ``NewOrder`` a canonical order frame carries (for the object path)."""
    return NewOrder(clid, account, symbol, f.side, f.offset, f.hedge, f.ord_type, f.tif, f.price,
                    f.qty)


cdef class RouterCore:
    """The order path's state and handlers; ``gateway.router.FastRouter`` adds the rest."""

    cdef public object cfg
    cdef public object engine
    cdef public object audit
    cdef public object before_write
    cdef public object clock
    cdef public bint replaying
    cdef public object halted
    cdef public dict sessions
    cdef public dict orders
    cdef public dict by_exch
    cdef public dict by_clid
    cdef public IdTable finished
    cdef public IdTable exec_ids
    cdef public dict cancels
    cdef public dict used_clids
    cdef public int64_t day
    cdef public int64_t day_end
    cdef public object link
    cdef public object storm_handler
    cdef public dict reject_times
    cdef public str prefix
    cdef public int64_t order_seq
    cdef public int64_t _cancel_seq
    cdef public int64_t max_clids_per_user_day
    cdef public int64_t max_cancels_per_order
    cdef dict _stats
    # The three counters every order moves, kept in C and added to ``stats`` when it is read.
    cdef int64_t _n_orders, _n_accepted, _n_fills
    cdef public list rejects_by_reason
    cdef public list report_observers
    cdef public object on_counted
    cdef public object ack_latency
    cdef public object recon_seen
    cdef list _records           # during a read: the audit log's records list (or None)
    cdef list _touched           # during a read: connections sent frames, and from where
    cdef list _starts
    cdef Item* _items            # a read's frames between its two passes (grown, reused)
    # Working orders by their exchange id's counter, at counter & mask: where a report finds
    # its order without making a str of its id or probing by_exch and orders. An order leaves
    # it when forgotten or when a newer order takes its slot (it is then found by id).
    cdef list _by_seq
    cdef Py_ssize_t _by_seq_mask
    cdef Py_ssize_t _items_cap
    cdef bint _reading

    @property
    def stats(self):
        """The router's counters (``RouterBase``): a dict, up to date when read."""
        stats = self._stats
        if self._n_orders or self._n_accepted or self._n_fills:
            stats["orders"] += self._n_orders
            stats["accepted"] += self._n_accepted
            stats["fills"] += self._n_fills
            self._n_orders = self._n_accepted = self._n_fills = 0
        return stats

    @stats.setter
    def stats(self, dict value):
        self._stats = value
        self._n_orders = self._n_accepted = self._n_fills = 0

    def __cinit__(self, *args, **kwargs):
        self._touched = []
        self._starts = []
        self._by_seq = [None] * BY_SEQ_SLOTS
        self._by_seq_mask = BY_SEQ_SLOTS - 1

    def index_slots(self, Py_ssize_t slots):
        """Size the index of working orders by exchange-id counter (a power of two; it starts
        empty: orders placed before are found by their ids). Tests make it small, so that
        newer orders take older ones' slots."""
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"index slots must be a power of two, not {slots}")
        self._by_seq = [None] * slots
        self._by_seq_mask = slots - 1

    def __dealloc__(self):
        PyMem_Free(self._items)

    # ------------------------------------------------------------------ plumbing
    def record(self, record):
        if self.audit is not None and not self.replaying:
            if record.ts_ns >= self.day_end:
                self._new_day(record.ts_ns)
            self.audit.append(record)

    def _at(self, int64_t now):
        if now >= self.day_end:
            self._new_day(now)

    def _to_session(self, session, msg, now):
        if session is None or self.replaying or session.closed:
            return
        session.send(msg)

    def _to_exchange(self, msg, now):
        if self.replaying or self.link is None:
            return
        self.link.send(msg)

    def _clids(self, str user, int64_t now):
        self._at(now)
        used = self.used_clids.get(user)
        if used is None:
            used = self.used_clids[user] = IdTable()
        return used

    # ------------------------------------------------------------------ a read
    def client_data(self, session, data):
        """One read from a client session (``FramedProtocol.on_data``): an active session's
        canonical orders take the compiled path here, its other orders and cancels the object
        path, and every other message goes back to the session's ``on_message``."""
        self._read(session, data, True)

    def exchange_data(self, proto, data):
        """One read from the exchange link: canonical execution reports here, other reports the
        object path, the rest the link's ``on_message``."""
        self._read(proto, data, False)

    cdef Item* _item_room(self, Py_ssize_t count) except NULL:
        cdef Py_ssize_t cap
        cdef Item* grown
        if count > self._items_cap:
            cap = max(count, 2 * self._items_cap, 64)
            grown = <Item*>PyMem_Realloc(self._items, cap * sizeof(Item))
            if grown == NULL:
                raise MemoryError()
            self._items = grown
            self._items_cap = cap
        return self._items

    cdef int _read(self, proto, data, bint client) except -1:
        """``FramedProtocol.data_received``, in two passes over the read's frames. First every
        frame is split and read (a canonical order or report into an ``Item``, anything else
        decoded by msgspec), so a bad frame anywhere in the read is the protocol error it is in
        ``FrameDecoder.feed`` before any message of the read is handled; then the messages are
        handled in order, stopping when the connection closes, a bug in one being that
        message's ``on_internal_error``. A frame cut by the end of the read waits in the
        decoder's buffer for the next."""
        cdef Py_ssize_t n, pos = 0, count = 0, length, k, oi = 0
        cdef const uint8_t* p
        cdef Item* it
        cdef int want = K_ORDER if client else K_REPORT
        cdef uint32_t max_frame
        dec = proto.decoder
        if self._reading or dec._error is not None or type(data) is not bytes:
            return self._read_objects(proto, data, client)  # (a nested read; a failed stream)
        max_frame = dec._max_frame
        buf = dec._buf
        if PyByteArray_GET_SIZE(buf):
            buf += data
            src = buf
            p = <const uint8_t*>PyByteArray_AS_STRING(buf)
            n = PyByteArray_GET_SIZE(buf)
        else:
            src = data
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        objs = None
        audit = self.audit
        self._records = audit.records if audit is not None else None
        self._reading = True
        try:
            try:
                while n - pos >= 4:
                    length = _be32(p + pos)
                    if length == 0 or length > max_frame:
                        dec.check_length(length)
                    if n - pos - 4 < length:
                        break
                    it = self._item_room(count + 1) + count
                    it.start = pos + 4
                    it.length = length
                    it.kind = parse_frame(p + pos + 4, length, it, want)
                    if it.kind == K_OTHER:
                        if objs is None:
                            objs = []
                        objs.append(dec.decode_body(src[pos + 4:pos + 4 + length]))
                    count += 1
                    pos += 4 + length
            except ProtocolError as err:
                proto.on_protocol_error(str(err))
                return 0
            proto.messages_in += count
            if client:
                proto.last_in = monotonic_ns()
            for k in range(count):
                if proto.closed:
                    break
                it = self._items + k
                msg = None
                try:
                    if it.kind == K_OTHER:
                        msg = objs[oi]
                        oi += 1
                        self._dispatch(proto, msg, client)
                    elif it.kind == K_ORDER:
                        if proto.state == _ACTIVE:
                            self._fast_order(proto, p + it.start, it, self.clock())
                        else:
                            proto.on_message(_decode(src[it.start:it.start + it.length]))
                    else:
                        self._fast_report(p + it.start, it, self.clock())
                except Exception as exc:
                    if msg is None:
                        msg = _decode(src[it.start:it.start + it.length])
                    proto.on_internal_error(msg, exc)
        finally:
            self._reading = False
            if src is buf:
                if pos:
                    del buf[:pos]
            elif pos < n:
                buf += data[pos:]
            self._end_of_read(audit)
        return 0

    cdef int _queued(self, conn, Py_ssize_t start) except -1:
        """Frames for ``conn`` were encoded into its buffer from ``start``: its ``read_done`` is
        called once, at the end of the read, from the first such frame (one write per peer per
        read; a slow consumer is found there)."""
        cdef Py_ssize_t k
        touched = self._touched
        for k in range(len(touched)):
            if touched[k] is conn:
                return 0
        touched.append(conn)
        self._starts.append(start)
        return 0

    cdef int _end_of_read(self, audit) except -1:
        """The read's records written ahead of its frames, now: the audit log writes them
        (``AuditLog.appended_now``), then each connection that got frames writes them in one
        write (``read_done``) — one journal append and one write per peer per read, without
        waiting for the end of the loop turn."""
        cdef Py_ssize_t k
        records = self._records
        self._records = None
        if records:
            audit.appended_now()
        touched, starts = self._touched, self._starts
        if touched:
            self._touched, self._starts = [], []
            for k in range(len(touched)):
                touched[k].read_done(starts[k])
        return 0

    cdef int _read_objects(self, proto, data, bint client) except -1:
        """The read as ``FramedProtocol.data_received`` handles it, message objects throughout."""
        try:
            messages = proto.decoder.feed(data)
        except ProtocolError as err:
            proto.on_protocol_error(str(err))
            return 0
        proto.messages_in += len(messages)
        if client:
            proto.last_in = monotonic_ns()
        for msg in messages:
            if proto.closed:
                break
            try:
                self._dispatch(proto, msg, client)
            except Exception as exc:
                proto.on_internal_error(msg, exc)
        return 0

    cdef int _dispatch(self, proto, msg, bint client) except -1:
        t = type(msg)
        if client:
            if t is NewOrder and proto.state == _ACTIVE:
                self.new_order(proto, msg, self.clock())
            elif t is CancelOrder and proto.state == _ACTIVE:
                self.cancel(proto, msg, self.clock())
            else:
                proto.on_message(msg)
        elif t is ExecReport:
            self.exchange_report(msg, self.clock())
        else:
            proto.on_message(msg)
        return 0

    # ------------------------------------------------------------------ the compiled path
    cdef int _fast_order(self, session, const uint8_t* body, Item* it, int64_t t) except -1:
        """``new_order`` for a canonical order frame: the same steps, the order's record being
        its frame and its copy to the exchange the frame with the gateway's id. Whatever the
        accepting path does not cover (a field too long, a foreign account, a repeated or
        over-quota cl_ord_id, a halt, the link down) goes to ``new_order`` before any effect."""
        cdef OrderIn* f = &it.f.order
        cdef IdTable used
        cdef CEngine ce = None
        cdef int64_t a = -1, i = -1
        if t >= self.day_end:
            self._new_day(t)
        clid = _ascii(f.cl_ord_id)
        account = _name(f.account)
        symbol = _name(f.symbol)
        user = session.user
        found = self.used_clids.get(user)
        link = self.link
        if (not (1 <= f.cl_ord_id.n <= MAX_ID_BYTES and 1 <= f.account.n <= MAX_ACCOUNT_BYTES
                 and 1 <= f.symbol.n <= MAX_SYMBOL_BYTES)
                or found is None or self.replaying or self.halted is not None
                or link is None or not link.up or account not in session.accounts):
            return self._new_order_object(session, _order_msg(clid, account, symbol, f), t)
        engine = self.engine
        if type(engine) is CEngine:  # the compiled engine: no message or decision objects
            ce = engine
            a = ce.account_index(account)
            i = ce.instrument_index(symbol) if a >= 0 else -1
            if i < 0:  # refused as unknown: the object path, in its words
                return self._new_order_object(session, _order_msg(clid, account, symbol, f), t)
        used = found
        # the last way out: the id is taken here unless it is repeated (then nothing changed)
        if used.size >= self.max_clids_per_user_day or not used.add_absent(clid):
            return self._new_order_object(session, _order_msg(clid, account, symbol, f), t)
        msg = None if ce is not None else _order_msg(clid, account, symbol, f)
        sid = session.session_id
        if self._records is not None:
            self._records.append(inbound_record(t, sid, body, it.length))
        self._n_orders += 1
        if ce is None:
            decision = engine.decide(msg, t, sid)
            return self._decided(session, msg, decision, t, user, clid, body, it)
        decision = ce.decide_c(a, i, f.side, f.offset, f.hedge, f.ord_type, f.tif, f.price, f.qty,
                               t, sid)
        if decision is not None:
            return self._decided(session, _order_msg(clid, account, symbol, f), decision, t, user,
                                 clid, body, it)
        alerts, trigger = ce.last_alerts, ce.last_trigger
        ce.last_alerts = None
        return self._accepted(session, t, user, clid, account, symbol, ce._ref_of(ce.last_slot),
                              alerts, trigger, body, it)

    cdef int _new_order_object(self, session, msg, int64_t t) except -1:
        self.new_order(session, msg, t)
        return 0

    cdef int _fast_report(self, const uint8_t* body, Item* it, int64_t t) except -1:
        """``exchange_report`` for a canonical report that acknowledges or fills a working
        order whose owner is connected: the same steps, the record being the report's frame and
        the client's report encoded into its session's buffer. Anything else (an order finished
        or unknown, a repeated or surprising report, a cancel or reject, observers that want
        report objects) goes to ``exchange_report`` before any effect."""
        cdef ReportIn* f = &it.f.report
        cdef Order o
        cdef CEngine ce
        cdef int et = <int>f.exec_type if -1 <= f.exec_type <= 64 else -1
        cdef int event, cell, status
        cdef bint trade = et == ET_TRADE
        if t >= self.day_end:
            self._new_day(t)
        found = self._working(f.cl_ord_id)
        exec_id = None
        if found is None or self.replaying or self.report_observers or not (et == ET_NEW or trade):
            return self._report_object(body, it, t)
        o = found
        s = o.owner
        if s is None or s.closed or getattr(s, "frame_buffer", None) is None \
                or not 0 <= o.status < 8:
            return self._report_object(body, it, t)
        if trade:
            if f.exec_id.n == 0 or f.last_qty <= 0 or f.last_qty > o.leaves or _final(o.status):
                return self._report_object(body, it, t)
            exec_id = _ascii(f.exec_id)
            if self.exec_ids.has(exec_id):
                return self._report_object(body, it, t)
            event = EV_FULL_FILL if f.last_qty == o.leaves else EV_PARTIAL_FILL
        else:
            event = EV_ACK
        cell = _STEP[o.status][event]
        if cell < 0 or (cell & 7) != A_APPLY:
            return self._report_object(body, it, t)
        status = cell >> 3
        if self._records is not None:
            self._records.append(exchange_record(t, body, it.length, o.session_id, o.cl_ord_id))
        engine = self.engine
        if not trade:
            if type(engine) is CEngine:
                (<CEngine>engine).ack_c(o.ref)
            else:
                engine.apply_ack(o.ref, t)
            if self.ack_latency is not None:
                self.ack_latency.observe(t - o.ts_ns)
        else:
            if type(engine) is CEngine:
                ce = engine
                if not ce.fill_c(o.ref, f.last_qty, f.last_px, t, f.self_trade):
                    return self._fill_refused(o, f.last_qty)
                alerts, trigger = ce.last_alerts, ce.last_trigger
                ce.last_alerts = None
            else:
                outcome = engine.apply_fill(o.ref, f.last_qty, f.last_px, t, f.self_trade)
                if not outcome.known:
                    return self._fill_refused(o, f.last_qty)
                alerts, trigger = outcome.alerts, outcome.trigger
            self.exec_ids.add_absent(exec_id)  # (found absent above)
            self._n_fills += 1
            o.cum += f.last_qty
            o.leaves -= f.last_qty
            if alerts:
                self._alerts(alerts, t)
            if trigger:
                self._trigger(o.account, trigger, t)
        o.status = status
        if not o.order_id and f.order_id.n:
            o.order_id = _ascii(f.order_id)
        s = o.owner
        if s is not None and not s.closed:
            out = s.frame_buffer
            start = PyByteArray_GET_SIZE(out)
            if put_report(out, o, status, f, trade, t) > s._max_frame:
                del out[start:]  # a text too long for the client: the object path cuts it
                rep = _decode(PyBytes_FromStringAndSize(<const char*>body, it.length))
                s.send(ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, _STATUS[status],
                                  rep.exec_type, 0, rep.text, rep.last_qty if trade else 0,
                                  rep.last_px if trade else 0.0, o.cum, o.leaves, t, o.side,
                                  o.price, o.qty, rep.self_trade, rep.exec_id))
            else:
                self._queued(s, start)
        if _final(status):
            self._forget_c(o)
        return 0

    cdef int _fill_refused(self, Order o, int64_t qty) except -1:
        log.error("fill refused by the book", exch_id=o.exch_id, qty=qty)
        return 0

    cdef object _working(self, Str exch_id):
        """The working order of an exchange id, or None: by its counter when the id is the
        router's own and its order still holds the slot, else by ``by_exch``."""
        cdef Str prefix = _utf8(self.prefix)
        cdef int64_t seq = 0
        cdef Py_ssize_t k
        cdef uint8_t c
        cdef Order o
        if (prefix.n < exch_id.n <= prefix.n + 15
                and memcmp(prefix.p, exch_id.p, prefix.n) == 0 and exch_id.p[prefix.n] != 48):  # '0'
            for k in range(prefix.n, exch_id.n):
                c = <uint8_t>exch_id.p[k]
                if 48 <= c <= 57:  # 0-9 (format(n, "x"): lower case, no leading zero)
                    seq = seq * 16 + (c - 48)
                elif 97 <= c <= 102:  # a-f
                    seq = seq * 16 + (c - 87)
                else:
                    seq = 0
                    break
            if seq:
                found = <object>PyList_GET_ITEM(self._by_seq, seq & self._by_seq_mask)
                if found is not None:
                    o = found
                    if (o.seq == seq and PyUnicode_GET_LENGTH(o.exch_id) == exch_id.n
                            and memcmp(PyUnicode_DATA(o.exch_id), exch_id.p, exch_id.n) == 0):
                        return o
        ref = self.by_exch.get(_ascii(exch_id))
        return self.orders.get(ref) if ref is not None else None

    cdef int _report_object(self, const uint8_t* body, Item* it, int64_t t) except -1:
        self.exchange_report(_decode(PyBytes_FromStringAndSize(<const char*>body, it.length)), t)
        return 0

    # ------------------------------------------------------------------ new orders
    def new_order(self, session, msg, now=None, bint engine_saw=True):
        cdef int64_t t = self.clock() if now is None else now
        cdef IdTable used
        cdef Order o
        cdef int64_t qty
        if t >= self.day_end:
            self._new_day(t)
        sid = session.session_id
        if self.audit is not None and not self.replaying:
            self.audit.append(jr.Inbound(t, sid, msg))
        self._n_orders += 1
        bad = None
        if not (_fits(msg.cl_ord_id, MAX_ID_BYTES) and _fits(msg.account, MAX_ACCOUNT_BYTES)
                and _fits(msg.symbol, MAX_SYMBOL_BYTES)):
            bad = order_field_problem(msg)
        if bad is not None:
            return self._reject(session, msg, R_INVALID_FIELD, bad, t)
        if msg.account not in session.accounts:
            return self._reject(session, msg, Reason.ACCOUNT_NOT_PERMITTED,
                                f"session {sid} may not trade {msg.account!r}", t)
        user = session.user
        used = self._clids(user, t)
        clid = msg.cl_ord_id
        if used.has(clid):
            return self._reject(session, msg, Reason.DUPLICATE_CL_ORD_ID, f"cl_ord_id {clid!r}", t)
        if used.size >= self.max_clids_per_user_day:
            return self._reject(session, msg, R_INVALID_FIELD,
                                f"user {user!r} used {self.max_clids_per_user_day} cl_ord_ids "
                                "today, the most the gateway remembers; new orders are refused "
                                "until the next trading day", t)
        used.add_absent(clid)  # (found absent above)
        if self.replaying and not engine_saw:
            self.stats["rejected"] += 1
            return None
        if not self.replaying:
            refusal = self.halted
            if refusal is None and not (self.link is not None and self.link.up):
                refusal = (R_EXCHANGE_UNAVAILABLE, "")
            if refusal is not None:
                return self._reject(session, msg, refusal[0], refusal[1], t)
        decision = self.engine.decide(msg, t, sid)
        self._decided(session, msg, decision, t, user, clid, NULL, NULL)
        return None

    cdef int _decided(self, session, msg, decision, int64_t t, str user, str clid,
                      const uint8_t* body, Item* it) except -1:
        """What follows the engine's decision on an order (``body``/``it``: its canonical
        frame, when it came as one, or NULL)."""
        reason = decision.reason
        if not reason:
            return self._accepted(session, t, user, clid, msg.account, msg.symbol, decision.ref,
                                  decision.alerts, decision.trigger, body, it, msg)
        self._journal_refusal(session, msg, reason, decision.text, t)  # right behind the order
        if decision.alerts:
            self._alerts(decision.alerts, t)
        if self.on_counted is not None:
            self.on_counted(msg.account, t, int(reason))
        self._reject(session, msg, reason, None, t, decision.text, True)
        if decision.trigger:
            self._trigger(msg.account, decision.trigger, t)
        return 0

    cdef int _accepted(self, session, int64_t t, str user, str clid, str account, str symbol,
                       object ref, object alerts, object trigger, const uint8_t* body, Item* it,
                       object msg=None) except -1:
        """An order the engine accepted as ``ref``: tracked under a new exchange id and sent
        on. ``msg`` is the order as an object, or None when only its canonical frame
        ``body``/``it`` carries it."""
        cdef Order o
        cdef OrderIn* f
        cdef int64_t qty
        cdef int side
        cdef double price
        if alerts:
            self._alerts(alerts, t)
        if self.on_counted is not None:
            self.on_counted(account, t, 0)
        self._n_accepted += 1
        if msg is None:
            f = &it.f.order
            side, price, qty = f.side, f.price, f.qty
        else:
            side, price, qty = msg.side, msg.price, int(msg.qty)
        self.order_seq += 1
        exch_id = _with_hex(self.prefix, self.order_seq)
        o = _new_order(ref, session, user, clid, exch_id, account, symbol, side, price, qty, t)
        self.orders[o.ref] = o
        self.by_exch[exch_id] = o.ref
        self.by_clid[(user, clid)] = o.ref
        o.seq = self.order_seq
        self._by_seq[o.seq & self._by_seq_mask] = o
        if not self.replaying and self.link is not None:
            self._order_to_exchange(exch_id, msg, account, symbol, qty, body, it)
        if trigger:
            self._trigger(account, trigger, t)
        return 0

    cdef int _order_to_exchange(self, str exch_id, msg, str account, str symbol, int64_t qty,
                                const uint8_t* body, Item* it) except -1:
        link = self.link
        proto = getattr(link, "proto", None) if body != NULL else None
        out = getattr(proto, "frame_buffer", None) if proto is not None else None
        if out is None or proto.closed:
            if msg is None:  # (its lots are the frame's: qty)
                link.send(_order_msg(exch_id, account, symbol, &it.f.order))
            else:
                link.send(NewOrder(exch_id, account, symbol, msg.side, msg.offset, msg.hedge,
                                   msg.ord_type, msg.tif, msg.price, qty))
        else:  # the client's frame with the gateway's id, encoded into the link's buffer
            start = PyByteArray_GET_SIZE(out)
            put_exchange_order(out, exch_id, body, &it.f.order, it.length)
            self._queued(proto, start)
        return 0

    def _track(self, Order o):
        self.orders[o.ref] = o
        self.by_exch[o.exch_id] = o.ref
        self.by_clid[(o.user, o.cl_ord_id)] = o.ref

    def _journal_refusal(self, session, msg, reason, text, now):
        self.record(jr.Decision(now, session.session_id, msg.cl_ord_id, msg.account, msg.symbol,
                                int(reason), text, 0))

    def _reject(self, session, msg, reason, detail, now, text=None, bint journaled=False):
        self.stats["rejected"] += 1
        self.rejects_by_reason[reason] += 1
        if text is None:
            text = Reason(reason).description + (f" ({detail})" if detail else "")
        if not journaled:
            self._journal_refusal(session, msg, reason, text, now)
        qty = msg.qty if type(msg.qty) is int else 0
        price = msg.price if type(msg.price) is float else 0.0
        rep = ExecReport(
            echo(msg.cl_ord_id, MAX_ID_BYTES), "", echo(msg.account, MAX_ACCOUNT_BYTES),
            echo(msg.symbol, MAX_SYMBOL_BYTES), _STATUS[S_REJECTED], ET_REJECTED,
            int(reason), text, 0, 0.0, 0, 0, now, msg.side, price, qty)
        self._to_session(session, rep, now)
        if self.report_observers and not self.replaying:
            for observe in self.report_observers:
                observe(rep)
        if self.storm_handler is not None and not self.replaying:
            times = self.reject_times.get(session.session_id)
            if times is None:
                times = self.reject_times[session.session_id] = deque(
                    maxlen=self.cfg.gateway.reject_storm)
            times.append(now)
            if len(times) == times.maxlen and times[0] > now - NS:
                times.clear()
                self.storm_handler(session.session_id)

    # ------------------------------------------------------------------ cancels
    def cancel(self, session, msg, now=None):
        cdef int64_t t = self.clock() if now is None else now
        cdef Order o
        if t >= self.day_end:
            self._new_day(t)
        self.record(jr.Inbound(t, session.session_id, msg))
        bad = None
        if not (_fits(msg.cl_ord_id, MAX_ID_BYTES) and _fits(msg.orig_cl_ord_id, MAX_ID_BYTES)
                and _fits(msg.account, MAX_ACCOUNT_BYTES)):
            bad = cancel_field_problem(msg)
        if bad is not None:
            self._to_session(session, CancelReject(
                echo(msg.cl_ord_id, MAX_ID_BYTES), echo(msg.orig_cl_ord_id, MAX_ID_BYTES),
                R_INVALID_FIELD, f"{Reason.INVALID_FIELD.description} ({bad})"), t)
            return
        ref = self.by_clid.get((session.user, msg.orig_cl_ord_id))
        found = self.orders.get(ref) if ref is not None else None
        if found is None or found.account != msg.account or found.account not in session.accounts:
            used = self.used_clids.get(session.user, ())
            reason = (Reason.ORDER_FINISHED if found is None and msg.orig_cl_ord_id in used
                      else Reason.UNKNOWN_ORDER)
            self._to_session(session, CancelReject(msg.cl_ord_id, msg.orig_cl_ord_id, int(reason),
                                                   Reason(reason).description), t)
            return
        o = found
        self._send_cancel_c(o, msg.cl_ord_id, t)

    def cancel_refs(self, refs, why, now=None):
        """``RouterBase.cancel_refs`` (kill switch, cancel-on-disconnect) compiled: the kill of
        thousands of working orders is this loop."""
        cdef int64_t t = self.clock() if now is None else now
        cdef int64_t sent = 0, held = 0
        if t >= self.day_end:
            self._new_day(t)
        orders = self.orders
        for ref in refs:
            found = orders.get(ref)
            if found is not None:
                if self._send_cancel_c(<Order>found, "", t):
                    sent += 1
                else:
                    held += 1
        if sent or held:
            log.info("cancels requested", sent=sent, held_until_link=held, why=why)
        return sent, held

    def _send_cancel(self, Order o, str client_id, int64_t now):
        return self._send_cancel_c(o, client_id, now)

    cdef bint _send_cancel_c(self, Order o, str client_id, int64_t now) except -1:
        self.stats["cancels"] += 1
        outcome = self.engine.cancel_request(o.ref, now)
        if outcome.alerts:
            self._alerts(outcome.alerts, now)
        if self.on_counted is not None:
            self.on_counted(o.account, now, 0)
        self._cancel_seq += 1
        cancel_id = self.prefix + "c" + format(self._cancel_seq, "x")
        self._remember_cancel_c(o, cancel_id, client_id)
        msg = CancelOrder(cancel_id, o.exch_id, o.account)
        sent = False
        if not self.replaying:
            if self.audit is not None:
                self.audit.append(jr.Outbound(now, jr.EXCHANGE_LINK, msg))
            if self.link is not None and self.link.up:
                sent = self.link.send(msg)
        if outcome.trigger:
            self._trigger(o.account, outcome.trigger, now)
        return bool(sent)

    def _remember_cancel(self, Order o, str cancel_id, str client_id):
        self._remember_cancel_c(o, cancel_id, client_id)

    cdef int _remember_cancel_c(self, Order o, str cancel_id, str client_id) except -1:
        if o.cancel_id:
            old = o.old_cancels
            if old is None:
                old = o.old_cancels = []
            old.append(o.cancel_id)
            if len(old) >= self.max_cancels_per_order:
                self.cancels.pop(old.pop(0), None)
        o.cancel_id = cancel_id
        self.cancels[cancel_id] = (o.ref, client_id)
        return 0

    # ------------------------------------------------------------------ exchange side
    def exchange_report(self, rep, now=None):
        cdef int64_t t = self.clock() if now is None else now
        cdef int et, event
        cdef Order o
        cdef int64_t last_qty
        if t >= self.day_end:
            self._new_day(t)
        exch_id = rep.cl_ord_id
        ref = self.by_exch.get(exch_id)
        found = self.orders.get(ref) if ref is not None else None
        if found is None:
            found = self.finished.get(exch_id)
        if self.audit is not None and not self.replaying:
            if found is None:
                self.audit.append(jr.ExchangeEvent(t, rep))
            else:
                o = found
                self.audit.append(jr.ExchangeEvent(t, rep, "", o.session_id, o.cl_ord_id))
        et = rep.exec_type
        exec_id = rep.exec_id
        if et == ET_TRADE and exec_id:
            if self.exec_ids.has(exec_id):
                self.stats["duplicate_fills"] += 1
                log.info("execution already applied", exec_id=exec_id, exch_id=exch_id)
                return
        if found is None:
            self._unknown_report(rep, t)
            return
        o = found
        if et == ET_STATUS:
            self._reconcile(o, rep, t)
            return
        if et == ET_NEW:
            event = EV_ACK
        elif et == ET_TRADE:
            last_qty = rep.last_qty
            if last_qty <= 0 or (not _final(o.status) and last_qty > o.leaves):
                self._seen_execution(rep)
                self._surprise(o, f"a fill of {rep.last_qty} lots against {o.leaves} working "
                               f"(execution {rep.exec_id or 'without id'}) was not booked",
                               t, AlertLevel.CRITICAL)
                return
            event = EV_FULL_FILL if last_qty == o.leaves else EV_PARTIAL_FILL
        elif et == ET_CANCELED:
            event = EV_CANCELED
        elif et == ET_REJECTED:
            event = EV_REJECTED
        else:
            log.warning("report with an unknown exec type", exec_type=et, exch_id=exch_id)
            return
        self._settle(o, event, rep, t, False)

    def _settle(self, Order o, int event, rep, int64_t now, bint derived=True):
        cdef int cell = _STEP[o.status][event] if 0 <= o.status < 8 and 0 <= event < 8 else -1
        cdef int status, action, et, reason
        cdef int64_t last_qty
        if cell < 0:
            raise KeyError((o.status, event))
        status, action = cell >> 3, cell & 7
        if action == A_REPEAT:
            log.info("report repeats a known state", exch_id=o.exch_id, status=o.status,
                     lifecycle_event=Event(event).name)
            return
        if action == A_LATE:
            self._seen_execution(rep)
            self._surprise(o, f"a fill of {rep.last_qty} lots at {rep.last_px} (execution "
                           f"{rep.exec_id or 'without id'}) came after the order ended as "
                           f"{OrdStatus(o.status).name}; the book could not take it",
                           now, AlertLevel.CRITICAL)
            return
        engine = self.engine
        et = rep.exec_type
        if event == EV_ACK:
            engine.apply_ack(o.ref, now)
            if self.ack_latency is not None and not self.replaying:
                self.ack_latency.observe(now - o.ts_ns)
        elif event == EV_PARTIAL_FILL or event == EV_FULL_FILL:
            last_qty = rep.last_qty
            outcome = engine.apply_fill(o.ref, last_qty, rep.last_px, now, rep.self_trade)
            if not outcome.known:
                log.error("fill refused by the book", exch_id=o.exch_id, qty=last_qty)
                return
            self._seen_execution(rep)
            self._n_fills += 1
            o.cum += last_qty
            o.leaves -= last_qty
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
            if outcome.trigger:
                self._trigger(o.account, outcome.trigger, now)
        elif event == EV_CANCELED:
            outcome = engine.apply_canceled(o.ref, now)
            if outcome.alerts:
                self._alerts(outcome.alerts, now)
        else:
            engine.apply_reject(o.ref, now)
        if action == A_SURPRISE:
            self._surprise(o, f"the exchange rejected the order after it was "
                           f"{OrdStatus(o.status).name} ({rep.text or 'no reason given'}); "
                           f"it is closed here too", now, AlertLevel.WARNING)
        o.status = status
        if not o.order_id and rep.order_id:
            o.order_id = rep.order_id
        reason = rep.reason if (et == ET_REJECTED or et == ET_CANCELED) else 0
        if et == ET_REJECTED and not reason:
            reason = R_EXCHANGE_REJECT
        trade = et == ET_TRADE
        out = ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, _STATUS[status],
                         rep.exec_type, reason,
                         rep.text, rep.last_qty if trade else 0,
                         rep.last_px if trade else 0.0, o.cum, o.leaves, now,
                         o.side, o.price, o.qty, rep.self_trade, rep.exec_id)
        self._report(o, out, now, derived)
        if _final(status):
            self._forget_c(o)

    def _report(self, Order o, out, int64_t now, bint derived):
        s = o.owner
        live = s is not None and not s.closed
        if derived and not self.replaying:
            self.record(jr.Outbound(now, s.session_id if live else jr.NO_SESSION, out))
        if live and not self.replaying:
            s.send(out)
        if self.report_observers and not self.replaying:
            for observe in self.report_observers:
                observe(out)

    def _forget(self, Order o):
        self._forget_c(o)

    cdef int _forget_c(self, Order o) except -1:
        """A finished order leaves the working tables for ``finished``."""
        cdef Py_ssize_t k
        if o.seq:
            k = o.seq & self._by_seq_mask
            if self._by_seq[k] is o:
                self._by_seq[k] = None
        self.orders.pop(o.ref, None)
        self.by_exch.pop(o.exch_id, None)
        key = (o.user, o.cl_ord_id)
        if self.by_clid.get(key) == o.ref:
            del self.by_clid[key]
        if o.cancel_id:
            self.cancels.pop(o.cancel_id, None)
            o.cancel_id = ""
        if o.old_cancels is not None:
            for cancel_id in o.old_cancels:
                self.cancels.pop(cancel_id, None)
            o.old_cancels = None
        self.finished.put(o.exch_id, o)
        return 0

    def _seen_execution(self, rep):
        self._seen_id(rep.exec_id)

    cdef int _seen_id(self, str exec_id) except -1:
        if exec_id:
            self.exec_ids.put(exec_id)
        return 0


# The enum members the reference passes (equal to their ints on the wire and in every
# comparison, and what a test sees when it looks at a report's fields).
_STATUS = {int(s): s for s in OrdStatus}
_VIEW_FIELDS = ("ref", "session_id", "user", "cl_ord_id", "exch_id", "order_id", "account",
                "symbol", "side", "price", "qty", "cum", "leaves", "status", "ts_ns", "cancel_id",
                "adopted")


# ------------------------------------------------------------------ the wire code, for tests
def read_fields(bytes body, bint client):
    """The fields the compiled reader takes from one frame body, as a tuple in the message's
    field order, or None when it leaves the frame to msgspec (``client``: a NewOrder is
    expected, else an ExecReport). tests/gateway/test_fastroute_wire.py holds it to msgspec."""
    cdef Item it
    cdef OrderIn* o = &it.f.order
    cdef ReportIn* e = &it.f.report
    kind = parse_frame(<const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &it,
                       K_ORDER if client else K_REPORT)
    if kind == K_ORDER:
        return (_ascii(o.cl_ord_id), _ascii(o.account), _ascii(o.symbol), o.side, o.offset,
                o.hedge, o.ord_type, o.tif, o.price, o.qty)
    if kind == K_REPORT:
        return (_ascii(e.cl_ord_id), _ascii(e.order_id), _ascii(e.account), _ascii(e.symbol),
                e.status, e.exec_type, e.reason, _ascii(e.text), e.last_qty, e.last_px,
                e.cum_qty, e.leaves_qty, e.ts_ns, e.side, e.price, e.qty, e.self_trade,
                _ascii(e.exec_id), e.offset, e.hedge, e.ord_type, e.tif)
    return None


def name_of(bytes text):
    """The str the compiled path makes of an account or symbol's ASCII bytes ``text``
    (``_name``). For tests."""
    cdef Str s
    s.p = PyBytes_AS_STRING(text)
    s.n = PyBytes_GET_SIZE(text)
    return _name(s)


def records_of(int64_t now, int64_t session, bytes body, str client_id=""):
    """The journal records the compiled path writes for a canonical frame ``body``: its
    ``Inbound`` from ``session`` and its ``ExchangeEvent`` owned by (``session``,
    ``client_id``), encoded. For tests."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    return inbound_record(now, session, p, n), exchange_record(now, p, n, session, client_id)
