"""Layout of the scalar computation graph: an arena of nodes stored as NumPy-owned arrays.

Node i is data[i], grad[i], aux[i], kind[i] and the three integers a[i], b[i], n[i] that
name its children.  Most nodes of the model take their children from contiguous ranges
(a weight row, an input vector, a head's slice), so a node names a range by its start
and length instead of listing every child; only the rare irregular nodes list children
in `edges`.  Nodes are appended, never freed one by one: reset() truncates the arena
back to its fixed nodes, the parameters, which are always leaves.

Every array is a typed memoryview over an array NumPy allocated and owns (no malloc
here).  Growing takes new arrays first, which runs Python, then installs them in C:
see Arena.reserve.
"""
from libc.stdint cimport int32_t, uint8_t, uint32_t

# The node kinds, and how each names its children (in microgpt's order: the depth-first
# search and the backward pass visit them in exactly this order).  The derivative table
# is `backward_node` in _arena.pyx, one line per kind.
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


# Raw pointers into the arena's arrays, taken once at the start of a pass over the graph.
# CPython extensions build with -fno-strict-aliasing, so the compiler reloads a pointer
# read from the Arena object after every store through another pointer; copied into this
# local struct, they stay in registers.  Valid only while no growth can happen (the pass
# runs in C, holding the GIL).
cdef struct Nodes:
    uint8_t* kind
    int32_t* a
    int32_t* b
    int32_t* n
    int32_t* edges
    double* edge_grad
    double* data
    double* grad
    double* aux
    uint32_t* mark
    uint32_t* span_epoch
    int32_t* span_len
    int32_t n_fixed


cdef class OrderTemplate


cdef class Arena:
    # --- nodes: node_capacity entries each --------------------------------------------
    cdef double[::1] data  # node values (forward pass)
    cdef double[::1] grad  # d(root)/d(node) (backward pass)
    cdef double[::1] aux  # UNARY nodes: the local gradient d(node)/d(child), fixed at creation
    cdef uint8_t[::1] kind  # NodeKind
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
    # --- cached orders (see OrderTemplate) ------------------------------------------------
    cdef int32_t[::1] targets  # nll's probability nodes, in creation order (see add_target)
    cdef Py_ssize_t n_targets
    cdef int32_t[::1] log  # the op log: what built the current graph (see log_op)
    cdef Py_ssize_t n_log
    cdef dict templates  # shape_key(root) -> OrderTemplate
    cdef Py_ssize_t template_bytes  # held by all templates: bounded, see TEMPLATE_BYTES_PER_NODE
    cdef Py_ssize_t replays  # backward passes that replayed a template (for tests and benchmarks)
    # --- sizes --------------------------------------------------------------------------
    cdef Py_ssize_t n_nodes, node_capacity
    cdef Py_ssize_t n_edges, edge_capacity
    cdef Py_ssize_t n_fixed  # nodes [0, n_fixed) are leaves and survive reset()
    cdef bint recording  # False: nodes get values but no children (inference, no graph)
    cdef object data_array, grad_array  # the NumPy owners of data and grad, shared zero-copy

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries=*,
                     Py_ssize_t targets=*) except -1
    cdef int grow_nodes(self, Py_ssize_t nodes) except -1
    cdef int grow_edges(self, Py_ssize_t edges) except -1
    cdef int grow_small(self, Py_ssize_t log_entries, Py_ssize_t targets) except -1
    cdef void reset(self) noexcept
    cdef Nodes nodes(self) noexcept nogil
    cdef uint32_t next_epoch(self) noexcept nogil
    cdef Py_ssize_t topological_order(self, int32_t root) noexcept nogil
    cdef Py_ssize_t listed_order(self, int32_t root) noexcept nogil
    cdef void pass_gradients(self, int32_t root, const int32_t* order, Py_ssize_t count) noexcept nogil
    cdef bytes shape_key(self, int32_t root)
    cdef bint has_shape(self, bytes key, int32_t root) noexcept
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
    cdef int32_t[::1] targets  # probability nodes
    cdef int32_t[::1] runs  # order index where each target's 3V run of triples starts
    cdef int32_t[::1] order
    cdef Py_ssize_t count  # length of the order

    cdef bint capture(self, Arena ar, Py_ssize_t count) noexcept nogil
    cdef Py_ssize_t replay(self, Arena ar) noexcept nogil


# --- node construction, inlined into every module that builds nodes --------------------
# Callers reserve() room first; between reserve() and the last add_node() of an op no
# Python code may run (it could grow or reset the arena under the op).
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


cdef inline void add_target(Arena ar, int32_t prob) noexcept nogil:
    """Note nll's probability node (reserve it first); nothing when not recording."""
    if ar.recording:
        ar.targets[ar.n_targets] = prob
        ar.n_targets += 1


cdef inline void add_edge(Arena ar, int32_t child) noexcept nogil:
    """Append one listed child (SUM_LIST, DOT_LIST); nothing when not recording."""
    if ar.recording:
        ar.edges[ar.n_edges] = child
        ar.n_edges += 1


cdef inline void add_graded_edge(Arena ar, int32_t child, double local_grad) noexcept nogil:
    """Append one child of a GRAD_LIST node with its local gradient."""
    ar.edge_grad[ar.n_edges] = local_grad
    add_edge(ar, child)


# --- the op log -------------------------------------------------------------------------
# Every op that appends nodes first logs what decides their kinds and non-leaf children:
# its op code, its integer arguments and, for each operand range, its size and its start,
# or -1 when the range lies wholly in the fixed nodes (leaves: the search never enters
# them, so which weight row an op reads does not change the order).  No node value ever
# decides a kind or a child.  The graph is built by its GraphOps' ops only, from a reset
# arena, so two graphs with equal logs (and roots) have the same depth-first order, up
# to nll's targets (see OrderTemplate).  Reserve the entries first.
cdef inline void log_op(Arena ar, int32_t value) noexcept nogil:
    ar.log[ar.n_log] = value
    ar.n_log += 1


cdef inline void log_operand(Arena ar, int32_t start, int32_t size) noexcept nogil:
    """Two entries: the range's size and start (-1: wholly leaves)."""
    ar.log[ar.n_log] = size
    ar.log[ar.n_log + 1] = -1 if start + size <= ar.n_fixed else start
    ar.n_log += 2
