"""The model's vector operations as graph builders: each call appends its nodes in C;
and the order templates that replay the depth-first order of a graph shape seen before.

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
* Every `**` goes through libm `pow`, as Python's float `**` does; no `sqrt`, no `x*x`;
  or, where the GraphOps may (`pow_shortcut`: engines.adam.POW_SHORTCUT), the variable
  powers (softmax's total ** -1 and its local gradient's total ** -2, rmsnorm's
  (ms + eps) ** -0.5 and its gradient's ** -1.5) through pow_shortcut.h, which proves
  pow's result where it can (the same bits) and calls pow elsewhere.  The build adds
  -ffp-contract=off so the C compiler never fuses a*b+c into one FMA, and no -mfma: the
  header's exact products are Dekker's two-product, or FMAs in its copy compiled for FMA
  (a target attribute), which GraphOps calls where the CPU has FMA (`pow_fma`).
* Every exp is libm `exp`, as Python's math.exp; or, where the GraphOps may (`exp_shortcut`:
  engines.fused.EXP_SHORTCUT, glibc's documented exp), the softmax's exps through
  exp_shortcut.h, the fused pass's proof of libm exp's result four lanes at a time (libm
  exp for the lanes it leaves), compiled here for AVX2 and FMA (a target pragma) and run
  where the CPU has both.
Where microgpt's Python raises (math.log(0.0), a float `**` that overflows), the op
raises the same exception type; each op's docstring says which can and why.

Every op has the same four steps, so that no Python code runs while it writes the arena:
  1. take its Python objects and room: the output Vec and scratch (which may run Python:
     the cyclic GC's finalizers, a switch to another thread), then reserve() (which runs
     none: see Arena.reserve), with its counts from the functions that build the nodes;
  2. validate its handles (after step 1, whose Python may have reset this graph);
  3. log itself (log_op: what decides its nodes' shape, so that backward can find
     the order of a graph shape it has seen) and build the nodes in C: `noexcept nogil`
     kernels over the arena's memoryviews;
  4. fill in the output Vec.
The ops hold the GIL on purpose: an op takes microseconds (releasing the GIL would cost
more than it frees), and it keeps other threads out of this arena while step 3 runs.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport exp, log, pow
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy

import numpy as np

from cymicrogpt.config import RMSNORM_EPS
from cymicrogpt.exp2_table import exp2_table

from cymicrogpt._kernels cimport dot_rows, sum_rows, transpose
from cymicrogpt._arena cimport (Arena, MAX_INDEX, LEAF, UNARY, ADD, SUM, DOT, SUM_LIST, DOT_LIST, GROUP_FIELDS,
                                GROUP_ELEMENTWISE,
                                add_node, add_edge, cells, defer_weight_gradients, find_elementwise_chains,
                                find_linear_groups, group_fits,
                                pause_gc, resized, resume_gc)
from cymicrogpt.pow_shortcut cimport MINUS_HALF, MINUS_ONE, MINUS_THREE_HALVES, MINUS_TWO, power  # pow_shortcut.h


cdef extern from * nogil:
    """
    /* pow_shortcut.h once more, with its exact products from FMA instructions: _ops is built
       without -mfma, so on x86-64 this copy is compiled for FMA (a target attribute) and
       called only where the CPU has FMA; elsewhere it is the default copy. */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__FMA__)
    #define CYMG_POW(name) cymg_fma_##name
    #define CYMG_POW_FMA 1
    #define CYMG_POW_TARGET __attribute__((target("fma")))
    #include "pow_shortcut.h"
    static int cymg_fma_runs(void) { __builtin_cpu_init(); return __builtin_cpu_supports("fma"); }
    #else
    #define cymg_fma_power cymg_power
    static int cymg_fma_runs(void) { return 0; }
    #endif
    """
    double fma_power "cymg_fma_power"(double x, int which, bint shortcut) noexcept
    bint fma_runs "cymg_fma_runs"() noexcept


cdef extern from * nogil:
    """
    /* relu: max(0, v) and its local gradient float(v > 0), as microgpt's `v if v > 0 else 0`
       and `float(v > 0)` give them (nan: 0.0 and 0.0; -0.0: 0.0), without a branch: the sign
       of a pre-activation is a coin toss, and a mispredicted branch costs more than the node.
       SSE2's maxsd returns its second operand unless the first is greater, cmpgtsd all ones
       where it is greater, both exactly the comparison v > 0. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline double cymg_relu(double v, double *local_grad) {
        __m128d x = _mm_set_sd(v), zero = _mm_setzero_pd();
        *local_grad = _mm_cvtsd_f64(_mm_and_pd(_mm_cmpgt_sd(x, zero), _mm_set_sd(1.0)));
        return _mm_cvtsd_f64(_mm_max_sd(x, zero));
    }
    #else
    static inline double cymg_relu(double v, double *local_grad) {
        *local_grad = v > 0 ? 1.0 : 0.0;
        return v > 0 ? v : 0.0;
    }
    #endif
    """
    double relu "cymg_relu"(double v, double* local_grad) noexcept


cdef extern from * nogil:
    """
    /* exp_shortcut.h, the fused pass's proven exps, for the softmax's: _ops is built without
       -mavx2 -mfma, so on x86-64 gcc the header is compiled for AVX2 and FMA (a target pragma,
       which also defines the __AVX2__ and __FMA__ its test reads) and called only where the CPU
       has both.  Elsewhere (another compiler, another CPU) CYMG_GRAPH_EXP is 0: libm exp. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__)
    #pragma GCC push_options
    #pragma GCC target("avx2,fma")
    #include "exp_shortcut.h"
    static Py_ssize_t cymg_graph_exp_shifted(const double *x, double shift, double *out, Py_ssize_t n,
                                             const double *table) {
        return cymg_exp_shifted(x, shift, out, n, table);
    }
    #pragma GCC pop_options
    #define CYMG_GRAPH_EXP CYMG_EXP_AVX2
    #define CYMG_GRAPH_EXP_TABLE_BITS CYMG_EXP_TABLE_BITS
    #else
    #define CYMG_GRAPH_EXP 0
    #define CYMG_GRAPH_EXP_TABLE_BITS 0
    static Py_ssize_t cymg_graph_exp_shifted(const double *x, double shift, double *out, Py_ssize_t n,
                                             const double *table) {
        (void)x, (void)shift, (void)out, (void)n, (void)table;
        return 0;  /* never called: CYMG_GRAPH_EXP is 0 */
    }
    #endif
    static double cymg_graph_exp_table[2 << CYMG_GRAPH_EXP_TABLE_BITS];  /* exp2_table's his, then its los */
    static int cymg_graph_exp_runs(void) {
    #if CYMG_GRAPH_EXP
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    # out[i] = exp(x[i] + shift), i < n, as libm exp returns it, four lanes at a time (see
    # exp_shortcut.h's cymg_exp_shifted: x is read, and out written, to n rounded up to a
    # multiple of 4); only where graph_exp_runs()
    Py_ssize_t graph_exp_shifted "cymg_graph_exp_shifted"(const double* x, double shift, double* out, Py_ssize_t n,
                                                         const double* table) noexcept
    bint graph_exp_runs "cymg_graph_exp_runs"() noexcept
    const int GRAPH_EXP_TABLE_BITS "CYMG_GRAPH_EXP_TABLE_BITS"
    double* exp_table "cymg_graph_exp_table"

cdef bint exp_table_filled = False  # exp_table holds exp2_table's entries (filled at the first use)


cdef int fill_exp_table() except -1:
    """exp_table := exp2_table(GRAPH_EXP_TABLE_BITS), its his then its los: once a process,
    by the first GraphOps with the exp shortcut (~2 ms)."""
    global exp_table_filled
    if not exp_table_filled:
        his, los = exp2_table(GRAPH_EXP_TABLE_BITS)
        for j, part in enumerate(his + los):
            exp_table[j] = part
        exp_table_filled = True
    return 0


cdef enum:  # how the graph computes x ** -1, -2, -0.5, -1.5 (GraphMath.pow_mode)
    PLAIN_POW  # libm pow
    SHORTCUT  # pow_shortcut.h, exact products from Dekker's two-product
    SHORTCUT_FMA  # pow_shortcut.h, exact products from FMA instructions (the same doubles)


cdef inline double graph_power(double x, int which, int mode) noexcept nogil:
    """x ** -1, -2, -0.5 or -1.5 (which: MINUS_ONE ...) as libm pow gives it, computed as `mode` says."""
    if mode == SHORTCUT_FMA:
        return fma_power(x, which, True)
    return power(x, which, mode == SHORTCUT)

# Templates may hold up to this many bytes per node of the arena's capacity (the arena
# itself takes ~60; a template ~4 a node of its graph plus its key, ~1 a node): enough for
# every document length of a names-like corpus, while a corpus of long documents keeps
# templates only for the lengths it meets first.
cdef Py_ssize_t TEMPLATE_BYTES_PER_NODE = 32
# Step programs likewise (a program takes ~1 byte per node of its graph: see StepProgram).
cdef Py_ssize_t PROGRAM_BYTES_PER_NODE = 16

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
cdef inline Py_ssize_t softmax_size(Py_ssize_t count, bint one) noexcept nogil:
    """Nodes softmax_nodes builds: count shifted, count exps, their total, and a
    total**-1 and a probability for each probability built (one, or all count)."""
    return 2 * count + 1 + 2 * (1 if one else count)


cdef int32_t softmax_nodes(Arena ar, int32_t src, int32_t count, int32_t only, GraphMath* m) noexcept nogil:
    """Softmax over nodes src..src+count-1; returns the index of the first prob node.

    Probability i is node prob_start + 2*i (each follows its own total**-1 node).  With
    only >= 0, builds just that one probability (the others would be nodes no loss
    depends on).  Needs softmax_size(count, only >= 0) nodes reserved.  The exps are libm
    exp's, or exp_shortcut.h's proof of them where m.exp_shortcut (the same doubles).

    Nothing here can raise in microgpt either: Python's max() keeps the first element
    unless a later one compares greater, as the loop below does, so every val - max_val
    is <= 0 or NaN, math.exp of it cannot overflow, and total is in [1, count] or NaN,
    so total**-1 and total**-2 cannot overflow or divide by zero.
    """
    cdef double max_val = ar.data[src]
    cdef double v, total, inv_total, local_grad
    cdef int32_t i, shifted_start, exp_start, total_node, inv_node, prob, prob_start
    for i in range(1, count):
        if ar.data[src + i] > max_val:
            max_val = ar.data[src + i]
    shifted_start = <int32_t>ar.n_nodes
    for i in range(count):  # val - max_val  ==  val + (-max_val)
        add_node(ar, UNARY, src + i, 0, 0, ar.data[src + i] + (-max_val), 1.0)
    exp_start = <int32_t>ar.n_nodes
    if m.exp_shortcut:
        # the exps straight into their nodes' values (shift -0.0 adds nothing), in whole groups
        # of four: the up to three values written past them are the next nodes', which
        # softmax_size reserves (total, a total**-1, a probability) and add_node overwrites
        graph_exp_shifted(&ar.data[shifted_start], -0.0, &ar.data[exp_start], count, exp_table)
        for i in range(count):  # .exp(), local grad exp(x)
            v = ar.data[exp_start + i]
            add_node(ar, UNARY, shifted_start + i, 0, 0, v, v)
    else:
        for i in range(count):
            v = exp(ar.data[shifted_start + i])
            add_node(ar, UNARY, shifted_start + i, 0, 0, v, v)
    total = 0.0  # sum(exps), from 0
    for i in range(count):
        total = total + ar.data[exp_start + i]
    total_node = add_node(ar, SUM, exp_start, 0, count, total, 0.0)
    inv_total = graph_power(total, MINUS_ONE, m.pow_mode)
    # the local gradient of total**-1, -1 * total**-2: one pow call serves every
    # probability's node (pow is a function of its arguments: the same bits each time)
    local_grad = -1.0 * graph_power(total, MINUS_TWO, m.pow_mode)
    prob_start = -1
    for i in range(count):
        if only >= 0 and i != only:
            continue
        # e / total is e * total**-1, and microgpt's list comprehension evaluates
        # total**-1 anew for every e: one pow node per probability, never shared (a
        # shared node would sum the gradients from all probabilities before passing
        # them to total, in another rounding order).
        inv_node = add_node(ar, UNARY, total_node, 0, 0, inv_total, local_grad)
        prob = add_node(ar, DOT, exp_start + i, inv_node, 1, ar.data[exp_start + i] * inv_total, 0.0)
        if prob_start < 0:
            prob_start = prob
    return prob_start


# --- node builders: each op's nodes, in C --------------------------------------------------
cdef inline double dot_from_zero(const double* a, const double* b, int32_t n) noexcept nogil:
    """sum(a[j] * b[j] for j < n), left to right from 0.0: dot_rows' sum of one row, inline for
    the short ones (an attention head's, an rmsnorm's), where a call costs more than the sum."""
    cdef double acc = 0.0
    cdef int32_t j
    for j in range(n):
        acc = acc + a[j] * b[j]
    return acc


# The ops below (and GraphOps.replay) call these after reserving their room: they build an
# op's nodes from node indices alone, so a recorded step can be built again without the
# Python objects (Vec, Mat, lists) of the run that recorded it.  Each returns the index of
# its first output node.
cdef int32_t build_add(Arena ar, int32_t a, int32_t b, int32_t size) noexcept nogil:
    """a + b elementwise: (size,)."""
    cdef int32_t i, start = <int32_t>ar.n_nodes
    for i in range(size):
        add_node(ar, ADD, a + i, b + i, 0, ar.data[a + i] + ar.data[b + i], 0.0)
    return start


cdef int32_t build_linear(Arena ar, int32_t w, int32_t rows, int32_t cols, int32_t x,
                          const double* transposed) noexcept nogil:  # IN: w's values transposed, or NULL
    """w @ x, w (rows, cols) from node w: (rows,), row r's children (w[r, j], x[j]) pairwise.
    Each row's sum runs left to right from 0.0, over w's rows (dot_rows), or, given w's
    transpose (cols, rows), over its rows, the rows' sums side by side in vector lanes
    (sum_rows: a load per column where dot_rows transposes w in registers each time)."""
    cdef int32_t r, start = <int32_t>ar.n_nodes
    for r in range(rows):
        add_node(ar, DOT, w + r * cols, x, cols, 0.0, 0.0)
    if transposed == NULL:
        dot_rows(&ar.data[w], cols, &ar.data[x], &ar.data[start], rows)
    else:
        sum_rows(&ar.data[start], rows, transposed, rows, &ar.data[x], 1, cols)
    return start


cdef int32_t build_relu(Arena ar, int32_t x, int32_t size) noexcept nogil:
    """max(0, x): (size,), local gradient float(x > 0)."""
    cdef int32_t i, start = <int32_t>ar.n_nodes
    cdef double v, local_grad
    for i in range(size):
        v = relu(ar.data[x + i], &local_grad)
        add_node(ar, UNARY, x + i, 0, 0, v, local_grad)
    return start


cdef inline Py_ssize_t rmsnorm_size(int32_t n) noexcept nogil:
    return n + 4


cdef inline double norm_inverse(GraphMath* m, int32_t n) noexcept nogil:
    """len(x)**-1 for rmsnorm of n elements: an int raised to a negative int, which Python
    computes with float pow (here once per size: see GraphMath)."""
    if m.norm_size != n:
        m.norm_inverse = pow(<double>n, -1.0)
        m.norm_size = n
    return m.norm_inverse


cdef inline double head_scale(GraphMath* m, int32_t head_dim) noexcept nogil:
    """(head_dim**0.5)**-1: head_dim**0.5 is a float pow, and "/ s" on a Value is "* s**-1"
    (here once per size: see GraphMath)."""
    if m.head_dim != head_dim:
        m.head_scale = pow(pow(<double>head_dim, 0.5), -1.0)
        m.head_dim = head_dim
    return m.head_scale


cdef int32_t build_rmsnorm(Arena ar, int32_t x, int32_t n, GraphMath* m) noexcept nogil:
    """x * (mean(x**2) + eps) ** -0.5: (n,), through microgpt's four scalar nodes."""
    cdef int32_t i, sum_sq, ms, shifted, scale, start
    cdef double inv_n = norm_inverse(m, n), v
    v = dot_from_zero(&ar.data[x], &ar.data[x], n)
    sum_sq = add_node(ar, DOT, x, x, n, v, 0.0)  # sum(xi * xi for xi in x)
    ms = add_node(ar, UNARY, sum_sq, 0, 0, v * inv_n, inv_n)  # / len(x)  ==  * len(x)**-1
    v = ar.data[ms]
    shifted = add_node(ar, UNARY, ms, 0, 0, v + m.rmsnorm_eps, 1.0)  # + eps
    v = ar.data[shifted]
    scale = add_node(ar, UNARY, shifted, 0, 0, graph_power(v, MINUS_HALF, m.pow_mode),
                     -0.5 * graph_power(v, MINUS_THREE_HALVES, m.pow_mode))  # ** -0.5
    v = ar.data[scale]
    start = <int32_t>ar.n_nodes
    for i in range(n):  # out: (n,), xi * scale
        add_node(ar, DOT, x + i, scale, 1, ar.data[x + i] * v, 0.0)
    return start


cdef inline Py_ssize_t attention_size(int32_t n, int32_t n_head, Py_ssize_t T) noexcept nogil:
    return n_head * (2 * T + softmax_size(T, False)) + n


cdef int32_t build_attention(Arena ar, int32_t q, int32_t n, int32_t n_head, Py_ssize_t T,
                             int32_t[::1] at,  # IN: key starts [0, T), value starts [T, 2T); scratch [2T, 2T + n_head)
                             GraphMath* m) noexcept nogil:
    """Causal multi-head attention of q (n,) over T keys and values (each (n,)): (n,)."""
    cdef int32_t hd = n // n_head
    cdef double inv_sqrt = head_scale(m, hd), acc
    cdef int32_t h, j, hs, logit_start, scaled_start, start, e
    cdef Py_ssize_t t
    for h in range(n_head):
        hs = h * hd
        logit_start = <int32_t>ar.n_nodes
        for t in range(T):  # q_h . k_h[t]: (T,), children (q[j], k_t[j]) pairwise
            add_node(ar, DOT, q + hs, at[t] + hs, hd, dot_from_zero(&ar.data[q + hs], &ar.data[at[t] + hs], hd), 0.0)
        scaled_start = <int32_t>ar.n_nodes
        for t in range(T):  # / head_dim**0.5: (T,)
            add_node(ar, UNARY, logit_start + t, 0, 0, ar.data[logit_start + t] * inv_sqrt, inv_sqrt)
        at[2 * T + h] = softmax_nodes(ar, scaled_start, <int32_t>T, -1, m)  # weights: (T,), stride 2
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
    return start


cdef inline Py_ssize_t nll_size(int32_t count) noexcept nogil:
    return softmax_size(count, True) + 2


cdef int32_t build_nll(Arena ar, int32_t logits, int32_t count, int32_t target, GraphMath* m) noexcept nogil:
    """-log(softmax(logits)[target]): the loss node, or -1 when the probability is 0.0
    (microgpt's math.log raises there; the nodes built stay, unused).  The probability
    node is the loss node's child's child."""
    cdef int32_t prob = softmax_nodes(ar, logits, count, target, m), lg
    cdef double p = ar.data[prob]
    if p == 0.0:
        return -1
    lg = add_node(ar, UNARY, prob, 0, 0, log(p), 1.0 / p)  # .log(), local grad 1/p
    return add_node(ar, UNARY, lg, 0, 0, ar.data[lg] * -1.0, -1.0)  # -x  ==  x * -1


cdef int32_t build_mean(Arena ar, const int32_t[::1] losses, Py_ssize_t n) noexcept nogil:
    """(1 / n) * sum(losses): losses are n scalar nodes."""
    cdef int32_t e = <int32_t>ar.n_edges, total
    cdef double acc = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        acc = acc + ar.data[losses[i]]
        add_edge(ar, losses[i])
    total = add_node(ar, SUM_LIST, e, 0, <int32_t>n, acc, 0.0)
    cdef double inv_n = 1.0 / n  # Python's 1 / n
    return add_node(ar, UNARY, total, 0, 0, acc * inv_n, inv_n)


# --- the op log ---------------------------------------------------------------------------
# Every op that appends nodes first logs what decides their kinds and non-leaf children:
# its op code, its integer arguments and, for each operand range, its size and its start,
# or -1 when the range lies wholly in the fixed nodes (leaves: the search never enters
# them, so which weight row an op reads does not change the order).  No node value ever
# decides a kind or a child.  The graph is built by its GraphOps' ops only, from a reset
# arena, so two graphs with equal logs (and roots) have the same depth-first order, up
# to nll's probability nodes (see OrderTemplate).  Reserve the entries first.
cdef inline void log_op(GraphOps ops, int32_t value) noexcept nogil:
    ops.log[ops.n_log] = value
    ops.n_log += 1


cdef inline void log_operand(GraphOps ops, int32_t start, int32_t size) noexcept nogil:
    """Two entries: the range's size and start (-1: wholly leaves)."""
    log_op(ops, size)
    log_op(ops, -1 if start + size <= ops.arena.n_fixed else start)


cdef inline void add_prob_node(GraphOps ops, int32_t prob) noexcept nogil:
    """Note nll's probability node (reserve it first); nothing when not recording."""
    if ops.arena.recording:
        ops.prob_nodes[ops.n_prob_nodes] = prob
        ops.n_prob_nodes += 1


# --- handles -------------------------------------------------------------------------------
cdef class Vec:
    def __len__(self):
        return self.size

    def __repr__(self):
        return f"Vec(start={self.start}, size={self.size})"


cdef class Mat:
    def __repr__(self):
        return f"Mat(start={self.start}, rows={self.rows}, cols={self.cols})"


cdef inline void fill(Vec out, GraphOps ops, int32_t start, int32_t size) noexcept:
    """An op's output, filled last: a vector of the current sequence."""
    out.start, out.size, out.owner, out.graph, out.slot = start, size, ops.id, ops.graph, -1


cdef class GraphOps:
    """Builds the model's graph in an Arena whose first nodes are the parameters.

    `layout` is a list of weight matrices, objects with `name`, `rows`, `cols` and
    `offset` attributes (params.MatrixSlot), over the flat `weights` in state-dict order;
    the weights become the arena's fixed leaf nodes.  `rmsnorm_eps` is rmsnorm's epsilon
    (config.RMSNORM_EPS, microgpt's 1e-5).  `pow_shortcut`: may pow_shortcut.h settle the
    graph's x ** -1, -2, -0.5, -1.5 without libm pow (only where libm's pow is glibc's
    analysed one: engines.adam.POW_SHORTCUT); the same bits either way.  `pow_fma`: may it take
    its exact products from FMA instructions (where the CPU has FMA: pow_fma says whether it
    does) rather than Dekker's two-product; the same bits, fewer instructions.  `exp_shortcut`:
    may exp_shortcut.h settle the softmax's exps without libm exp (only where libm's exp is
    glibc's analysed one: engines.fused.EXP_SHORTCUT); it does where the CPU has AVX2 and FMA
    and this build has the shortcut (exp_shortcut says whether it does); the same bits either way.
    """

    def __cinit__(self):
        self.arena = Arena()
        self.templates = {}
        self.programs_by_code = {}
        self.log, self.prob_nodes = cells(<int32_t>0, 256), cells(<int32_t>0, 16)
        self.scratch = cells(<int32_t>0, 0)
        self.transposed = cells(0.0, 0)

    def __init__(self, layout, weights, double rmsnorm_eps=RMSNORM_EPS, *, bint pow_shortcut=False,
                 bint pow_fma=False, bint exp_shortcut=False):
        if not rmsnorm_eps > 0.0 or rmsnorm_eps == float("inf"):
            raise ValueError(f"rmsnorm_eps must be positive and finite, got {rmsnorm_eps!r}")
        array = np.asarray(weights, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"weights must be a flat sequence of numbers, got shape {array.shape}")
        cdef const double[::1] values = np.ascontiguousarray(array)
        cdef Py_ssize_t count = values.shape[0], i
        cdef Mat m
        self.rmsnorm_eps = rmsnorm_eps
        self.pow_shortcut = pow_shortcut
        self.pow_fma = pow_shortcut and pow_fma and fma_runs()
        self.exp_shortcut = exp_shortcut and graph_exp_runs()
        if self.exp_shortcut:
            fill_exp_table()
        self.math.pow_mode = SHORTCUT_FMA if self.pow_fma else SHORTCUT if pow_shortcut else PLAIN_POW
        self.math.exp_shortcut = self.exp_shortcut
        self.math.rmsnorm_eps = rmsnorm_eps
        self.math.norm_size = self.math.head_dim = 0
        self.reserve(count, 0, 0)
        for i in range(count):
            add_node(self.arena, LEAF, 0, 0, 0, values[i], 0.0)
        self.arena.n_fixed = count
        self.id = new_id()
        self.weights_graph = new_id()
        self.graph = new_id()
        self.matrices = {}
        for slot in layout:
            if slot.offset < 0 or slot.rows <= 0 or slot.cols <= 0 or slot.offset + slot.rows * slot.cols > count:
                raise ValueError(f"matrix {slot.name} lies outside the {count} weights")
            m = Mat.__new__(Mat)
            m.start, m.rows, m.cols, m.owner = slot.offset, slot.rows, slot.cols, self.id
            self.matrices[slot.name] = m

    # --- room -------------------------------------------------------------------------
    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries,
                     Py_ssize_t prob_nodes=0) except -1:
        """Room for `nodes` more nodes and `edges` more edges in the arena, `log_entries`
        more op log entries and `prob_nodes` more probability nodes.  Runs no Python: the
        growth of the arena and of these arrays alike (see Arena.reserve)."""
        if (self.arena.n_nodes + nodes <= self.arena.node_capacity
                and self.arena.n_edges + edges <= self.arena.edge_capacity
                and self.n_log + log_entries <= self.log.shape[0]
                and self.n_prob_nodes + prob_nodes <= self.prob_nodes.shape[0]):
            return 0
        cdef int was_enabled = pause_gc()
        try:
            self.grow(nodes, edges, log_entries, prob_nodes)
        finally:
            resume_gc(was_enabled)
        return 0

    cdef int grow(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries,
                  Py_ssize_t prob_nodes) except -1:
        """reserve()'s growth, with the GC paused."""
        self.arena.reserve(nodes, edges)
        cdef int32_t[::1] log = self.log, probs = self.prob_nodes
        if self.n_log + log_entries > log.shape[0]:
            log = resized(log, self.n_log, 2 * (self.n_log + log_entries))
        if self.n_prob_nodes + prob_nodes > probs.shape[0]:
            probs = resized(probs, self.n_prob_nodes, 2 * (self.n_prob_nodes + prob_nodes))
        self.log, self.prob_nodes = log, probs
        return 0

    cdef void start_sequence(self, bint record) noexcept:
        """A fresh graph (begin_sequence, a replayed step): the previous sequence's nodes
        dropped, a new graph id, the op log restarted.  A step being traced ends here unless
        nothing of it was recorded yet (its own begin_sequence)."""
        self.arena.reset()
        self.n_log = self.n_prob_nodes = 0  # room for the log's first entries: its array is never empty
        self.arena.recording = record
        log_op(self, OP_BEGIN)
        log_op(self, record)
        self.graph = new_id()
        if self.trace is not None and (self.trace or not record):
            self.stop_trace()  # a traced step is one sequence, with a graph

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
            self.scratch = cells(<int32_t>0, max(count, 2 * self.scratch.shape[0]))
        return self.scratch

    def matrix(self, str name):
        return self.matrices[name]

    def row(self, str name, Py_ssize_t index):
        """Row `index` of a weight matrix."""
        return self.weight_row(name, index, -1)

    def traced_row(self, str name, Py_ssize_t index, int32_t slot):
        """row(), in a traced step where index is tokens[slot] (see StepProgram)."""
        return self.weight_row(name, index, slot)

    cdef Vec weight_row(self, str name, Py_ssize_t index, int32_t slot):
        cdef Mat m = self.matrices[name]
        if not 0 <= index < m.rows:
            raise IndexError(f"row {index} out of range for {name} with {m.rows} rows")
        cdef Vec v = Vec.__new__(Vec)
        v.start, v.size, v.owner, v.graph = m.start + <int32_t>index * m.cols, m.cols, self.id, self.weights_graph
        v.slot = slot if slot >= 0 and self.take_slot(index, slot, m.rows) else -1
        return v

    def node_values(self):
        """NumPy view of every node's value (the arena's; fetch it again after a graph is
        built: a growing arena moves to new memory)."""
        return self.arena.node_values()

    def node_grads(self):
        return self.arena.node_grads()

    @property
    def num_nodes(self):
        return self.arena.n_nodes

    @property
    def capacity(self):
        """(node capacity, edge capacity): constant once the largest graph was built."""
        return self.arena.node_capacity, self.arena.edge_capacity

    @property
    def order_templates(self):
        """How many graph shapes have a kept depth-first order (see OrderTemplate)."""
        return len(self.templates)

    def linear_groups(self):
        """Each kept order's linear groups (see _arena.pyx), as (records, entries per record)
        pairs in order: which rows the backward passes a layer at a time (for tests)."""
        cdef OrderTemplate t
        cdef Py_ssize_t g
        found = []
        for t in self.templates.values():
            found.append([(t.groups[g + 1], t.groups[g + 2]) for g in range(0, t.groups.shape[0], GROUP_FIELDS)])
        return found

    def elementwise_groups(self):
        """Each kept order's groups whose chains pass a level at a time
        (_arena.find_elementwise_chains), as linear_groups() gives them (for tests)."""
        cdef OrderTemplate t
        cdef Py_ssize_t g
        return [[(t.groups[g + 1], t.groups[g + 2]) for g in range(0, t.groups.shape[0], GROUP_FIELDS)
                 if t.groups[g + 4] & GROUP_ELEMENTWISE] for t in self.templates.values()]

    def deferred_groups(self):
        """Each kept order's groups whose weight gradients wait for the end of the pass
        (_arena.defer_weight_gradients), as linear_groups() gives them, in the order they are
        added then (for tests)."""
        cdef OrderTemplate t
        return [[(t.groups[GROUP_FIELDS * g + 1], t.groups[GROUP_FIELDS * g + 2]) for g in t.deferred]
                for t in self.templates.values()]

    @property
    def order_replays(self):
        """How many backward passes replayed a kept order instead of searching."""
        return self.replays

    # --- graph ops ----------------------------------------------------------------------
    def begin_sequence(self, bint record=True):
        """Forget the previous sequence's graph; record a new one (or only values)."""
        self.start_sequence(record)

    def add(self, Vec a, Vec b):
        """a + b elementwise (the residual connection, token + position embedding)."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        self.reserve(a.size, 0, 5)
        self.check(a)
        self.check(b)
        if a.size != b.size:
            raise ValueError(f"add: sizes differ ({a.size} and {b.size})")
        log_op(self, OP_ADD)
        log_operand(self, a.start, a.size)
        log_operand(self, b.start, b.size)
        fill(out, self, build_add(ar, a.start, b.start, a.size), a.size)
        if self.trace is not None:
            self.note_op([OP_ADD, a.size])
            self.note_operand(a)
            self.note_operand(b)
        return out

    def linear(self, Vec x, Mat w):
        """w @ x: one DOT node per output row (microgpt's sum(wi * xi for ...))."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        self.reserve(w.rows, 0, 4)
        self.check(x)
        self.check_matrix(w)
        if x.size != w.cols:
            raise ValueError(f"linear: input has {x.size} features, matrix expects {w.cols}")
        log_op(self, OP_LINEAR)
        log_op(self, w.rows)  # its rows are weights: leaves
        log_operand(self, x.start, x.size)
        fill(out, self, build_linear(ar, w.start, w.rows, w.cols, x.start, NULL), w.rows)
        if self.trace is not None:
            self.note_op([OP_LINEAR, w.rows, w.cols, w.start, self.transpose_offset(w)])
            self.note_operand(x)
        return out

    def relu(self, Vec x):
        """max(0, x): local gradient float(x > 0).  NaN gives 0, as max(0, nan) does."""
        cdef Vec out = Vec.__new__(Vec)
        self.reserve(x.size, 0, 3)
        self.check(x)
        log_op(self, OP_RELU)
        log_operand(self, x.start, x.size)
        fill(out, self, build_relu(self.arena, x.start, x.size), x.size)
        if self.trace is not None:
            self.note_op([OP_RELU, x.size])
            self.note_operand(x)
        return out

    def rmsnorm(self, Vec x):
        """x * (mean(x**2) + eps) ** -0.5, as microgpt's rmsnorm builds it.

        Cannot raise, in microgpt either: mean(x**2) + eps is >= eps > 0, +inf or NaN, and
        Python's float ** raises for none of them with exponents -0.5 and -1.5.  (An eps
        <= 0 could make it 0 or negative: __init__ refuses one.)"""
        cdef Vec out = Vec.__new__(Vec)
        self.reserve(rmsnorm_size(x.size), 0, 3)
        self.check(x)
        log_op(self, OP_RMSNORM)
        log_operand(self, x.start, x.size)
        fill(out, self, build_rmsnorm(self.arena, x.start, x.size, &self.math), x.size)
        if self.trace is not None:
            self.note_op([OP_RMSNORM, x.size])
            self.note_operand(x)
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
        # scratch: key starts [0, T), value starts [T, 2T), weight starts [2T, 2T+n_head)
        cdef int32_t[::1] at = self.scratch_for(2 * T + n_head)
        self.reserve(attention_size(n, n_head, T), 2 * T * n, 4 + 4 * T)
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
        log_op(self, OP_ATTENTION)
        log_op(self, n_head)
        log_operand(self, q.start, n)
        for t in range(2 * T):  # keys, then values (all of size n)
            log_operand(self, at[t], n)
        fill(out, self, build_attention(self.arena, q.start, n, n_head, T, at, &self.math), n)
        if self.trace is not None:
            self.note_op([OP_ATTENTION, n, n_head, T], 2 * T + n_head)
            self.note_operand(q)
            for kv in keys:
                self.note_operand(kv)
            for kv in values:
                self.note_operand(kv)
        return out

    def nll(self, Vec logits, Py_ssize_t target):
        """-log(softmax(logits)[target]): one position's loss, a scalar Vec.

        Raises ValueError where microgpt's math.log does: a probability of exactly 0.0
        (its exp underflowed).  A NaN probability gives a NaN loss, as math.log(nan)."""
        return self.loss_of(logits, target, -1)

    def traced_nll(self, Vec logits, Py_ssize_t target, int32_t slot):
        """nll(), in a traced step where target is tokens[slot] (see StepProgram)."""
        return self.loss_of(logits, target, slot)

    cdef Vec loss_of(self, Vec logits, Py_ssize_t target, int32_t slot):
        cdef Vec out = Vec.__new__(Vec)
        cdef Arena ar = self.arena
        self.reserve(nll_size(logits.size), 0, 3, 1)
        self.check(logits)
        if not 0 <= target < logits.size:
            raise IndexError(f"target {target} out of range for {logits.size} logits")
        log_op(self, OP_NLL)  # not the target: see OrderTemplate
        log_operand(self, logits.start, logits.size)
        cdef int32_t loss = build_nll(ar, logits.start, logits.size, <int32_t>target, &self.math)
        if loss < 0:
            raise ValueError("math domain error: log of probability 0.0")
        add_prob_node(self, ar.a[ar.a[loss]])  # its first child depends on the target: see OrderTemplate
        fill(out, self, loss, 1)
        if self.trace is not None:
            self.note_op([OP_NLL, logits.size])
            self.note_operand(logits)
            self.note_target(target, slot, logits.size)
        return out

    def mean(self, list losses):
        """(1 / n) * sum(losses): the sequence loss, a scalar Vec."""
        cdef Vec out = Vec.__new__(Vec)
        cdef Py_ssize_t n = len(losses), i
        if n == 0:
            raise ValueError("mean of no losses")
        cdef int32_t[::1] starts = self.scratch_for(n)
        self.reserve(2, n, 2 + n)
        if len(losses) != n:
            raise RuntimeError("mean: the list of losses changed during the call")
        cdef Vec x
        for i in range(n):
            x = losses[i]
            self.check(x)
            starts[i] = x.start
        log_op(self, OP_MEAN)
        log_op(self, <int32_t>n)
        for i in range(n):
            log_op(self, starts[i])  # scalars: their starts
        fill(out, self, build_mean(self.arena, starts, n), 1)
        if self.trace is not None:
            self.note_op([OP_MEAN, n], n)
            for x in losses:
                self.note_operand(x)
        return out

    def backward(self, Vec loss):
        """Gradients of the scalar `loss` into every node (parameters included); its value."""
        self.check(loss)
        if loss.size != 1:
            raise ValueError("backward needs a scalar (size-1) vector")
        if self.trace is not None:  # the traced step ends here
            if self.trace_root >= 0 or not self.trace:
                self.stop_trace()
            else:
                self.trace_root = loss.start
        self.backward_cached(loss.start)
        return self.arena.data[loss.start]

    def probs(self, Vec logits, temperature):
        """softmax(logits / temperature) as floats, without recording a graph."""
        # l / temperature is l * temperature**-1, with Python's own float ** so that its
        # errors (0 ** -1, an overflowing 5e-324 ** -1) are microgpt's.
        cdef double inv_t = temperature ** -1
        cdef Arena ar = self.arena
        cdef int32_t count = logits.size
        self.reserve(count + softmax_size(count, False), 0, 3)
        self.check(logits)
        cdef bint was_recording = ar.recording
        cdef int32_t i, src, prob
        log_op(self, OP_PROBS)
        log_operand(self, logits.start, count)
        ar.recording = False
        src = <int32_t>ar.n_nodes
        for i in range(count):
            add_node(ar, LEAF, 0, 0, 0, ar.data[logits.start + i] * inv_t, 0.0)
        prob = softmax_nodes(ar, src, count, -1, &self.math)
        ar.recording = was_recording
        if self.trace is not None:  # not a training step
            self.stop_trace()
        return [ar.data[prob + 2 * i] for i in range(count)]

    # --- traced steps (see StepProgram) -------------------------------------------------
    def start_trace(self, list tokens):
        """Record the next training step (begin_sequence(True), the model's ops, backward)
        for end_trace.  `tokens` are the step's tokens (ints); row and nll are told which
        one they were given by their `slot` argument."""
        self.trace, self.trace_tokens = [], list(tokens)
        self.trace_root = -1
        self.trace_token_limit = MAX_INDEX
        self.trace_slots = 0
        self.trace_scratch = 0
        self.trace_matrices = []

    def end_trace(self):
        """The StepProgram of the step traced since start_trace, or None when what ran was
        not one training step or the programs' memory budget is spent; stops tracing."""
        if self.trace is None or self.trace_root < 0:
            self.stop_trace()
            return None
        # Steps of different lengths often record the same program (a document truncated
        # to block_size reads no token past it): one object for them all, so that a corpus of
        # long documents costs one program, not one per length.
        self.trace.append(self.trace_root)
        cdef bytes key = np.array(self.trace, dtype=np.int32).tobytes()  # the code, then the root
        cdef StepProgram program = self.programs_by_code.get(key)
        if program is not None:
            self.stop_trace()
            return program
        cdef Py_ssize_t size = len(key) + sizeof(int32_t) * (self.trace_slots + len(self.trace_matrices))
        if self.program_bytes + size > PROGRAM_BYTES_PER_NODE * self.arena.node_capacity:
            self.stop_trace()
            return None
        self.program_bytes += size
        program = StepProgram.__new__(StepProgram)
        program.code = np.frombuffer(key, dtype=np.int32)[:-1]  # the key's memory, read-only
        program.root = self.trace_root
        program.nodes, program.edges = self.arena.n_nodes - self.arena.n_fixed, self.arena.n_edges
        program.n_slots, program.token_limit = self.trace_slots, self.trace_token_limit
        program.scratch = self.trace_scratch
        program.tokens = cells(<int32_t>0, self.trace_slots)
        program.matrices = np.array(self.trace_matrices, dtype=np.int32)
        program.transposed_size = self.transpose_offset(None)
        program.template = self.templates.get(self.shape_key(self.trace_root))  # the traced backward's
        self.programs_by_code[key] = program
        self.stop_trace()
        return program

    cdef void stop_trace(self) noexcept:
        self.trace = self.trace_tokens = None

    cdef int32_t transpose_offset(self, Mat w):
        """Where the traced step's program keeps the transpose of w (see run_program): each
        matrix its own place, in the order the step first reads them.  With w None, the
        room they all take."""
        cdef list records = self.trace_matrices  # (start, rows, cols, offset) of each
        cdef Py_ssize_t k
        cdef int32_t end = 0
        for k in range(0, len(records), 4):
            if w is not None and (records[k], records[k + 1], records[k + 2]) == (w.start, w.rows, w.cols):
                return records[k + 3]
            end = records[k + 3] + records[k + 1] * records[k + 2]
        if w is not None:
            records.extend((w.start, w.rows, w.cols, end))
        return end

    cdef void note_op(self, list entries, Py_ssize_t scratch=0):
        """Record an op of the traced step: its code and integer arguments (then its
        operands: note_operand).  An op after the step's backward ends the trace."""
        if self.trace is None:
            return
        if self.trace_root >= 0:
            self.stop_trace()
            return
        self.trace.extend(entries)
        self.trace_scratch = max(self.trace_scratch, scratch)

    cdef void note_operand(self, Vec x):
        """Record an operand of the traced step as (base, slot): see StepProgram."""
        if self.trace is None:
            return
        if x.slot >= 0:
            self.trace.extend((x.start - self.trace_tokens[x.slot] * x.size, x.slot))
        else:
            self.trace.extend((x.start, -1))

    cdef bint take_slot(self, Py_ssize_t value, int32_t slot, int32_t rows) noexcept:
        """row or nll of the traced step was given tokens[slot] (== value) to pick one of
        `rows`; False (and the trace ends) when that is not the slot's token."""
        if self.trace is None:
            return False
        if not (0 <= slot < len(self.trace_tokens) and self.trace_tokens[slot] == value):
            self.stop_trace()
            return False
        self.trace_token_limit = min(self.trace_token_limit, rows)
        self.trace_slots = max(self.trace_slots, slot + 1)
        return True

    cdef void note_target(self, Py_ssize_t target, int32_t slot, int32_t count):
        """Record nll's target in the traced step: (0, slot) for tokens[slot], else (target, -1)."""
        if slot >= 0 and self.take_slot(target, slot, count):
            self.trace.extend((0, slot))
        elif self.trace is not None:
            self.trace.extend((target, -1))

    def replay(self, StepProgram program, list tokens):
        """The loss of the training step on `tokens` that `program` records the shape of,
        built in C and passed backward as backward(loss) would: the same nodes, values and
        gradients as the model running on this engine.  None, with no gradient changed,
        when the program cannot give it (a token it cannot pick, a probability of 0.0 that
        microgpt's log raises on): then the model must run, to raise as it does."""
        cdef Py_ssize_t i, token
        if len(tokens) < program.n_slots:
            return None
        for i in range(program.n_slots):
            item = tokens[i]
            if type(item) is not int:
                return None
            token = item
            if not 0 <= token < program.token_limit:
                return None
            program.tokens[i] = <int32_t>token
        cdef int32_t[::1] scratch = self.scratch_for(program.scratch)
        if program.transposed_size > self.transposed.shape[0]:
            self.transposed = cells(0.0, program.transposed_size)
        cdef Arena ar = self.arena
        # The op log gets only the sequence's start: the program holds its graph's order
        # template itself.
        self.start_sequence(True)
        self.reserve(program.nodes, program.edges, 0)
        if not run_program(ar, program.code, program.tokens, scratch, &self.math, program.matrices,
                           self.transposed):
            return None
        if ar.n_nodes - ar.n_fixed != program.nodes or ar.n_edges != program.edges:
            raise RuntimeError("a replayed step built another graph than the one recorded")
        self.pass_backward(program.root, program.template)
        self.step_replays += 1
        return ar.data[program.root]

    @property
    def step_replays_done(self):
        """How many training steps were built from a StepProgram instead of the model."""
        return self.step_replays


    # --- backward, with the order of a graph shape seen before ----------------------------
    cdef bytes shape_key(self, int32_t root):
        """The current graph's shape: its op log and the root, as bytes (a dict key)."""
        cdef bytes key = PyBytes_FromStringAndSize(NULL, sizeof(int32_t) * (self.n_log + 1))
        cdef char* raw = PyBytes_AS_STRING(key)
        memcpy(raw, &root, sizeof(int32_t))
        if self.n_log:
            memcpy(raw + sizeof(int32_t), &self.log[0], sizeof(int32_t) * self.n_log)
        return key

    cdef int backward_cached(self, int32_t root) except -1:
        """backward(root), with the order replayed from the template of this graph's shape
        when there is one; otherwise searched, and kept as a template (within budget).
        Runs no Python (the GC is paused while the key and a template are allocated): the
        graph cannot change under it."""
        cdef Arena ar = self.arena
        cdef OrderTemplate template
        cdef bint known
        cdef Py_ssize_t count
        cdef int was_enabled = pause_gc()
        try:
            key = self.shape_key(root)
            template = self.templates.get(key)
            known = template is not None
            if not known:
                template = self.new_template()  # None when over budget
        finally:
            resume_gc(was_enabled)
        count = self.pass_backward(root, template if known else None)
        if count >= 0 and not known and template is not None \
                and template.capture(ar, self.prob_nodes[:self.n_prob_nodes], count):
            was_enabled = pause_gc()
            try:
                self.template_bytes += sizeof(int32_t) * template.find_groups(ar)
                self.templates[key] = template
            finally:
                resume_gc(was_enabled)
        return 0

    cdef Py_ssize_t pass_backward(self, int32_t root, OrderTemplate template) noexcept:
        """The backward pass from root: in the template's order, rewritten for this graph's
        targets, when there is a template that fits (returns -1); otherwise in the order a
        fresh search finds, left in the arena's `order` (returns its length, for a template
        to capture)."""
        cdef Arena ar = self.arena
        cdef Py_ssize_t count
        if template is not None:
            count = template.replay(ar)
            if count >= 0:
                self.replays += 1
                ar.pass_gradients(root, template.order, count, template.groups, template.deferred)
                return -1
        count = ar.topological_order(root)
        ar.pass_gradients(root, ar.order, count)
        return count

    cdef OrderTemplate new_template(self):
        """Empty arrays sized for the current graph; None when over the memory budget."""
        cdef Py_ssize_t m = self.arena.n_nodes - self.arena.n_fixed
        cdef Py_ssize_t size = sizeof(int32_t) * (m + 2 * self.n_prob_nodes + self.n_log + 1)
        if m == 0 or self.template_bytes + size > TEMPLATE_BYTES_PER_NODE * self.arena.node_capacity:
            return None  # (no nodes but the weights: nothing to replay)
        self.template_bytes += size
        cdef OrderTemplate t = OrderTemplate.__new__(OrderTemplate)
        t.order = cells(<int32_t>0, m)
        t.prob_nodes, t.runs = cells(<int32_t>0, self.n_prob_nodes), cells(<int32_t>0, self.n_prob_nodes)
        return t


# --- order templates -------------------------------------------------------------------------
cdef class OrderTemplate:
    """One graph shape's depth-first order (see _ops.pxd), found by its shape key."""

    cdef bint capture(self, Arena ar, const int32_t[::1] prob_nodes, Py_ssize_t count) noexcept nogil:
        """Keep the order ar's search just found (count entries) for a graph with these
        probability nodes.  False when the arrays do not fit the graph or a probability
        node's triples are not where replay() would rewrite them (the graph is not the
        pattern): then no template is kept."""
        cdef const int32_t[::1] order = ar.order
        cdef int32_t[::1] position = ar.cursor  # the search's scratch, free now
        cdef Py_ssize_t i, k
        cdef int32_t p
        if prob_nodes.shape[0] != self.prob_nodes.shape[0] or count > self.order.shape[0]:
            return False
        for k in range(count):
            position[order[k]] = <int32_t>k
        for i in range(prob_nodes.shape[0]):
            p = prob_nodes[i]
            if i > 0 and p <= prob_nodes[i - 1]:
                return False
            self.prob_nodes[i] = p
            self.runs[i] = triples_run(ar, p, order, position, count, ar.stack)  # the search's scratch, free now
            if self.runs[i] < 0:
                return False
        self.order[:count] = order[:count]
        self.count = count
        return True

    cdef Py_ssize_t find_groups(self, Arena ar) except -1:
        """Find the linear groups of the order just captured (see _arena.pyx): each nll's run
        of triples, whose records replay() reorders per target, and the rows of the linear
        layers between them; and those whose weight gradients can wait for the end of the
        pass.  Returns the entries kept."""
        cdef Py_ssize_t i, k = 0, found, f
        cdef int32_t es, size, logit_0
        cdef int32_t[::1] known = cells(<int32_t>0, GROUP_FIELDS * self.prob_nodes.shape[0])
        for i in range(self.prob_nodes.shape[0]):
            es, size = exp_range(ar, self.prob_nodes[i])
            logit_0 = ar.a[ar.a[es]]  # a triple is (logit, shifted, exp): logit = a[a[exp]]
            if group_fits(ar, self.order, self.runs[i], size, 3, logit_0):
                known[k], known[k + 1], known[k + 2], known[k + 3] = self.runs[i], size, 3, logit_0
                known[k + 4] = 0  # reordered per target: not in order
                for f in range(5, GROUP_FIELDS - 1):
                    known[k + f] = 0  # (see find_elementwise_chains)
                known[k + GROUP_FIELDS - 1] = self.prob_nodes[i]  # its target's row: see pass_linear_group
                k += GROUP_FIELDS
        # the arena's order array is free: the order is the template's now
        found = GROUP_FIELDS * find_linear_groups(ar, self.order[:self.count], self.count, known[:k], ar.order)
        self.groups = cells(<int32_t>0, found)
        self.groups[:found] = ar.order[:found]
        find_elementwise_chains(ar, self.order[:self.count], self.groups)
        # A run whose group passes its chains elementwise reads none of its entries (its rows'
        # order comes from the target): replay() need not rewrite it.
        self.read_runs = cells(<int32_t>1, self.prob_nodes.shape[0])
        self.read_runs[:] = 1
        for f in range(0, found, GROUP_FIELDS):
            if self.groups[f + GROUP_FIELDS - 1] >= 0 and self.groups[f + 4] & GROUP_ELEMENTWISE:
                for i in range(self.prob_nodes.shape[0]):
                    if self.prob_nodes[i] == self.groups[f + GROUP_FIELDS - 1]:
                        self.read_runs[i] = 0
        cdef int32_t[::1] deferred = cells(<int32_t>0, found // GROUP_FIELDS)
        k = defer_weight_gradients(ar, self.order[:self.count], self.count, self.groups, deferred)
        self.deferred = cells(<int32_t>0, k)[:k]  # (cells: at least one)
        self.deferred[:] = deferred[:k]
        return found + k

    cdef Py_ssize_t replay(self, Arena ar) noexcept nogil:
        """Make the kept order ar's: rewrite each probability node's run (in self.order, in
        place) for the target ar's graph has, where the backward reads it (read_runs); the
        order's length, or -1 if a target is out of range."""
        cdef int32_t p, es, size, target
        cdef Py_ssize_t i
        for i in range(self.prob_nodes.shape[0]):
            p = self.prob_nodes[i]
            es, size = exp_range(ar, p)
            target = ar.a[p] - es
            if not 0 <= target < size:
                return -1
            if self.read_runs is None or self.read_runs[i]:
                write_run(ar, es, size, target, self.order[self.runs[i]:])
        return self.count


cdef inline (int32_t, int32_t) exp_range(Arena ar, int32_t p) noexcept nogil:
    """First exp node and count of the softmax whose probability node is p
    (p = e_t * inv, inv = total**-1, total = SUM of the exps)."""
    cdef int32_t total = ar.a[ar.b[p]]
    return ar.a[total], ar.n[total]


cdef inline void write_run(Arena ar, int32_t es, int32_t size, int32_t target,
                           int32_t[::1] out,  # OUT (3 * size,)
                           ) noexcept nogil:
    """A target's run: triples (logit, shifted, exp), the target's first, then every other
    token's in ascending order (es: the first exp node, size: the vocabulary)."""
    cdef const int32_t[::1] a = ar.a
    cdef int32_t k, token, e
    for k in range(size):
        token = target if k == 0 else (k - 1 if k <= target else k)
        e = es + token
        out[3 * k] = a[a[e]]
        out[3 * k + 1] = a[e]
        out[3 * k + 2] = e


cdef int32_t triples_run(Arena ar, int32_t p, const int32_t[::1] order, const int32_t[::1] position,
                         Py_ssize_t count,
                         int32_t[::1] scratch,  # OUT: room for a run (3V entries)
                         ) noexcept nogil:
    """Where the search put probability node p's run of triples (see _ops.pxd), or -1
    when the graph around p is not the pattern that makes replay() exact:
    p = DOT(e_t, inv), inv = UNARY(total), total = SUM(e_0..e_{V-1}), e_i = UNARY(s_i),
    s_i = UNARY(l_i), and every l_i a DOT of a weight row (leaves) with one shared input
    range, so that whichever logit the search reaches first, it finds the same subtree
    under it and posts every other logit at once; and the search put all of it, in
    that order, just before total, inv, p."""
    cdef const int32_t[::1] kind = ar.kind
    cdef const int32_t[::1] a = ar.a, b = ar.b, n = ar.n
    cdef int32_t inv, total, es, count_v, target, e, l, l0, k, start, i
    if not (ar.n_fixed <= p < ar.n_nodes and kind[p] == DOT and n[p] == 1):
        return -1
    inv = b[p]
    if kind[inv] != UNARY or kind[a[inv]] != SUM:
        return -1
    total = a[inv]
    es, count_v = exp_range(ar, p)
    target = a[p] - es
    if not 0 <= target < count_v:
        return -1
    l0 = a[a[es]]
    for e in range(es, es + count_v):
        if kind[e] != UNARY or kind[a[e]] != UNARY:
            return -1
        l = a[a[e]]
        if kind[l] != DOT or b[l] != b[l0] or n[l] != n[l0] or a[l] + n[l] > ar.n_fixed:
            return -1
    k = position[p]
    start = k - 2 - 3 * count_v
    if not (start >= 0 and k < count and order[k] == p and order[k - 1] == inv and order[k - 2] == total):
        return -1
    write_run(ar, es, count_v, target, scratch)
    for i in range(3 * count_v):
        if order[start + i] != scratch[i]:
            return -1
    return start


# --- recorded steps --------------------------------------------------------------------------
cdef class StepProgram:
    """A training step's graph build, recorded (GraphOps.start_trace/end_trace) to be
    replayed (GraphOps.replay): see _ops.pxd.  Opaque to Python."""

    @property
    def size(self):
        """Entries of its code (for tests)."""
        return self.code.shape[0]


cdef inline int32_t operand(const int32_t[::1] code, Py_ssize_t k, const int32_t[::1] tokens,
                            int32_t size) noexcept nogil:
    """The start of the operand recorded at code[k], code[k + 1] = (base, slot)."""
    cdef int32_t slot = code[k + 1]
    return code[k] + (tokens[slot] * size if slot >= 0 else 0)


cdef bint run_program(Arena ar, const int32_t[::1] code, const int32_t[::1] tokens,
                      int32_t[::1] scratch, GraphMath* m,
                      const int32_t[::1] matrices,  # IN: (start, rows, cols, offset) of each matrix to transpose
                      double[::1] transposed,  # OUT: their transposes, each at its offset
                      ) noexcept nogil:
    """Build a recorded step's graph with these tokens, op by op, as the ops did when it
    was recorded.  Each op is its code, its integer arguments, then its operands as
    (base, slot) pairs:
        OP_ADD size a b | OP_LINEAR rows cols w t x | OP_RELU size x | OP_RMSNORM size x
        OP_ATTENTION n n_head T q keys[T] values[T] | OP_NLL size logits target | OP_MEAN n losses[n]
    (t: where w's transpose is, in `transposed`).  The weights' values are the same all
    through the step (no Python runs here): each matrix is transposed once, first.
    False when an nll's probability is 0.0 (the graph is then left unfinished)."""
    cdef Py_ssize_t k = 0, end = code.shape[0], t, T
    cdef int32_t op, size, n, x
    for k in range(0, matrices.shape[0], 4):
        transpose(&ar.data[matrices[k]], matrices[k + 1], matrices[k + 2], &transposed[matrices[k + 3]])
    k = 0
    while k < end:
        op = code[k]
        if op == OP_ADD:
            size = code[k + 1]
            build_add(ar, operand(code, k + 2, tokens, size), operand(code, k + 4, tokens, size), size)
            k += 6
        elif op == OP_LINEAR:
            x = operand(code, k + 5, tokens, code[k + 2])
            build_linear(ar, code[k + 3], code[k + 1], code[k + 2], x, &transposed[code[k + 4]])
            k += 7
        elif op == OP_RELU:
            size = code[k + 1]
            build_relu(ar, operand(code, k + 2, tokens, size), size)
            k += 4
        elif op == OP_RMSNORM:
            size = code[k + 1]
            build_rmsnorm(ar, operand(code, k + 2, tokens, size), size, m)
            k += 4
        elif op == OP_ATTENTION:
            n, T = code[k + 1], code[k + 3]
            for t in range(2 * T):
                scratch[t] = operand(code, k + 6 + 2 * t, tokens, n)
            build_attention(ar, operand(code, k + 4, tokens, n), n, code[k + 2], T, scratch, m)
            k += 6 + 4 * T
        elif op == OP_NLL:
            size = code[k + 1]
            if build_nll(ar, operand(code, k + 2, tokens, size), size, operand(code, k + 4, tokens, 1),
                         m) < 0:
                return False
            k += 6
        else:  # OP_MEAN
            n = code[k + 1]
            for t in range(n):
                scratch[t] = operand(code, k + 2 + 2 * t, tokens, 1)
            build_mean(ar, scratch, n)
            k += 2 + 2 * n
    return True
