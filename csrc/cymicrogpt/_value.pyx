"""`cymicrogpt.Value`: microgpt's scalar Value, on the compiled arena.

A drop-in for `cymicrogpt.reference.Value`: microgpt's constructor
`Value(data, children=(), local_grads=())` (any number of children, each with its local
gradient), the same operators (reflected ones too), `exp log relu`, `.data .grad
.backward()`, built as the same graph (every op makes the node microgpt makes, constants
included as local gradients), so `.data` and `.grad` come out bit-identical.  As in
microgpt, every local gradient is fixed when its node is built: changing an operand's
`.data` afterwards changes no gradient (a product stores both factors' values, a
GRAD_LIST node).  Values are handles onto nodes of one arena, owned with everything else
Value keeps by one object, the module's ValueGraph.

Memory: a node lives while a Value refers to it or to a node computed from it.  The
nodes above the last one that has a Value are dropped as soon as that Value dies (see
drop_dead_top): a training step that drops its graph gives it all back, and the next
step reuses the same memory.  When the arena has nonetheless doubled since the last
collection (a Value kept from an old step pins everything below it), the nodes no live
Value can reach are dropped and the rest compacted (order kept, so backward order is
unchanged).  So a training loop that rebinds `loss = ...` each step runs in flat memory;
see `graph_size()` and `collect()`.

Threads: one arena serves every thread, and every op (node creation, backward, a
collection) runs in C holding the GIL from the moment it has its room to its last
store: an op takes its Value object first (which may run Python: the GC), then its room
(which runs none: see Arena.reserve), and reads its operands' node indices after that.  So Values from any threads may be mixed in one
graph, and each op is atomic: concurrent threads see some interleaving of whole ops.
(Free-threaded builds would need a lock around the same sections: pyproject.toml.)

Copies: pickle, copy.copy and copy.deepcopy give a leaf with the same `.data` and `.grad`;
the graph below is not kept (the reference pickles it).

Arithmetic on `.data` follows Python's float rules: `+ - *` are IEEE double operations
in C, exactly what Python does; `exp log` call `math.exp` and `math.log`; `**` evaluates
microgpt's `x ** other` and `other * x ** (other - 1)` on the Python float `x` and the
exponent as given, so values and errors (ZeroDivisionError, OverflowError, ValueError)
are Python's float `**`'s, Fraction's for a Fraction exponent, and NumPy's (inf or nan
with a RuntimeWarning) for a NumPy scalar exponent, as in microgpt.  Differences from
the reference (README, "Remaining differences"): `.data` and `.grad` are always floats
(an int `Value(2)` holds 2.0, a NumPy scalar or Fraction its float value; constants of
`+ - *` are converted to float, so a Fraction factor's gradient is a rounded float and
a node computed with a NumPy operand holds a float, whose later `**` is Python's), and
a negative number to a fractional float or Fraction power raises ValueError where the
reference would produce a complex number.
"""
from cpython.object cimport Py_TPFLAGS_HEAPTYPE, PyTypeObject, destructor
from cpython.ref cimport Py_DECREF, PyObject, Py_TYPE
from cpython.type cimport PyType_HasFeature
from libc.stdint cimport int32_t, uint32_t
from libc.stdlib cimport realloc
from libc.string cimport memcmp, memset

import math
from numbers import Real

from cymicrogpt._arena cimport (Arena, cell, LEAF, UNARY, ADD, GRAD_LIST, add_node, add_graded_edge,
                                cells, child, child_count, lists_children, pause_gc,
                                resume_gc)

# Nodes; below this the arena is never collected.  A collection costs in proportion to
# the arena's nodes: micrograd's demo MLP (~65k nodes a step, benchmarks/bench_value.py)
# took 64.9M instructions a step at 2^16 (about two collections a step), 61.2M at 2^17,
# 61.8M at 2^18 (callgrind, steps 2-9), in an arena of the same capacity (2^17 nodes).
MIN_COLLECT_AT = 1 << 17

cdef class Value


