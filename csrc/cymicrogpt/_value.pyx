# cython: language_level=3
"""`cymicrogpt.Value`: microgpt's scalar Value, on the compiled arena.

A drop-in for `cymicrogpt.reference.Value`: the same operators (reflected ones too),
`exp log relu`, `.data .grad .backward()`, built as the same graph (every op makes the
node microgpt makes, constants included as local gradients), so `.data` and `.grad`
come out bit-identical.  Values are handles onto nodes of one module-wide arena.

Memory: a node lives while a Value refers to it or to a node computed from it.  When
the arena has doubled since the last collection, the nodes no live Value can reach are
dropped and the rest compacted (order kept, so backward order is unchanged).  So a
training loop that rebinds `loss = ...` each step runs in flat memory; see
`graph_size()` and `collect()`.

Arithmetic on `.data` follows Python's float rules: `+ - *` are IEEE double operations
in C, exactly what Python does; `** exp log` call Python's own float `**`, `math.exp`
and `math.log`, so values and errors (ZeroDivisionError, OverflowError, ValueError)
are Python's.  Differences from the reference: `.data` is always a float (an int
`Value(2)` holds 2.0), and a negative number to a fractional power raises ValueError
where the reference would produce a complex number.
"""
cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport realloc
from libc.string cimport memset

import math

from cymicrogpt._arena cimport Arena, NodeKind, LEAF, SUM, DOT, UNARY, open_node, add_child, close_node

MIN_COLLECT_AT = 1 << 16  # nodes; below this the arena is never collected

cdef Arena tape = Arena()
cdef PyObject** handles = NULL  # handles[i]: the Value of node i (borrowed), or NULL
cdef Py_ssize_t handles_capacity = 0
cdef Py_ssize_t collect_at = MIN_COLLECT_AT


cdef int make_room(Py_ssize_t nodes, Py_ssize_t edges) except -1:
    """Reserve arena room (collecting garbage first when due) and keep handles[] in step."""
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


cdef Py_ssize_t collect_garbage() except -1:
    """Drop nodes no live Value can reach; compact the rest in order.  Returns live count."""
    cdef Py_ssize_t n = tape.n_nodes, i, top, live = 0
    cdef int64_t e, src_edge, dst_edge = 0
    cdef int32_t v, c
    cdef int32_t* new_index = tape.order  # scratch: old index -> new index
    cdef uint32_t epoch
    cdef Value handle
    tape.epoch += 1
    if tape.epoch == 0:
        memset(tape.mark, 0, tape.node_capacity * sizeof(uint32_t))
        tape.epoch = 1
    epoch = tape.epoch
    # mark: every node reachable from a node that has a Value
    for i in range(n):
        if handles[i] == NULL or tape.mark[i] == epoch:
            continue
        tape.mark[i] = epoch
        tape.stack[0] = <int32_t>i
        top = 1
        while top > 0:
            top -= 1
            v = tape.stack[top]
            for e in range(tape.first_child[v], tape.first_child[v + 1]):
                c = tape.children[e]
                if tape.mark[c] != epoch:
                    tape.mark[c] = epoch
                    tape.stack[top] = c
                    top += 1
    # compact: children always precede their parents, so new_index[child] is known
    for i in range(n):
        if tape.mark[i] != epoch:
            continue
        new_index[i] = <int32_t>live
        tape.data[live] = tape.data[i]
        tape.grad[live] = tape.grad[i]
        tape.aux[live] = tape.aux[i]
        tape.kind[live] = tape.kind[i]
        src_edge = tape.first_child[i]
        tape.first_child[live] = dst_edge
        for e in range(src_edge, tape.first_child[i + 1]):
            tape.children[dst_edge] = new_index[tape.children[e]]
            dst_edge += 1
        handles[live] = handles[i]
        if handles[live] != NULL:
            handle = <Value>handles[live]
            handle.index = <int32_t>live
        live += 1
    for i in range(live, n):
        handles[i] = NULL
    tape.first_child[live] = dst_edge
    tape.n_nodes = live
    tape.n_edges = dst_edge
    return live


def collect() -> int:
    """Free every node no live Value can reach, now; returns the number of nodes kept."""
    return collect_garbage()


def graph_size() -> int:
    """Nodes currently held by the arena (live or not yet collected)."""
    return tape.n_nodes


cdef inline Value wrap(int32_t index):
    cdef Value out = Value.__new__(Value)
    out.index = index
    handles[index] = <PyObject*>out
    return out


cdef inline int32_t node(Value v) except -1:
    """v's node index; a Value made with Value.__new__ and no data has none."""
    if v.index < 0:
        raise ValueError("this Value was never initialised (use Value(x))")
    return v.index


cdef Value binary(NodeKind kind, Value a, Value b, double value):
    """A SUM (a + b) or DOT (a * b) node with children (a, b), in that order."""
    node(a)
    node(b)
    make_room(1, 2)
    cdef int32_t i = open_node(tape, kind)
    add_child(tape, a.index)  # read after make_room: a collection may move nodes
    add_child(tape, b.index)
    close_node(tape, i, value, 0.0)
    return wrap(i)


cdef Value unary(Value a, double value, double local_grad):
    node(a)
    make_room(1, 1)
    cdef int32_t i = open_node(tape, UNARY)
    add_child(tape, a.index)
    close_node(tape, i, value, local_grad)
    return wrap(i)


cdef inline bint is_number(x):
    return isinstance(x, (int, float))  # bool included: Python treats it as an int


@cython.freelist(256)
cdef class Value:
    """A scalar in the computation graph; see the module docstring."""
    cdef int32_t index

    def __cinit__(self, *args, **kwargs):
        self.index = -1

    def __init__(self, data):
        if not isinstance(data, (int, float)):
            raise TypeError(f"Value() needs an int or float, got {type(data).__name__}")
        if self.index >= 0:
            raise RuntimeError("Value.__init__ called twice")
        cdef double value = float(data)
        make_room(1, 0)
        cdef int32_t i = open_node(tape, LEAF)
        close_node(tape, i, value, 0.0)
        self.index = i
        handles[i] = <PyObject*>self

    def __dealloc__(self):
        if self.index >= 0 and self.index < handles_capacity and handles[self.index] == <PyObject*>self:
            handles[self.index] = NULL

    @property
    def data(self):
        return tape.data[node(self)]

    @data.setter
    def data(self, value):
        tape.data[node(self)] = value

    @property
    def grad(self):
        return tape.grad[node(self)]

    @grad.setter
    def grad(self, value):
        tape.grad[node(self)] = value

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # --- the ops, each exactly microgpt's ----------------------------------------------
    def __add__(self, other):
        cdef Value b
        if isinstance(other, Value):
            b = other
            return binary(SUM, self, b, tape.data[node(self)] + tape.data[node(b)])
        if is_number(other):  # Value(other) leaf, local grad 1 -> one UNARY node
            return unary(self, tape.data[node(self)] + <double>float(other), 1.0)
        return NotImplemented

    def __radd__(self, other):
        return self + other

    def __mul__(self, other):
        cdef Value b
        if isinstance(other, Value):
            b = other
            return binary(DOT, self, b, tape.data[node(self)] * tape.data[node(b)])
        if is_number(other):  # local grad: the constant
            c = float(other)
            return unary(self, tape.data[node(self)] * <double>c, c)
        return NotImplemented

    def __rmul__(self, other):
        return self * other

    def __pow__(self, other, modulo):
        if modulo is not None or not is_number(other):
            return NotImplemented
        x = tape.data[node(self)]  # a Python float: ** below is Python's float pow
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
        cdef int32_t i = node(self)
        tape.backward(i)
