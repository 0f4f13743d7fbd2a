"""Layout of the scalar computation graph: an arena of nodes in memory it owns.

Node i is data[i], grad[i], aux[i], kind[i] and the three integers a[i], b[i], n[i] that
name its children.  Most nodes of the model take their children from contiguous ranges
(a weight row, an input vector, a head's slice), so a node names a range by its start
and length instead of listing every child; only the rare irregular nodes list children
in `edges`.  Nodes are appended; reset() truncates the arena back to its fixed nodes
(the engine's parameters, always leaves), and a client may truncate or compact its own
nodes (Value's collection, in _value.pyx).

Every array is a typed memoryview over memory the arena owns (a cython.view.array each),
and every loop reads the arrays through these memoryviews.  Growth replaces them with
larger ones without running any Python: see Arena.reserve.
"""
from libc.stdint cimport int32_t, uint32_t

# The node kinds, and how each names its children: the kind table.  A new kind is a line
# here, its children in `child_count` and `child` below (a kind that lists its children
# is numbered after SUM_LIST: `lists_children`), and its derivative in `backward_node`
# (_arena.pyx).  Children are listed in microgpt's order: the depth-first
# search and the backward pass visit them in exactly this order.
#   kind       children                               microgpt expression
#   LEAF       none                                   a parameter, an input, a value-only node
#   UNARY      a                                      a**k, exp, log, relu, a + c, a * c (c const)
#   ADD        a, b                                   a + b
#   SUM        a, a+1, ..., a+n-1                     sum(xs) over consecutive nodes
#   DOT        a, b, a+1, b+1, ..., a+n-1, b+n-1      sum(a_i * b_i); a * b is n = 1
#   SUM_LIST   edges[a], ..., edges[a+n-1]            sum(xs) over scattered nodes
#   DOT_LIST   edges[a], edges[a+1], ... (2n)         sum(x_i * y_i) over scattered pairs
#   GRAD_LIST  edges[a], ..., edges[a+n-1]            Value(data, children, local_grads): local
#              with local grads edge_grad[a..a+n-1]   grads fixed at creation (Value's a * b)
cdef enum NodeKind:
    LEAF = 0
    UNARY = 1
    ADD = 2
    SUM = 3
    DOT = 4
    SUM_LIST = 5
    DOT_LIST = 6
    GRAD_LIST = 7

cdef enum:
    MAX_INDEX = 0x7fffffff  # node and edge indices are int32: capacities stay below this


cdef inline bint lists_children(int32_t kind) noexcept nogil:
    """Does this kind list its children in `edges` (from edges[a])?  The listed kinds are
    numbered last: SUM_LIST, DOT_LIST, GRAD_LIST."""
    return kind >= SUM_LIST


cdef inline int32_t child_count(int32_t kind, int32_t n) noexcept nogil:
    """How many children a node of this kind (and this n) has."""
    if kind == UNARY:
        return 1
    if kind == ADD:
        return 2
    if kind == DOT or kind == DOT_LIST:
        return 2 * n
    if kind == SUM or kind == SUM_LIST or kind == GRAD_LIST:
        return n
    return 0  # LEAF


cdef inline int32_t child(int32_t kind, int32_t a, int32_t b, const int32_t[::1] edges,
                          int32_t j) noexcept nogil:
    """Child number j (0 <= j < child_count) of a node with this kind, a and b."""
    if lists_children(kind):
        return edges[a + j]
    if kind == DOT:  # child 2i is a + i, child 2i+1 is b + i
        return (a if j % 2 == 0 else b) + j // 2
    if kind == SUM:
        return a + j
    return a if j == 0 else b  # UNARY (j = 0), ADD


