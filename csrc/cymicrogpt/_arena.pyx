"""The arena's storage and growth, the depth-first topological order, and the backward pass.

The backward pass must add gradients into every node in exactly the order microgpt's
recursive `build_topo` + `reversed(topo)` does: floating-point addition is not
associative, and a node shared by several parents (a weight used at every position) gets
the last bits of its gradient from that order.  So we replay the same depth-first search,
iteratively (an explicit stack, no recursion limit), children in microgpt's order (the
kind table, _arena.pxd).  The search is all the arena knows of orders: its clients keep
the orders they reuse (the model's order templates in _ops.pyx, Value's last search in
_value.pyx).
"""
from cython.view cimport array as cells_array
from libc.stdint cimport int32_t, uint32_t

from cymicrogpt._kernels cimport axpy_pair, axpy_rows, outer_add, outer_add_many

import numpy as np

cdef Py_ssize_t MIN_CAPACITY = 1024


cdef extern from "Python.h":
    # The cyclic GC's switch (C API, Python >= 3.10).  Off, no allocation can start a
    # collection, so no finalizer or gc callback (Python code) runs inside growth.
    int PyGC_Enable()
    int PyGC_Disable()


cdef int pause_gc() noexcept:
    """Switch the cyclic GC off; returns whether it was on (for resume_gc)."""
    return PyGC_Disable()


cdef void resume_gc(int was_enabled) noexcept:
    if was_enabled:
        PyGC_Enable()


cdef cell[::1] cells(cell zero, Py_ssize_t capacity):
    """A new array of `capacity` cells (at least 1) of zero's type, uninitialised.

    To grow an array in use, call it with the cyclic GC paused (pause_gc): allocating the
    array and its memoryview then runs no Python."""
    cdef bytes format  # the buffer protocol's code of the cell type
    if cell is double:
        format = b"d"
    elif cell is int32_t:
        format = b"i"
    else:
        format = b"I"
    return cells_array(shape=(max(capacity, 1),), itemsize=sizeof(cell), format=format)


cdef cell[::1] resized(cell[::1] old, Py_ssize_t used, Py_ssize_t capacity):
    """A new array of `capacity` cells holding old[:used]; old is left as it was (see
    cells: call it with the GC paused).  A MemoryError leaves the caller's arrays as
    they were."""
    cdef cell[::1] fresh = cells(<cell>0, capacity)
    fresh[:used] = old[:used]
    return fresh


