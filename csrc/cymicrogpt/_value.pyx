"""`cymicrogpt.Value`: microgpt's scalar Value, on the compiled arena.

A drop-in for `cymicrogpt.reference.Value`: microgpt's constructor
`Value(data, children=(), local_grads=())` (any number of children, each with its local
gradient), the same operators (reflected ones too), `exp log relu`, `.data .grad
.backward()`, built as the same graph (every op makes the node microgpt makes, constants
included as local gradients), so `.data` and `.grad` come out bit-identical.  As in
microgpt, every local gradient is fixed when its node is built: changing an operand's
`.data` afterwards changes no gradient (a product stores both factors' values, a
GRAD_LIST node).  Values are handles onto nodes of one module-wide arena.

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
store: Python runs only while an op takes its room (make_room), and an op reads its
operands' node indices after that.  So Values from any threads may be mixed in one
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
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport realloc
from libc.string cimport memcmp, memcpy, memset

import math
from numbers import Real

import numpy as np

from cymicrogpt._arena cimport (Arena, NodeKind, LEAF, UNARY, ADD, GRAD_LIST, add_node,
                                add_graded_edge)

# Nodes; below this the arena is never collected.  A collection costs in proportion to
# the arena's nodes: micrograd's demo MLP (~65k nodes a step, benchmarks/bench_value.py)
# took 64.9M instructions a step at 2^16 (about two collections a step), 61.2M at 2^17,
# 61.8M at 2^18 (callgrind, steps 2-9), in an arena of the same capacity (2^17 nodes).
MIN_COLLECT_AT = 1 << 17

cdef Arena tape = Arena()
# handles[i]: the Value of node i (borrowed), or NULL.  A plain pointer table: it holds
# no Python references, and growing it (realloc) runs no Python.  Its capacity is never
# below the arena's (make_room keeps them in step).
cdef PyObject** handles = NULL
cdef Py_ssize_t handles_capacity = 0
cdef Py_ssize_t collect_at = MIN_COLLECT_AT


cdef inline int make_room(Py_ssize_t nodes, Py_ssize_t edges) except -1:
    """Room for `nodes` nodes and `edges` edges; runs Python only when the room is not
    there yet (see make_room_slowly)."""
    if (tape.n_nodes + nodes <= collect_at and tape.n_nodes + nodes <= tape.node_capacity
            and tape.n_edges + edges <= tape.edge_capacity):
        return 0
    return make_room_slowly(nodes, edges)


cdef int make_room_slowly(Py_ssize_t nodes, Py_ssize_t edges) except -1:
    """Reserve arena room (collecting garbage first when due) and keep handles[] in step.

    tape.reserve() may run Python (see Arena.reserve), which may build or free Values
    and even collect: callers read their operands' node indices only after this returns,
    and run no Python between it and their add_node()."""
    global handles, handles_capacity, collect_at
    if tape.n_nodes + nodes > collect_at:
        collect_garbage()
        collect_at = max(MIN_COLLECT_AT, 2 * tape.n_nodes)
    tape.reserve(nodes, edges)
    cdef PyObject** grown
    if tape.node_capacity > handles_capacity:
        grown = <PyObject**>realloc(handles, tape.node_capacity * sizeof(PyObject*))
        if grown == NULL:
            raise MemoryError()
        memset(grown + handles_capacity, 0, (tape.node_capacity - handles_capacity) * sizeof(PyObject*))
        handles, handles_capacity = grown, tape.node_capacity
    return 0


cdef inline void push_unmarked(int32_t c, uint32_t epoch, Py_ssize_t* top) noexcept:
    if tape.mark[c] != epoch:
        tape.mark[c] = epoch
        tape.stack[top[0]] = c
        top[0] += 1


cdef Py_ssize_t collect_garbage() noexcept:
    """Drop nodes no live Value can reach; compact the rest in order.  Returns live count.

    Values build LEAF, UNARY (child a), ADD (children a, b) and GRAD_LIST nodes (children
    edges[a..a+n)).  C only."""
    cdef Py_ssize_t n = tape.n_nodes, i, k, top, live = 0, live_edges = 0
    cdef int32_t v
    cdef uint8_t kind
    cdef int32_t[::1] new_index = tape.order  # scratch: old index -> new index
    cdef uint32_t epoch = tape.next_epoch()
    # mark: every node reachable from a node that has a Value
    for i in range(n):
        if handles[i] == NULL or tape.mark[i] == epoch:
            continue
        top = 0
        push_unmarked(<int32_t>i, epoch, &top)
        while top > 0:
            top -= 1
            v = tape.stack[top]
            kind = tape.kind[v]
            if kind == UNARY or kind == ADD:
                push_unmarked(tape.a[v], epoch, &top)
            if kind == ADD:
                push_unmarked(tape.b[v], epoch, &top)
            elif kind == GRAD_LIST:
                for k in range(tape.a[v], tape.a[v] + tape.n[v]):
                    push_unmarked(tape.edges[k], epoch, &top)
    # compact: children always precede their parents, so new_index[child] is known; a
    # GRAD_LIST node's edges follow its predecessors' (each op appends its node and its
    # edges at once), so the edges compact in the same pass
    for i in range(n):
        if tape.mark[i] != epoch:
            continue
        new_index[i] = <int32_t>live
        kind = tape.kind[i]
        tape.data[live] = tape.data[i]
        tape.grad[live] = tape.grad[i]
        tape.aux[live] = tape.aux[i]
        tape.kind[live] = kind
        tape.n[live] = tape.n[i]
        tape.a[live] = new_index[tape.a[i]] if kind == UNARY or kind == ADD else 0
        tape.b[live] = new_index[tape.b[i]] if kind == ADD else 0
        if kind == GRAD_LIST:
            tape.a[live] = <int32_t>live_edges
            for k in range(tape.a[i], tape.a[i] + tape.n[i]):
                tape.edges[live_edges] = new_index[tape.edges[k]]
                tape.edge_grad[live_edges] = tape.edge_grad[k]
                live_edges += 1
        handles[live] = handles[i]
        if handles[live] != NULL:
            (<Value>handles[live]).index = <int32_t>live
        live += 1
    for i in range(live, n):
        handles[i] = NULL
    tape.n_nodes = live
    tape.n_edges = live_edges
    return live


cdef void drop_dead_top() noexcept:
    """Drop the nodes above the last one that has a Value: no live Value reaches them.

    A node is reachable only from itself and the nodes built after it (children precede
    their parents), so with no Value at or above node k, nodes k.. are garbage.  When a
    training step's Values die, this gives its whole graph back at once, with no
    collection: the next step is built in the same (cache-warm) memory.  A GRAD_LIST
    node's edges were appended with it, after every earlier node's: they go too.  C only."""
    cdef Py_ssize_t top = tape.n_nodes, i
    while top > 0 and handles[top - 1] == NULL:
        top -= 1
    for i in range(top, tape.n_nodes):  # the edges go from the first dropped GRAD_LIST node's on
        if tape.kind[i] == GRAD_LIST:
            tape.n_edges = tape.a[i]
            break
    tape.n_nodes = top


def orders_reused() -> int:
    """Backward passes so far that reused the last search's order (see SearchedGraph)."""
    return last_search.reuses