cdef class Arena:
    # --- nodes: node_capacity entries each --------------------------------------------
    cdef double[::1] data  # node values (forward pass)
    cdef double[::1] grad  # d(root)/d(node) (backward pass)
    cdef double[::1] aux  # UNARY nodes: the local gradient d(node)/d(child), fixed at creation
    cdef int32_t[::1] kind  # NodeKind, in 32 bits: a store to an 8-bit array may alias anything
                            # (C's rule for char types), so the compiler would reload every
                            # array's address after each node's kind (measured: 8 bits took
                            # ~12k more instructions a default step, of ~550k)
    cdef int32_t[::1] a  # first child, first of a range, or first edge (see NodeKind)
    cdef int32_t[::1] b  # second child, or start of the second range (ADD, DOT)
    cdef int32_t[::1] n  # range length, or number of listed children (pairs for DOT_LIST)
    # --- edges: child lists of SUM_LIST / DOT_LIST / GRAD_LIST nodes, edge_capacity entries
    cdef int32_t[::1] edges
    cdef double[::1] edge_grad  # GRAD_LIST: d(node)/d(edges[i]), fixed at creation
    # --- scratch of the depth-first search, node_capacity entries each -----------------
    cdef uint32_t[::1] mark  # == epoch: visited in the current search
    cdef uint32_t[::1] span_epoch  # == epoch: the range starting here holds nothing to visit ...
    cdef int32_t[::1] span_len  # ... up to this length (see `topological_order`)
    cdef int32_t[::1] order  # the topological order found
    cdef int32_t[::1] stack  # nodes being expanded ...
    cdef int32_t[::1] cursor  # ... and the index of the next child each one looks at
    cdef uint32_t epoch
    # --- sizes --------------------------------------------------------------------------
    cdef Py_ssize_t n_nodes, node_capacity
    cdef Py_ssize_t n_edges, edge_capacity
    cdef Py_ssize_t n_fixed  # nodes [0, n_fixed) are leaves and survive reset()
    cdef Py_ssize_t recording  # 0: nodes get values but no children (inference, no graph); else 1.
                               # Not a bint: an int, which a store to the int32 arrays may alias (C's
                               # rule), so each add_node would load it again (measured: ~18k more
                               # instructions a default step, of ~460k)
    cdef object data_array, grad_array  # NumPy views of data and grad, made on first request

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges) except -1
    cdef int grow(self, Py_ssize_t nodes, Py_ssize_t edges) except -1
    cdef void reset(self) noexcept
    cdef uint32_t next_epoch(self) noexcept nogil
    cdef Py_ssize_t topological_order(self, int32_t root) noexcept nogil
    cdef void pass_gradients(self, int32_t root, const int32_t[::1] order, Py_ssize_t count,
                             const int32_t[::1] groups=*, const int32_t[::1] deferred=*) noexcept nogil


# --- linear groups (see _arena.pyx): records of GROUP_FIELDS integers -----------------------
cdef enum:
    GROUP_FIELDS = 10  # first order entry, records, entries per record, the layer's row-0 node, flags,
                       # (GROUP_ELEMENTWISE) each chain level's node and other child for row 0 (see
                       # find_elementwise_chains), and an nll's run's probability node (else -1)
    GROUP_IN_ORDER = 1  # flag: its records hold rows 0, 1, ... in order
    GROUP_DEFERRED = 2  # flag: its weight gradients are added after the pass (see defer_weight_gradients)
    GROUP_ELEMENTWISE = 4  # flag: its chains are passed a level at a time (see find_elementwise_chains)
    MAX_LEVELS = 2  # chain levels a GROUP_ELEMENTWISE group may have (its fields 5 .. 8)
cdef bint group_fits(Arena ar, const int32_t[::1] order, Py_ssize_t start, int32_t records, int32_t stride,
                     int32_t base) noexcept nogil
cdef Py_ssize_t find_linear_groups(Arena ar, const int32_t[::1] order, Py_ssize_t count,
                                   const int32_t[::1] known, int32_t[::1] groups) noexcept nogil
cdef void find_elementwise_chains(Arena ar, const int32_t[::1] order, int32_t[::1] groups) noexcept nogil
cdef Py_ssize_t defer_weight_gradients(Arena ar, const int32_t[::1] order, Py_ssize_t count, int32_t[::1] groups,
                                       int32_t[::1] deferred) noexcept nogil


# --- arrays the arena's clients own, grown the arena's way ---------------------------------
ctypedef fused cell:  # the element types of the arrays
    double
    int32_t
    uint32_t

cdef cell[::1] cells(cell zero, Py_ssize_t capacity)
cdef cell[::1] resized(cell[::1] old, Py_ssize_t used, Py_ssize_t capacity)
cdef int pause_gc() noexcept  # growth runs between these two: see Arena.reserve
cdef void resume_gc(int was_enabled) noexcept


# --- node construction, inlined into every module that builds nodes --------------------
# Callers reserve() room first; between reserve() and the last add_node() of an op no
# Python code may run (a finalizer could build nodes in the room taken).
cdef inline int32_t add_node(Arena ar, NodeKind kind, int32_t a, int32_t b, int32_t n,
                             double value, double aux) noexcept nogil:
    cdef int32_t i = <int32_t>ar.n_nodes
    ar.kind[i] = kind if ar.recording else LEAF  # no graph: a plain value
    ar.a[i] = a
    ar.b[i] = b
    ar.n[i] = n
    ar.data[i] = value
    ar.aux[i] = aux
    ar.grad[i] = 0.0
    ar.n_nodes += 1
    return i


cdef inline void add_edge(Arena ar, int32_t child) noexcept nogil:
    """Append one listed child (SUM_LIST, DOT_LIST); nothing when not recording."""
    if ar.recording:
        ar.edges[ar.n_edges] = child
        ar.n_edges += 1


cdef inline void add_graded_edge(Arena ar, int32_t child, double local_grad) noexcept nogil:
    """Append one child of a GRAD_LIST node with its local gradient."""
    ar.edge_grad[ar.n_edges] = local_grad
    add_edge(ar, child)