cdef class Arena:
    """Struct-of-arrays storage for graph nodes; see _arena.pxd for the layout."""

    def __cinit__(self):
        self.recording = True
        # One cell each (capacity 0): grow() resizes them like any others.
        self.data, self.grad, self.aux, self.edge_grad = cells(0.0, 0), cells(0.0, 0), cells(0.0, 0), cells(0.0, 0)
        self.kind = cells(<int32_t>0, 0)
        self.a, self.b, self.n, self.edges = cells(<int32_t>0, 0), cells(<int32_t>0, 0), cells(<int32_t>0, 0), cells(<int32_t>0, 0)
        self.span_len, self.order = cells(<int32_t>0, 0), cells(<int32_t>0, 0)
        self.stack, self.cursor = cells(<int32_t>0, 0), cells(<int32_t>0, 0)
        self.mark, self.span_epoch = cells(<uint32_t>0, 0), cells(<uint32_t>0, 0)
        self.reserve(MIN_CAPACITY, MIN_CAPACITY)

    # --- growth --------------------------------------------------------------------------
    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges) except -1:
        """Make room for `nodes` more nodes and `edges` more edges.

        Growth runs no Python: the cyclic GC is paused while it allocates (so no finalizer
        or gc callback can build nodes meanwhile, and no other thread can take the GIL),
        every new array is taken before any is installed (a MemoryError leaves the arena
        as it was), and the arena is consistent before the GC may run again.  An array a
        client still holds (a NumPy view from node_values()) keeps its old memory alive.
        """
        if self.n_nodes + nodes <= self.node_capacity and self.n_edges + edges <= self.edge_capacity:
            return 0
        cdef int was_enabled = pause_gc()
        try:
            self.grow(nodes, edges)
        finally:
            resume_gc(was_enabled)
        return 0

    cdef int grow(self, Py_ssize_t nodes, Py_ssize_t edges) except -1:
        """reserve()'s growth, with the GC paused: new arrays first, then installed."""
        cdef Py_ssize_t used = self.n_nodes, cap = self.node_capacity
        cdef Py_ssize_t used_edges = self.n_edges, edge_cap = self.edge_capacity
        if used + nodes > cap:
            cap = max(used + nodes, 2 * cap, MIN_CAPACITY)
        if used_edges + edges > edge_cap:
            edge_cap = max(used_edges + edges, 2 * edge_cap, MIN_CAPACITY)
        if cap > MAX_INDEX or edge_cap > MAX_INDEX:
            raise MemoryError(f"the graph would exceed {MAX_INDEX} nodes or edges")
        cdef double[::1] data = self.data, grad = self.grad, aux = self.aux, edge_grad = self.edge_grad
        cdef int32_t[::1] kind = self.kind
        cdef int32_t[::1] a = self.a, b = self.b, n = self.n, edges_ = self.edges
        cdef int32_t[::1] span_len = self.span_len, order = self.order, stack = self.stack, cursor = self.cursor
        cdef uint32_t[::1] mark = self.mark, span_epoch = self.span_epoch
        if cap > self.node_capacity:
            data, grad, aux = resized(data, used, cap), resized(grad, used, cap), resized(aux, used, cap)
            kind = resized(kind, used, cap)
            a, b, n = resized(a, used, cap), resized(b, used, cap), resized(n, used, cap)
            # the search's scratch: nothing to keep, and marks restart at 0, which no epoch equals
            mark, span_epoch = cells(<uint32_t>0, cap), cells(<uint32_t>0, cap)
            span_len, order = cells(<int32_t>0, cap), cells(<int32_t>0, cap)
            stack, cursor = cells(<int32_t>0, cap), cells(<int32_t>0, cap)
            mark[:] = 0
            span_epoch[:] = 0
        if edge_cap > self.edge_capacity:
            edges_, edge_grad = resized(edges_, used_edges, edge_cap), resized(edge_grad, used_edges, edge_cap)
        # Every array taken: install them all.
        self.data, self.grad, self.aux, self.kind = data, grad, aux, kind
        self.a, self.b, self.n, self.edges, self.edge_grad = a, b, n, edges_, edge_grad
        self.mark, self.span_epoch, self.span_len = mark, span_epoch, span_len
        self.order, self.stack, self.cursor = order, stack, cursor
        self.edge_capacity = edge_cap
        if cap > self.node_capacity:
            self.epoch = 0
            self.node_capacity = cap
            # Last: dropping a NumPy view could run Python (a weakref callback on it).
            self.data_array = self.grad_array = None
        return 0

    cdef void reset(self) noexcept:
        """Drop every node after the fixed ones (the graph of the previous sequence)."""
        self.n_nodes = self.n_fixed
        self.n_edges = 0  # fixed nodes are leaves: they own no edges

    def node_values(self):
        """NumPy view of every node's value, zero-copy (the arena's own memory).  A growing
        arena moves to new memory: a view taken before still reads the old memory, which
        it keeps alive, but no longer the arena's."""
        if self.data_array is None:
            self.data_array = np.asarray(self.data)
        return self.data_array

    def node_grads(self):
        """NumPy view of every node's gradient (as node_values)."""
        if self.grad_array is None:
            self.grad_array = np.asarray(self.grad)
        return self.grad_array

    # --- the depth-first search ---------------------------------------------------------
    cdef uint32_t next_epoch(self) noexcept nogil:
        """A fresh mark value for one search (mark[i] == epoch: visited in it)."""
        self.epoch += 1
        if self.epoch == 0:  # wrapped around: forget every old mark
            self.mark[:] = 0
            self.span_epoch[:] = 0
            self.epoch = 1
        return self.epoch

    cdef Py_ssize_t topological_order(self, int32_t root) noexcept nogil:
        """Fill order[] with microgpt's topological order of the nodes under root.

        Post-order depth-first search, children in the kind table's order, each node
        once.  Leaves are left out: they pass no gradient on, so their place in the order
        changes nothing.  Returns the length of the order.
        """
        return depth_first(self, root)

    cdef void pass_gradients(self, int32_t root, const int32_t[::1] order, Py_ssize_t count,
                             const int32_t[::1] groups=None, const int32_t[::1] deferred=None) noexcept nogil:
        """The backward pass proper, over the first `count` entries of `order`, with the
        linear groups of `groups` (records of GROUP_FIELDS, ascending starts: see
        find_linear_groups) each passed as a whole, and the weight gradients of the groups
        flagged GROUP_DEFERRED added at the end, in the order `deferred` lists them (see
        defer_weight_gradients)."""
        cdef const int32_t[::1] kind = self.kind
        cdef const int32_t[::1] a = self.a, b = self.b, n = self.n, edges = self.edges
        cdef const double[::1] data = self.data, aux = self.aux, edge_grad = self.edge_grad
        cdef double[::1] grad = self.grad
        cdef Py_ssize_t i = count, g = -1, next_end = -1  # next_end: where group g ends
        if groups is not None and groups.shape[0] >= GROUP_FIELDS:
            g = groups.shape[0] // GROUP_FIELDS - 1  # the next group to meet, walking down
            next_end = group_end(groups, g)
        grad[root] = 1.0
        while i > 0:
            if i == next_end:
                i = groups[GROUP_FIELDS * g]
                pass_linear_group(kind, a, b, n, edges, data, aux, edge_grad, grad, order, groups, g)
                g -= 1
                next_end = group_end(groups, g) if g >= 0 else -1
                continue
            i = pass_nodes(kind, a, b, n, edges, data, aux, edge_grad, grad, order, max(next_end, 0), i)
        if deferred is not None and deferred.shape[0] > 0:
            add_deferred_weight_gradients(a, b, n, data, grad, groups, deferred)


