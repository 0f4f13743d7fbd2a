"""The arena's storage and growth, the depth-first topological order, and the backward pass.

The backward pass must add gradients into every node in exactly the order microgpt's
recursive `build_topo` + `reversed(topo)` does: floating-point addition is not
associative, and a node shared by several parents (a weight used at every position) gets
the last bits of its gradient from that order.  So we replay the same depth-first search, iteratively (an
explicit stack, no recursion limit), children in microgpt's order (see _arena.pxd).
The search costs more than the backward it orders, and a training step's graph repeats
from step to step: backward_cached() replays the order of an earlier graph of the same
shape (an OrderTemplate, found by the op log that built the graph), searching only
graphs it has not seen.  (Value's tape, which logs no ops, keeps its last search's
order in its own way: SearchedGraph in _value.pyx.)
"""
import numpy as np

from libc.stdint cimport int32_t, uint8_t, uint32_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcmp, memcpy

cdef Py_ssize_t MIN_CAPACITY = 1024
# Templates may hold up to this many bytes per node of the arena's capacity (the arena
# itself takes ~60; a template ~4 a node of its graph plus its key, ~1 a node): enough for
# every document length of a names-like corpus, while a corpus of long documents keeps
# templates only for the lengths it meets first.
cdef Py_ssize_t TEMPLATE_BYTES_PER_NODE = 32