def collect() -> int:
    """Free every node no live Value can reach, now; returns the number of nodes kept."""
    return collect_garbage()


def graph_size() -> int:
    """Nodes currently held by the arena (live or not yet collected)."""
    return tape.n_nodes


cdef inline int32_t node(Value v) except -1:
    """v's node index; a Value made with Value.__new__ and no data has none."""
    if v.index < 0:
        raise ValueError("this Value was never initialised (use Value(x))")
    return v.index


cdef inline Value bind(Value out, int32_t i):
    out.index = i
    handles[i] = <PyObject*>out
    return out


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

cdef PyObject* spares[SPARE_SLOTS]
cdef Py_ssize_t n_spares = 0


cdef inline Value new_value():
    """A Value with no node yet (index -1): a spare one if there is one (no Python runs
    then), else a new one (which may run the GC, so Python)."""
    global n_spares
    cdef PyObject* o
    if n_spares == 0:
        return Value.__new__(Value)
    n_spares -= 1
    o = revive(spares[n_spares], <PyTypeObject*>Value)  # refcount 1
    (<Value>o).index = -1
    return owned(o)


# Value's tp_dealloc: forget its handle, then keep the object as a spare or free it
# (Cython's own tp_dealloc).  A tp_dealloc of its own, not a __dealloc__: Cython saves
# and restores the error state around every __dealloc__ (PyErr_Fetch, PyErr_Restore),
# ~60 instructions a Value (callgrind, bench_value.py).  It runs no Python: a Value
# holds no Python references.  Subclasses' instances are never kept (they own a dict).
cdef destructor free_value


cdef void forget(PyObject* o) noexcept:
    global n_spares
    cdef int32_t i = (<Value>o).index  # no reference taken: o is being deallocated
    if 0 <= i < handles_capacity and handles[i] == o:
        handles[i] = NULL
        if i == tape.n_nodes - 1:
            drop_dead_top()
    if n_spares < SPARES and Py_TYPE(<object>o) == <PyTypeObject*>Value:
        spares[n_spares] = o
        n_spares += 1
        if VALUE_IS_HEAP_TYPE:  # a dead object holds no reference to its type (new_value's
            Py_DECREF(Value)    # revive() takes one again), as when it is freed
    else:
        free_value(o)


