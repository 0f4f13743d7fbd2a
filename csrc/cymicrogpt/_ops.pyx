"""The model's vector operations as graph builders: each call appends its nodes in C.

Each op produces exactly the values microgpt's Python expression produces and a graph
that gives exactly the same gradients.  Three choices keep that true:

* microgpt's `sum(a_i * b_i for i)` is a chain of binary nodes started from the int 0;
  here it is one DOT node, children interleaved (a0, b0, a1, b1, ...), value accumulated
  left to right from 0.0.  Its depth-first visit reaches the a_i and b_i in the same order
  as the chain, so every other node keeps its place in the backward order (the parity
  tests prove it on the whole model).  `sum(xs)` likewise becomes one SUM node.
* Operations with a Python constant (x / c is x * c**-1, x - m is x + (-m)) become one
  UNARY node whose local gradient is the constant microgpt multiplies by.  The constant's
  own leaf node in microgpt receives a gradient nobody reads, so it is left out.
* Every `**` goes through libm `pow`, as Python's float `**` does; no `sqrt`, no `x*x`.
  The build adds -ffp-contract=off so the C compiler never fuses a*b+c into one FMA.
Where microgpt's Python raises (math.log(0.0), a float `**` that overflows), the op
raises the same exception type; each op's docstring says which can and why.

Every op has the same four steps, so that no Python code runs while it writes the arena:
  1. take its Python objects and room: the output Vec, scratch, arena.reserve() (each of
     these may run Python: the cyclic GC's finalizers, a switch to another thread);
  2. validate its handles (after step 1, which may have reset this graph);
  3. log itself (_arena.log_op: what decides its nodes' shape, so that backward can find
     the order of a graph shape it has seen) and build the nodes in C: `noexcept nogil`
     kernels over the arena's memoryviews;
  4. fill in the output Vec.
The ops hold the GIL on purpose: an op takes microseconds (releasing the GIL would cost
more than it frees), and it keeps other threads out of this arena while step 3 runs.
"""
from libc.math cimport exp, log, pow
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy

import numpy as np

from cymicrogpt.config import RMSNORM_EPS

from cymicrogpt._arena cimport (Arena, LEAF, UNARY, ADD, SUM, DOT, SUM_LIST, DOT_LIST, add_node, add_edge,
                                add_target, log_op, log_operand)

cdef int64_t last_id = 0  # ids handed out so far, to engines and to graphs (under the GIL)

cdef enum OpCode:  # the first entry each op writes to the op log
    OP_BEGIN = 1
    OP_ADD
    OP_LINEAR
    OP_RELU
    OP_RMSNORM
    OP_ATTENTION
    OP_NLL
    OP_MEAN
    OP_PROBS


cdef int64_t new_id() noexcept:
    global last_id
    last_id += 1
    return last_id


# --- kernels -------------------------------------------------------------------------------
cdef void dot_rows(double[::1] data,  # IN: rows of w and x; OUT: data[out + r]
                   Py_ssize_t w, Py_ssize_t cols, Py_ssize_t x, Py_ssize_t out,
                   Py_ssize_t rows) noexcept nogil:
    """data[out + r] = sum_j data[w + r*cols + j] * data[x + j] for r < rows.

    Each row is accumulated left to right from 0.0, as microgpt's sum() (from the int 0)
    does.  Four rows at a time: four independent chains the CPU overlaps, each still
    added in its own order.  Pointers and Py_ssize_t offsets, so that the inner loop has
    no int32 index arithmetic to redo.
    """
    cdef const double* xs = &data[x]
    cdef const double* row
    cdef Py_ssize_t r = 0, j
    cdef double acc0, acc1, acc2, acc3, xj
    while r + 4 <= rows:
        row = &data[w + r * cols]
        acc0 = acc1 = acc2 = acc3 = 0.0
        for j in range(cols):
            xj = xs[j]
            acc0 = acc0 + row[j] * xj
            acc1 = acc1 + row[cols + j] * xj
            acc2 = acc2 + row[2 * cols + j] * xj
            acc3 = acc3 + row[3 * cols + j] * xj
        data[out + r] = acc0
        data[out + r + 1] = acc1
        data[out + r + 2] = acc2
        data[out + r + 3] = acc3
        r += 4
    while r < rows:
        row = &data[w + r * cols]
        acc0 = 0.0
        for j in range(cols):
            acc0 = acc0 + row[j] * xs[j]
        data[out + r] = acc0
        r += 1


