# cython: language_level=3
"""Layout of the scalar computation graph: an arena of nodes stored as arrays.

Node i is data[i], grad[i], aux[i], kind[i] and its children
children[first_child[i] : first_child[i + 1]].  Nodes are appended, never freed one by
one: reset() truncates the arena back to its fixed nodes (the parameters).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t

# The derivative table (bodies in _arena.pyx, `backward_node`): how a node passes its
# gradient g to its children.  Every microgpt operation maps onto one of these kinds:
#   a + b, sum(xs)           SUM    each child += g
#   a * b, sum(a_i * b_i)    DOT    children pair up (a0, b0, a1, b1, ...): a_i += b_i*g, b_i += a_i*g
#   a**k, exp, log, relu,    UNARY  the one child += aux*g, where aux = d(node)/d(child)
#   a + c, a * c (c const)          was computed in the forward pass
#   parameters, inputs       LEAF   no children
cdef enum NodeKind:
    LEAF = 0
    SUM = 1
    DOT = 2
    UNARY = 3
    NUM_KINDS = 4


cdef class Arena:
    cdef double* data  # node values (forward pass)
    cdef double* grad  # d(root)/d(node) (backward pass)
    cdef double* aux  # UNARY nodes: the local gradient d(node)/d(child)
    cdef uint8_t* kind  # NodeKind
    cdef int64_t* first_child  # node_capacity + 1 entries
    cdef int32_t* children  # flat child lists, in creation order
    cdef Py_ssize_t n_nodes, node_capacity
    cdef Py_ssize_t n_edges, edge_capacity
    cdef Py_ssize_t n_fixed  # nodes [0, n_fixed) survive reset()
    cdef bint recording  # False: nodes get values but no children (inference, no graph)
    cdef Py_ssize_t generation  # bumped by reset(): handles from before it are stale
    # scratch for the iterative depth-first search, node_capacity entries each
    cdef uint32_t* mark
    cdef uint32_t epoch
    cdef int32_t* order
    cdef int32_t* stack
    cdef int64_t* cursor
    # data and grad live in NumPy arrays so that the parameters can be shared zero-copy
    cdef object data_array, grad_array

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges) except -1
    cdef void reset(self) noexcept
    cdef Py_ssize_t topological_order(self, int32_t root) noexcept nogil
    cdef int backward(self, int32_t root) except -1 nogil


# Node construction, inlined into every module that builds nodes (hot loops): callers
# first reserve() room, then open_node(), add_child() for each child, close_node().
cdef inline int32_t open_node(Arena a, NodeKind kind) noexcept nogil:
    cdef int32_t i = <int32_t>a.n_nodes
    a.kind[i] = kind
    a.grad[i] = 0.0
    a.n_nodes += 1
    return i


cdef inline void add_child(Arena a, int32_t child) noexcept nogil:
    a.children[a.n_edges] = child
    a.n_edges += 1


cdef inline void close_node(Arena a, int32_t i, double value, double aux) noexcept nogil:
    a.data[i] = value
    a.aux[i] = aux
    if not a.recording:
        # no graph: drop the children just written, the node is a plain value
        a.n_edges = a.first_child[i]
        a.kind[i] = LEAF
    a.first_child[i + 1] = a.n_edges