# Every op below allocates its Value before it takes its room (an allocation may run the
# GC and its finalizers), reads its operands' indices after (a collection may move
# nodes), and runs only C from make_room() to bind().  Each takes `ar`, a local
# reference to the tape, once: Cython increfs a module global at every call it is
# passed to.
cdef Value unary(Value a, double value, double local_grad):
    """A node with one child and its local gradient."""
    node(a)
    cdef Value out = new_value()
    make_room(1, 0)
    cdef Arena ar = tape
    return bind(out, add_node(ar, UNARY, a.index, 0, 0, value, local_grad))


cdef Value add(Value a, Value b):
    """a + b: local gradients 1 and 1, constants."""
    cdef double value = tape.data[node(a)] + tape.data[node(b)]
    cdef Value out = new_value()
    make_room(1, 0)
    cdef Arena ar = tape
    return bind(out, add_node(ar, ADD, a.index, b.index, 0, value, 0.0))


cdef Value multiply(Value a, Value b):
    """a * b: local gradients b.data and a.data, as they are now (stored in the node)."""
    cdef double x = tape.data[node(a)], y = tape.data[node(b)]
    cdef Value out = new_value()
    make_room(1, 2)
    cdef Arena ar = tape
    cdef int32_t i = add_node(ar, GRAD_LIST, <int32_t>ar.n_edges, 0, 2, x * y, 0.0)
    add_graded_edge(ar, a.index, y)
    add_graded_edge(ar, b.index, x)
    return bind(out, i)


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
    cdef list local = [to_double(g, "a local gradient") for g in grads]  # Python runs here
    cdef Py_ssize_t k, n = len(kids)
    for k in range(n):
        if not isinstance(kids[k], Value):
            raise TypeError(f"a child must be a cymicrogpt.Value, got {type(kids[k]).__name__}")
        node(<Value>kids[k])
    make_room(1, n)  # from here on, C only
    check_unbound(self)  # the Python above may have initialised self (a __float__, a finalizer)
    cdef int32_t i = add_node(tape, GRAD_LIST if n else LEAF, <int32_t>tape.n_edges, 0, <int32_t>n, value, 0.0)
    for k in range(n):
        add_graded_edge(tape, (<Value>kids[k]).index, <double>local[k])
    bind(self, i)
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
            make_room(1, 0)
            check_unbound(self)  # again: make_room may have run Python (see make_node)
            bind(self, add_node(tape, LEAF, 0, 0, 0, value, 0.0))
        else:
            make_node(self, value, children, local_grads)

    def __reduce__(self):
        return _leaf, (self.data, self.grad)

    @property
    def data(self):
        return tape.data[node(self)]

    @data.setter
    def data(self, value):
        cdef double v = value  # converted first: float(value) may run Python
        tape.data[node(self)] = v

    @property
    def grad(self):
        return tape.grad[node(self)]

    @grad.setter
    def grad(self, value):
        cdef double v = value  # converted first: float(value) may run Python
        tape.grad[node(self)] = v

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # --- the ops, each exactly microgpt's ----------------------------------------------
    def __add__(self, other):
        if isinstance(other, Value):
            return add(self, <Value>other)
        if is_number(other):  # Value(other) leaf, local grad 1 -> one UNARY node
            return unary(self, tape.data[node(self)] + <double>other, 1.0)
        return NotImplemented

    def __radd__(self, other):
        return self + other

    def __mul__(self, other):
        cdef double c
        if isinstance(other, Value):
            return multiply(self, <Value>other)
        if is_number(other):  # local grad: the constant
            c = other
            return unary(self, tape.data[node(self)] * c, c)
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
        x = tape.data[node(self)]  # a Python float
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
        out = math.exp(tape.data[node(self)])  # OverflowError as in microgpt
        return unary(self, out, out)

    def log(self):
        x = tape.data[node(self)]
        out = math.log(x)  # ValueError for x <= 0, as in microgpt
        return unary(self, out, 1 / x)

    def relu(self):
        cdef double x = tape.data[node(self)]
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
    cdef uint8_t[::1] kind
    cdef int32_t[::1] a, b, n, edges, order
    cdef int32_t root
    cdef Py_ssize_t n_nodes, n_edges, count
    cdef bint saved  # the arrays hold that layout and its order (else only the sizes are known)
    cdef Py_ssize_t reuses  # backward passes that reused the order (for tests)

    def __cinit__(self):
        self.root, self.n_nodes, self.n_edges = -1, -1, -1
        self.allocate(0, 0)

    cdef bint same_sizes(self, int32_t root) noexcept:
        return root == self.root and tape.n_nodes == self.n_nodes and tape.n_edges == self.n_edges

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges) except -1:
        """Room for a layout of this size (runs Python when it grows)."""
        if self.kind.shape[0] < nodes or self.edges.shape[0] < edges:
            self.allocate(nodes, edges)
        return 0

    cdef int allocate(self, Py_ssize_t nodes, Py_ssize_t edges) except -1:
        # Every array is taken before any is installed: taking one runs Python (the GC,
        # whose callbacks and finalizers may run a backward, which may fill and save
        # this very copy), and an array installed after that would sit, unfilled, in a
        # copy marked as saved.  Installed, then marked as not saved, in C only.
        cdef uint8_t[::1] kind = np.empty(nodes, np.uint8)
        cdef int32_t[::1] a = np.empty(nodes, np.int32), b = np.empty(nodes, np.int32)
        cdef int32_t[::1] n = np.empty(nodes, np.int32), order = np.empty(nodes, np.int32)
        cdef int32_t[::1] edge_list = np.empty(edges, np.int32)
        self.kind, self.a, self.b, self.n, self.order, self.edges = kind, a, b, n, order, edge_list
        self.saved = False
        return 0

    cdef bint matches(self, int32_t root) noexcept:
        """Is the tape's graph under `root` the one whose order is saved?  C only."""
        cdef Py_ssize_t n = tape.n_nodes
        if not (self.saved and self.same_sizes(root)):
            return False
        if n == 0:
            return True
        return (memcmp(&tape.kind[0], &self.kind[0], n) == 0
                and memcmp(&tape.a[0], &self.a[0], 4 * n) == 0
                and memcmp(&tape.b[0], &self.b[0], 4 * n) == 0
                and memcmp(&tape.n[0], &self.n[0], 4 * n) == 0
                and (tape.n_edges == 0 or memcmp(&tape.edges[0], &self.edges[0], 4 * tape.n_edges) == 0))

    cdef void remember(self, int32_t root, Py_ssize_t count) noexcept:
        """After a search of the tape under `root` that found `count` nodes in tape.order:
        the layout and its order are saved if it has the sizes of the search before and
        the room reserved for them (else only its sizes are noted).  C only."""
        cdef Py_ssize_t n = tape.n_nodes
        if not self.same_sizes(root) or self.kind.shape[0] < n or self.edges.shape[0] < tape.n_edges:
            self.root, self.n_nodes, self.n_edges, self.saved = root, n, tape.n_edges, False
            return
        if n:
            memcpy(&self.kind[0], &tape.kind[0], n)
            memcpy(&self.a[0], &tape.a[0], 4 * n)
            memcpy(&self.b[0], &tape.b[0], 4 * n)
            memcpy(&self.n[0], &tape.n[0], 4 * n)
            memcpy(&self.order[0], &tape.order[0], 4 * count)
        if tape.n_edges:
            memcpy(&self.edges[0], &tape.edges[0], 4 * tape.n_edges)
        self.count, self.saved = count, True


