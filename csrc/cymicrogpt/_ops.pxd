"""Vector handles, the model's graph operations on an Arena, and their order templates."""
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


cdef class OrderTemplate


cdef class GraphOps:
    cdef readonly Arena arena
    cdef dict matrices  # name -> Mat
    cdef readonly int64_t id  # unique among all GraphOps of the process
    cdef readonly double rmsnorm_eps
    cdef int64_t weights_graph  # graph id of the fixed nodes (Vec rows of the matrices)
    cdef int64_t graph  # graph id of the current sequence; a fresh one per begin_sequence
    cdef int32_t[::1] scratch  # index lists handed to the attention loops
    # --- cached orders (see OrderTemplate) ------------------------------------------------
    cdef int32_t[::1] log  # the op log: what built the current graph (see log_op)
    cdef Py_ssize_t n_log
    cdef int32_t[::1] prob_nodes  # nll's probability nodes, in creation order (see add_prob_node)
    cdef Py_ssize_t n_prob_nodes
    cdef dict templates  # shape_key(root) -> OrderTemplate
    cdef Py_ssize_t template_bytes  # held by all templates: bounded, see TEMPLATE_BYTES_PER_NODE
    cdef Py_ssize_t replays  # backward passes that replayed a template (for tests and benchmarks)

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries,
                     Py_ssize_t prob_nodes=*) except -1
    cdef int grow(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries,
                  Py_ssize_t prob_nodes) except -1
    cdef int check(self, Vec x) except -1
    cdef int check_matrix(self, Mat w) except -1
    cdef int32_t[::1] scratch_for(self, Py_ssize_t count)
    cdef bytes shape_key(self, int32_t root)
    cdef int backward_cached(self, int32_t root) except -1
    cdef OrderTemplate new_template(self)


# The depth-first order of one graph shape, replayed instead of searched again.
# A shape is the op log (see log_op) and the root: two graphs with the same shape have the
# same nodes and non-leaf children, whatever the document's tokens, except for each nll's
# probability node p = e_t * inv: its first child is the target's exp node e_t.  In the
# order, that shows only in one place per nll:
#   ... [L_t S_t E_t] [L_i S_i E_i for i != t, ascending] total inv p ...
# (logit, shifted logit, exp of each token; the search reaches e_t first, then the other
# exps through total = sum(exps), each after the one logit subtree they share).  So the
# template keeps the order with that run of 3V entries rewritten per target on replay.
cdef class OrderTemplate:
    cdef int32_t[::1] prob_nodes  # nll's probability nodes
    cdef int32_t[::1] runs  # order index where each one's 3V run of triples starts
    cdef int32_t[::1] order
    cdef Py_ssize_t count  # length of the order

    cdef bint capture(self, Arena ar, const int32_t[::1] prob_nodes, Py_ssize_t count) noexcept nogil
    cdef Py_ssize_t replay(self, Arena ar) noexcept nogil
