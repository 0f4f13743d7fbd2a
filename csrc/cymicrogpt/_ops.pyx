# cython: language_level=3
"""The model's vector operations as graph builders: each call appends its nodes in C.

Each op produces exactly the values microgpt's Python expression produces and a graph
that gives exactly the same gradients.  Two choices keep that true:

* microgpt's `sum(a_i * b_i for i)` is a chain of binary nodes started from the int 0;
  here it is one DOT node, children interleaved (a0, b0, a1, b1, ...), value accumulated
  left to right from 0.0.  Its depth-first visit reaches the a_i and b_i in the same order
  as the chain, so every other node keeps its place in the backward order (the parity
  tests prove it on the whole model).  `sum(xs)` likewise becomes one SUM node.
* Operations with a Python constant (x / c is x * c**-1, x - m is x + (-m)) become one
  UNARY node whose local gradient is the constant microgpt multiplies by.  The constant's
  own leaf node in microgpt receives a gradient nobody reads, so it is left out.
Every `**` goes through libm `pow`, as Python's float `**` does; no `sqrt`, no `x*x`.
The build adds -ffp-contract=off so the C compiler never fuses a*b+c into one FMA.

The loops hold the GIL on purpose: an op takes microseconds (releasing the GIL would cost
more than it frees), and it guarantees that no other thread can grow (reallocate) this
arena while a loop writes into it.  Separate engines may be used from separate threads.
"""
from libc.math cimport exp, log, pow
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport realloc, free

from cymicrogpt._arena cimport Arena, NodeKind, LEAF, SUM, DOT, UNARY, open_node, add_child, close_node

cdef double RMSNORM_EPS = 1e-5  # microgpt's rmsnorm epsilon