cdef int32_t softmax_nodes(Arena ar, int32_t src, int32_t count, int32_t only) noexcept nogil:
    """Softmax over nodes src..src+count-1; returns the index of the first prob node.

    Probability i is node prob_start + 2*i (each follows its own total**-1 node).  With
    only >= 0, builds just that one probability (the others would be nodes no loss
    depends on).  Needs 4*count + 1 nodes reserved.

    Nothing here can raise in microgpt either: Python's max() keeps the first element
    unless a later one compares greater, as the loop below does, so every val - max_val
    is <= 0 or NaN, math.exp of it cannot overflow, and total is in [1, count] or NaN,
    so total**-1 and total**-2 cannot overflow or divide by zero.
    """
    cdef double max_val = ar.data[src]
    cdef double v, total, inv_total
    cdef int32_t i, shifted_start, exp_start, total_node, inv_node, prob, prob_start
    for i in range(1, count):
        if ar.data[src + i] > max_val:
            max_val = ar.data[src + i]
    shifted_start = <int32_t>ar.n_nodes
    for i in range(count):  # val - max_val  ==  val + (-max_val)
        add_node(ar, UNARY, src + i, 0, 0, ar.data[src + i] + (-max_val), 1.0)
    exp_start = <int32_t>ar.n_nodes
    for i in range(count):  # .exp(), local grad exp(x)
        v = exp(ar.data[shifted_start + i])
        add_node(ar, UNARY, shifted_start + i, 0, 0, v, v)
    total = 0.0  # sum(exps), from 0
    for i in range(count):
        total = total + ar.data[exp_start + i]
    total_node = add_node(ar, SUM, exp_start, 0, count, total, 0.0)
    inv_total = pow(total, -1.0)
    prob_start = -1
    for i in range(count):
        if only >= 0 and i != only:
            continue
        # e / total is e * total**-1, and microgpt's list comprehension evaluates
        # total**-1 anew for every e: one pow node per probability, never shared (a
        # shared node would sum the gradients from all probabilities before passing
        # them to total, in another rounding order).
        inv_node = add_node(ar, UNARY, total_node, 0, 0, inv_total, -1.0 * pow(total, -2.0))
        prob = add_node(ar, DOT, exp_start + i, inv_node, 1, ar.data[exp_start + i] * inv_total, 0.0)
        if prob_start < 0:
            prob_start = prob
    return prob_start


cdef bint all_finite(const double* x, Py_ssize_t n) noexcept nogil:
    """No nan or inf in x[0:n]: x[i] - x[i] is +0.0 (all bits 0) for a finite x[i] and nan
    otherwise, so the OR of their bits is 0 exactly when all are finite.  No early exit
    and no floating-point sum: the loop vectorises."""
    cdef uint64_t bad = 0, bits
    cdef double difference
    cdef Py_ssize_t i
    for i in range(n):
        difference = x[i] - x[i]
        memcpy(&bits, &difference, sizeof(double))
        bad |= bits
    return bad == 0


# --- handles -------------------------------------------------------------------------------
cdef class Vec:
    def __len__(self):
        return self.size

    def __repr__(self):
        return f"Vec(start={self.start}, size={self.size})"


cdef class Mat:
    def __repr__(self):
        return f"Mat(start={self.start}, rows={self.rows}, cols={self.cols})"