cdef class Arena:
    """Struct-of-arrays storage for graph nodes; see _arena.pxd for the layout."""

    def __cinit__(self):
        self.recording = True
        self.epoch = 0
        self.templates = {}
        self.targets = np.empty(16, np.int32)
        self.log = np.empty(256, np.int32)
        self.grow_nodes(0)
        self.grow_edges(0)

    # --- growth --------------------------------------------------------------------------
    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries=0,
                     Py_ssize_t targets=0) except -1:
        """Make room for `nodes` more nodes, `edges` more edges, `log_entries` more op log
        entries and `targets` more targets.

        Growing runs Python (NumPy allocates the new arrays; an allocation may start the
        cyclic GC, whose finalizers and gc.callbacks may build Values, and the interpreter
        may switch threads), and that code may grow, fill or reset this very arena.  So
        each grow_* takes its new arrays first, then checks them against the arena as it
        is *now*, and installs them in C with no Python in between; and we loop until every
        kind of room is there at once, because growing one may have used up another.
        """
        while True:
            if self.n_nodes + nodes > self.node_capacity:
                self.grow_nodes(nodes)
            elif self.n_edges + edges > self.edge_capacity:
                self.grow_edges(edges)
            elif (self.n_log + log_entries > self.log.shape[0]
                    or self.n_targets + targets > self.targets.shape[0]):
                self.grow_small(log_entries, targets)
            else:
                return 0

    cdef int grow_nodes(self, Py_ssize_t nodes) except -1:
        cdef Py_ssize_t cap = max(self.n_nodes + nodes, 2 * self.node_capacity, MIN_CAPACITY)
        if cap > MAX_INDEX:
            raise MemoryError(f"the graph would exceed {MAX_INDEX} nodes")
        # 1. Take the new buffers (Python runs here).
        data_array, grad_array = np.empty(cap), np.empty(cap)
        cdef double[::1] data = data_array, grad = grad_array, aux = np.empty(cap)
        cdef uint8_t[::1] kind = np.empty(cap, np.uint8)
        cdef int32_t[::1] a = np.empty(cap, np.int32), b = np.empty(cap, np.int32)
        cdef int32_t[::1] n = np.empty(cap, np.int32)
        cdef uint32_t[::1] mark = np.zeros(cap, np.uint32), span_epoch = np.zeros(cap, np.uint32)
        cdef int32_t[::1] span_len = np.empty(cap, np.int32), order = np.empty(cap, np.int32)
        cdef int32_t[::1] stack = np.empty(cap, np.int32), cursor = np.empty(cap, np.int32)
        # The old owners stay referenced until we return: dropping the last reference to
        # an array can run Python (a weakref callback on node_values()), never mid-install.
        old_data_array, old_grad_array = self.data_array, self.grad_array
        # 2. Re-check: the Python above may have grown (or filled) the arena meanwhile.
        if cap <= self.node_capacity or cap < self.n_nodes + nodes:
            return 0  # reserve() looks again
        # 3. Copy and install, in C only.  Marks restart at 0, which no epoch equals.
        cdef Py_ssize_t i, used = self.n_nodes
        for i in range(used):
            data[i] = self.data[i]
            grad[i] = self.grad[i]
            aux[i] = self.aux[i]
            kind[i] = self.kind[i]
            a[i] = self.a[i]
            b[i] = self.b[i]
            n[i] = self.n[i]
        self.data, self.grad, self.aux, self.kind = data, grad, aux, kind
        self.a, self.b, self.n = a, b, n
        self.mark, self.span_epoch, self.span_len = mark, span_epoch, span_len
        self.order, self.stack, self.cursor = order, stack, cursor
        self.data_array, self.grad_array = data_array, grad_array
        self.node_capacity = cap
        return 0

    cdef int grow_edges(self, Py_ssize_t edges) except -1:
        cdef Py_ssize_t cap = max(self.n_edges + edges, 2 * self.edge_capacity, MIN_CAPACITY)
        if cap > MAX_INDEX:
            raise MemoryError(f"the graph would exceed {MAX_INDEX} edges")
        cdef int32_t[::1] fresh = np.empty(cap, np.int32)  # Python runs here
        cdef double[::1] fresh_grad = np.empty(cap)
        if cap <= self.edge_capacity or cap < self.n_edges + edges:
            return 0  # grown meanwhile: reserve() looks again
        cdef Py_ssize_t i
        for i in range(self.n_edges):
            fresh[i] = self.edges[i]
            fresh_grad[i] = self.edge_grad[i]
        self.edges, self.edge_grad = fresh, fresh_grad
        self.edge_capacity = cap
        return 0

    cdef int grow_small(self, Py_ssize_t log_entries, Py_ssize_t targets) except -1:
        """Room in the op log and the targets (their arrays are small): as grow_nodes."""
        cdef int32_t[::1] log = np.empty(2 * (self.log.shape[0] + log_entries), np.int32)  # Python runs here
        cdef int32_t[::1] fresh_targets = np.empty(2 * (self.targets.shape[0] + targets), np.int32)
        cdef Py_ssize_t i
        if self.n_log + log_entries <= log.shape[0] and self.log.shape[0] < log.shape[0]:
            for i in range(self.n_log):
                log[i] = self.log[i]
            self.log = log
        if self.n_targets + targets <= fresh_targets.shape[0] and self.targets.shape[0] < fresh_targets.shape[0]:
            for i in range(self.n_targets):
                fresh_targets[i] = self.targets[i]
            self.targets = fresh_targets
        return 0

    cdef void reset(self) noexcept:
        """Drop every node after the fixed ones (the graph of the previous sequence)."""
        self.n_nodes = self.n_fixed
        self.n_edges = 0  # fixed nodes are leaves: they own no edges
        self.n_targets = 0
        self.n_log = 0

    # --- the depth-first search ---------------------------------------------------------
    cdef uint32_t next_epoch(self) noexcept nogil:
        """A fresh mark value for one search (mark[i] == epoch: visited in it)."""
        cdef Py_ssize_t i
        self.epoch += 1
        if self.epoch == 0:  # wrapped around: forget every old mark
            for i in range(self.node_capacity):
                self.mark[i] = 0
                self.span_epoch[i] = 0
            self.epoch = 1
        return self.epoch

    cdef Nodes nodes(self) noexcept nogil:
        """Raw views of the node arrays for one pass (see Nodes in _arena.pxd)."""
        cdef Nodes g
        g.kind, g.a, g.b, g.n = &self.kind[0], &self.a[0], &self.b[0], &self.n[0]
        g.data, g.grad, g.aux, g.edges = &self.data[0], &self.grad[0], &self.aux[0], &self.edges[0]
        g.edge_grad = &self.edge_grad[0]
        g.mark, g.span_epoch, g.span_len = &self.mark[0], &self.span_epoch[0], &self.span_len[0]
        g.n_fixed = <int32_t>self.n_fixed
        return g

    cdef Py_ssize_t topological_order(self, int32_t root) noexcept nogil:
        """Fill order[] with microgpt's topological order of the nodes under root.

        Post-order depth-first search, children in the order _arena.pxd lists, each node
        once.  Leaves are left out: they pass no gradient on, so their place in the order
        changes nothing.  Returns the length of the order.
        """
        return depth_first(self, root, False)

    cdef Py_ssize_t listed_order(self, int32_t root) noexcept nogil:
        """topological_order() for a graph whose nodes name their children one by one
        (LEAF, UNARY, ADD and the *_LIST kinds: every graph of Value's tape): the same
        order, with less bookkeeping (no ranges to skip, no early posting: each child is
        read straight from a, b or edges).  -1 when it meets a range node (SUM, DOT):
        then topological_order() is the search to use."""
        return depth_first(self, root, True)

    cdef void pass_gradients(self, int32_t root, const int32_t* order, Py_ssize_t count) noexcept nogil:
        """The backward pass proper, over the first `count` entries of `order`."""
        cdef Nodes g = self.nodes()
        cdef Py_ssize_t i = count
        g.grad[root] = 1.0
        while i > 0:
            i -= 1
            backward_node(&g, order[i])

    cdef bytes shape_key(self, int32_t root):
        """The current graph's shape: its op log and the root, as bytes (a dict key)."""
        cdef bytes key = PyBytes_FromStringAndSize(NULL, 4 * (self.n_log + 1))
        cdef char* raw = PyBytes_AS_STRING(key)
        memcpy(raw, &root, 4)
        if self.n_log:
            memcpy(raw + 4, &self.log[0], 4 * self.n_log)
        return key

    cdef bint has_shape(self, bytes key, int32_t root) noexcept:
        """Does `key` (shape_key) still describe the current graph?"""
        cdef const char* raw = PyBytes_AS_STRING(key)
        return (len(key) == 4 * (self.n_log + 1) and memcmp(raw, &root, 4) == 0
                and (self.n_log == 0 or memcmp(raw + 4, &self.log[0], 4 * self.n_log) == 0))

    cdef int backward_cached(self, int32_t root) except -1:
        """backward(root), with the order replayed from the template of this graph's shape
        when there is one; otherwise searched, and kept as a template (within budget).
        Only for graphs whose every node was built by an op that logs itself (GraphOps):
        the op log is the shape.  Value's tape does not log (see SearchedGraph in _value.pyx)."""
        key = self.shape_key(root)
        cdef OrderTemplate template = self.templates.get(key)
        cdef bint known = template is not None
        cdef Py_ssize_t count = -1
        cdef const int32_t* order = NULL
        if not known:
            template = self.new_template()  # None when over budget
        # Python ran above (allocations: the cyclic GC, another thread): the graph may have
        # changed since the key was taken.  From here on only C runs.
        if not 0 <= root < self.n_nodes:
            raise ValueError(f"node {root} is not in the graph")
        if not self.has_shape(key, root):
            template, known = None, False
        if known:
            count = template.replay(self)
            if count >= 0:
                order = &template.order[0]
                self.replays += 1
        if count < 0:
            count = self.topological_order(root)
            order = &self.order[0]
        self.pass_gradients(root, order, count)
        if template is not None and not known and template.capture(self, count):
            self.templates[key] = template
        return 0

    cdef OrderTemplate new_template(self):
        """Empty arrays sized for the current graph; None when over the memory budget."""
        cdef Py_ssize_t m = self.n_nodes - self.n_fixed
        cdef Py_ssize_t size = 4 * m + 8 * self.n_targets + 4 * (self.n_log + 1)
        if m == 0 or self.template_bytes + size > TEMPLATE_BYTES_PER_NODE * self.node_capacity:
            return None  # (no nodes but the weights: nothing to replay)
        self.template_bytes += size
        cdef OrderTemplate t = OrderTemplate.__new__(OrderTemplate)
        t.order = np.empty(m, np.int32)
        t.targets, t.runs = np.empty(self.n_targets, np.int32), np.empty(self.n_targets, np.int32)
        return t