# --- allocation: a freelist of our own -----------------------------------------------
# A training step drops its whole graph, then builds as many Values again: up to SPARES
# dead Values are kept for reuse (24 bytes each).  Ours, not @cython.freelist: Cython's
# tp_new clears the object, calls __cinit__ through its argument-parsing wrapper and
# its tp_dealloc re-checks the type and finalizer, ~75 instructions a Value against
# ~30 here (callgrind, bench_value.py).  Free-threaded builds get no freelist (the list
# would need a lock), as Cython's own freelists do.
cdef extern from *:
    """
    #define CYMICROGPT_SPARE_SLOTS 65536
    #ifdef Py_GIL_DISABLED
    #define CYMICROGPT_SPARES 0
    #else
    #define CYMICROGPT_SPARES CYMICROGPT_SPARE_SLOTS
    #endif
    #define cymicrogpt_owned(o) (o)
    #define CYMICROGPT_VALUE_IS_HEAP_TYPE CYTHON_USE_TYPE_SPECS
    /* A spare back to life, as PyObject_Init(o, type) would: a reference to a heap type,
       refcount 1 (ob_type is still set: a deallocation leaves it).  Inlined, without the
       call's _Py_NewReference, which also tells tracemalloc (that then dates a recycled
       Value from its first allocation) and, in Py_TRACE_REFS debug builds, the list of
       all objects: those builds still call PyObject_Init. */
    static inline PyObject* cymicrogpt_revive(PyObject* o, PyTypeObject* type) {
    #ifdef Py_TRACE_REFS
        return PyObject_Init(o, type);
    #else
        if (PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE))
            Py_INCREF(type);
        Py_SET_REFCNT(o, 1);
        return o;
    #endif
    }
    """
    enum: SPARE_SLOTS "CYMICROGPT_SPARE_SLOTS"
    enum: SPARES "CYMICROGPT_SPARES"  # how many are kept: SPARE_SLOTS, 0 if free-threaded
    # Cython builds Value from a type spec, a heap type, on some builds (free-threaded)
    enum: VALUE_IS_HEAP_TYPE "CYMICROGPT_VALUE_IS_HEAP_TYPE"
    # o as an owned reference (its refcount already counts it): no incref
    Value owned "cymicrogpt_owned" (PyObject* o)
    PyObject* revive "cymicrogpt_revive" (PyObject* o, PyTypeObject* type)


cdef class SearchedGraph


cdef class ValueGraph(Arena):
    """The graph every Value lives in: an arena that also knows which Value holds which
    node, keeps the spare Value objects, when to collect, and the last search's layout.
    One per process (`graph` below); every Value op and backward goes through it.  (An
    Arena itself, not a holder of one: each op then reaches the nodes through one
    pointer, as it did when these were module globals.)"""
    # handles[i]: the Value of node i (borrowed), or NULL.  A plain pointer table: it holds
    # no Python references, and growing it (realloc) runs no Python.  Its capacity is never
    # below the arena's (make_room keeps them in step).
    cdef PyObject** handles
    cdef Py_ssize_t handles_capacity
    cdef Py_ssize_t collect_at  # nodes: above this, make_room collects first
    cdef PyObject* spares[SPARE_SLOTS]  # dead Values kept for reuse (see new_value), up to SPARES
    cdef Py_ssize_t n_spares
    cdef SearchedGraph last_search  # the layout and order of the last search (see SearchedGraph)

    def __cinit__(self):
        self.collect_at = MIN_COLLECT_AT
        self.last_search = SearchedGraph()
        self.grow_handles()

    cdef int grow_handles(self) except -1:
        """handles[] as large as the arena (new entries NULL); realloc, no Python."""
        cdef Py_ssize_t capacity = self.node_capacity
        if capacity <= self.handles_capacity:
            return 0
        cdef PyObject** grown = <PyObject**>realloc(self.handles, capacity * sizeof(PyObject*))
        if grown == NULL:
            raise MemoryError()
        memset(grown + self.handles_capacity, 0, (capacity - self.handles_capacity) * sizeof(PyObject*))
        self.handles, self.handles_capacity = grown, capacity
        return 0


