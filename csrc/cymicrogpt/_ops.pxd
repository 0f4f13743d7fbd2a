"""Vector handles and the model's graph operations on an Arena."""
from libc.stdint cimport int32_t, int64_t

from cymicrogpt._arena cimport Arena


cdef class Vec:
    """`size` consecutive arena nodes starting at `start` (a vector of the model).

    Every op takes its output Vec object before it builds anything and fills it last:
    allocating can run Python (the cyclic GC), which must not happen mid-build."""
    cdef readonly int32_t start
    cdef readonly int32_t size
    cdef readonly int64_t owner  # id of the GraphOps that built it
    cdef readonly int64_t graph  # id of the graph it lives in (its sequence, or the weights)


cdef class Mat:
    """A weight matrix: rows x cols consecutive parameter nodes, row-major."""
    cdef readonly int32_t start
    cdef readonly int32_t rows
    cdef readonly int32_t cols
    cdef readonly int64_t owner  # id of the GraphOps that holds it


cdef class GraphOps:
    cdef readonly Arena arena
    cdef dict matrices  # name -> Mat
    cdef readonly int64_t id  # unique among all GraphOps of the process
    cdef readonly double rmsnorm_eps
    cdef int64_t weights_graph  # graph id of the fixed nodes (Vec rows of the matrices)
    cdef int64_t graph  # graph id of the current sequence; a fresh one per begin_sequence
    cdef int32_t[::1] scratch  # index lists handed to the attention loops

    cdef int check(self, Vec x) except -1
    cdef int check_matrix(self, Mat w) except -1
    cdef int32_t[::1] scratch_for(self, Py_ssize_t count)