# --- order templates -------------------------------------------------------------------------
cdef class OrderTemplate:
    """One graph shape's depth-first order (see _arena.pxd), found by its shape key."""

    cdef bint capture(self, Arena ar, Py_ssize_t count) noexcept nogil:
        """Keep ar's order, just searched (count entries).  False when the arrays do not
        fit the graph or a target's triples are not where replay() would rewrite them (the
        graph is not the pattern): then no template is kept."""
        cdef Nodes g = ar.nodes()
        cdef Py_ssize_t i, k
        cdef int32_t* order = &ar.order[0]
        cdef int32_t* position = &ar.cursor[0]  # the search's scratch, free now
        if ar.n_targets != self.targets.shape[0] or count > self.order.shape[0]:
            return False
        for k in range(count):
            position[order[k]] = <int32_t>k
        for i in range(ar.n_targets):
            if i > 0 and ar.targets[i] <= ar.targets[i - 1]:
                return False
            self.targets[i] = ar.targets[i]
            self.runs[i] = triples_run(&g, ar.targets[i], <int32_t>ar.n_nodes, order, position, count,
                                       &ar.stack[0])  # the search's scratch, free now
            if self.runs[i] < 0:
                return False
        if count:
            memcpy(&self.order[0], order, 4 * count)
        self.count = count
        return True

    cdef Py_ssize_t replay(self, Arena ar) noexcept nogil:
        """Make the kept order ar's: rewrite each target's run (in self.order, in place) for
        the target ar's graph has; the order's length, or -1 if a target is out of range."""
        cdef Nodes g = ar.nodes()
        cdef int32_t p, es, size, target
        cdef Py_ssize_t i
        for i in range(self.targets.shape[0]):
            p = self.targets[i]
            es, size = exp_range(&g, p)
            target = g.a[p] - es
            if not 0 <= target < size:
                return -1
            write_run(&g, es, size, target, &self.order[self.runs[i]])
        return self.count


