# cython: language_level=3
"""``gateway.idmemory.IdMemory`` compiled: the compiled router's day-long id tables (the
cl_ord_ids each user used today, the executions applied, the finished orders by exchange id) in
open-addressing tables that keep each key's hash beside it.

Why not dicts: a CPython str-keyed dict keeps no hashes in its entries, so a probe reads an
index slot, an entry and the probed key's object — three likely cache misses once a table holds
a day's million ids — and every order, fill and finished order probes one of these tables (perf
put ~13 % of the gateway's CPU there). Here a probe reads one 24-byte slot (hash, key, value);
the key's object is read only when the hash matches, which is, but for a collision of 64-bit
hashes, the key itself.

The table is not seen by the cyclic garbage collector, so a value must be one whose references
the collector does not follow (None, a number, a str, the router's ``Order``, which is
``no_gc``): anything else is refused, as it could close a cycle through the table that would
never be freed.

The rest is ``IdMemory``'s, so the two are interchangeable: a known key takes the new value and
keeps its age, past the limit the oldest key is forgotten, and the shards are the same — one
table until ``SPLIT_AT`` keys, then ``SHARDS`` tables chosen by the top bits of the hash (the
slot within a table by the low bits) — so growing rehashes one shard's keys at most, never the
day's. Held to ``IdMemory`` by ``tests/gateway/test_idmemory.py``.
"""

cimport cython
from cpython.object cimport PyObject_Hash
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, PyObject
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free

from gateway import idmemory as _idmemory


cdef extern from "Python.h":
    ctypedef struct _TypeSlots "PyTypeObject":
        void* tp_traverse
    _TypeSlots* _type_of "Py_TYPE"(object o)


cdef Py_ssize_t SHARDS = _idmemory.SHARDS
cdef Py_ssize_t SPLIT_AT = _idmemory.SPLIT_AT
cdef int SHIFT = _idmemory.SHIFT
DEF FIRST_SLOTS = 8             # a table's first size (it doubles past half full)
DEF SPLIT_SLOTS = 64            # each shard's table at the split (~16 keys each)


cdef int _make(Shard* sh, Py_ssize_t slots) except -1:
    sh.slots = <Slot*>calloc(slots, sizeof(Slot))
    if sh.slots == NULL:
        raise MemoryError()
    sh.mask = slots - 1
    sh.used = 0
    return 0


cdef inline void _put_moved(Shard* sh, Slot* s) noexcept:
    """Place a slot's key, known absent, its references moved in (rehashing)."""
    cdef Py_ssize_t i = <Py_ssize_t>(s.hash & <uint64_t>sh.mask)
    while sh.slots[i].key != NULL:
        i = (i + 1) & sh.mask
    sh.slots[i] = s[0]
    sh.used += 1


cdef int _grow(Shard* sh) except -1:
    cdef Slot* old = sh.slots
    cdef Py_ssize_t n = sh.mask + 1, k
    _make(sh, 2 * n)
    for k in range(n):
        if old[k].key != NULL:
            _put_moved(sh, &old[k])
    free(old)
    return 0


cdef void _remove_at(Shard* sh, Py_ssize_t i) noexcept:
    """Empty slot ``i`` (its references dropped by the caller), shifting back the keys after it
    that probed past it (linear probing needs no tombstones)."""
    cdef Py_ssize_t j = i, home
    while True:
        j = (j + 1) & sh.mask
        if sh.slots[j].key == NULL:
            break
        home = <Py_ssize_t>(sh.slots[j].hash & <uint64_t>sh.mask)
        # the key at j stays unless its home lies cyclically outside (i, j]
        if (home <= i or home > j) if i <= j else (home <= i and home > j):
            sh.slots[i] = sh.slots[j]
            i = j
    sh.slots[i].key = NULL
    sh.slots[i].value = NULL
    sh.used -= 1


