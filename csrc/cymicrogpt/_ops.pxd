# cython: language_level=3
"""Vector handles and the model's graph operations on an Arena."""
from libc.stdint cimport int32_t

from cymicrogpt._arena cimport Arena


cdef class Vec:
    """`size` consecutive arena nodes starting at `start` (a vector of the model)."""
    cdef readonly int32_t start
    cdef readonly int32_t size
    cdef readonly Py_ssize_t generation  # arena generation it was built in; -1: fixed nodes


cdef class Mat:
    """A weight matrix: rows x cols consecutive parameter nodes, row-major."""
    cdef readonly int32_t start
    cdef readonly int32_t rows
    cdef readonly int32_t cols


cdef class GraphOps:
    cdef readonly Arena arena
    cdef dict matrices  # name -> Mat
    cdef int32_t* scratch  # index lists handed to nogil loops
    cdef Py_ssize_t scratch_capacity

    cdef Vec vec(self, int32_t start, int32_t size)
    cdef int check(self, Vec x) except -1
    cdef int32_t* scratch_for(self, Py_ssize_t count) except NULL
