# cython: language_level=3
"""Typed interface of ``gateway.idset``: the compiled day-long id set (see that module)."""

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t


cdef struct Slot:
    uint64_t hash        # the key's hash (valid when key is set)
    PyObject* key        # a str, one reference owned by the set; NULL: empty


cdef struct Shard:
    Slot* slots
    Py_ssize_t mask      # slots - 1 (a power of two)
    Py_ssize_t used


@cython.final
cdef class IdSet:
    cdef Shard* _shards
    cdef Py_ssize_t _shard_mask      # shards - 1: one shard, then SHARDS
    cdef readonly Py_ssize_t size
    cdef readonly object limit       # None: no limit
    cdef Py_ssize_t _limit           # the limit, or -1
    cdef PyObject** _ring            # with a limit: the keys in arrival order (borrowed)
    cdef Py_ssize_t _ring_cap
    cdef Py_ssize_t _head

    cpdef bint has(self, str key) except -1
    cpdef put(self, str key, object value=*)
    cdef bint add_absent(self, str key) except -1
    cdef int add_new(self, str key) except -1
    cdef int _insert(self, str key, uint64_t h) except -1
    cdef int _evict_oldest(self) except -1
    cdef int _split(self) except -1
    cdef int _release(self) except -1
    cdef int _empty(self) except -1