cdef SearchedGraph last_search = SearchedGraph()


cdef int backpropagate(Value v) except -1:
    """d(v)/d(node) for every node v was computed from, in microgpt's order."""
    node(v)
    if last_search.same_sizes(v.index) and not last_search.saved:  # a copy is due: room first
        last_search.reserve(tape.n_nodes, tape.n_edges)  # Python may run: v's index is read after
    cdef int32_t root = v.index
    cdef Py_ssize_t count
    if last_search.matches(root):
        last_search.reuses += 1
        tape.pass_gradients(root, &last_search.order[0], last_search.count)
    else:
        count = tape.listed_order(root)  # Value builds no range nodes (SUM, DOT): never -1
        last_search.remember(root, count)
        tape.pass_gradients(root, &tape.order[0], count)
    return 0


make_room_slowly(0, 0)  # sizes handles[] to the arena: make_room's fast path relies on it


free_value = (<PyTypeObject*>Value).tp_dealloc
if VALUE_IS_HEAP_TYPE != PyType_HasFeature(Value, Py_TPFLAGS_HEAPTYPE):  # forget() relies on it
    raise ImportError("cymicrogpt._value: Cython built Value unlike CYTHON_USE_TYPE_SPECS says")
(<PyTypeObject*>Value).tp_dealloc = forget