# --- node by node ---------------------------------------------------------------------------
cdef inline Py_ssize_t pass_nodes(const int32_t[::1] kind, const int32_t[::1] a, const int32_t[::1] b,
                                  const int32_t[::1] n, const int32_t[::1] edges, const double[::1] data,
                                  const double[::1] aux, const double[::1] edge_grad,
                                  double[::1] grad,  # IN/OUT
                                  const int32_t[::1] order, Py_ssize_t low, Py_ssize_t i) noexcept nogil:
    """The backward of order[low:i], last entry first, node by node (backward_node); returns
    low.  A run of entries of one of the common kinds (UNARY, ADD, DOT of one pair: most nodes
    the groups leave) is passed by a loop of its own: the same steps in the same order,
    without backward_node's switch over every kind at each node (measured: ~7k fewer
    instructions a default step, of ~470k)."""
    cdef int32_t v, k
    while i > low:
        i -= 1
        v = order[i]
        k = kind[v]
        if k == UNARY:
            unary_backward(aux, grad, a[v], v, grad[v])
            while i > low and kind[order[i - 1]] == UNARY:
                i -= 1
                v = order[i]
                unary_backward(aux, grad, a[v], v, grad[v])
        elif k == DOT and n[v] == 1:
            mul_backward(grad, data, a[v], b[v], grad[v])
            while i > low and kind[order[i - 1]] == DOT and n[order[i - 1]] == 1:
                i -= 1
                v = order[i]
                mul_backward(grad, data, a[v], b[v], grad[v])
        elif k == ADD:
            add_backward(grad, a[v], b[v], grad[v])
            while i > low and kind[order[i - 1]] == ADD:
                i -= 1
                v = order[i]
                add_backward(grad, a[v], b[v], grad[v])
        else:
            backward_node(kind, a, b, n, edges, data, aux, edge_grad, grad, v)
    return low


# --- the search -------------------------------------------------------------------------------
# A range whose nodes hold nothing left to visit can be skipped whole: the fixed nodes are
# leaves, and a range scanned to its end stays fully visited for the rest of the search
# (marks are only ever added).  Skipping changes no order: it only avoids looking at
# nodes the scan would pass over.  It turns a linear layer's search from rows x cols
# child checks into one scan of the input: every row after the first skips it.
# Measured (callgrind, 2026-12-07; benchmarks/RESULTS.md): without range skipping and
# `settled`, a default run's steps 1-20 take 16% more instructions and a long-document
# corpus' 21% more; without `settled` alone, 1.3% and 2% more.  Steps after the warm-up
# replay templates (_ops.pyx) and do not search.
cdef inline bint span_done(const uint32_t[::1] span_epoch, const int32_t[::1] span_len, int32_t n_fixed,
                           int32_t start, int32_t length, uint32_t epoch) noexcept nogil:
    return start + length <= n_fixed or (span_epoch[start] == epoch and span_len[start] >= length)


cdef inline void mark_span_done(uint32_t[::1] span_epoch, int32_t[::1] span_len,
                                int32_t start, int32_t length, uint32_t epoch) noexcept nogil:
    if span_epoch[start] != epoch:
        span_epoch[start] = epoch
        span_len[start] = length
    elif span_len[start] < length:
        span_len[start] = length


cdef Py_ssize_t depth_first(Arena ar, int32_t root) noexcept nogil:
    """topological_order()'s search, over the arena's arrays (see walk)."""
    return walk(ar.kind, ar.a, ar.b, ar.n, ar.edges, ar.mark, ar.span_epoch, ar.span_len, ar.order, ar.stack,
                ar.cursor, <int32_t>ar.n_fixed, ar.next_epoch(), root)


cdef Py_ssize_t walk(const int32_t[::1] kind, const int32_t[::1] a, const int32_t[::1] b, const int32_t[::1] n,
                     const int32_t[::1] edges,
                     uint32_t[::1] mark, uint32_t[::1] span_epoch, int32_t[::1] span_len,  # IN/OUT: scratch
                     int32_t[::1] order,  # OUT: the order
                     int32_t[::1] stack, int32_t[::1] cursor,  # scratch
                     int32_t n_fixed, uint32_t epoch, int32_t root) noexcept nogil:
    """The depth-first walk: each child scan of the kind table, with the spans known done
    skipped (SUM and DOT's ranges) and a child posted at once when every child of it is
    known visited (`settled`).  The arrays are arguments, not locals: Cython takes no
    reference to an argument, so the compiler sees no address of them escape and keeps
    their data pointers in registers across the loop's stores (a walk over local copies,
    whose address Cython passes to its cleanup, took ~1% more instructions on a corpus of
    long documents: benchmarks/RESULTS.md)."""
    cdef Py_ssize_t count = 0, top = 0
    cdef int32_t v = root, j = 0, c, end, step, va, vb, vn  # v: the node being expanded; j: its next child
    cdef int32_t vk
    cdef bint skip_a, skip_b
    mark[root] = epoch
    while True:
        # c: v's next child from number j on that is still to visit (-1: none)
        vk, va, vb, vn = kind[v], a[v], b[v], n[v]
        c = -1
        end = child_count(vk, vn)
        step = 1
        if vk == SUM and span_done(span_epoch, span_len, n_fixed, va, vn, epoch):
            j = end
        elif vk == DOT:
            skip_a = span_done(span_epoch, span_len, n_fixed, va, vn, epoch)
            skip_b = span_done(span_epoch, span_len, n_fixed, vb, vn, epoch)
            if skip_a and skip_b:
                j = end
            elif skip_a or skip_b:  # scan one range only: its children have one parity
                step = 2
                if (j % 2 == 0) == skip_a:
                    j += 1
        while j < end:
            c = child(vk, va, vb, edges, j)
            j += step
            if kind[c] != LEAF and mark[c] != epoch:
                break
            c = -1
        if c >= 0 and settled(kind, a, b, n, mark, span_epoch, span_len, n_fixed, c, epoch):
            mark[c] = epoch  # c would find nothing to visit: post it now
            order[count] = c
            count += 1
        elif c >= 0:  # descend: v waits on the stack, with its place among its children
            mark[c] = epoch
            stack[top] = v
            cursor[top] = j
            top += 1
            v, j = c, 0
        else:  # every child done: v goes into the order, its ranges are done, its parent resumes
            if vk == SUM or vk == DOT:
                mark_span_done(span_epoch, span_len, va, vn, epoch)
            if vk == DOT:
                mark_span_done(span_epoch, span_len, vb, vn, epoch)
            order[count] = v
            count += 1
            if top == 0:
                return count
            top -= 1
            v, j = stack[top], cursor[top]