cdef ValueGraph graph = ValueGraph()


cdef inline int make_room(ValueGraph g, Py_ssize_t nodes, Py_ssize_t edges) except -1:
    """Room for `nodes` nodes and `edges` edges.  Runs no Python (see make_room_slowly)."""
    if (g.n_nodes + nodes <= g.collect_at and g.n_nodes + nodes <= g.node_capacity
            and g.n_edges + edges <= g.edge_capacity):
        return 0
    return make_room_slowly(g, nodes, edges)


cdef int make_room_slowly(ValueGraph g, Py_ssize_t nodes, Py_ssize_t edges) except -1:
    """Collect garbage first when due, grow the arena, keep handles[] in step: all in C
    (the arena's growth runs no Python: Arena.reserve)."""
    if g.n_nodes + nodes > g.collect_at:
        collect_garbage(g)
        g.collect_at = max(MIN_COLLECT_AT, 2 * g.n_nodes)
    g.reserve(nodes, edges)
    return g.grow_handles()


cdef Py_ssize_t collect_garbage(ValueGraph g) noexcept:
    """Drop nodes no live Value can reach; compact the rest in order.  Returns live count.

    The compaction rewrites every kind but the range kinds (SUM, DOT), which Values never
    build: children in a and b (UNARY, ADD) or listed in edges.  C only."""
    cdef PyObject** handles = g.handles
    cdef int32_t[::1] kind = g.kind
    cdef int32_t[::1] a = g.a, b = g.b, n = g.n, edges = g.edges, stack = g.stack
    cdef double[::1] data = g.data, grad = g.grad, aux = g.aux, edge_grad = g.edge_grad
    cdef uint32_t[::1] mark = g.mark
    cdef int32_t[::1] new_index = g.order  # scratch: old index -> new index
    cdef Py_ssize_t count = g.n_nodes, i, j, top, live = 0, live_edges = 0
    cdef int32_t v, c, first
    cdef int32_t k
    cdef uint32_t epoch = g.next_epoch()
    # mark: every node reachable from a node that has a Value
    for i in range(count):
        if handles[i] == NULL or mark[i] == epoch:
            continue
        mark[i] = epoch
        stack[0], top = <int32_t>i, 1
        while top > 0:
            top -= 1
            v = stack[top]
            for j in range(child_count(kind[v], n[v])):
                c = child(kind[v], a[v], b[v], edges, <int32_t>j)
                if mark[c] != epoch:
                    mark[c] = epoch
                    stack[top] = c
                    top += 1
    # compact: children always precede their parents, so new_index[child] is known; a
    # node's listed children follow its predecessors' (each op appends its node and its
    # edges at once), so the edges compact in the same pass
    for i in range(count):
        if mark[i] != epoch:
            continue
        new_index[i] = <int32_t>live
        k = kind[i]
        first = a[i]  # (first child or first edge; read before a[live] is written: live may be i)
        data[live] = data[i]
        grad[live] = grad[i]
        aux[live] = aux[i]
        kind[live] = k
        n[live] = n[i]
        if lists_children(k):
            a[live], b[live] = <int32_t>live_edges, 0
            for j in range(first, first + child_count(k, n[live])):
                edges[live_edges] = new_index[edges[j]]
                edge_grad[live_edges] = edge_grad[j]
                live_edges += 1
        else:  # LEAF, UNARY, ADD
            a[live] = new_index[first] if child_count(k, n[live]) > 0 else 0
            b[live] = new_index[b[i]] if child_count(k, n[live]) > 1 else 0
        handles[live] = handles[i]
        if handles[live] != NULL:
            (<Value>handles[live]).index = <int32_t>live
        live += 1
    for i in range(live, count):
        handles[i] = NULL
    g.n_nodes = live
    g.n_edges = live_edges
    return live