cdef inline (int32_t, int32_t) exp_range(Nodes* g, int32_t p) noexcept nogil:
    """First exp node and count of the softmax whose probability node is p
    (p = e_t * inv, inv = total**-1, total = SUM of the exps)."""
    cdef int32_t total = g.a[g.b[p]]
    return g.a[total], g.n[total]


cdef inline void write_run(Nodes* g, int32_t es, int32_t size, int32_t target,
                           int32_t* out,  # OUT (3 * size,)
                           ) noexcept nogil:
    """A target's run: triples (logit, shifted, exp), the target's first, then every other
    token's in ascending order (es: the first exp node, size: the vocabulary)."""
    cdef int32_t k, token, e
    for k in range(size):
        token = target if k == 0 else (k - 1 if k <= target else k)
        e = es + token
        out[3 * k] = g.a[g.a[e]]
        out[3 * k + 1] = g.a[e]
        out[3 * k + 2] = e


cdef int32_t triples_run(Nodes* g, int32_t p, int32_t n_nodes, const int32_t* order,
                         const int32_t* position, Py_ssize_t count,
                         int32_t* scratch,  # OUT: room for a run (3V entries)
                         ) noexcept nogil:
    """Where the search put target p's run of triples (see _arena.pxd), or -1 when the
    graph around p is not the pattern that makes replay() exact:
    p = DOT(e_t, inv), inv = UNARY(total), total = SUM(e_0..e_{V-1}), e_i = UNARY(s_i),
    s_i = UNARY(l_i), and every l_i a DOT of a weight row (leaves) with one shared input
    range, so that whichever logit the search reaches first, it finds the same subtree
    under it and posts every other logit at once; and the search put all of it, in
    that order, just before total, inv, p."""
    cdef int32_t inv, total, es, count_v, target, e, l, l0, k, start
    if not (g.n_fixed <= p < n_nodes and g.kind[p] == DOT and g.n[p] == 1):
        return -1
    inv = g.b[p]
    if g.kind[inv] != UNARY or g.kind[g.a[inv]] != SUM:
        return -1
    total = g.a[inv]
    es, count_v = exp_range(g, p)
    target = g.a[p] - es
    if not 0 <= target < count_v:
        return -1
    l0 = g.a[g.a[es]]
    for e in range(es, es + count_v):
        if g.kind[e] != UNARY or g.kind[g.a[e]] != UNARY:
            return -1
        l = g.a[g.a[e]]
        if (g.kind[l] != DOT or g.b[l] != g.b[l0] or g.n[l] != g.n[l0]
                or g.a[l] + g.n[l] > g.n_fixed):
            return -1
    k = position[p]
    start = k - 2 - 3 * count_v
    if not (start >= 0 and k < count and order[k] == p and order[k - 1] == inv and order[k - 2] == total):
        return -1
    write_run(g, es, count_v, target, scratch)
    if memcmp(&order[start], scratch, 4 * 3 * count_v) != 0:
        return -1
    return start


# --- the search's child scan --------------------------------------------------------------
# A range whose nodes hold nothing left to visit can be skipped whole: the fixed nodes are
# leaves, and a range scanned to its end stays fully visited for the rest of the search
# (marks are only ever added).  Skipping changes no order: it only avoids looking at
# nodes the scan would pass over.  It turns a linear layer's search from rows x cols
# child checks into one scan of the input: every row after the first skips it.
cdef inline bint span_done(Nodes* g, int32_t start, int32_t length, uint32_t epoch) noexcept nogil:
    return (start + length <= g.n_fixed
            or (g.span_epoch[start] == epoch and g.span_len[start] >= length))