cdef inline bint settled(const int32_t[::1] kind, const int32_t[::1] a, const int32_t[::1] b,
                         const int32_t[::1] n, const uint32_t[::1] mark, const uint32_t[::1] span_epoch,
                         const int32_t[::1] span_len, int32_t n_fixed, int32_t c, uint32_t epoch) noexcept nogil:
    """True when every child of c is known to need no visit (a cheap, partial test: a
    node it misses is expanded the usual way).  Most nodes of the model are such: every
    row of a linear layer after the first, every x_i * scale of an rmsnorm after the first."""
    cdef int32_t k = kind[c]
    cdef int32_t ca = a[c], cb = b[c], cn = n[c]
    if k == UNARY:
        return kind[ca] == LEAF or mark[ca] == epoch
    if k == ADD or (k == DOT and cn == 1):
        return (kind[ca] == LEAF or mark[ca] == epoch) and (kind[cb] == LEAF or mark[cb] == epoch)
    if k == DOT:
        return (span_done(span_epoch, span_len, n_fixed, ca, cn, epoch)
                and span_done(span_epoch, span_len, n_fixed, cb, cn, epoch))
    return k == SUM and span_done(span_epoch, span_len, n_fixed, ca, cn, epoch)


# --- the derivative table -----------------------------------------------------------------
cdef inline void backward_node(const int32_t[::1] kind, const int32_t[::1] a_, const int32_t[::1] b_,
                               const int32_t[::1] n_, const int32_t[::1] edges, const double[::1] data,
                               const double[::1] aux, const double[::1] edge_grad,
                               double[::1] grad,  # IN/OUT
                               int32_t v) noexcept nogil:
    """Pass node v's gradient to its children: child.grad += d(v)/d(child) * v.grad, child
    by child in microgpt's order, as its `child.grad += local_grad * v.grad` does.
    (d(v)/d(child) = 1 is left out: 1.0 * x == x for every double, NaN and inf included.)"""
    cdef double dv = grad[v]
    cdef int32_t a = a_[v], b = b_[v], n = n_[v], i
    cdef int32_t k = kind[v]
    if k == UNARY:
        unary_backward(aux, grad, a, v, dv)
    elif k == ADD:
        add_backward(grad, a, b, dv)
    elif k == SUM:
        for i in range(n):
            grad[a + i] += dv
    elif k == DOT:  # (one test of kind per elif: Cython makes the chain a C switch)
        if n == 1:  # a * b: most DOT nodes (softmax, rmsnorm scaling)
            mul_backward(grad, data, a, b, dv)
        else:
            dot_backward(grad, data, a, b, n, dv)
    elif k == SUM_LIST:
        for i in range(n):
            grad[edges[a + i]] += dv
    elif k == DOT_LIST:
        for i in range(a, a + 2 * n, 2):
            grad[edges[i]] += data[edges[i + 1]] * dv
            grad[edges[i + 1]] += data[edges[i]] * dv
    elif k == GRAD_LIST:
        for i in range(a, a + n):
            grad[edges[i]] += edge_grad[i] * dv
    # LEAF: nothing to pass on.  No other kind exists: add_node takes a NodeKind.


cdef inline void unary_backward(const double[::1] aux, double[::1] grad, int32_t a, int32_t v, double dv) noexcept nogil:
    """UNARY node v over a: its local gradient, fixed at creation, times its gradient dv."""
    grad[a] += aux[v] * dv


cdef inline void add_backward(double[::1] grad, int32_t a, int32_t b, double dv) noexcept nogil:
    """ADD node over a and b: its gradient dv to each, a first."""
    grad[a] += dv
    grad[b] += dv


cdef inline void mul_backward(double[::1] grad, const double[::1] data, int32_t a, int32_t b, double dv) noexcept nogil:
    """DOT node of one pair, a * b: b's value times its gradient dv to a, then a's to b."""
    grad[a] += data[b] * dv
    grad[b] += data[a] * dv


cdef inline void dot_backward(double[::1] grad,  # IN/OUT
                              const double[::1] data,  # IN
                              Py_ssize_t a, Py_ssize_t b, Py_ssize_t n, double dv) noexcept nogil:
    """d(sum a_i*b_i): a_i += b_i * dv and b_i += a_i * dv, for i = 0..n-1 in microgpt's
    order (a_0, b_0, a_1, b_1, ...)."""
    cdef Py_ssize_t i
    if a == b or a + n <= b or b + n <= a:
        # Disjoint ranges: every node receives exactly one contribution in all of the
        # loop, so doing all a_i first and then all b_i changes no node's order.  a == b
        # (x . x) too: node i gets its a-contribution before its b-contribution either
        # way.  Flat loops, vectorised (axpy_pair: IEEE * and + per element).
        axpy_pair(&grad[a], &data[b], &grad[b], &data[a], dv, n)
    else:  # shifted overlapping ranges: keep the interleaved order
        for i in range(n):
            grad[a + i] += data[b + i] * dv
            grad[b + i] += data[a + i] * dv