cdef void drop_dead_top(ValueGraph g) noexcept:
    """Drop the nodes above the last one that has a Value: no live Value reaches them.

    A node is reachable only from itself and the nodes built after it (children precede
    their parents), so with no Value at or above node k, nodes k.. are garbage.  When a
    training step's Values die, this gives its whole graph back at once, with no
    collection: the next step is built in the same (cache-warm) memory.  A node's listed
    children were appended with it, after every earlier node's: they go too.  C only."""
    cdef Py_ssize_t top = g.n_nodes, i
    while top > 0 and g.handles[top - 1] == NULL:
        top -= 1
    for i in range(top, g.n_nodes):  # the edges go from the first dropped listing node's on
        if lists_children(g.kind[i]):
            g.n_edges = g.a[i]
            break
    g.n_nodes = top


def orders_reused() -> int:
    """Backward passes so far that reused the last search's order (see SearchedGraph)."""
    return graph.last_search.reuses


def collect() -> int:
    """Free every node no live Value can reach, now; returns the number of nodes kept."""
    return collect_garbage(graph)


def graph_size() -> int:
    """Nodes currently held by the arena (live or not yet collected)."""
    return graph.n_nodes


cdef inline int32_t node(Value v) except -1:
    """v's node index; a Value made with Value.__new__ and no data has none."""
    if v.index < 0:
        raise ValueError("this Value was never initialised (use Value(x))")
    return v.index


cdef inline Value bind(ValueGraph g, Value out, int32_t i):
    out.index = i
    g.handles[i] = <PyObject*>out
    return out





cdef inline Value new_value(ValueGraph g):
    """A Value with no node yet (index -1): a spare one if there is one (no Python runs
    then), else a new one (which may run the GC, so Python)."""
    cdef PyObject* o
    if g.n_spares == 0:
        return Value.__new__(Value)
    g.n_spares -= 1
    o = revive(g.spares[g.n_spares], <PyTypeObject*>Value)  # refcount 1
    (<Value>o).index = -1
    return owned(o)


# Value's tp_dealloc: forget its handle, then keep the object as a spare or free it
# (Cython's own tp_dealloc).  A tp_dealloc of its own, not a __dealloc__: Cython saves
# and restores the error state around every __dealloc__ (PyErr_Fetch, PyErr_Restore),
# ~60 instructions a Value (callgrind, bench_value.py).  It runs no Python: a Value
# holds no Python references.  Subclasses' instances are never kept (they own a dict).
cdef destructor free_value


cdef void forget(PyObject* o) noexcept:
    # (`graph` read in place, not bound to a local: a local reference costs an incref and
    # a decref per Value freed, +0.5 M instructions a demo step)
    cdef int32_t i = (<Value>o).index  # no reference taken: o is being deallocated
    if 0 <= i < graph.handles_capacity and graph.handles[i] == o:
        graph.handles[i] = NULL
        if i == graph.n_nodes - 1:
            drop_dead_top(graph)
    if graph.n_spares < SPARES and Py_TYPE(<object>o) == <PyTypeObject*>Value:
        graph.spares[graph.n_spares] = o
        graph.n_spares += 1
        if VALUE_IS_HEAP_TYPE:  # a dead object holds no reference to its type (new_value's
            Py_DECREF(Value)    # revive() takes one again), as when it is freed
    else:
        free_value(o)


# Every op below allocates its Value before it takes its room (an allocation may run the
# GC and its finalizers), reads its operands' indices after (a collection may move
# nodes), and runs only C from make_room() to bind().  Each takes `g`, a local
# reference to the graph, once: Cython increfs a module global at every call it is
# passed to.
cdef Value unary(Value a, double value, double local_grad):
    """A node with one child and its local gradient."""
    node(a)
    cdef ValueGraph g = graph
    cdef Value out = new_value(g)
    make_room(g, 1, 0)
    return bind(g, out, add_node(g, UNARY, a.index, 0, 0, value, local_grad))


