# cython: language_level=3
"""The arena's storage, growth, reset, and the topological backward pass.

backward() must add gradients into every node in exactly the order microgpt's
recursive `build_topo` + `reversed(topo)` does: floating-point addition is not
associative, and a node shared by several parents (a weight used at every position)
gets the last bits of its gradient from that order.  So we replay the same depth-first
search, iteratively (an explicit stack, no recursion limit), children in creation order.
"""
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset

import numpy as np

MIN_CAPACITY = 1024


cdef void* grow(void* ptr, Py_ssize_t count, size_t item_size) except NULL:
    cdef void* out = realloc(ptr, <size_t>count * item_size)
    if out == NULL:
        raise MemoryError(f"cannot grow the graph arena to {count} entries")
    return out


cdef class Arena:
    """Struct-of-arrays storage for graph nodes; see _arena.pxd for the layout."""

    def __cinit__(self):
        self.first_child = <int64_t*>malloc(sizeof(int64_t))
        if self.first_child == NULL:
            raise MemoryError()
        self.first_child[0] = 0
        self.recording = True
        self.epoch = 0
        self.data_array = np.empty(0)
        self.grad_array = np.empty(0)

    def __dealloc__(self):
        free(self.aux)
        free(self.kind)
        free(self.first_child)
        free(self.children)
        free(self.mark)
        free(self.order)
        free(self.stack)
        free(self.cursor)

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges) except -1:
        """Make room for `nodes` more nodes and `edges` more child links."""
        cdef Py_ssize_t need = self.n_nodes + nodes
        cdef Py_ssize_t cap
        cdef double* new_data
        cdef double* new_grad
        if need > self.node_capacity:
            cap = max(need, 2 * self.node_capacity, MIN_CAPACITY)
            # data/grad: new NumPy arrays (old views stay valid, they just stop updating).
            # Copied with memcpy, not NumPy slicing, which may release the GIL mid-copy.
            data_array = np.empty(cap)
            grad_array = np.empty(cap)
            new_data = <double*><size_t>data_array.ctypes.data
            new_grad = <double*><size_t>grad_array.ctypes.data
            if self.n_nodes:
                memcpy(new_data, self.data, self.n_nodes * sizeof(double))
                memcpy(new_grad, self.grad, self.n_nodes * sizeof(double))
            self.data_array, self.grad_array = data_array, grad_array
            self.data, self.grad = new_data, new_grad
            self.aux = <double*>grow(self.aux, cap, sizeof(double))
            self.kind = <uint8_t*>grow(self.kind, cap, sizeof(uint8_t))
            self.first_child = <int64_t*>grow(self.first_child, cap + 1, sizeof(int64_t))
            self.mark = <uint32_t*>grow(self.mark, cap, sizeof(uint32_t))
            memset(self.mark + self.node_capacity, 0, (cap - self.node_capacity) * sizeof(uint32_t))
            self.order = <int32_t*>grow(self.order, cap, sizeof(int32_t))
            self.stack = <int32_t*>grow(self.stack, cap, sizeof(int32_t))
            self.cursor = <int64_t*>grow(self.cursor, cap, sizeof(int64_t))
            self.node_capacity = cap
        need = self.n_edges + edges
        if need > self.edge_capacity:
            cap = max(need, 2 * self.edge_capacity, MIN_CAPACITY)
            self.children = <int32_t*>grow(self.children, cap, sizeof(int32_t))
            self.edge_capacity = cap
        if self.node_capacity >= 2**31:
            raise MemoryError("graph exceeds 2**31 nodes")
        return 0

    cdef void reset(self) noexcept:
        """Drop every node after the fixed ones (the graph of the previous sequence)."""
        self.n_nodes = self.n_fixed
        self.n_edges = self.first_child[self.n_fixed]
        self.generation += 1

    cdef Py_ssize_t topological_order(self, int32_t root) noexcept nogil:
        """Fill order[] with microgpt's topo order of the nodes under root; return its length.

        Post-order DFS, children in creation order, each node once.  Leaves are left out:
        they pass no gradient on, so their place in the order changes nothing.
        """
        cdef int32_t* order = self.order
        cdef int32_t* stack = self.stack
        cdef int64_t* cursor = self.cursor
        cdef int64_t* first_child = self.first_child
        cdef int32_t* children = self.children
        cdef uint8_t* kind = self.kind
        cdef uint32_t* mark = self.mark
        cdef Py_ssize_t n = 0, top = 0
        cdef int64_t e, end
        cdef int32_t v, c
        cdef bint descended
        self.epoch += 1
        if self.epoch == 0:  # wrapped around: forget every old mark
            memset(mark, 0, self.node_capacity * sizeof(uint32_t))
            self.epoch = 1
        cdef uint32_t epoch = self.epoch
        mark[root] = epoch
        stack[0] = root
        cursor[0] = first_child[root]
        top = 1
        while top > 0:
            v = stack[top - 1]
            e = cursor[top - 1]
            end = first_child[v + 1]
            descended = False
            while e < end:
                c = children[e]
                e += 1
                if kind[c] != LEAF and mark[c] != epoch:
                    mark[c] = epoch
                    cursor[top - 1] = e
                    stack[top] = c
                    cursor[top] = first_child[c]
                    top += 1
                    descended = True
                    break
            if not descended:
                order[n] = v
                n += 1
                top -= 1
        return n

    cdef int backward(self, int32_t root) except -1 nogil:
        """d(root)/d(node) for every node under root, accumulated in microgpt's order."""
        cdef Py_ssize_t n = self.topological_order(root)
        cdef Py_ssize_t i
        self.grad[root] = 1.0
        for i in range(n - 1, -1, -1):
            if backward_node(self, self.order[i]) < 0:
                with gil:
                    raise ValueError(f"unknown node kind {self.kind[self.order[i]]} at node {self.order[i]}")
        return 0


cdef inline int backward_node(Arena a, int32_t v) noexcept nogil:
    """The derivative table: pass node v's gradient to its children (see _arena.pxd)."""
    cdef double g = a.grad[v]
    cdef double* grad = a.grad
    cdef double* data = a.data
    cdef int32_t* child = a.children + a.first_child[v]
    cdef int64_t count = a.first_child[v + 1] - a.first_child[v]
    cdef int64_t j
    cdef int32_t x, y
    cdef uint8_t kind = a.kind[v]
    if kind == SUM:  # d(sum)/d(child) = 1
        for j in range(count):
            grad[child[j]] += g
    elif kind == DOT:  # d(x*y)/dx = y, d(x*y)/dy = x; x before y, as in microgpt's Value.__mul__
        for j in range(0, count, 2):
            x = child[j]
            y = child[j + 1]
            grad[x] += data[y] * g
            grad[y] += data[x] * g
    elif kind == UNARY:  # local gradient stored at creation
        grad[child[0]] += a.aux[v] * g
    elif kind != LEAF:
        return -1
    return 0
