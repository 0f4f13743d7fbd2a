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
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport realloc
from libc.string cimport memset

import math

from cymicrogpt._arena cimport Arena, NodeKind, LEAF, UNARY, ADD, DOT, add_node

MIN_COLLECT_AT = 1 << 16  # nodes; below this the arena is never collected

cdef Arena tape = Arena()
# handles[i]: the Value of node i (borrowed), or NULL.  A plain pointer table: it holds
# no Python references, and growing it (realloc) runs no Python.
cdef PyObject** handles = NULL
cdef Py_ssize_t handles_capacity = 0
cdef Py_ssize_t collect_at = MIN_COLLECT_AT


cdef int make_room(Py_ssize_t nodes) except -1:
    """Reserve arena room (collecting garbage first when due) and keep handles[] in step.

    tape.reserve() may run Python (see Arena.reserve), which may build or free Values
    and even collect: callers read their operands' node indices only after this returns,
    and run no Python between it and their add_node()."""
    global handles, handles_capacity, collect_at
    if tape.n_nodes + nodes > collect_at:
        collect_garbage()
        collect_at = max(MIN_COLLECT_AT, 2 * tape.n_nodes)
    tape.reserve(nodes, 0)
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


cdef Py_ssize_t collect_garbage() except -1:
    """Drop nodes no live Value can reach; compact the rest in order.  Returns live count.

    Values build LEAF, UNARY (child a), ADD and one-pair DOT nodes (children a, b) only."""
    cdef Py_ssize_t n = tape.n_nodes, i, top, live = 0
    cdef int32_t v
    cdef uint8_t kind
    cdef int32_t[::1] new_index = tape.order  # scratch: old index -> new index
    cdef uint32_t epoch = tape.next_epoch()
    cdef Value handle
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
            if kind != LEAF:
                push_unmarked(tape.a[v], epoch, &top)
            if kind == ADD or kind == DOT:
                push_unmarked(tape.b[v], epoch, &top)
    # compact: children always precede their parents, so new_index[child] is known
    for i in range(n):
        if tape.mark[i] != epoch:
            continue
        new_index[i] = <int32_t>live
        kind = tape.kind[i]
        tape.data[live] = tape.data[i]
        tape.grad[live] = tape.grad[i]
        tape.aux[live] = tape.aux[i]
        tape.kind[live] = kind
        tape.a[live] = new_index[tape.a[i]] if kind != LEAF else 0
        tape.b[live] = new_index[tape.b[i]] if kind == ADD or kind == DOT else 0
        tape.n[live] = tape.n[i]
        handles[live] = handles[i]
        if handles[live] != NULL:
            handle = <Value>handles[live]
            handle.index = <int32_t>live
        live += 1
    for i in range(live, n):
        handles[i] = NULL
    tape.n_nodes = live
    return live


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


cdef Value new_node(NodeKind kind, Value a, Value b, double value, double local_grad):
    """A node with children a (and b for ADD, DOT), as a new Value.

    The Value object is allocated before the room is taken (an allocation may run the
    GC and its finalizers), and the children's indices are read after it (a collection
    may move nodes); from make_room() to the handle, only C runs."""
    node(a)
    if b is not None:
        node(b)
    cdef Value out = Value.__new__(Value)
    make_room(1)
    cdef int32_t i
    if kind == UNARY:
        i = add_node(tape, UNARY, a.index, 0, 0, value, local_grad)
    else:  # ADD (a + b) or DOT (a * b: one pair)
        i = add_node(tape, kind, a.index, b.index, 1, value, 0.0)
    out.index = i
    handles[i] = <PyObject*>out
    return out


cdef inline Value binary(NodeKind kind, Value a, Value b, double value):
    return new_node(kind, a, b, value, 0.0)


cdef inline Value unary(Value a, double value, double local_grad):
    return new_node(UNARY, a, None, value, local_grad)


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
        make_room(1)
        cdef int32_t i = add_node(tape, LEAF, 0, 0, 0, value, 0.0)
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
        cdef Value b
        if isinstance(other, Value):
            b = other
            return binary(ADD, self, b, tape.data[node(self)] + tape.data[node(b)])
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