cdef Value add(Value a, Value b):
    """a + b: local gradients 1 and 1, constants."""
    cdef ValueGraph g = graph
    cdef double value = g.data[node(a)] + g.data[node(b)]
    cdef Value out = new_value(g)
    make_room(g, 1, 0)
    return bind(g, out, add_node(g, ADD, a.index, b.index, 0, value, 0.0))


cdef Value multiply(Value a, Value b):
    """a * b: local gradients b.data and a.data, as they are now (stored in the node)."""
    cdef ValueGraph g = graph
    cdef double x = g.data[node(a)], y = g.data[node(b)]
    cdef Value out = new_value(g)
    make_room(g, 1, 2)
    cdef int32_t i = add_node(g, GRAD_LIST, <int32_t>g.n_edges, 0, 2, x * y, 0.0)
    add_graded_edge(g, a.index, y)
    add_graded_edge(g, b.index, x)
    return bind(g, out, i)


cdef inline bint is_number(x):
    """A real number operand: int and float at once (bool is an int, as in Python), and
    any numbers.Real (NumPy scalars, Fraction), converted to float by the op."""
    return isinstance(x, (int, float)) or isinstance(x, Real)


cdef double to_double(x, str what) except? -1.0:
    """float(x) for any real number (numbers.Real or __float__); TypeError otherwise
    (float() alone would also parse strings)."""
    if isinstance(x, (int, float)):
        return <double>x  # float(x), without making the float object
    if isinstance(x, Real) or hasattr(type(x), "__float__"):
        return float(x)
    raise TypeError(f"{what} must be a real number, got {type(x).__name__}")


def _leaf(data, grad):
    """Rebuild a pickled or copied Value: a leaf holding its data and grad."""
    out = Value(data)
    out.grad = grad
    return out


cdef inline int check_unbound(Value self) except -1:
    """Raise if `self` has a node: binding it again would leave its first node a handle
    to an object that may die (a dangling pointer)."""
    if self.index >= 0:
        raise RuntimeError("Value.__init__ called twice")
    return 0


cdef int make_node(Value self, double value, children, local_grads) except -1:
    """Initialise `self` as microgpt's generic node: children, each with its local gradient.
    (A function, not a cdef method: a method would give every Value a vtable pointer.)"""
    kids, grads = tuple(children), tuple(local_grads)
    if len(kids) != len(grads):
        raise ValueError(f"Value() got {len(kids)} children and {len(grads)} local gradients")
    cdef list local = [to_double(x, "a local gradient") for x in grads]  # Python runs here
    cdef Py_ssize_t k, n = len(kids)
    for k in range(n):
        if not isinstance(kids[k], Value):
            raise TypeError(f"a child must be a cymicrogpt.Value, got {type(kids[k]).__name__}")
        node(<Value>kids[k])
    cdef ValueGraph g = graph
    make_room(g, 1, n)  # from here on, C only
    check_unbound(self)  # the Python above may have initialised self (a __float__, a finalizer)
    cdef int32_t i = add_node(g, GRAD_LIST if n else LEAF, <int32_t>g.n_edges, 0, <int32_t>n, value, 0.0)
    for k in range(n):
        add_graded_edge(g, (<Value>kids[k]).index, <double>local[k])
    bind(g, self, i)
    return 0


