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


# ------------------------------------------------------------------ interval fsyncs, off the GIL
cdef extern from "<unistd.h>" nogil:
    int fdatasync(int fd)
    int dup(int fd)
    int close(int fd)

cdef extern from "<errno.h>" nogil:
    int errno

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from cpython.pythread cimport (
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)

cdef extern from "Python.h" nogil:
    ctypedef enum PyLockStatus:
        PY_LOCK_FAILURE
        PY_LOCK_ACQUIRED
        PY_LOCK_INTR
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                             int intr_flag)

DEF LATENCIES = 256


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class Syncer:
    """The journal's interval fsyncs, from a thread that never holds the GIL.

    ``gateway.journal.Journal.run_flusher`` starts ``run`` on a thread of its own. Every
    ``interval_ms`` it ``fdatasync``s the current segment if anything was written since the last
    sync — a ``dup`` of the descriptor, taken under the state lock, so a rotation that closes
    the segment meanwhile cannot make it sync another file. The event loop only ever takes the
    state lock for a moment (``wrote``, ``set_fd``, ``synced``); the thread never asks for the
    GIL, which a Python thread would every interval: under load each of those hand-overs cost
    the loop more than the fsync itself (~2 µs per order at 5 ms, measured with
    ``bench.order_path``).

    The GIL is taken only to report a failed fsync (``on_failure(errno)``, from this thread:
    the journal hands it to the loop) and when ``hook`` — a Python ``fdatasync`` the fault tests
    put in place of the system call — is given."""

    cdef PyThread_type_lock _state
    cdef PyThread_type_lock _stop
    cdef int _fd
    cdef bint _dirty
    cdef bint _stopping
    cdef long long _unflushed
    cdef long long _interval_us
    cdef long long _latency[LATENCIES]
    cdef int _pending
    cdef object _hook
    cdef object _on_failure

    def __cinit__(self, long long interval_ms, hook, on_failure):
        self._state = PyThread_allocate_lock()
        self._stop = PyThread_allocate_lock()
        if self._state == NULL or self._stop == NULL:
            raise MemoryError()
        PyThread_acquire_lock(self._stop, 1)  # held until stop(): the thread's timed wait
        self._fd = -1
        self._interval_us = max(interval_ms, 1) * 1000
        self._hook = hook
        self._on_failure = on_failure

    def __dealloc__(self):
        if self._state != NULL:
            PyThread_free_lock(self._state)
        if self._stop != NULL:
            PyThread_free_lock(self._stop)

    cdef inline void _lock(self) noexcept nogil:
        PyThread_acquire_lock(self._state, 1)

    cdef inline void _unlock(self) noexcept nogil:
        PyThread_release_lock(self._state)

    def wrote(self, long long n):
        """``n`` bytes were appended to the current segment."""
        with nogil:
            self._lock()
            self._dirty = True
            self._unflushed += n
            self._unlock()

    def synced(self):
        """Everything written is on disk (the owner synced inline, or began a new segment)."""
        with nogil:
            self._lock()
            self._dirty = False
            self._unflushed = 0
            self._unlock()

    def set_fd(self, int fd):
        """The segment to sync from now on (-1: none; before its descriptor is closed)."""
        with nogil:
            self._lock()
            self._fd = fd
            self._unlock()

    @property
    def dirty(self):
        cdef bint d
        with nogil:
            self._lock()
            d = self._dirty
            self._unlock()
        return d

    @property
    def unflushed(self):
        cdef long long n
        with nogil:
            self._lock()
            n = self._unflushed
            self._unlock()
        return n

    @property
    def pending_latencies(self):
        return self._pending

    def drain_latencies(self, observe):
        """Hand the fsync latencies measured since the last call (ns) to ``observe``."""
        cdef long long got[LATENCIES]
        cdef int n, k
        with nogil:
            self._lock()
            n = self._pending
            for k in range(n):
                got[k] = self._latency[k]
            self._pending = 0
            self._unlock()
        for k in range(n):
            observe(got[k])

    def stop(self):
        with nogil:
            self._lock()
            self._stopping = True
            self._unlock()
        PyThread_release_lock(self._stop)

    def run(self):
        """The thread's body: returns after ``stop``."""
        with nogil:
            self._loop()

    cdef void _loop(self) noexcept nogil:
        cdef int fd, copy, rc, err
        cdef long long covered, t0
        while PyThread_acquire_lock_timed(self._stop, self._interval_us, 0) != PY_LOCK_ACQUIRED:
            self._lock()
            if self._stopping:
                self._unlock()
                return
            if not self._dirty or self._fd < 0:
                self._unlock()
                continue
            fd = self._fd
            copy = dup(fd)
            if copy < 0:  # out of descriptors: try again next time
                self._unlock()
                continue
            self._dirty = False  # a write after this line is synced next time
            covered = self._unflushed
            self._unlock()
            t0 = _now_ns()
            if self._hook is not None:
                rc = self._call_hook(copy, &err)
            else:
                rc = fdatasync(copy)
                err = errno
            close(copy)
            self._lock()
            if rc != 0:
                self._dirty = True
                self._unlock()
                self._failed(err)
                continue
            if self._fd == fd:  # what was written meanwhile is still to be synced
                self._unflushed = max(0, self._unflushed - covered)
            if self._pending < LATENCIES:
                self._latency[self._pending] = _now_ns() - t0
                self._pending += 1
            self._unlock()

    cdef int _call_hook(self, int fd, int* err) noexcept nogil:
        with gil:
            try:
                self._hook(fd)
            except OSError as exc:
                err[0] = exc.errno or 5
                return -1
            except BaseException:
                err[0] = 5  # EIO: a hook that fails otherwise is a failed fsync too
                return -1
        return 0

    cdef void _failed(self, int err) noexcept nogil:
        with gil:
            try:
                self._on_failure(err)
            except BaseException:
                pass
