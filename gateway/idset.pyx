# cython: language_level=3
"""``gateway.idmemory.IdMemory`` used as a set — the cl_ord_ids a user used today, the
executions applied today — compiled to open-addressing tables that keep each key's hash beside
it.

Why not a dict: a CPython str-keyed dict keeps no hashes in its entries, so a probe reads an
index slot, an entry and the probed key's object — three likely cache misses once the table
holds a day's million ids — and two of the gateway's per-order probes are of such tables (the
cl_ord_id of each order, the execution id of each fill). Here a probe reads one 16-byte slot
(hash and key); the key's object is read only when the hash matches, which is, but for a
collision of 64-bit hashes, the key itself.

The rest is ``IdMemory``'s, so the two stay interchangeable: the same limit and arrival order
(past the limit the oldest key is forgotten), and the same shards — one table until
``SPLIT_AT`` keys, then ``SHARDS`` tables chosen by the top bits of the hash — so that growing
rehashes one shard's keys at most, never the day's. Held to ``IdMemory`` by
``tests/gateway/test_idmemory.py``. Keys are strs (the set owns a reference to each).
"""

cimport cython
from cpython.object cimport PyObject_Hash
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free

from gateway import idmemory as _idmemory

cdef Py_ssize_t SHARDS = _idmemory.SHARDS
cdef Py_ssize_t SPLIT_AT = _idmemory.SPLIT_AT
cdef int SHIFT = _idmemory.SHIFT
DEF FIRST_SLOTS = 8             # a shard's first table (it doubles past half full)
DEF SPLIT_SLOTS = 64            # each shard's table at the split (~16 keys each)


cdef int _make(Shard* sh, Py_ssize_t slots) except -1:
    sh.slots = <Slot*>calloc(slots, sizeof(Slot))
    if sh.slots == NULL:
        raise MemoryError()
    sh.mask = slots - 1
    sh.used = 0
    return 0


cdef inline Py_ssize_t _find(Shard* sh, uint64_t h, PyObject* key) except? -2:
    """The slot holding ``key``, or ``-1 - i`` where ``i`` is the empty slot it would take."""
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>sh.mask)
    cdef Slot* s
    while True:
        s = &sh.slots[i]
        if s.key == NULL:
            return -1 - i
        if s.hash == h and (s.key == key or <object>s.key == <object>key):
            return i
        i = (i + 1) & sh.mask


cdef inline void _put_moved(Shard* sh, uint64_t h, PyObject* key) noexcept:
    """Place a key known absent, its reference moved in (rehashing)."""
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>sh.mask)
    while sh.slots[i].key != NULL:
        i = (i + 1) & sh.mask
    sh.slots[i].hash = h
    sh.slots[i].key = key
    sh.used += 1


cdef int _grow(Shard* sh) except -1:
    cdef Slot* old = sh.slots
    cdef Py_ssize_t n = sh.mask + 1, k
    _make(sh, 2 * n)
    for k in range(n):
        if old[k].key != NULL:
            _put_moved(sh, old[k].hash, old[k].key)
    free(old)
    return 0


cdef void _remove_at(Shard* sh, Py_ssize_t i) noexcept:
    """Empty slot ``i`` (its reference dropped by the caller), shifting back the keys after it
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
    sh.used -= 1


@cython.final
cdef class IdSet:
    """A set of strs with an optional limit past which the oldest is forgotten: ``IdMemory``
    without values, compiled (see the module docstring)."""

    def __cinit__(self, limit=None):
        self._empty()
        if limit is not None and limit < 0:
            raise ValueError(f"an id set's limit is a count of ids, not {limit!r}")
        self.limit = limit
        self._limit = -1 if limit is None else limit
        self._ring = NULL
        self._ring_cap = 0
        self._head = 0

    def __dealloc__(self):
        if self._shards != NULL:
            self._release()
        free(self._ring)

    cdef int _release(self) except -1:
        """Drop every key and free the tables."""
        cdef Py_ssize_t s, k
        cdef Shard* sh
        for s in range(self._shard_mask + 1):
            sh = &self._shards[s]
            for k in range(sh.mask + 1):
                if sh.slots[k].key != NULL:
                    Py_DECREF(<object>sh.slots[k].key)
            free(sh.slots)
        free(self._shards)
        self._shards = NULL
        return 0

    def __len__(self):
        return self.size

    def __contains__(self, key):
        return isinstance(key, str) and self.has(key)

    cpdef bint has(self, str key) except -1:
        cdef uint64_t h = <uint64_t>PyObject_Hash(key)
        return _find(&self._shards[(h >> SHIFT) & <uint64_t>self._shard_mask], h,
                     <PyObject*>key) >= 0

    cpdef put(self, str key, object value=None):
        """``IdMemory.put`` of a key (a set keeps no values)."""
        if value is not None:
            raise ValueError(f"an id set keeps ids, not values (got {value!r} for {key!r})")
        self.add_absent(key)

    cdef int add_new(self, str key) except -1:
        """``put`` of a key the caller has just found absent."""
        self.add_absent(key)
        return 0

    cdef bint add_absent(self, str key) except -1:
        """Add ``key`` unless it is there: whether it was added (one probe for both)."""
        cdef uint64_t h = <uint64_t>PyObject_Hash(key)
        cdef Shard* sh = &self._shards[(h >> SHIFT) & <uint64_t>self._shard_mask]
        cdef Py_ssize_t i = _find(sh, h, <PyObject*>key)
        if i >= 0:
            return False
        Py_INCREF(key)
        sh.slots[-1 - i].hash = h
        sh.slots[-1 - i].key = <PyObject*>key
        sh.used += 1
        if 2 * sh.used > sh.mask + 1:
            _grow(sh)
        self._insert(key, h)
        return True

    cdef int _insert(self, str key, uint64_t h) except -1:
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
        cdef uint64_t h = <uint64_t>PyObject_Hash(<object>oldest)
        cdef Shard* sh = &self._shards[(h >> SHIFT) & <uint64_t>self._shard_mask]
        cdef Py_ssize_t i = _find(sh, h, oldest)
        self._head = (self._head + 1) % self._ring_cap
        self.size -= 1
        _remove_at(sh, i)
        Py_DECREF(<object>oldest)
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
                _put_moved(&shards[(one.slots[k].hash >> SHIFT) & mask], one.slots[k].hash,
                           one.slots[k].key)
        for s in range(SHARDS):
            while 2 * shards[s].used > shards[s].mask + 1:
                _grow(&shards[s])
        free(one.slots)
        free(self._shards)
        self._shards = shards
        self._shard_mask = SHARDS - 1
        return 0

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

    def clear(self):
        self._release()
        self._empty()

    @property
    def shards(self):
        """How many keys each table holds (the shape ``IdMemory.shards`` has)."""
        return [self._shards[s].used for s in range(self._shard_mask + 1)]

    def __iter__(self):
        """The keys: oldest first with a limit (as ``IdMemory``), else by table."""
        cdef Py_ssize_t s, k
        cdef Shard* sh
        if self._limit >= 0:
            return iter([<object>self._ring[(self._head + k) % self._ring_cap]
                         for k in range(self.size)])
        keys = []
        for s in range(self._shard_mask + 1):
            sh = &self._shards[s]
            for k in range(sh.mask + 1):
                if sh.slots[k].key != NULL:
                    keys.append(<object>sh.slots[k].key)
        return iter(keys)

    def __repr__(self):
        return f"IdSet({self.size} ids, limit {self.limit}, {self._shard_mask + 1} shard(s))"