cdef class Value:
    """A scalar in the computation graph; see the module docstring."""
    cdef int32_t index  # the node; -1: none yet

    def __cinit__(self):  # takes no arguments, so Cython passes it none: no parsing cost
        self.index = -1

    def __init__(self, data, children=(), local_grads=()):
        cdef double value = to_double(data, "Value()'s data")
        check_unbound(self)
        if (type(children) is tuple and len(<tuple>children) == 0
                and type(local_grads) is tuple and len(<tuple>local_grads) == 0):  # a leaf, fast
            make_room(graph, 1, 0)  # runs no Python: self is still unbound
            bind(graph, self, add_node(graph, LEAF, 0, 0, 0, value, 0.0))
        else:
            make_node(self, value, children, local_grads)

    def __reduce__(self):
        return _leaf, (self.data, self.grad)

    @property
    def data(self):
        return graph.data[node(self)]

    @data.setter
    def data(self, value):
        cdef double v = value  # converted first: float(value) may run Python
        graph.data[node(self)] = v

    @property
    def grad(self):
        return graph.grad[node(self)]

    @grad.setter
    def grad(self, value):
        cdef double v = value  # converted first: float(value) may run Python
        graph.grad[node(self)] = v

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # --- the ops, each exactly microgpt's ----------------------------------------------
    def __add__(self, other):
        if isinstance(other, Value):
            return add(self, <Value>other)
        if is_number(other):  # Value(other) leaf, local grad 1 -> one UNARY node
            return unary(self, graph.data[node(self)] + <double>other, 1.0)
        return NotImplemented

    def __radd__(self, other):
        return self + other

    def __mul__(self, other):
        cdef double c
        if isinstance(other, Value):
            return multiply(self, <Value>other)
        if is_number(other):  # local grad: the constant
            c = other
            return unary(self, graph.data[node(self)] * c, c)
        return NotImplemented

    def __rmul__(self, other):
        return self * other

    def __pow__(self, other, modulo):
        if modulo is not None or not is_number(other):
            return NotImplemented
        # microgpt's two expressions, with the exponent as given (not converted to float
        # first): a Fraction exponent's `other - 1` is exact, as in microgpt (1/3 - 1 in
        # floats is one bit off -2/3), and a NumPy scalar's `**` is NumPy's power, which
        # gives inf or nan with a RuntimeWarning where Python's float ** raises.
        x = graph.data[node(self)]  # a Python float
        out = x ** other
        local_grad = other * x ** (other - 1)
        if isinstance(out, complex) or isinstance(local_grad, complex):
            raise ValueError(f"negative number {x!r} raised to the fractional power {other!r}")
        return unary(self, out, local_grad)

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def exp(self):
        out = math.exp(graph.data[node(self)])  # OverflowError as in microgpt
        return unary(self, out, out)

    def log(self):
        x = graph.data[node(self)]
        out = math.log(x)  # ValueError for x <= 0, as in microgpt
        return unary(self, out, 1 / x)

    def relu(self):
        cdef double x = graph.data[node(self)]
        return unary(self, x if x > 0 else 0.0, 1.0 if x > 0 else 0.0)

    def backward(self):
        """Gradients of this Value into every node it was computed from (microgpt's order)."""
        # The GIL stays held: the arena is shared by every thread, and another thread's
        # op could otherwise grow (reallocate) it under this loop.
        backpropagate(self)