cdef int32_t softmax_nodes(Arena ar, int32_t src, int32_t count, int32_t only) noexcept nogil:
    """Softmax over nodes src..src+count-1; returns the index of the first prob node.

    Probability i is node prob_start + 2*i (each follows its own total**-1 node).  With
    only >= 0, builds just that one probability (the others would be nodes no loss
    depends on).  Needs 4*count + 1 nodes and 6*count edges reserved.
    """
    cdef double* data = ar.data
    cdef double max_val = data[src]
    cdef double v, total, inv_total
    cdef int32_t i, o, shifted_start, exp_start, total_node, inv_node, prob_start
    for i in range(1, count):
        if data[src + i] > max_val:
            max_val = data[src + i]
    shifted_start = <int32_t>ar.n_nodes
    for i in range(count):  # val - max_val  ==  val + (-max_val)
        o = open_node(ar, UNARY)
        add_child(ar, src + i)
        close_node(ar, o, data[src + i] + (-max_val), 1.0)
    exp_start = <int32_t>ar.n_nodes
    for i in range(count):  # .exp(), local grad exp(x)
        v = exp(data[shifted_start + i])
        o = open_node(ar, UNARY)
        add_child(ar, shifted_start + i)
        close_node(ar, o, v, v)
    total_node = open_node(ar, SUM)  # sum(exps), from 0
    total = 0.0
    for i in range(count):
        total = total + data[exp_start + i]
        add_child(ar, exp_start + i)
    close_node(ar, total_node, total, 0.0)
    inv_total = pow(total, -1.0)
    prob_start = -1
    for i in range(count):
        if only >= 0 and i != only:
            continue
        # e / total is e * total**-1, and microgpt's list comprehension evaluates
        # total**-1 anew for every e: one pow node per probability, never shared (a
        # shared node would sum the gradients from all probabilities before passing
        # them to total, in another rounding order).
        inv_node = open_node(ar, UNARY)  # total ** -1, local grad -1 * total**-2
        add_child(ar, total_node)
        close_node(ar, inv_node, inv_total, -1.0 * pow(total, -2.0))
        o = open_node(ar, DOT)
        add_child(ar, exp_start + i)
        add_child(ar, inv_node)
        close_node(ar, o, data[exp_start + i] * inv_total, 0.0)
        if prob_start < 0:
            prob_start = o
    return prob_start


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

    `layout` is a list of (name, rows, cols, offset) weight matrices over the flat
    `weights` (state-dict order); the weights become the arena's fixed leaf nodes.
    """

    def __init__(self, layout, weights):
        cdef Py_ssize_t n = len(weights)
        cdef Py_ssize_t i
        cdef int32_t p
        cdef Mat m
        self.arena = Arena()
        self.arena.reserve(n, 0)
        for i in range(n):
            p = open_node(self.arena, LEAF)
            close_node(self.arena, p, float(weights[i]), 0.0)
        self.arena.n_fixed = n
        self.matrices = {}
        for slot in layout:
            if slot.offset < 0 or slot.offset + slot.rows * slot.cols > n:
                raise ValueError(f"matrix {slot.name} lies outside the {n} weights")
            m = Mat.__new__(Mat)
            m.start, m.rows, m.cols = slot.offset, slot.rows, slot.cols
            self.matrices[slot.name] = m

    # --- handles --------------------------------------------------------------------
    cdef Vec vec(self, int32_t start, int32_t size):
        cdef Vec v = Vec.__new__(Vec)
        v.start, v.size, v.generation = start, size, self.arena.generation
        return v

    cdef int check(self, Vec x) except -1:
        """Refuse vectors whose nodes are gone (an earlier sequence) or were never ours."""
        if x.generation != -1 and x.generation != self.arena.generation:
            raise ValueError("this vector belongs to a graph that was reset (begin_sequence)")
        if x.start < 0 or x.size <= 0 or x.start + <Py_ssize_t>x.size > self.arena.n_nodes:
            raise ValueError(f"{x!r} lies outside this engine's graph")
        return 0

    def matrix(self, str name):
        return self.matrices[name]

    def row(self, str name, Py_ssize_t index):
        cdef Mat m = self.matrices[name]
        if not 0 <= index < m.rows:
            raise IndexError(f"row {index} out of range for {name} with {m.rows} rows")
        cdef Vec v = Vec.__new__(Vec)
        v.start, v.size, v.generation = m.start + index * m.cols, m.cols, -1
        return v

    def node_values(self):
        """NumPy view of every node's value (valid until the arena grows)."""
        return self.arena.data_array

    def node_grads(self):
        return self.arena.grad_array

    @property
    def num_nodes(self):
        return self.arena.n_nodes

    @property
    def capacity(self):
        """(node capacity, edge capacity): constant once the longest sequence was seen."""
        return self.arena.node_capacity, self.arena.edge_capacity

    # --- graph ops ----------------------------------------------------------------------
    def begin_sequence(self, bint record=True):
        """Forget the previous sequence's graph; record a new one (or only values)."""
        self.arena.reset()
        self.arena.recording = record

    def add(self, Vec a, Vec b):
        """a + b elementwise (the residual connection, token + position embedding)."""
        self.check(a)
        self.check(b)
        if a.size != b.size:
            raise ValueError(f"add: sizes differ ({a.size} and {b.size})")
        cdef Arena ar = self.arena
        ar.reserve(a.size, 2 * a.size)
        cdef int32_t start = <int32_t>ar.n_nodes
        cdef int32_t i, o
        for i in range(a.size):
            o = open_node(ar, SUM)
            add_child(ar, a.start + i)
            add_child(ar, b.start + i)
            close_node(ar, o, ar.data[a.start + i] + ar.data[b.start + i], 0.0)
        return self.vec(start, a.size)

    def linear(self, Vec x, Mat w):
        """w @ x: one DOT node per output row (microgpt's sum(wi * xi for ...))."""
        self.check(x)
        if w.start < 0 or w.start + <Py_ssize_t>w.rows * w.cols > self.arena.n_fixed:
            raise ValueError(f"{w!r} is not a weight matrix of this engine")
        if x.size != w.cols:
            raise ValueError(f"linear: input has {x.size} features, matrix expects {w.cols}")
        cdef Arena ar = self.arena
        ar.reserve(w.rows, 2 * <Py_ssize_t>w.rows * w.cols)
        cdef int32_t start = <int32_t>ar.n_nodes
        cdef int32_t r, j, o, wi
        cdef double acc
        cdef double* data = ar.data
        for r in range(w.rows):  # out: (rows,)
            o = open_node(ar, DOT)
            acc = 0.0  # microgpt's sum() starts from 0
            wi = w.start + r * w.cols
            for j in range(w.cols):
                acc = acc + data[wi + j] * data[x.start + j]
                add_child(ar, wi + j)
                add_child(ar, x.start + j)
            close_node(ar, o, acc, 0.0)
        return self.vec(start, w.rows)

    def relu(self, Vec x):
        """max(0, x): local gradient float(x > 0)."""
        self.check(x)
        cdef Arena ar = self.arena
        ar.reserve(x.size, x.size)
        cdef int32_t start = <int32_t>ar.n_nodes
        cdef int32_t i, o
        cdef double v
        for i in range(x.size):
            v = ar.data[x.start + i]
            o = open_node(ar, UNARY)
            add_child(ar, x.start + i)
            close_node(ar, o, v if v > 0 else 0.0, 1.0 if v > 0 else 0.0)
        return self.vec(start, x.size)

    def rmsnorm(self, Vec x):
        """x * (mean(x**2) + 1e-5) ** -0.5, as microgpt's rmsnorm builds it."""
        self.check(x)
        cdef Arena ar = self.arena
        cdef int32_t n = x.size
        ar.reserve(n + 4, 4 * <Py_ssize_t>n + 3)
        cdef int32_t i, sum_sq, ms, shifted, scale, o
        cdef double acc = 0.0, v
        # len(x)**-1 is an int raised to a negative int: Python computes it with float pow
        cdef double inv_n = pow(<double>n, -1.0)
        sum_sq = open_node(ar, DOT)  # sum(xi * xi for xi in x)
        for i in range(n):
            acc = acc + ar.data[x.start + i] * ar.data[x.start + i]
            add_child(ar, x.start + i)
            add_child(ar, x.start + i)
        close_node(ar, sum_sq, acc, 0.0)
        ms = open_node(ar, UNARY)  # / len(x)  ==  * len(x)**-1
        add_child(ar, sum_sq)
        close_node(ar, ms, acc * inv_n, inv_n)
        v = ar.data[ms]
        shifted = open_node(ar, UNARY)  # + 1e-5
        add_child(ar, ms)
        close_node(ar, shifted, v + RMSNORM_EPS, 1.0)
        v = ar.data[shifted]
        scale = open_node(ar, UNARY)  # ** -0.5, local grad -0.5 * v**-1.5
        add_child(ar, shifted)
        close_node(ar, scale, pow(v, -0.5), -0.5 * pow(v, -1.5))
        v = ar.data[scale]
        cdef int32_t start = <int32_t>ar.n_nodes
        for i in range(n):  # out: (n,)
            o = open_node(ar, DOT)
            add_child(ar, x.start + i)
            add_child(ar, scale)
            close_node(ar, o, ar.data[x.start + i] * v, 0.0)
        return self.vec(start, n)

    def attention(self, Vec q, list keys, list values, int n_head):
        """Causal multi-head attention of q over the cached keys and values: out (n_embd,)."""
        self.check(q)
        cdef int32_t n = q.size
        cdef Py_ssize_t T = len(keys)
        if n_head <= 0 or n % n_head:
            raise ValueError(f"attention: n_head {n_head} does not divide the width {n}")
        if T == 0 or len(values) != T:
            raise ValueError("attention: need as many values as keys, at least one")
        cdef int32_t hd = n // n_head
        cdef Arena ar = self.arena
        # scratch layout: key starts [0, T), value starts [T, 2T), weight starts [2T, 2T+n_head)
        cdef int32_t* at = self.scratch_for(2 * T + n_head)
        cdef Vec kv
        cdef Py_ssize_t t
        for t in range(T):
            kv = keys[t]
            self.check(kv)
            at[t] = kv.start
            kv = values[t]
            self.check(kv)
            at[T + t] = kv.start
            if (<Vec>keys[t]).size != n or kv.size != n:
                raise ValueError("attention: key and value sizes must equal the query's")
        ar.reserve(n_head * (6 * T + 1) + n, n_head * (2 * T * hd + 7 * T) + 2 * T * n)
        # head_dim**0.5 is a float pow; "/ s" on a Value is "* s**-1"
        cdef double inv_sqrt = pow(pow(<double>hd, 0.5), -1.0)
        cdef int32_t h, j, o, hs, logit_start, scaled_start, start
        cdef double acc
        cdef double* data = ar.data
        for h in range(n_head):
            hs = h * hd
            logit_start = <int32_t>ar.n_nodes
            for t in range(T):  # q_h . k_h[t]: (T,)
                o = open_node(ar, DOT)
                acc = 0.0
                for j in range(hd):
                    acc = acc + data[q.start + hs + j] * data[at[t] + hs + j]
                    add_child(ar, q.start + hs + j)
                    add_child(ar, at[t] + hs + j)
                close_node(ar, o, acc, 0.0)
            scaled_start = <int32_t>ar.n_nodes
            for t in range(T):  # / head_dim**0.5: (T,)
                o = open_node(ar, UNARY)
                add_child(ar, logit_start + t)
                close_node(ar, o, data[logit_start + t] * inv_sqrt, inv_sqrt)
            at[2 * T + h] = softmax_nodes(ar, scaled_start, <int32_t>T, -1)  # weights: (T,), stride 2
        start = <int32_t>ar.n_nodes
        for h in range(n_head):  # head_out[j] = sum_t weights[t] * v_h[t][j]: (n,)
            hs = h * hd
            for j in range(hd):
                o = open_node(ar, DOT)
                acc = 0.0
                for t in range(T):
                    acc = acc + data[at[2 * T + h] + 2 * t] * data[at[T + t] + hs + j]
                    add_child(ar, at[2 * T + h] + 2 * t)
                    add_child(ar, at[T + t] + hs + j)
                close_node(ar, o, acc, 0.0)
        return self.vec(start, n)

    cdef int32_t* scratch_for(self, Py_ssize_t count) except NULL:
        cdef int32_t* grown
        if count > self.scratch_capacity:
            grown = <int32_t*>realloc(self.scratch, count * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            self.scratch, self.scratch_capacity = grown, count
        return self.scratch

    def __dealloc__(self):
        free(self.scratch)

    def nll(self, Vec logits, Py_ssize_t target):
        """-log(softmax(logits)[target]): one position's loss, a scalar Vec."""
        self.check(logits)
        if not 0 <= target < logits.size:
            raise IndexError(f"target {target} out of range for {logits.size} logits")
        cdef Arena ar = self.arena
        cdef int32_t count = logits.size
        ar.reserve(3 * count + 5, 3 * count + 5)
        cdef int32_t prob, lg, out
        cdef double p
        prob = softmax_nodes(ar, logits.start, count, <int32_t>target)
        p = ar.data[prob]
        if not p > 0:  # math.log(0.0) raises in microgpt; so do we
            raise ValueError(f"math domain error: log of probability {p!r}")
        lg = open_node(ar, UNARY)  # .log(), local grad 1/p
        add_child(ar, prob)
        close_node(ar, lg, log(p), 1.0 / p)
        out = open_node(ar, UNARY)  # -x  ==  x * -1
        add_child(ar, lg)
        close_node(ar, out, ar.data[lg] * -1.0, -1.0)
        return self.vec(out, 1)

    def mean(self, list losses):
        """(1 / n) * sum(losses): the sequence loss, a scalar Vec."""
        cdef Py_ssize_t n = len(losses), i
        if n == 0:
            raise ValueError("mean of no losses")
        cdef Arena ar = self.arena
        ar.reserve(2, n + 1)
        cdef Vec x
        cdef int32_t total = open_node(ar, SUM)
        cdef double acc = 0.0
        for i in range(n):
            x = losses[i]
            self.check(x)
            acc = acc + ar.data[x.start]
            add_child(ar, x.start)
        close_node(ar, total, acc, 0.0)
        cdef double inv_n = 1.0 / n  # Python's 1 / n
        cdef int32_t out = open_node(ar, UNARY)
        add_child(ar, total)
        close_node(ar, out, acc * inv_n, inv_n)
        return self.vec(out, 1)

    def backward(self, Vec loss):
        """Gradients of the scalar `loss` into every node (parameters included); its value."""
        self.check(loss)
        if loss.size != 1:
            raise ValueError("backward needs a scalar (size-1) vector")
        self.arena.backward(loss.start)
        return self.arena.data[loss.start]

    def probs(self, Vec logits, double temperature):
        """softmax(logits / temperature) as floats, without recording a graph."""
        self.check(logits)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        cdef Arena ar = self.arena
        cdef int32_t count = logits.size
        cdef bint was_recording = ar.recording
        ar.reserve(5 * count + 2, 8 * count + 1)
        cdef double inv_t = pow(temperature, -1.0)  # l / temperature  ==  l * temperature**-1
        cdef int32_t i, o, src, prob
        ar.recording = False
        src = <int32_t>ar.n_nodes
        for i in range(count):
            o = open_node(ar, UNARY)
            close_node(ar, o, ar.data[logits.start + i] * inv_t, inv_t)
        prob = softmax_nodes(ar, src, count, -1)
        ar.recording = was_recording
        return [ar.data[prob + 2 * i] for i in range(count)]

