# cython: language_level=3
"""Journal framing, compiled: a batch of records into segment bytes in one call.

``gateway.journal._frame`` is the reference, a record at a time: msgpack-encode the record,
CRC-32 over length, sequence number and body, a 16-byte header (length u32 BE | crc32 u32 BE |
seq u64 BE) and the body. ``frame_many`` does the same for a whole batch — each record encoded
straight into the output buffer behind room for its header, the CRC computed over the bytes in
place — so a batch costs one call instead of a handful of Python steps per record. Its bytes are
the reference's bytes (tests/gateway/test_journal_frame.py holds them equal), and ``crc32`` is
zlib's CRC-32 (the same polynomial, reflected; the same value for any input).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint32_t, uint64_t

DEF HEADER = 16

cdef uint32_t TABLE[8][256]  # slicing-by-8 tables of the reflected polynomial 0xEDB88320


cdef void _make_tables():
    cdef uint32_t c
    cdef int n, k
    for n in range(256):
        c = n
        for k in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        TABLE[0][n] = c
    for n in range(256):
        c = TABLE[0][n]
        for k in range(1, 8):
            c = TABLE[0][c & 0xFF] ^ (c >> 8)
            TABLE[k][n] = c


_make_tables()


cdef uint32_t _crc(uint32_t crc, const uint8_t* p, size_t n) noexcept nogil:
    crc = ~crc
    while n >= 8:
        crc ^= <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | \
            (<uint32_t>p[3] << 24)
        crc = (TABLE[7][crc & 0xFF] ^ TABLE[6][(crc >> 8) & 0xFF]
               ^ TABLE[5][(crc >> 16) & 0xFF] ^ TABLE[4][crc >> 24]
               ^ TABLE[3][p[4]] ^ TABLE[2][p[5]] ^ TABLE[1][p[6]] ^ TABLE[0][p[7]])
        p += 8
        n -= 8
    while n:
        crc = TABLE[0][(crc ^ p[0]) & 0xFF] ^ (crc >> 8)
        p += 1
        n -= 1
    return ~crc


def crc32(const uint8_t[::1] data, uint32_t value=0):
    """zlib.crc32(data, value), computed here (for the tests that hold the two equal)."""
    return _crc(value, &data[0], data.shape[0]) if data.shape[0] else value


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void _put64(uint8_t* p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>(v >> 32))
    _put32(p + 4, <uint32_t>v)


def frame_many(list records, uint64_t first_seq, bytearray out, encode_into, frozenset types,
               Py_ssize_t max_record, not_a_record):
    """Append ``records`` to ``out`` framed with sequence numbers from ``first_seq``.

    ``encode_into`` is the journal's ``msgspec.msgpack.Encoder().encode_into``; ``types`` the
    journal's record types, ``not_a_record`` its error for anything else; a ``bytes`` item is
    a record already encoded (its body, copied as it is). On a record that is not one of them, does not encode or is over
    ``max_record`` bytes, ``out`` is cut back to where that record began and the error names it
    as ``gateway.journal._frame`` would; what came before stays framed."""
    cdef Py_ssize_t start, body
    cdef uint64_t seq = first_seq
    cdef uint32_t length, crc
    cdef uint8_t* p
    for record in records:
        start = PyByteArray_GET_SIZE(out)
        if type(record) is bytes:  # a record already encoded: its body as it is
            PyByteArray_Resize(out, start + HEADER + PyBytes_GET_SIZE(record))
            memcpy(PyByteArray_AS_STRING(out) + start + HEADER, PyBytes_AS_STRING(record),
                   PyBytes_GET_SIZE(record))
        elif type(record) not in types:
            raise not_a_record(record)
        else:
            PyByteArray_Resize(out, start + HEADER)
            try:
                encode_into(record, out, start + HEADER)
            except (TypeError, OverflowError) as err:
                PyByteArray_Resize(out, start)
                raise TypeError(f"{type(record).__name__} cannot be journaled: {err}") from err
        body = PyByteArray_GET_SIZE(out) - start - HEADER
        if body > max_record:
            PyByteArray_Resize(out, start)
            raise ValueError(f"record {seq} is {body} bytes; the maximum is {max_record}")
        length = <uint32_t>body
        p = <uint8_t*>PyByteArray_AS_STRING(out) + start
        _put32(p, length)
        _put64(p + 8, seq)
        crc = _crc(0, p, 4)
        crc = _crc(crc, p + 8, 8 + length)
        _put32(p + 4, crc)
        seq += 1
    return seq - first_seq