# --- linear groups: a linear layer's rows passed backward together ---------------------------
# A linear layer's rows (DOT nodes over consecutive weight rows and one input range x) often
# sit side by side in the order, as records: a row, then a chain of nodes each over the one
# before (relu(row) in the MLP; a residual's x + row after a projection; a logit's shifted
# and exp nodes in an nll's run).  Walking such a group down, the backward passes each
# record's chain, then its row, record by record.  Passing every record's chain first
# (records in the same order) and then every row (likewise) adds the same numbers into
# every gradient in the same order, so every gradient keeps its bits: the only steps whose
# order changes are a chain node's and another record's row's, and neither touches a
# gradient the other reads or adds to:
#   * a chain node v reads grad[v] (no row adds to it: v is neither a weight nor in x) and
#     adds into its children's: the entry before it in its own record, and (an ADD) one
#     node built before the layer's rows that is neither a weight nor in x, so no other
#     record's row reads or adds to any of them;
#   * a row reads its own gradient, into which no other record adds, and adds into its
#     weight row's gradients and x's, which no chain node reads or adds to.
# Passed together, the rows' contributions to grad[x] are one loop that keeps a block of
# them in registers across all rows (_kernels.axpy_rows), where each row alone would load
# and store all of them.  Each group is a record of GROUP_FIELDS integers:
# its first entry in the order, its number of records, the entries per record, the
# node of the layer's row 0 (the weight rows and rows are numbered from it), and its flags:
# GROUP_IN_ORDER where its records hold the rows 0, 1, ... in order (the groups found between
# the known ones: their input gradients are one run; not an nll's run, which the template
# reorders per target: its runs are found at each pass), GROUP_DEFERRED where its weight
# gradients wait for the end of the pass (defer_weight_gradients, below), GROUP_ELEMENTWISE
# where its chains pass a level at a time (find_elementwise_chains, below, which fills the
# fields after the flags).


cdef inline Py_ssize_t group_end(const int32_t[::1] groups, Py_ssize_t g) noexcept nogil:
    """The order index just past group g."""
    return groups[GROUP_FIELDS * g] + groups[GROUP_FIELDS * g + 1] * groups[GROUP_FIELDS * g + 2]


cdef inline bint links(Arena ar, int32_t v, int32_t before, int32_t base) noexcept nogil:
    """Can node v follow `before` in a record of the layer whose row 0 is node base: a
    UNARY node over it, or an ADD of it and a node built before the layer's rows that is
    neither a weight nor in the layer's input?  (v itself comes after `before`, its child.)"""
    cdef int32_t x = ar.b[base], cols = ar.n[base], other
    if ar.kind[v] == UNARY:
        return ar.a[v] == before
    if ar.kind[v] != ADD or (ar.a[v] != before and ar.b[v] != before):
        return False
    other = ar.b[v] if ar.a[v] == before else ar.a[v]
    return ar.n_fixed <= other < base and not x <= other < x + cols


cdef inline int32_t record_row(Arena ar, const int32_t[::1] order, Py_ssize_t at, int32_t stride,
                               int32_t base) noexcept nogil:
    """The row number of the record at order[at] in the layer whose row 0 is node base, or
    -1 when the record is not a row of that layer followed by a chain of stride - 1 nodes
    each linked to the entry before it (see links)."""
    cdef int32_t d = order[at], j
    if not (d >= base and ar.kind[d] == DOT and ar.b[d] == ar.b[base] and ar.n[d] == ar.n[base]
            and ar.a[d] == ar.a[base] + (d - base) * ar.n[base]):
        return -1
    for j in range(1, stride):
        if not links(ar, order[at + j], order[at + j - 1], base):
            return -1
    return d - base


cdef bint group_fits(Arena ar, const int32_t[::1] order, Py_ssize_t start, int32_t records, int32_t stride,
                     int32_t base) noexcept nogil:
    """Is order[start : start + records * stride] a linear group (see above) of the layer
    whose row 0 is node base: its rows 0 .. records - 1, each once, in any order?"""
    cdef uint32_t epoch = ar.next_epoch()  # marks the rows seen (the search's scratch, free now)
    cdef int32_t x = ar.b[base], cols = ar.n[base], w = ar.a[base], r, k
    if not (ar.kind[base] == DOT and cols >= 1 and w >= 0 and w + <Py_ssize_t>records * cols <= ar.n_fixed
            and x >= ar.n_fixed and x + cols <= base and records >= 2):
        return False
    for k in range(records):
        r = record_row(ar, order, start + <Py_ssize_t>k * stride, stride, base)
        if r < 0 or r >= records or ar.mark[base + r] == epoch:
            return False
        ar.mark[base + r] = epoch
    return True


