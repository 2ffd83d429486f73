# cython: language_level=3
"""Typed interface of ``gateway.idtable``: the compiled day-long id tables (see that module)."""

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t


cdef struct Slot:
    uint64_t hash        # the key's hash (valid when key is set)
    PyObject* key        # a str, one reference owned by the table; NULL: empty
    PyObject* value      # its value, one reference owned by the table; NULL: None


cdef struct Shard:
    Slot* slots
    Py_ssize_t mask      # slots - 1 (a power of two)
    Py_ssize_t used


@cython.final
cdef class IdTable:
    cdef Shard* _shards
    cdef Py_ssize_t _shard_mask      # shards - 1: one shard, then SHARDS
    cdef readonly Py_ssize_t size
    cdef readonly object limit       # None: no limit
    cdef Py_ssize_t _limit           # the limit, or -1
    cdef PyObject** _ring            # with a limit: the keys in arrival order (borrowed)
    cdef Py_ssize_t _ring_cap
    cdef Py_ssize_t _head

    cdef Slot* _slot(self, str key, uint64_t* h) except NULL
    cpdef bint has(self, str key) except -1
    cpdef object get(self, str key, object default=*)
    cpdef put(self, str key, object value=*)
    cdef bint add_absent(self, str key) except -1
    cdef int _place(self, Slot* s, uint64_t h, str key) except -1
    cdef int _added(self, str key) except -1
    cdef int _evict_oldest(self) except -1
    cdef int _split(self) except -1
    cdef int _release(self) except -1
    cdef int _empty(self) except -1