cdef inline void mark_span_done(Nodes* g, int32_t start, int32_t length, uint32_t epoch) noexcept nogil:
    if g.span_epoch[start] != epoch:
        g.span_epoch[start] = epoch
        g.span_len[start] = length
    elif g.span_len[start] < length:
        g.span_len[start] = length


cdef inline void mark_spans_done(Nodes* g, int32_t v, uint32_t epoch) noexcept nogil:
    """v's children are all visited: remember its ranges as done."""
    cdef uint8_t kind = g.kind[v]
    if kind == SUM or kind == DOT:
        mark_span_done(g, g.a[v], g.n[v], epoch)
    if kind == DOT:
        mark_span_done(g, g.b[v], g.n[v], epoch)


cdef inline bint to_visit(Nodes* g, int32_t c, uint32_t epoch) noexcept nogil:
    return g.kind[c] != LEAF and g.mark[c] != epoch


cdef inline bint settled(Nodes* g, int32_t c, uint32_t epoch) noexcept nogil:
    """True when every child of c is known to need no visit (a cheap, partial test: a
    node it misses is expanded the usual way).  Most nodes are such: every row of a
    linear layer after the first, every x_i * scale of an rmsnorm after the first."""
    cdef uint8_t kind = g.kind[c]
    cdef int32_t a = g.a[c], b = g.b[c], n = g.n[c]
    if kind == UNARY:
        return not to_visit(g, a, epoch)
    if kind == ADD or (kind == DOT and n == 1):
        return not to_visit(g, a, epoch) and not to_visit(g, b, epoch)
    if kind == DOT:
        return span_done(g, a, n, epoch) and span_done(g, b, n, epoch)
    if kind == GRAD_LIST and n == 2:  # Value's a * b
        return not to_visit(g, g.edges[a], epoch) and not to_visit(g, g.edges[a + 1], epoch)
    return kind == SUM and span_done(g, a, n, epoch)


cdef inline int32_t next_to_visit(Nodes* g, int32_t v, int32_t* cursor, uint32_t epoch) noexcept nogil:
    """The next child of v, from child number cursor[0] on, that the search has not
    visited yet (-1: none left); moves cursor[0] past it.  Ranges (SUM, DOT) here, with
    the spans known done skipped; every other kind lists its children: next_listed()."""
    cdef int32_t j = cursor[0], a = g.a[v], b = g.b[v], n = g.n[v], c = -1, step = 1
    cdef uint8_t kind = g.kind[v]
    cdef bint skip_a, skip_b
    if kind == SUM:
        if not span_done(g, a, n, epoch):
            while j < n:
                c = a + j
                j += 1
                if to_visit(g, c, epoch):
                    cursor[0] = j
                    return c
    elif kind == DOT:  # child 2i is a + i, child 2i+1 is b + i
        skip_a, skip_b = span_done(g, a, n, epoch), span_done(g, b, n, epoch)
        if skip_a and skip_b:
            return -1
        if skip_a or skip_b:  # scan one range only: its children have one parity
            step = 2
            if (j % 2 == 0) == skip_a:
                j += 1
        while j < 2 * n:
            c = (a if j % 2 == 0 else b) + j // 2
            j += step
            if to_visit(g, c, epoch):
                cursor[0] = j
                return c
    else:
        return next_listed(g, v, cursor, epoch)
    cursor[0] = j
    return -1


cdef inline Py_ssize_t depth_first(Arena ar, int32_t root, bint listed) noexcept nogil:
    """The search of topological_order() (listed False) and listed_order() (True): the
    same walk, with the child scan of either (inlined twice, each with its own scan)."""
    cdef Nodes g = ar.nodes()
    cdef uint32_t epoch = ar.next_epoch()
    cdef int32_t* order = &ar.order[0]
    cdef int32_t* stack = &ar.stack[0]
    cdef int32_t* cursor = &ar.cursor[0]
    cdef Py_ssize_t count = 0, top = 0
    cdef int32_t v = root, j = 0, c  # the node being expanded, and its next child's number
    g.mark[root] = epoch
    while True:
        if listed:
            c = next_listed(&g, v, &j, epoch)
            if c == RANGE_NODE:
                return -1
        else:
            c = next_to_visit(&g, v, &j, epoch)
        if not listed and c >= 0 and settled(&g, c, epoch):  # c would find nothing to visit: post it now
            g.mark[c] = epoch
            order[count] = c
            count += 1
        elif c >= 0:  # descend: v waits on the stack, with its place among its children
            g.mark[c] = epoch
            stack[top] = v
            cursor[top] = j
            top += 1
            v, j = c, 0
        else:  # every child done: v goes into the order, its parent resumes
            if not listed:
                mark_spans_done(&g, v, epoch)
            order[count] = v
            count += 1
            if top == 0:
                return count
            top -= 1
            v, j = stack[top], cursor[top]