cdef Py_ssize_t find_linear_groups(Arena ar, const int32_t[::1] order, Py_ssize_t count,
                                   const int32_t[::1] known,  # IN: groups already found, ascending
                                   int32_t[::1] groups,  # OUT
                                   ) noexcept nogil:
    """Write the order's linear groups to `groups`, ascending: the `known` ones (an nll's
    run, whose records the template reorders per target) and those of consecutive rows
    0, 1, ... found between them, as many as `groups` has room for (a group left out is
    passed node by node, to the same bits).  Returns the number of groups."""
    cdef Py_ssize_t i = 0, found = 0, next_known = 0, limit, f, room = groups.shape[0] // GROUP_FIELDS
    cdef int32_t d, stride, records
    while i < count and found < room:
        limit = count if next_known * GROUP_FIELDS >= known.shape[0] else known[next_known * GROUP_FIELDS]
        if i == limit:  # a known group: copy it, go past it
            for f in range(GROUP_FIELDS):
                groups[found * GROUP_FIELDS + f] = known[next_known * GROUP_FIELDS + f]
            i = group_end(known, next_known)
            next_known += 1
            found += 1
            continue
        d = order[i]
        if ar.kind[d] != DOT or ar.a[d] + ar.n[d] > ar.n_fixed:  # no weight row: no group starts here
            i += 1
            continue
        stride = 1  # the record's length: the row and the chain of nodes over it
        while i + stride < limit and links(ar, order[i + stride], order[i + stride - 1], d):
            stride += 1
        records = 0
        while i + <Py_ssize_t>(records + 1) * stride <= limit and record_row(ar, order, i + records * stride, stride, d) == records:
            records += 1
        if records >= 2 and group_fits(ar, order, i, records, stride, d):
            groups[found * GROUP_FIELDS] = <int32_t>i
            groups[found * GROUP_FIELDS + 1] = records
            groups[found * GROUP_FIELDS + 2] = stride
            groups[found * GROUP_FIELDS + 3] = d
            groups[found * GROUP_FIELDS + 4] = GROUP_IN_ORDER  # rows 0 .. records - 1, in order (record_row)
            for f in range(5, GROUP_FIELDS - 1):
                groups[found * GROUP_FIELDS + f] = 0  # (see find_elementwise_chains)
            groups[found * GROUP_FIELDS + GROUP_FIELDS - 1] = -1  # not an nll's run
            found += 1
            i += <Py_ssize_t>records * stride
        else:
            i += 1
    return found


cdef inline void pass_linear_group(const int32_t[::1] kind, const int32_t[::1] a, const int32_t[::1] b,
                                   const int32_t[::1] n, const int32_t[::1] edges, const double[::1] data,
                                   const double[::1] aux, const double[::1] edge_grad,
                                   double[::1] grad,  # IN/OUT
                                   const int32_t[::1] order, const int32_t[::1] groups, Py_ssize_t g) noexcept nogil:
    """The backward of linear group g (see above), as the walk down its entries would do
    it: every record's chain, then every row, records last first: the weight rows'
    gradients (one contribution each, in any order), then the input's, row by row in the
    records' order, a run of consecutive rows (row r, r - 1, ...) per axpy_rows call: all
    of them where the group says they are in order.
    (The arena's arrays are arguments, as in backward_node: no copy of them per call.)"""
    cdef Py_ssize_t start = groups[GROUP_FIELDS * g], at
    cdef int32_t records = groups[GROUP_FIELDS * g + 1], stride = groups[GROUP_FIELDS * g + 2]
    cdef int32_t base = groups[GROUP_FIELDS * g + 3], k, j, row, first = -1, length = 0, v
    cdef double* below
    cdef int32_t w = a[base], x = b[base], cols = n[base], c, other
    if groups[GROUP_FIELDS * g + 4] & GROUP_ELEMENTWISE:  # the chains a level at a time (see find_elementwise_chains)
        for j in range(stride - 1, 0, -1):
            c, other = groups[GROUP_FIELDS * g + 3 + 2 * j], groups[GROUP_FIELDS * g + 4 + 2 * j]
            below = &grad[base if j == 1 else groups[GROUP_FIELDS * g + 1 + 2 * j]]  # level j - 1's row 0
            if other < 0:
                unary_rows(below, &aux[c], &grad[c], records)
            else:
                add_rows(below, &grad[other], &grad[c], records)
    else:
        for k in range(records - 1, -1, -1):
            at = start + <Py_ssize_t>k * stride
            for j in range(stride - 1, 0, -1):
                # a chain node: UNARY or ADD (see links), by those two rules of backward_node
                # without its switch over every kind (measured: 21k fewer instructions a step)
                v = order[at + j]
                if kind[v] == UNARY:
                    unary_backward(aux, grad, a[v], v, grad[v])
                else:
                    add_backward(grad, a[v], b[v], grad[v])
    if not groups[GROUP_FIELDS * g + 4] & GROUP_DEFERRED:  # (deferred: added after the pass)
        outer_add(&grad[w], &data[x], &grad[base], records, cols)  # the rows are 0 .. records - 1
    if groups[GROUP_FIELDS * g + 4] & GROUP_IN_ORDER:  # rows 0 .. records - 1 in order: one run, walked down
        pass_input_gradients(grad, data, w, x, cols, base, records - 1, records)
        return
    cdef int32_t prob = groups[GROUP_FIELDS * g + GROUP_FIELDS - 1], target
    if prob >= 0:
        # an nll's run: the target's row first, then the others ascending (_ops.write_run), walked
        # down: rows records - 1 .. target + 1, target - 1 .. 0, then target (as the loop below
        # finds them in the order; one run where the target is row 0).  The target is the row of
        # the logit under the probability's first child, its exp (exp, shifted logit, logit).
        target = a[a[a[prob]]] - base
        if target == 0:
            pass_input_gradients(grad, data, w, x, cols, base, records - 1, records)
            return
        if target < records - 1:
            pass_input_gradients(grad, data, w, x, cols, base, records - 1, records - 1 - target)
        pass_input_gradients(grad, data, w, x, cols, base, target - 1, target)
        pass_input_gradients(grad, data, w, x, cols, base, target, 1)
        return
    for k in range(records - 1, -1, -1):
        row = order[start + <Py_ssize_t>k * stride] - base
        if length > 0 and row == first - length:  # the run goes on
            length += 1
            continue
        if length > 0:
            pass_input_gradients(grad, data, w, x, cols, base, first, length)
        first, length = row, 1
    pass_input_gradients(grad, data, w, x, cols, base, first, length)