cdef class GraphOps:
    """Builds the model's graph in an Arena whose first nodes are the parameters.

    `layout` is a list of weight matrices, objects with `name`, `rows`, `cols` and
    `offset` attributes (params.MatrixSlot), over the flat `weights` in state-dict order;
    the weights become the arena's fixed leaf nodes.  `rmsnorm_eps` is rmsnorm's epsilon
    (config.RMSNORM_EPS, microgpt's 1e-5).
    """

    def __init__(self, layout, weights, double rmsnorm_eps=RMSNORM_EPS):
        if not rmsnorm_eps > 0.0 or rmsnorm_eps == float("inf"):
            raise ValueError(f"rmsnorm_eps must be positive and finite, got {rmsnorm_eps!r}")
        array = np.asarray(weights, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"weights must be a flat sequence of numbers, got shape {array.shape}")
        cdef const double[::1] values = np.ascontiguousarray(array)
        cdef Py_ssize_t count = values.shape[0], i
        cdef Mat m
        self.rmsnorm_eps = rmsnorm_eps
        self.arena = Arena()
        self.arena.reserve(count, 0)
        for i in range(count):
            add_node(self.arena, LEAF, 0, 0, 0, values[i], 0.0)
        self.arena.n_fixed = count
        self.id = new_id()
        self.weights_graph = new_id()
        self.graph = new_id()
        self.scratch = np.empty(0, np.int32)
        self.matrices = {}
        for slot in layout:
            if slot.offset < 0 or slot.rows <= 0 or slot.cols <= 0 or slot.offset + slot.rows * slot.cols > count:
                raise ValueError(f"matrix {slot.name} lies outside the {count} weights")
            m = Mat.__new__(Mat)
            m.start, m.rows, m.cols, m.owner = slot.offset, slot.rows, slot.cols, self.id
            self.matrices[slot.name] = m

    # --- handles ------------------------------------------------------------------------
    cdef int check(self, Vec x) except -1:
        """Refuse vectors of another engine, or of a graph reset since (begin_sequence)."""
        if x.owner != self.id:
            raise ValueError(f"{x!r} was built by another engine")
        if x.graph != self.graph and x.graph != self.weights_graph:
            raise ValueError(f"{x!r} belongs to a graph that was reset since (begin_sequence)")
        if x.start < 0 or x.size <= 0 or x.start + <Py_ssize_t>x.size > self.arena.n_nodes:
            raise ValueError(f"{x!r} lies outside this engine's graph")
        return 0

    cdef int check_matrix(self, Mat w) except -1:
        if w.owner != self.id:
            raise ValueError(f"{w!r} is not a weight matrix of this engine")
        return 0

    cdef int32_t[::1] scratch_for(self, Py_ssize_t count):
        if count > self.scratch.shape[0]:
            self.scratch = np.empty(max(count, 2 * self.scratch.shape[0]), np.int32)
        return self.scratch

    def matrix(self, str name):
        return self.matrices[name]

    def row(self, str name, Py_ssize_t index):
        cdef Mat m = self.matrices[name]
        if not 0 <= index < m.rows:
            raise IndexError(f"row {index} out of range for {name} with {m.rows} rows")
        cdef Vec v = Vec.__new__(Vec)
        v.start, v.size, v.owner, v.graph = m.start + <int32_t>index * m.cols, m.cols, self.id, self.weights_graph
        return v

    def node_values(self):
        """NumPy view of every node's value (valid until the arena grows)."""
        return self.arena.data_array

    def node_grads(self):
        return self.arena.grad_array

    def weight_grads_are_finite(self):
        """Is the gradient of every weight (the fixed nodes) finite?"""
        return all_finite(&self.arena.grad[0], self.arena.n_fixed)

    @property
    def num_nodes(self):
        return self.arena.n_nodes

    @property
    def capacity(self):
        """(node capacity, edge capacity): constant once the largest graph was built."""
        return self.arena.node_capacity, self.arena.edge_capacity

    @property
    def order_templates(self):
        """How many graph shapes have a kept depth-first order (see _arena.OrderTemplate)."""
        return len(self.arena.templates)

    @property
    def order_replays(self):
        """How many backward passes replayed a kept order instead of searching."""
        return self.arena.replays

    # --- graph ops ----------------------------------------------------------------------
    def begin_sequence(self, bint record=True):
        """Forget the previous sequence's graph; record a new one (or only values)."""
        self.arena.reset()  # room for the log's first entries: its array is never empty
        self.arena.recording = record
        log_op(self.arena, OP_BEGIN)
        log_op(self.arena, record)
        self.graph = new_id()

    def add(self, Vec a, Vec b):
        """a + b elementwise (the residual connection, token + position embedding)."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        ar.reserve(a.size, 0, 5)
        self.check(a)
        self.check(b)
        if a.size != b.size:
            raise ValueError(f"add: sizes differ ({a.size} and {b.size})")
        cdef int32_t i, start = <int32_t>ar.n_nodes
        log_op(ar, OP_ADD)
        log_operand(ar, a.start, a.size)
        log_operand(ar, b.start, b.size)
        for i in range(a.size):
            add_node(ar, ADD, a.start + i, b.start + i, 0, ar.data[a.start + i] + ar.data[b.start + i], 0.0)
        out.start, out.size, out.owner, out.graph = start, a.size, self.id, self.graph
        return out

    def linear(self, Vec x, Mat w):
        """w @ x: one DOT node per output row (microgpt's sum(wi * xi for ...))."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        ar.reserve(w.rows, 0, 4)
        self.check(x)
        self.check_matrix(w)
        if x.size != w.cols:
            raise ValueError(f"linear: input has {x.size} features, matrix expects {w.cols}")
        cdef int32_t r, start = <int32_t>ar.n_nodes
        log_op(ar, OP_LINEAR)
        log_op(ar, w.rows)  # its rows are weights: leaves
        log_operand(ar, x.start, x.size)
        for r in range(w.rows):  # out: (rows,), row r's children (w[r, j], x[j]) pairwise
            add_node(ar, DOT, w.start + r * w.cols, x.start, w.cols, 0.0, 0.0)
        dot_rows(ar.data, w.start, w.cols, x.start, start, w.rows)
        out.start, out.size, out.owner, out.graph = start, w.rows, self.id, self.graph
        return out

    def relu(self, Vec x):
        """max(0, x): local gradient float(x > 0).  NaN gives 0, as max(0, nan) does."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        ar.reserve(x.size, 0, 3)
        self.check(x)
        cdef int32_t i, start = <int32_t>ar.n_nodes
        cdef double v
        log_op(ar, OP_RELU)
        log_operand(ar, x.start, x.size)
        for i in range(x.size):
            v = ar.data[x.start + i]
            add_node(ar, UNARY, x.start + i, 0, 0, v if v > 0 else 0.0, 1.0 if v > 0 else 0.0)
        out.start, out.size, out.owner, out.graph = start, x.size, self.id, self.graph
        return out

    def rmsnorm(self, Vec x):
        """x * (mean(x**2) + eps) ** -0.5, as microgpt's rmsnorm builds it.

        Cannot raise, in microgpt either: mean(x**2) + eps is >= eps > 0, +inf or NaN, and
        Python's float ** raises for none of them with exponents -0.5 and -1.5.  (An eps
        <= 0 could make it 0 or negative: __init__ refuses one.)"""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        ar.reserve(x.size + 4, 0, 3)
        self.check(x)
        log_op(ar, OP_RMSNORM)
        log_operand(ar, x.start, x.size)
        cdef int32_t i, n = x.size, sum_sq, ms, shifted, scale, start
        # len(x)**-1 is an int raised to a negative int: Python computes it with float pow
        cdef double inv_n = pow(<double>n, -1.0), v
        sum_sq = add_node(ar, DOT, x.start, x.start, n, 0.0, 0.0)  # sum(xi * xi for xi in x)
        dot_rows(ar.data, x.start, n, x.start, sum_sq, 1)
        v = ar.data[sum_sq]
        ms = add_node(ar, UNARY, sum_sq, 0, 0, v * inv_n, inv_n)  # / len(x)  ==  * len(x)**-1
        v = ar.data[ms]
        shifted = add_node(ar, UNARY, ms, 0, 0, v + self.rmsnorm_eps, 1.0)  # + eps
        v = ar.data[shifted]
        scale = add_node(ar, UNARY, shifted, 0, 0, pow(v, -0.5), -0.5 * pow(v, -1.5))  # ** -0.5
        v = ar.data[scale]
        start = <int32_t>ar.n_nodes
        for i in range(n):  # out: (n,), xi * scale
            add_node(ar, DOT, x.start + i, scale, 1, ar.data[x.start + i] * v, 0.0)
        out.start, out.size, out.owner, out.graph = start, n, self.id, self.graph
        return out

    def attention(self, Vec q, list keys, list values, int n_head):
        """Causal multi-head attention of q over the cached keys and values: out (n_embd,).

        Cannot raise, in microgpt either: see softmax_nodes."""
        cdef Vec out = Vec.__new__(Vec)
        cdef int32_t n = q.size
        cdef Py_ssize_t T = len(keys)
        if n_head <= 0 or n % n_head:
            raise ValueError(f"attention: n_head {n_head} does not divide the width {n}")
        if T == 0 or len(values) != T:
            raise ValueError("attention: need as many values as keys, at least one")
        cdef int32_t hd = n // n_head
        cdef Arena ar = self.arena
        # scratch: key starts [0, T), value starts [T, 2T), weight starts [2T, 2T+n_head)
        cdef int32_t[::1] at = self.scratch_for(2 * T + n_head)
        ar.reserve(n_head * (6 * T + 1) + n, 2 * T * n, 4 + 4 * T)
        self.check(q)
        if len(keys) != T or len(values) != T:
            raise RuntimeError("attention: the key or value list changed during the call")
        cdef Vec kv
        cdef Py_ssize_t t
        for t in range(T):
            kv = keys[t]
            self.check(kv)
            if kv.size != n:
                raise ValueError("attention: key and value sizes must equal the query's")
            at[t] = kv.start
            kv = values[t]
            self.check(kv)
            if kv.size != n:
                raise ValueError("attention: key and value sizes must equal the query's")
            at[T + t] = kv.start
        # head_dim**0.5 is a float pow; "/ s" on a Value is "* s**-1"
        cdef double inv_sqrt = pow(pow(<double>hd, 0.5), -1.0), acc
        cdef int32_t h, j, o, hs, logit_start, scaled_start, start, e
        log_op(ar, OP_ATTENTION)
        log_op(ar, n_head)
        log_operand(ar, q.start, n)
        for t in range(2 * T):  # keys, then values (all of size n)
            log_operand(ar, at[t], n)
        for h in range(n_head):
            hs = h * hd
            logit_start = <int32_t>ar.n_nodes
            for t in range(T):  # q_h . k_h[t]: (T,), children (q[j], k_t[j]) pairwise
                o = add_node(ar, DOT, q.start + hs, at[t] + hs, hd, 0.0, 0.0)
                dot_rows(ar.data, at[t] + hs, hd, q.start + hs, o, 1)
            scaled_start = <int32_t>ar.n_nodes
            for t in range(T):  # / head_dim**0.5: (T,)
                add_node(ar, UNARY, logit_start + t, 0, 0, ar.data[logit_start + t] * inv_sqrt, inv_sqrt)
            at[2 * T + h] = softmax_nodes(ar, scaled_start, <int32_t>T, -1)  # weights: (T,), stride 2
        start = <int32_t>ar.n_nodes
        for h in range(n_head):  # head_out[j] = sum_t weights[t] * v_h[t][j]: (n,)
            hs = h * hd
            for j in range(hd):
                e = <int32_t>ar.n_edges
                acc = 0.0
                for t in range(T):
                    acc = acc + ar.data[at[2 * T + h] + 2 * t] * ar.data[at[T + t] + hs + j]
                    add_edge(ar, at[2 * T + h] + 2 * t)
                    add_edge(ar, at[T + t] + hs + j)
                add_node(ar, DOT_LIST, e, 0, <int32_t>T, acc, 0.0)
        out.start, out.size, out.owner, out.graph = start, n, self.id, self.graph
        return out

    def nll(self, Vec logits, Py_ssize_t target):
        """-log(softmax(logits)[target]): one position's loss, a scalar Vec.

        Raises ValueError where microgpt's math.log does: a probability of exactly 0.0
        (its exp underflowed).  A NaN probability gives a NaN loss, as math.log(nan)."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        ar.reserve(3 * logits.size + 5, 0, 3, 1)
        self.check(logits)
        if not 0 <= target < logits.size:
            raise IndexError(f"target {target} out of range for {logits.size} logits")
        log_op(ar, OP_NLL)  # not the target: see _arena.OrderTemplate
        log_operand(ar, logits.start, logits.size)
        cdef int32_t prob = softmax_nodes(ar, logits.start, logits.size, <int32_t>target), lg
        add_target(ar, prob)  # its first child depends on the target: see OrderTemplate
        cdef double p = ar.data[prob]
        if p == 0.0:
            raise ValueError(f"math domain error: log of probability {p!r}")
        lg = add_node(ar, UNARY, prob, 0, 0, log(p), 1.0 / p)  # .log(), local grad 1/p
        out.start = add_node(ar, UNARY, lg, 0, 0, ar.data[lg] * -1.0, -1.0)  # -x  ==  x * -1
        out.size, out.owner, out.graph = 1, self.id, self.graph
        return out

    def mean(self, list losses):
        """(1 / n) * sum(losses): the sequence loss, a scalar Vec."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Py_ssize_t n = len(losses), i
        if n == 0:
            raise ValueError("mean of no losses")
        cdef Arena ar = self.arena
        ar.reserve(2, n, 2 + n)
        if len(losses) != n:
            raise RuntimeError("mean: the list of losses changed during the call")
        cdef Vec x
        cdef double acc = 0.0
        for i in range(n):
            x = losses[i]
            self.check(x)
        cdef int32_t e = <int32_t>ar.n_edges, total
        log_op(ar, OP_MEAN)
        log_op(ar, <int32_t>n)
        for i in range(n):
            x = losses[i]
            log_op(ar, x.start)  # scalars: their starts
            acc = acc + ar.data[x.start]
            add_edge(ar, x.start)
        total = add_node(ar, SUM_LIST, e, 0, <int32_t>n, acc, 0.0)
        cdef double inv_n = 1.0 / n  # Python's 1 / n
        out.start = add_node(ar, UNARY, total, 0, 0, acc * inv_n, inv_n)
        out.size, out.owner, out.graph = 1, self.id, self.graph
        return out

    def backward(self, Vec loss):
        """Gradients of the scalar `loss` into every node (parameters included); its value."""
        self.check(loss)
        if loss.size != 1:
            raise ValueError("backward needs a scalar (size-1) vector")
        self.arena.backward_cached(loss.start)
        return self.arena.data[loss.start]

    def probs(self, Vec logits, temperature):
        """softmax(logits / temperature) as floats, without recording a graph."""
        # l / temperature is l * temperature**-1, with Python's own float ** so that its
        # errors (0 ** -1, an overflowing 5e-324 ** -1) are microgpt's.
        cdef double inv_t = temperature ** -1
        cdef Arena ar = self.arena
        cdef int32_t count = logits.size
        ar.reserve(5 * count + 2, 0, 3)
        self.check(logits)
        cdef bint was_recording = ar.recording
        cdef int32_t i, src, prob
        log_op(ar, OP_PROBS)
        log_operand(ar, logits.start, count)
        ar.recording = False
        src = <int32_t>ar.n_nodes
        for i in range(count):
            add_node(ar, LEAF, 0, 0, 0, ar.data[logits.start + i] * inv_t, 0.0)
        prob = softmax_nodes(ar, src, count, -1)
        ar.recording = was_recording
        return [ar.data[prob + 2 * i] for i in range(count)]