cdef enum:
    RANGE_NODE = -2  # next_listed met a SUM or DOT node


cdef inline int32_t next_listed(Nodes* g, int32_t v, int32_t* cursor, uint32_t epoch) noexcept nogil:
    """next_to_visit() for nodes that list their children (-1: none left; RANGE_NODE: v
    is a SUM or DOT node, which only next_to_visit() scans)."""
    cdef uint8_t kind = g.kind[v]
    cdef int32_t j = cursor[0], n, c
    if kind == UNARY or kind == ADD:
        n = 1 if kind == UNARY else 2
    elif kind == GRAD_LIST or kind == SUM_LIST:
        n = g.n[v]
    elif kind == DOT_LIST:
        n = 2 * g.n[v]
    elif kind == LEAF:
        n = 0
    else:
        return RANGE_NODE
    while j < n:
        c = (g.a[v] if j == 0 else g.b[v]) if kind <= ADD else g.edges[g.a[v] + j]
        j += 1
        if to_visit(g, c, epoch):
            cursor[0] = j
            return c
    cursor[0] = j
    return -1


# --- the derivative table -----------------------------------------------------------------
cdef inline void backward_node(Nodes* g, int32_t v) noexcept nogil:
    """Pass node v's gradient to its children: child.grad += d(v)/d(child) * v.grad, child
    by child in microgpt's order, as its `child.grad += local_grad * v.grad` does.
    (d(v)/d(child) = 1 is left out: 1.0 * x == x for every double, NaN and inf included.)"""
    cdef double dv = g.grad[v]
    cdef int32_t a = g.a[v], b = g.b[v], n = g.n[v], i
    cdef uint8_t kind = g.kind[v]
    if kind == UNARY:
        g.grad[a] += g.aux[v] * dv
    elif kind == ADD:
        g.grad[a] += dv
        g.grad[b] += dv
    elif kind == SUM:
        for i in range(n):
            g.grad[a + i] += dv
    elif kind == DOT:  # (one test of kind per elif: Cython makes the chain a C switch)
        if n == 1:  # a * b: most DOT nodes (softmax, rmsnorm scaling)
            g.grad[a] += g.data[b] * dv
            g.grad[b] += g.data[a] * dv
        else:
            dot_backward(g.grad, g.data, a, b, n, dv)
    elif kind == SUM_LIST:
        for i in range(n):
            g.grad[g.edges[a + i]] += dv
    elif kind == DOT_LIST:
        for i in range(a, a + 2 * n, 2):
            g.grad[g.edges[i]] += g.data[g.edges[i + 1]] * dv
            g.grad[g.edges[i + 1]] += g.data[g.edges[i]] * dv
    elif kind == GRAD_LIST:
        for i in range(a, a + n):
            g.grad[g.edges[i]] += g.edge_grad[i] * dv
    # LEAF: nothing to pass on.  No other kind exists: add_node takes a NodeKind.


cdef inline void dot_backward(double* grad,  # IN/OUT
                              const double* data,  # IN
                              Py_ssize_t a, Py_ssize_t b, Py_ssize_t n, double dv) noexcept nogil:
    """d(sum a_i*b_i): a_i += b_i * dv and b_i += a_i * dv, for i = 0..n-1 in microgpt's
    order (a_0, b_0, a_1, b_1, ...)."""
    cdef Py_ssize_t i
    if a == b or a + n <= b or b + n <= a:
        # Disjoint ranges: every node receives exactly one contribution in all of the
        # loop, so doing all a_i first and then all b_i changes no node's order.  a == b
        # (x . x) too: node i gets its a-contribution before its b-contribution either
        # way.  Two flat loops, which the compiler vectorises (IEEE * and + per element).
        for i in range(n):
            grad[a + i] += data[b + i] * dv
        for i in range(n):
            grad[b + i] += data[a + i] * dv
    else:  # shifted overlapping ranges: keep the interleaved order
        for i in range(n):
            grad[a + i] += data[b + i] * dv
            grad[b + i] += data[a + i] * dv