@cython.final
cdef class IdTable:
    """Ids (str) with a value each (None for a plain set); the oldest forgotten past ``limit``
    if one is given: ``IdMemory`` compiled (see the module docstring)."""

    def __cinit__(self, limit=None):
        self._empty()
        if limit is not None and limit < 0:
            raise ValueError(f"an id table's limit is a count of ids, not {limit!r}")
        self.limit = limit
        self._limit = -1 if limit is None else limit

    def __dealloc__(self):
        if self._shards != NULL:
            self._release()
        free(self._ring)

    cdef int _empty(self) except -1:
        """One empty table, no keys (the ring, if any, is reused)."""
        self._shards = <Shard*>calloc(1, sizeof(Shard))
        if self._shards == NULL:
            raise MemoryError()
        _make(&self._shards[0], FIRST_SLOTS)
        self._shard_mask = 0
        self.size = 0
        self._head = 0
        return 0

    cdef int _release(self) except -1:
        """Drop every key and value and free the tables."""
        cdef Py_ssize_t s, k
        cdef Shard* sh
        for s in range(self._shard_mask + 1):
            sh = &self._shards[s]
            for k in range(sh.mask + 1):
                if sh.slots[k].key != NULL:
                    Py_DECREF(<object>sh.slots[k].key)
                    Py_XDECREF(sh.slots[k].value)
            free(sh.slots)
        free(self._shards)
        self._shards = NULL
        return 0

    def __len__(self):
        return self.size

    def __contains__(self, key):
        return isinstance(key, str) and self.has(key)

    cdef Slot* _slot(self, str key, uint64_t* h) except NULL:
        """The slot holding ``key``, or the empty slot it would take (its key NULL)."""
        cdef Shard* sh
        cdef Slot* s
        cdef Py_ssize_t i
        h[0] = <uint64_t>PyObject_Hash(key)
        sh = &self._shards[(h[0] >> SHIFT) & <uint64_t>self._shard_mask]
        i = <Py_ssize_t>(h[0] & <uint64_t>sh.mask)
        while True:
            s = &sh.slots[i]
            if s.key == NULL or (s.hash == h[0] and (s.key == <PyObject*>key
                                                      or <object>s.key == key)):
                return s
            i = (i + 1) & sh.mask

    cpdef bint has(self, str key) except -1:
        cdef uint64_t h
        return self._slot(key, &h).key != NULL

    cpdef object get(self, str key, object default=None):
        cdef uint64_t h
        cdef Slot* s = self._slot(key, &h)
        if s.key == NULL:
            return default
        return None if s.value == NULL else <object>s.value

    cpdef put(self, str key, object value=None):
        """Remember ``key`` (a known key takes the new value and keeps its age); past the
        limit the oldest key is forgotten."""
        cdef uint64_t h
        cdef Slot* s
        cdef PyObject* old
        if value is not None and _type_of(value).tp_traverse != NULL:
            raise TypeError(f"an id table keeps no value whose references the cyclic collector "
                            f"follows (its slots are not seen by it), not a "
                            f"{type(value).__name__}")
        s = self._slot(key, &h)
        old = s.value if s.key != NULL else NULL
        if value is None:
            s.value = NULL
        else:
            Py_INCREF(value)
            s.value = <PyObject*>value
        Py_XDECREF(old)
        if s.key == NULL:
            self._place(s, h, key)

    cdef bint add_absent(self, str key) except -1:
        """``put(key)`` unless the key is there: whether it was added (one probe for both)."""
        cdef uint64_t h
        cdef Slot* s = self._slot(key, &h)
        if s.key != NULL:
            return False
        s.value = NULL
        self._place(s, h, key)
        return True

    cdef int _place(self, Slot* s, uint64_t h, str key) except -1:
        """Fill the empty slot ``s`` with ``key`` (its value already set)."""
        cdef Shard* sh = &self._shards[(h >> SHIFT) & <uint64_t>self._shard_mask]
        Py_INCREF(key)
        s.hash = h
        s.key = <PyObject*>key
        sh.used += 1
        if 2 * sh.used > sh.mask + 1:
            _grow(sh)
        return self._added(key)

    cdef int _added(self, str key) except -1:
        """``key`` was just placed: counted, remembered in arrival order, the oldest key
        forgotten past the limit, the table split into shards when it grows past SPLIT_AT."""
        self.size += 1
        if self._limit >= 0:
            if self._ring == NULL:
                self._ring_cap = self._limit + 1
                self._ring = <PyObject**>calloc(self._ring_cap, sizeof(PyObject*))
                if self._ring == NULL:
                    raise MemoryError()
            self._ring[(self._head + self.size - 1) % self._ring_cap] = <PyObject*>key
            if self.size > self._limit:
                self._evict_oldest()
        if self._shard_mask == 0 and self.size > SPLIT_AT:
            self._split()
        return 0

    cdef int _evict_oldest(self) except -1:
        cdef PyObject* oldest = self._ring[self._head]
        cdef uint64_t h
        cdef Slot* s = self._slot(<str><object>oldest, &h)
        cdef Shard* sh = &self._shards[(h >> SHIFT) & <uint64_t>self._shard_mask]
        cdef PyObject* value = s.value
        self._head = (self._head + 1) % self._ring_cap
        self.size -= 1
        _remove_at(sh, s - sh.slots)
        Py_DECREF(<object>oldest)
        Py_XDECREF(value)
        return 0

    cdef int _split(self) except -1:
        """One table -> SHARDS tables by the top bits of the hash (once, at SPLIT_AT keys)."""
        cdef Shard* one = &self._shards[0]
        cdef Shard* shards = <Shard*>calloc(SHARDS, sizeof(Shard))
        cdef Py_ssize_t s, k
        cdef uint64_t mask = SHARDS - 1
        if shards == NULL:
            raise MemoryError()
        for s in range(SHARDS):
            _make(&shards[s], SPLIT_SLOTS)
        for k in range(one.mask + 1):
            if one.slots[k].key != NULL:
                _put_moved(&shards[(one.slots[k].hash >> SHIFT) & mask], &one.slots[k])
        for s in range(SHARDS):
            while 2 * shards[s].used > shards[s].mask + 1:
                _grow(&shards[s])
        free(one.slots)
        free(self._shards)
        self._shards = shards
        self._shard_mask = SHARDS - 1
        return 0

    def clear(self):
        self._release()
        self._empty()

    @property
    def shards(self):
        """Each table's keys (the shape of ``IdMemory.shards``: how the keys are spread)."""
        cdef Py_ssize_t s, k
        cdef Shard* sh
        out = []
        for s in range(self._shard_mask + 1):
            sh = &self._shards[s]
            out.append([<object>sh.slots[k].key for k in range(sh.mask + 1)
                        if sh.slots[k].key != NULL])
        return out

    def __iter__(self):
        """The keys, oldest first when there is a limit (in no set order otherwise)."""
        if self._limit >= 0:
            return iter([<object>self._ring[(self._head + k) % self._ring_cap]
                         for k in range(self.size)])
        return iter([key for shard in self.shards for key in shard])

    def values(self):
        return [self.get(key) for key in self]

    def __repr__(self):
        return f"IdTable({self.size} ids, limit {self.limit}, {self._shard_mask + 1} shard(s))"