# --- backward: the last search's order, reused for the same graph ----------------------
# A training loop builds the same graph at every step, and drop_dead_top() builds it in
# the same nodes: same kinds, same children, same root.  The depth-first search's order
# is a function of exactly these (every node's kind, a, b and n, the edges, the root), so
# backward keeps a copy of them with the order it found, and the next time compares
# them (memcmp) instead of searching again: for micrograd's demo MLP, ~0.1M instructions
# instead of ~5M (callgrind, bench_value.py).  The copy is only taken when a search finds
# the same root, node count and edge count as the search before it: a loop that rebinds
# `loss = ...` builds each step's graph above the last one, and never pays for a copy.
cdef class SearchedGraph:
    """The layout a search ran on (nodes [0, n_nodes), edges [0, n_edges)) and its order."""
    cdef int32_t[::1] kind
    cdef int32_t[::1] a, b, n, edges, order
    cdef int32_t root
    cdef Py_ssize_t n_nodes, n_edges, count
    cdef bint saved  # the arrays hold that layout and its order (else only the sizes are known)
    cdef Py_ssize_t reuses  # backward passes that reused the order (for tests)

    def __cinit__(self):
        self.root, self.n_nodes, self.n_edges = -1, -1, -1
        self.kind = cells(<int32_t>0, 0)
        self.a, self.b, self.n = cells(<int32_t>0, 0), cells(<int32_t>0, 0), cells(<int32_t>0, 0)
        self.order, self.edges = cells(<int32_t>0, 0), cells(<int32_t>0, 0)

    cdef bint same_sizes(self, Arena ar, int32_t root) noexcept:
        return root == self.root and ar.n_nodes == self.n_nodes and ar.n_edges == self.n_edges

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges) except -1:
        """Room for a layout of this size (the old contents are not kept: remember() fills
        them); runs no Python (the GC paused, as in Arena.reserve)."""
        if self.kind.shape[0] >= nodes and self.edges.shape[0] >= edges:
            return 0
        cdef int32_t[::1] kind
        cdef int32_t[::1] a, b, n, order, edge_list
        cdef int was_enabled = pause_gc()
        try:
            kind, a, b, n = cells(<int32_t>0, nodes), cells(<int32_t>0, nodes), cells(<int32_t>0, nodes), cells(<int32_t>0, nodes)
            order, edge_list = cells(<int32_t>0, nodes), cells(<int32_t>0, edges)
            self.kind, self.a, self.b, self.n, self.order, self.edges = kind, a, b, n, order, edge_list
            self.saved = False
        finally:
            resume_gc(was_enabled)
        return 0

    cdef bint matches(self, Arena ar, int32_t root) noexcept:
        """Is ar's graph under `root` the one whose order is saved?"""
        cdef Py_ssize_t n = ar.n_nodes
        return (self.saved and self.same_sizes(ar, root)
                and same_prefix(ar.kind, self.kind, n) and same_prefix(ar.a, self.a, n)
                and same_prefix(ar.b, self.b, n) and same_prefix(ar.n, self.n, n)
                and same_prefix(ar.edges, self.edges, ar.n_edges))

    cdef void remember(self, Arena ar, int32_t root, Py_ssize_t count) noexcept:
        """After a search of ar under `root` that found `count` nodes in ar.order: the
        layout and its order are saved if it has the sizes of the search before and the
        room reserved for them (else only its sizes are noted)."""
        cdef Py_ssize_t n = ar.n_nodes, m = ar.n_edges
        if not self.same_sizes(ar, root) or self.kind.shape[0] < n or self.edges.shape[0] < m:
            self.root, self.n_nodes, self.n_edges, self.saved = root, n, m, False
            return
        self.kind[:n] = ar.kind[:n]
        self.a[:n] = ar.a[:n]
        self.b[:n] = ar.b[:n]
        self.n[:n] = ar.n[:n]
        self.order[:count] = ar.order[:count]
        self.edges[:m] = ar.edges[:m]
        self.count, self.saved = count, True


cdef inline bint same_prefix(const cell[::1] x, const cell[::1] y, Py_ssize_t count) noexcept nogil:
    """x[:count] == y[:count], bytewise (memcmp: the C library's vectorised compare)."""
    return count == 0 or memcmp(&x[0], &y[0], count * sizeof(cell)) == 0


cdef int backpropagate(Value v) except -1:
    """d(v)/d(node) for every node v was computed from, in microgpt's order.  C only."""
    cdef ValueGraph g = graph
    cdef SearchedGraph last = g.last_search
    cdef int32_t root = node(v)
    cdef Py_ssize_t count
    if last.same_sizes(g, root) and not last.saved:  # a copy is due: room first
        last.reserve(g.n_nodes, g.n_edges)
    if last.matches(g, root):
        last.reuses += 1
        g.pass_gradients(root, last.order, last.count)
    else:
        count = g.topological_order(root)
        last.remember(g, root, count)
        g.pass_gradients(root, g.order, count)
    return 0


free_value = (<PyTypeObject*>Value).tp_dealloc
if VALUE_IS_HEAP_TYPE != PyType_HasFeature(Value, Py_TPFLAGS_HEAPTYPE):  # forget() relies on it
    raise ImportError("cymicrogpt._value: Cython built Value unlike CYTHON_USE_TYPE_SPECS says")
(<PyTypeObject*>Value).tp_dealloc = forget