cdef inline void pass_input_gradients(double[::1] grad,  # IN/OUT
                                      const double[::1] data, int32_t w, int32_t x, int32_t cols, int32_t base,
                                      int32_t first, int32_t length) noexcept nogil:
    """grad[x + j] += data[w + r * cols + j] * grad[base + r] for r = first, first - 1, ...
    (length rows), in that order: a linear layer's input gradients from a run of its rows."""
    axpy_rows(&grad[x], cols, &data[w + first * cols], -cols, &grad[base + first], -1, length)


# --- elementwise chains: a group's chain nodes passed a level at a time ------------------------
# In most groups, record r's chain node at level j (its j-th entry after the row) is node
# c_j + r, and an ADD's other child o_j + r, for every row r of the layer: relu(row r) over fc1,
# row r + residual r over wo and fc2, and an nll's run (logit, shifted logit, exp of token r).
# Passed record by record, each chain node adds its gradient (times its local gradient, a UNARY)
# into one or two nodes of its own record's level below (the row itself at level 1) and into the
# ADD's other child; no two records' chains add into the same node (their nodes and other
# children are distinct, and a chain has one ADD level at most, so no two levels' other children
# meet), and a level's node reads only its own gradient, which only the level above adds into.
# So the chains may be passed a level at a time, the top level first, each level over all
# records at once: every gradient gets the same one addition (the same product, a UNARY) as
# record by record, so the same bits, in loops over consecutive nodes, without the walk's
# loads of each node's kind and children (measured: 15.2k fewer instructions a default step,
# of 400k).
cdef void find_elementwise_chains(Arena ar, const int32_t[::1] order,
                                  int32_t[::1] groups,  # IN/OUT: GROUP_ELEMENTWISE and fields 5 .. 8 where elementwise
                                  ) noexcept nogil:
    """Flag the groups whose chains are elementwise (see above), with each level j's node and
    (an ADD) other child for row 0, or -1 (a UNARY), in fields 3 + 2j and 4 + 2j."""
    cdef Py_ssize_t n_groups = groups.shape[0] // GROUP_FIELDS, g, start, at
    cdef int32_t records, stride, base, r0, r, k, j, v, adds
    cdef int32_t nodes[MAX_LEVELS + 1]
    cdef int32_t others[MAX_LEVELS + 1]
    for g in range(n_groups):
        start, records = groups[GROUP_FIELDS * g], groups[GROUP_FIELDS * g + 1]
        stride, base = groups[GROUP_FIELDS * g + 2], groups[GROUP_FIELDS * g + 3]
        if stride == 1 or stride > MAX_LEVELS + 1:
            continue
        r0 = order[start] - base  # record 0's row
        adds = 0
        for j in range(1, stride):
            v = order[start + j]
            nodes[j] = v - r0
            others[j] = -1 if ar.kind[v] == UNARY else other_child(ar, v, order[start + j - 1]) - r0
            adds += ar.kind[v] != UNARY
        for k in range(records):
            at = start + <Py_ssize_t>k * stride
            r = order[at] - base
            for j in range(1, stride):
                v = order[at + j]
                if v != nodes[j] + r or (ar.kind[v] == UNARY) != (others[j] < 0) or (
                        others[j] >= 0 and other_child(ar, v, order[at + j - 1]) != others[j] + r):
                    break
            else:
                continue
            break
        else:
            if adds <= 1:
                for j in range(1, stride):
                    groups[GROUP_FIELDS * g + 3 + 2 * j] = nodes[j]
                    groups[GROUP_FIELDS * g + 4 + 2 * j] = others[j]
                groups[GROUP_FIELDS * g + 4] |= GROUP_ELEMENTWISE


cdef inline int32_t other_child(Arena ar, int32_t v, int32_t before) noexcept nogil:
    """An ADD chain node's child that is not the entry before it (see links)."""
    return ar.b[v] if ar.a[v] == before else ar.a[v]


cdef inline void unary_rows(double* below,  # IN/OUT
                            const double* local, const double* g, int32_t count) noexcept nogil:
    """A level of UNARY chain nodes: below[r] += local[r] * g[r], unary_backward's one
    addition for each record r."""
    cdef int32_t r
    for r in range(count):
        below[r] += local[r] * g[r]


cdef inline void add_rows(double* below, double* other,  # IN/OUT
                          const double* g, int32_t count) noexcept nogil:
    """A level of ADD chain nodes: below[r] += g[r] and other[r] += g[r], add_backward's two
    additions (into distinct nodes: their order does not matter) for each record r."""
    cdef int32_t r
    for r in range(count):
        below[r] += g[r]
        other[r] += g[r]


# --- deferred weight gradients: a layer's rows at every position, added in one sweep -----------
# A group's weight gradients (outer_add: grad[w[r, j]] += x[j] * grad[row r]) are the only
# contributions into those weights' gradients when no node outside the groups has a child among
# those weights, and no other group reads some but not all of them (their ranges are equal or
# disjoint).  Nothing in the backward reads a weight's gradient (weights are leaves), so these
# contributions can wait for the end of the pass: added then, each weight's in the order the walk
# down the groups met them (the later positions first, as microgpt's backward adds them), every
# weight gradient gets the same additions in the same order, so the same bits.  Added together, a
# layer's contributions from every position are one sweep over its weight gradients, which stay in
# registers across the positions (_kernels.outer_add_many), where a call per position would load
# and store all of them (measured: 1.8k fewer L1 data misses a default step, of 16.7k, and 1.4k
# fewer instructions).
cdef enum:
    DEFER_CHUNK = 32  # pairs per outer_add_many call (a chunk after another: the same order)


cdef inline bint same_weights(Arena ar, const int32_t[::1] groups, Py_ssize_t g, Py_ssize_t h) noexcept nogil:
    """Do groups g and h read the same weight range (the same first weight, rows and columns)?"""
    cdef int32_t base_g = groups[GROUP_FIELDS * g + 3], base_h = groups[GROUP_FIELDS * h + 3]
    return (ar.a[base_g] == ar.a[base_h] and ar.n[base_g] == ar.n[base_h]
            and groups[GROUP_FIELDS * g + 1] == groups[GROUP_FIELDS * h + 1])


cdef Py_ssize_t defer_weight_gradients(Arena ar, const int32_t[::1] order, Py_ssize_t count,
                                       int32_t[::1] groups,  # IN/OUT: GROUP_DEFERRED set where deferred
                                       int32_t[::1] deferred,  # OUT: room for one entry per group
                                       ) noexcept nogil:
    """Flag the groups of `order` whose weight gradients can wait for the end of the pass (see
    above) and write them to `deferred` in the order they are added then: by weight range,
    each range's groups in the order the pass walks them (the last group first).  Returns the
    number written; 0 (no group flagged) when two groups' weight ranges overlap unequally."""
    cdef Py_ssize_t n_groups = groups.shape[0] // GROUP_FIELDS, g, h, i = 0, next_group = 0, found = 0
    cdef int32_t[::1] owner = ar.stack  # the search's scratch, free now: a weight's first group
    cdef int32_t v, c, j, w, size
    cdef uint32_t claimed = ar.next_epoch()  # mark[k] == claimed: weight k is read by group owner[k]
    for g in range(n_groups):
        w = ar.a[groups[GROUP_FIELDS * g + 3]]
        size = groups[GROUP_FIELDS * g + 1] * ar.n[groups[GROUP_FIELDS * g + 3]]
        for c in range(w, w + size):
            if ar.mark[c] != claimed:
                ar.mark[c], owner[c] = claimed, <int32_t>g
            elif not same_weights(ar, groups, g, owner[c]):
                return 0
    cdef uint32_t touched = ar.next_epoch()  # span_epoch[k] == touched: a node outside the groups reads weight k
    while i < count:  # the entries outside the groups, and the weights among their children
        if next_group < n_groups and i == groups[GROUP_FIELDS * next_group]:
            i = group_end(groups, next_group)
            next_group += 1
            continue
        v = order[i]
        for j in range(child_count(ar.kind[v], ar.n[v])):
            c = child(ar.kind[v], ar.a[v], ar.b[v], ar.edges, j)
            if c < ar.n_fixed:
                ar.span_epoch[c] = touched
        i += 1
    for g in range(n_groups):  # a range read outside the groups stays as it is, in each of its groups
        w = ar.a[groups[GROUP_FIELDS * g + 3]]
        size = groups[GROUP_FIELDS * g + 1] * ar.n[groups[GROUP_FIELDS * g + 3]]
        for c in range(w, w + size):
            if ar.span_epoch[c] == touched:
                break
        else:
            groups[GROUP_FIELDS * g + 4] |= GROUP_DEFERRED
    for h in range(n_groups):  # each range (first met as group h), its groups last first
        w = ar.a[groups[GROUP_FIELDS * h + 3]]
        if owner[w] != h or not groups[GROUP_FIELDS * h + 4] & GROUP_DEFERRED:
            continue
        for g in range(n_groups - 1, h - 1, -1):
            if owner[ar.a[groups[GROUP_FIELDS * g + 3]]] == h:
                deferred[found] = <int32_t>g
                found += 1
    return found


cdef void add_deferred_weight_gradients(const int32_t[::1] a, const int32_t[::1] b, const int32_t[::1] n,
                                        const double[::1] data,
                                        double[::1] grad,  # IN/OUT
                                        const int32_t[::1] groups, const int32_t[::1] deferred) noexcept nogil:
    """The deferred groups' weight gradients (see above), in `deferred`'s order: a run of groups
    with the same weight range (the same first weight: ranges are equal or disjoint) per
    outer_add_many call, DEFER_CHUNK at most."""
    cdef const double* xs[DEFER_CHUNK]
    cdef const double* gs[DEFER_CHUNK]
    cdef Py_ssize_t i = 0, end = deferred.shape[0], k
    cdef int32_t base, w
    while i < end:
        base = groups[GROUP_FIELDS * deferred[i] + 3]
        w = a[base]
        k = 0
        while i + k < end and k < DEFER_CHUNK and a[groups[GROUP_FIELDS * deferred[i + k] + 3]] == w:
            xs[k] = &data[b[groups[GROUP_FIELDS * deferred[i + k] + 3]]]
            gs[k] = &grad[groups[GROUP_FIELDS * deferred[i + k] + 3]]
            k += 1
        outer_add_many(&grad[w], groups[GROUP_FIELDS * deferred[i] + 1], n[base], xs, gs, k)
        i += k
