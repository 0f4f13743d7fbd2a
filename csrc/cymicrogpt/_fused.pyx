"""The `fused` backend's training pass: microgpt's forward and backward over one document
as hand-written loops, with no graph at all ("fused" means only this in the project; the
graph engines' n-ary node for a dot product is the DOT node).

Bit-identical to microgpt's scalar autograd (float ==, tests/test_parity.py), because it
does every floating-point operation microgpt's graph does, in microgpt's order:

* Forward: each `sum(...)` accumulated left to right from 0.0; rmsnorm's mean as
  `sum * len(x)**-1`, the attention scale as `* (head_dim**0.5)**-1`, `/ total` as
  `* total**-1`; every `**` through libm pow, as Python's float `**` is (no sqrt, no x*x),
  or, where the caller allows it (`pow_shortcut`), through pow_shortcut.h, which computes
  x ** -1, -2, -0.5 and -1.5 without pow where it proves the result is pow's, bit for bit.
  The build adds -ffp-contract=off: no FMA but the shortcut's explicit, proven-exact ones.
* Backward: microgpt's Value.backward visits the nodes in reverse depth-first post-order
  from the loss, and each node's gradient is the sum, from 0, of `local_grad * parent.grad`
  over its parents in that order.  Each node's gradient here is that very sum, in that
  order; the parents' order follows from the shape of the search (derived in DESIGN
  notes below and proven by the parity tests):
    - the losses are reached position by position (sum(losses) is a chain whose first
      link is position 0's loss), so the backward runs the positions from last to first:
      a weight, or a key or value of an earlier position, receives its contributions from
      the last position to the first;
    - a linear layer's outputs are first reached in ascending order (lm_head: the target's
      logit first, then the others ascending), so its input's gradient sums the rows from
      the last row to the first (lm_head: the others descending, the target last);
    - the input of q, k and v: per head, last head first, the v rows (descending), then
      the k rows and the q rows (each descending); at position 0, whose key is reached
      inside the query's dot products, the k and q rows interleaved (k_r, q_r, descending);
    - an rmsnorm input: the residual connection's contribution first, then the normalised
      output's, then two from its square (x*x has x as both children); the scale sums
      its outputs from the last to the first;
    - softmax: exp node e_u gets e_u's probability's contribution first, then the total's;
      the total sums its (one per probability) total**-1 nodes from the last to the first;
      an attention weight sums its value products from the last to the first.
Nothing of this depends on the values, only on the shape (the target token decides the
one lm_head order above).

Speed without reassociating any sum: the vector loops run across independent sums,
mostly in axpy_rows (axpy_rows.h, inlined: this module is built twice on x86-64, SSE2
and AVX2, the same bits; engines/fused.py picks one), a sum of scaled rows that keeps its
destination in registers (each element a lane, adding the rows in the order given):
    - the forward's matrix-vector products run on a transposed copy of the weights, made in
      each pass just before the first use: y = sum over j ascending of W^T[j] * x[j], from
      0.0, is each output's dot product in microgpt's order, with the outputs side by side;
    - both passes run layer by layer, the positions in sweeps whose positions are independent
      (a position's q, k, v; its attention and MLP; its lm_head), so the core overlaps one
      position's chains of dependent additions with the next one's; each value is computed
      exactly as before, only the independent ones in another order;
    - a linear layer's input gradient is the sum of its weight rows scaled by the output
      gradients, in the search's row order; q, k and v's common input gets one such sum over
      the rows of all three matrices (axpy_rows_listed: their order listed once per shape);
    - a weight's gradient gets one contribution per position, the last position first, and
      nothing else touches it: so the backward keeps each position's output gradients and
      adds all of them to each weight row at the end, the positions in descending order,
      two rows at a time held in registers (axpy_rows2: each input loaded once for both);
    - the attention's dot products over the positions (q . k_u, v_u . dheads) run with the
      positions u in lanes, on keys and values also kept transposed; a key's or value's
      gradient is added when its own position is reached, from every later position's kept
      score gradients and weights, the last first.

The exp shortcut: the softmax's exps (libm exp, as Python's math.exp) are computed four at
a time in the AVX2 build, each proven to be the double libm exp returns, libm exp called
for the few not proven (exp_shortcut.h: the argument and the code).  It runs where
`exp_shortcut` is passed (engines/fused.py: where glibc documents exp's error bound) and
the build has it (EXP_SHORTCUT_BUILT: the AVX2 build, -mavx2 -mfma); the same bits either
way.  A group of four costs about what one libm call does, so the attention's heads, each
over only t+1 positions, go through it side by side (`packed`: H (t+1) arguments, full
groups); each softmax's sum still adds its own exps from 0.0 in index order.
"""
from libc.math cimport exp, log, pow
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

import numpy as np

from cymicrogpt._arena cimport Arena
from cymicrogpt.pow_shortcut cimport (MINUS_ONE, MINUS_TWO, MINUS_HALF, MINUS_THREE_HALVES, MINUS_ONE_MIN,
                                      MINUS_ONE_MAX, MINUS_TWO_MIN, MINUS_TWO_MAX, MINUS_HALF_MIN, MINUS_HALF_MAX,
                                      MINUS_THREE_HALVES_MIN, MINUS_THREE_HALVES_MAX, MARGIN, TAIL_ALLOWANCE,
                                      power, proven_power)  # pow_shortcut.h
from cymicrogpt.exp2_table import exp2_table


cdef extern from * nogil:
    """
    /* axpy_rows.h's sums in this build's widest vectors (AVX2 or SSE2: setup.py), inlined */
    #define CYMG_ROWS(name) cymg_fused_##name
    #define CYMG_ROWS_LANES CYMG_ROWS_COMPILED_LANES
    #define CYMG_ROWS_TARGET
    #include "axpy_rows.h"
    """
    # for i = 0 .. count-1 in turn: y[j] += m[i * stride + j] * c[i * cstep] for j < n, y from
    # 0.0 where from_zero (a negative stride walks rows backwards; y overlaps neither m nor c)
    void axpy_rows "cymg_fused_axpy_rows"(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride,
                                          const double* c, Py_ssize_t cstep, Py_ssize_t count,
                                          bint from_zero) noexcept
    # the same into y with c and into y1 with c1, over the same rows (each adds to its contents)
    void axpy_rows2 "cymg_fused_axpy_rows2"(double* y, double* y1, Py_ssize_t n, const double* m, Py_ssize_t stride,
                                            const double* c, const double* c1, Py_ssize_t cstep,
                                            Py_ssize_t count) noexcept
    # P such sums side by side (the attention's heads): sum p into y + p * ystep (n elements),
    # over the rows m + p * mstep scaled by c[p * cstep_p + i * cstep]
    void axpy_rows_heads "cymg_fused_axpy_rows_heads"(Py_ssize_t P, double* y, Py_ssize_t ystep, Py_ssize_t n,
                                                      const double* m, Py_ssize_t mstep, Py_ssize_t stride,
                                                      const double* c, Py_ssize_t cstep_p, Py_ssize_t cstep,
                                                      Py_ssize_t count, bint from_zero) noexcept
    # the sum over listed rows: for i = 0 .. count-1 in turn, y[j] += m[at[2 i] + j] * c[at[2 i + 1]]
    void axpy_rows_listed "cymg_fused_axpy_rows_listed"(double* y, Py_ssize_t n, const double* m,
                                                        const Py_ssize_t* at, const double* c, Py_ssize_t count,
                                                        bint from_zero) noexcept


cdef extern from * nogil:
    """
    /* Elementwise loops: each element its own IEEE operations, as in the scalar loop, so gcc
       may run them on vectors (-O3), the lanes independent; `restrict` (no operand overlaps
       another) lets it do so without checking for overlap first.  -ffp-contract=off keeps
       every a * b + c two roundings. */
    #if defined(__SSE2__)
    #include <immintrin.h>
    #endif
    static inline void cymg_fused_add(double *restrict y, const double *restrict a, const double *restrict b,
                                      Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    }
    static inline void cymg_fused_add_into(double *restrict y, const double *restrict x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = y[i] + x[i];
    }
    static inline void cymg_fused_shift(double *restrict y, const double *restrict x, double a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] + a;
    }
    static inline void cymg_fused_scale(double *restrict y, const double *restrict x, double a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] * a;
    }
    static inline void cymg_fused_scale_into(double *restrict y, double a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = y[i] * a;
    }
    /* max(0, x): NaN gives 0 too */
    static inline void cymg_fused_relu(double *restrict y, const double *restrict x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0;
    }
    /* relu's backward: its local gradient (1.0 where the input was > 0, else 0.0) times dy */
    static inline void cymg_fused_relu_backward(double *restrict dy, const double *restrict x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dy[i] = (x[i] > 0 ? 1.0 : 0.0) * dy[i];
    }
    /* rmsnorm's input gradient, after its earlier contributions `first` (0.0 where NULL): the
       normalised output's, then the two of x_i * x_i (x_i is both children) */
    static inline void cymg_fused_rmsnorm_input_backward(double *restrict dx, const double *restrict first,
                                                         const double *restrict x, const double *restrict dy,
                                                         double scale, double dsum, Py_ssize_t n) {
        if (first)
            for (Py_ssize_t i = 0; i < n; i++) dx[i] = ((first[i] + scale * dy[i]) + x[i] * dsum) + x[i] * dsum;
        else
            for (Py_ssize_t i = 0; i < n; i++) dx[i] = ((0.0 + scale * dy[i]) + x[i] * dsum) + x[i] * dsum;
    }
    /* wt[j * ld + r] = w[r * cols + j] (r < rows, j < cols): w transposed, its rows ld apart
       (a copy, no arithmetic).  Blocks of 4 x 4 (AVX2) or 2 x 2 (SSE2) through registers,
       then the columns and the rows left one element at a time. */
    static inline void cymg_fused_transpose(const double *restrict w, Py_ssize_t rows, Py_ssize_t cols,
                                            double *restrict wt, Py_ssize_t ld) {
        Py_ssize_t r = 0, j, k;
    #if defined(__AVX__)
        for (; r + 4 <= rows; r += 4) {
            const double *row = w + r * cols;
            for (j = 0; j + 4 <= cols; j += 4) {
                __m256d r0 = _mm256_loadu_pd(row + j), r1 = _mm256_loadu_pd(row + cols + j);
                __m256d r2 = _mm256_loadu_pd(row + 2 * cols + j), r3 = _mm256_loadu_pd(row + 3 * cols + j);
                __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);  /* columns j, j+2; j+1, j+3 */
                __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
                _mm256_storeu_pd(wt + j * ld + r, _mm256_permute2f128_pd(t0, t2, 0x20));
                _mm256_storeu_pd(wt + (j + 1) * ld + r, _mm256_permute2f128_pd(t1, t3, 0x20));
                _mm256_storeu_pd(wt + (j + 2) * ld + r, _mm256_permute2f128_pd(t0, t2, 0x31));
                _mm256_storeu_pd(wt + (j + 3) * ld + r, _mm256_permute2f128_pd(t1, t3, 0x31));
            }
            for (; j < cols; j++)
                for (k = 0; k < 4; k++) wt[j * ld + r + k] = row[k * cols + j];
        }
    #elif defined(__SSE2__)
        for (; r + 2 <= rows; r += 2) {
            const double *row = w + r * cols;
            for (j = 0; j + 2 <= cols; j += 2) {
                __m128d r0 = _mm_loadu_pd(row + j), r1 = _mm_loadu_pd(row + cols + j);
                _mm_storeu_pd(wt + j * ld + r, _mm_unpacklo_pd(r0, r1));
                _mm_storeu_pd(wt + (j + 1) * ld + r, _mm_unpackhi_pd(r0, r1));
            }
            for (; j < cols; j++)
                for (k = 0; k < 2; k++) wt[j * ld + r + k] = row[k * cols + j];
        }
    #endif
        for (; r < rows; r++)
            for (j = 0; j < cols; j++) wt[j * ld + r] = w[r * cols + j];
    }
    /* Python's max() of x[0 .. n-1]: the running maximum replaced only by a greater value, so
       the first of equal values is kept, a later NaN never enters, and a NaN x[0] stays.  AVX:
       where x[0] is not NaN, four lanes keep running maxima from -inf (x > m ? x : m, NaN never
       enters), and their largest, with the tail's, is the maximum's value M: every double
       equal to a nonzero M has M's bits; a zero maximum (+0 == -0) takes its sign from the
       first zero, so there the scalar search decides.  (The scalar loop branches on data:
       its mispredictions cost more than its comparisons; measured on Xeon model 167.) */
    static inline double cymg_fused_max(const double *x, Py_ssize_t n) {
        Py_ssize_t i = 1;
        double m = x[0];
    #if defined(__AVX__)
        if (n >= 8 && m == m) {
            __m256d v = _mm256_set1_pd(-INFINITY);
            double lane[4];
            for (i = 0; i + 4 <= n; i += 4) {
                __m256d xi = _mm256_loadu_pd(x + i);
                v = _mm256_blendv_pd(v, xi, _mm256_cmp_pd(xi, v, _CMP_GT_OQ));
            }
            _mm256_storeu_pd(lane, v);
            m = lane[0];
            for (int l = 1; l < 4; l++) m = lane[l] > m ? lane[l] : m;
            for (; i < n; i++) m = x[i] > m ? x[i] : m;
            if (m != 0.0)
                return m;
            i = 1;
            m = x[0];
        }
    #endif
        for (; i < n; i++)
            if (x[i] > m) m = x[i];
        return m;
    }
    /* an attention score's gradient: through exp (its local grad e_u), e_u's two uses (its
       weight e_u * inv and the total), + (-max) and * scale */
    static inline void cymg_fused_score_backward(double *restrict dscore, const double *restrict e,
                                                 const double *restrict dweight, double inv, double dtotal,
                                                 double scale, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dscore[i] = scale * (e[i] * (inv * dweight[i] + dtotal));
    }
    """
    void each_add "cymg_fused_add"(double* y, const double* a, const double* b, Py_ssize_t n) noexcept  # y = a + b
    void each_add_into "cymg_fused_add_into"(double* y, const double* x, Py_ssize_t n) noexcept  # y = y + x
    void each_shift "cymg_fused_shift"(double* y, const double* x, double a, Py_ssize_t n) noexcept  # y = x + a
    void each_scale "cymg_fused_scale"(double* y, const double* x, double a, Py_ssize_t n) noexcept  # y = x * a
    void each_scale_into "cymg_fused_scale_into"(double* y, double a, Py_ssize_t n) noexcept  # y = y * a
    void each_relu "cymg_fused_relu"(double* y, const double* x, Py_ssize_t n) noexcept  # y = max(0, x)
    void each_relu_backward "cymg_fused_relu_backward"(double* dy, const double* x, Py_ssize_t n) noexcept
    void rmsnorm_input_backward "cymg_fused_rmsnorm_input_backward"(double* dx, const double* first,
                                                                    const double* x, const double* dy, double scale,
                                                                    double dsum, Py_ssize_t n) noexcept
    void transpose "cymg_fused_transpose"(const double* w, Py_ssize_t rows, Py_ssize_t cols, double* wt,
                                          Py_ssize_t ld) noexcept  # wt[j * ld + r] = w[r * cols + j]
    double max_of "cymg_fused_max"(const double* x, Py_ssize_t n) noexcept  # Python's max(x[0 .. n-1]), n >= 1
    void score_backward "cymg_fused_score_backward"(double* dscore, const double* e, const double* dweight,
                                                    double inv, double dtotal, double scale,
                                                    Py_ssize_t n) noexcept


cdef extern from "exp_shortcut.h" nogil:
    # out[i] = exp(x[i] + shift), i < n, as libm exp returns it; returns the libm calls.  The
    # AVX2 build proves most of them (table: exp2_table(EXP_TABLE_BITS)'s his, then its los),
    # reading x and writing out in whole groups of LANES: both must extend to n rounded up to
    # a multiple of LANES (what lies past n is read, and overwritten, unused); the baseline
    # build calls libm exp for each.
    Py_ssize_t exp_shifted "cymg_exp_shifted"(const double* x, double shift, double* out, Py_ssize_t n,
                                              const double* table) noexcept
    const bint HAVE_EXP_SHORTCUT "CYMG_EXP_AVX2"
    const int TABLE_BITS "CYMG_EXP_TABLE_BITS"
    enum: TABLE_SIZE "CYMG_EXP_N"
    const double C_EXP_LOWEST "CYMG_EXP_LOWEST"
    const double C_EXP_MARGIN "CYMG_EXP_MARGIN"
    const double C_EXP_INV_LN2_N "CYMG_EXP_INV_LN2_N"
    const double C_EXP_LN2_N_HI "CYMG_EXP_LN2_N_HI"
    const double C_EXP_LN2_N_LO "CYMG_EXP_LN2_N_LO"


EXP_SHORTCUT_BUILT = HAVE_EXP_SHORTCUT  # does this build prove exps (else libm exp throughout)?
EXP_TABLE_BITS = TABLE_BITS
# the shortcut's constants (exp_shortcut.h; tests/test_exp_shortcut.py checks them)
EXP_SHORTCUT_CONSTANTS = {"lowest": C_EXP_LOWEST, "margin": C_EXP_MARGIN, "inv_ln2_n": C_EXP_INV_LN2_N,
                          "ln2_n_hi": C_EXP_LN2_N_HI, "ln2_n_lo": C_EXP_LN2_N_LO}
cdef double EXP2_TABLE[2 * TABLE_SIZE]  # 2^(j/N) as hi (first N) + lo (next N); filled where it is used
if HAVE_EXP_SHORTCUT:
    for _j, _part in enumerate([part for half in exp2_table(TABLE_BITS) for part in half]):
        EXP2_TABLE[_j] = _part


def exp_shortcut_table() -> list:
    """The table the shortcut reads, as filled (zeros in a build without the shortcut)."""
    return [EXP2_TABLE[i] for i in range(2 * TABLE_SIZE)]


def max_array(const double[::1] x) -> float:
    """Python's max(x) (n >= 1) as the softmaxes take it (max_of: vectors where this build has
    AVX), for the checks of its +-0 and NaN cases."""
    if x.shape[0] == 0:
        raise ValueError("max_array: an empty array has no maximum")
    return max_of(&x[0], x.shape[0])


def exp_array(const double[::1] x, double[::1] out, *, bint shortcut) -> int:
    """out[i] = exp(x[i]) as libm exp returns it, through the softmax's own loop (the
    shortcut where `shortcut` and this build has it, else libm exp for each); returns how
    many elements called libm exp."""
    cdef Py_ssize_t n = x.shape[0], i, calls = n
    if out.shape[0] != n:
        raise ValueError(f"exp_array: x has {n} elements, out has {out.shape[0]}")
    if n == 0:
        return 0
    if &x[0] < &out[0] + n and &out[0] < &x[0] + n:
        raise ValueError("exp_array: x and out must not share memory")
    cdef double[::1] padded = np.zeros(n + LANES)  # exp_shifted's whole groups, in place
    padded[:n] = x
    with nogil:
        if shortcut:
            calls = exp_shifted(&padded[0], -0.0, &padded[0], n, EXP2_TABLE)  # x + -0.0 is x, for every x
        else:
            for i in range(n):
                padded[i] = exp(x[i])
        memcpy(&out[0], &padded[0], n * sizeof(double))
    return calls


# Slots of the weight matrices.  Anonymous enums: their members are plain ints, which
# index memoryviews (a named enum type does not).
cdef enum:  # index into FusedGPT.off: the matrices outside the blocks
    WTE, WPE, LM_HEAD, N_MODEL_MATRICES


cdef enum:
    # the attention's loops over positions run on a multiple of this many lanes (AVX2's 4
    # doubles; SSE2's 2 divides it), the lanes past the last position computed and unused
    LANES = 4


cdef enum:  # column of FusedGPT.layer_off: one block's matrices, in config.LAYER_MATRICES order
    WQ, WK, WV, WO, FC1, FC2, N_LAYER_MATRICES


# --- small kernels on raw pointers (nogil) -------------------------------------------------
cdef inline void axpy(double* y, const double* x, double a, Py_ssize_t n) noexcept nogil:
    """y += x * a (y and x of n elements)."""
    axpy_rows(y, n, x, 0, &a, 0, 1, False)


cdef inline void matvec(const double* WT,  # IN (cols, rows): the weights, transposed
                        const double* x,  # IN (cols,)
                        double* y,  # OUT (rows,): y[r] = sum over j ascending of W[r, j] * x[j], from 0.0
                        Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """A linear layer's forward: each output microgpt's `sum(wi * xi for ...)`, the outputs
    in lanes (row j of W^T holds every output's j-th weight)."""
    axpy_rows(y, rows, WT, rows, x, 1, cols, True)


cdef inline void add_rows_backwards(double* y,  # IN/OUT (cols,): += W[r] * c[r], r = hi-1 down to lo
                                    const double* W,  # IN (rows, cols)
                                    const double* c,  # IN (rows,)
                                    Py_ssize_t cols, Py_ssize_t lo, Py_ssize_t hi,
                                    bint from_zero) noexcept nogil:  # y from 0.0 (also where hi == lo)
    """The input-gradient contributions of a linear layer's outputs lo .. hi-1, the last first."""
    if hi > lo:
        axpy_rows(y, cols, W + (hi - 1) * cols, -cols, c + hi - 1, -1, hi - lo, from_zero)
    elif from_zero:
        memset(y, 0, cols * sizeof(double))


cdef inline void linear_backward(const double* W,  # IN (rows, cols)
                                 const double* dy,  # IN (rows,)
                                 double* dx,  # OUT (cols,): sum over r = rows-1 .. 0 of W[r] * dy[r], from 0
                                 Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """A linear layer's input gradient at one position (its weights' come in weight_backward)."""
    add_rows_backwards(dx, W, dy, cols, 0, rows, True)


cdef inline void weight_backward(double* G,  # IN/OUT (rows, cols): += sum over p = n-1 .. 0 of dy_p x_p^T
                                 const double* x,  # IN (n, cols), rows xstride apart: the inputs
                                 Py_ssize_t xstride,
                                 const double* dy,  # IN (n, rows), rows dystride apart: the output gradients
                                 Py_ssize_t dystride,
                                 Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t n) noexcept nogil:
    """A linear layer's weight gradient over a document: G[r, j] gets x_p[j] * dy_p[r] from
    each position p, the last first, as microgpt's backward adds them."""
    cdef Py_ssize_t r
    cdef const double* last_x = x + (n - 1) * xstride
    cdef const double* last_dy = dy + (n - 1) * dystride
    for r in range(0, rows - 1, 2):  # two rows at a time: each input loaded once for both
        axpy_rows2(G + r * cols, G + (r + 1) * cols, cols, last_x, -xstride, last_dy + r, last_dy + r + 1,
                   -dystride, n)
    if rows % 2:
        r = rows - 1
        axpy_rows(G + r * cols, cols, last_x, -xstride, last_dy + r, -dystride, n, False)



cdef inline void rmsnorm(const double* x,  # IN (n,)
                         double* y,  # OUT (n,): x * scale
                         double* shifted,  # OUT: mean(x**2) + eps
                         double* scale,  # OUT: shifted ** -0.5
                         Py_ssize_t n, double inv_n, double eps,
                         bint shortcut) noexcept nogil:  # IN: may pow_shortcut.h replace libm pow
    cdef Py_ssize_t i
    cdef double ss = 0.0
    for i in range(n):
        ss = ss + x[i] * x[i]
    ss = ss * inv_n + eps  # sum / len(x) is sum * len(x)**-1
    shifted[0] = ss
    ss = power(ss, MINUS_HALF, shortcut)
    scale[0] = ss
    each_scale(y, x, ss, n)


cdef inline void rmsnorm_backward(const double* x,  # IN (n,): the input
                                  double shifted, double scale,  # IN: from the forward
                                  const double* dy,  # IN (n,): the output's gradient
                                  const double* first,  # IN (n,): the input's earlier contributions (NULL: none)
                                  double* dx,  # OUT (n,): the input's gradient, from 0.0: first + the rest
                                  Py_ssize_t n, double inv_n, bint shortcut) noexcept nogil:
    cdef Py_ssize_t i
    cdef double dscale = 0.0, dsum
    for i in range(n - 1, -1, -1):  # the outputs x_i * scale, last first
        dscale = dscale + x[i] * dy[i]
    # ** -0.5 (local grad -0.5 * shifted**-1.5), + eps (1), * len(x)**-1: the sum's gradient
    dsum = inv_n * ((-0.5 * power(shifted, MINUS_THREE_HALVES, shortcut)) * dscale)
    rmsnorm_input_backward(dx, first, x, dy, scale, dsum, n)


cdef inline double softmax_total(const double* exps,  # IN (count,)
                                 double* e,  # OUT (count,): the exps, where the softmax keeps them (may be exps)
                                 double* total,  # OUT: sum(exps) from 0, in index order
                                 Py_ssize_t count, bint pow_shortcut) noexcept nogil:
    """Returns total**-1 (power: libm pow's, or proven).  (Copying as it sums: each exp is
    read once, as a double, which the store buffer serves whatever wrote it.)"""
    cdef Py_ssize_t i
    cdef double acc = 0.0
    if e == exps:
        for i in range(count):
            acc = acc + exps[i]
    else:
        for i in range(count):
            e[i] = exps[i]
            acc = acc + exps[i]
    total[0] = acc
    return power(acc, MINUS_ONE, pow_shortcut)


cdef inline double softmax_forward(const double* logits,  # IN (count,), and to count rounded up to LANES
                                   double* e,  # OUT (count,): exp(logit - max), and to count rounded up (unused)
                                   double* total,  # OUT: sum(e) from 0
                                   Py_ssize_t count, bint exp_shortcut, bint pow_shortcut) noexcept nogil:
    """Returns total**-1.  The exps: logit + (-max), rounded, then exp (libm's, or proven:
    exp_shifted, whose whole groups need the rounded-up lengths)."""
    cdef Py_ssize_t i
    cdef double max_val = max_of(logits, count), acc = 0.0
    if exp_shortcut:
        exp_shifted(logits, -max_val, e, count, EXP2_TABLE)
        return softmax_total(e, e, total, count, pow_shortcut)
    for i in range(count):
        e[i] = exp(logits[i] + (-max_val))
        acc = acc + e[i]
    total[0] = acc
    return power(acc, MINUS_ONE, pow_shortcut)


cdef int check_inside(const Py_ssize_t[::1] starts, tuple sizes, Py_ssize_t n_weights) except -1:
    """Every matrix (its start, its size) lies inside the weights: the loops do not check."""
    cdef Py_ssize_t i
    for i in range(starts.shape[0]):
        if starts[i] < 0 or starts[i] + <Py_ssize_t>sizes[i] > n_weights:
            raise ValueError(f"a matrix of {sizes[i]} weights at offset {starts[i]} lies outside "
                             f"the {n_weights} weights")
    return 0


cdef list qkv_input_rows(const Py_ssize_t[::1] offsets, Py_ssize_t E, Py_ssize_t hd, bint first):
    """The rows of one block's wq, wk and wv (at offsets[WQ], [WK], [WV]) whose sum is the
    gradient of their input (rmsnorm(x)) at one position, in the order the search adds them:
    last head first; per head the v rows, then the k rows, then the q rows, each descending;
    at position 0 (`first`) the k and q rows interleaved (k_r, q_r, descending).  Flat pairs
    (the row's offset, its coefficient's index in q, k, v's gradients side by side, E each)."""
    cdef Py_ssize_t h, m, r
    pairs = []
    for h in range(E // hd - 1, -1, -1):
        rows = range(h * hd + hd - 1, h * hd - 1, -1)
        order = [(WV, r) for r in rows]
        if first:
            order += [(m, r) for r in rows for m in (WK, WQ)]
        else:
            order += [(WK, r) for r in rows] + [(WQ, r) for r in rows]
        for m, r in order:
            pairs += [offsets[m] + r * E, m * E + r]
    return pairs


cdef enum:
    ALIGNMENT = 64  # bytes: a cache line, and a whole number of AVX2 vectors


cdef aligned_zeros(Py_ssize_t n, dtype=np.float64):
    """n zeros whose first element starts a cache line (ALIGNMENT bytes): numpy's buffers are
    only 16-byte aligned, and a 32-byte load or store that straddles two cache lines costs
    about two (on an Intel Xeon, model 167: the pass -2.5%).  Rows a whole number of
    vectors apart then start whole vectors, too."""
    cdef Py_ssize_t itemsize = np.dtype(dtype).itemsize
    buffer = np.zeros(n + ALIGNMENT // itemsize, dtype=dtype)
    cdef const unsigned char[::1] raw = buffer.view(np.uint8)
    # numpy's 16-byte alignment makes the distance a whole number of items
    cdef Py_ssize_t skip = (-<size_t>&raw[0] % ALIGNMENT) // itemsize
    return buffer[skip:skip + n]


cdef class FusedGPT:
    """The training pass over the weights of an Arena (its first nodes: values and
    gradients), with activation buffers for the longest document seen so far.

    offsets: where wte, wpe, lm_head start among the weights (slots WTE, WPE, LM_HEAD);
    layer_offsets: (n_layer, 6), where each block's matrices start (slots WQ ... FC2);
    hidden: the MLP's width F; rmsnorm_eps: config.RMSNORM_EPS; pow_shortcut: may
    pow_shortcut.h settle x ** -1, -2, -0.5, -1.5 without libm pow (only where libm's pow
    is glibc's >= 2.28: cymicrogpt.engines.adam.POW_SHORTCUT decides; the same bits);
    exp_shortcut: may the softmax prove its exps instead of calling libm exp (where this
    build has the shortcut: the attribute says whether it runs).
    """
    cdef Arena arena  # weights: arena.data[0:n_weights], their gradients: arena.grad[0:n_weights]
    cdef readonly Py_ssize_t n_layer, n_embd, n_head, head_dim, vocab, block, hidden, n_weights
    cdef readonly Py_ssize_t capacity  # positions the buffers hold
    cdef Py_ssize_t lanes  # capacity rounded up to a multiple of LANES
    cdef readonly double rmsnorm_eps
    cdef readonly bint pow_shortcut  # may pow_shortcut.h replace libm pow (the same bits where it may)
    cdef readonly bint exp_shortcut  # the softmax's exps through exp_shifted (this build proves them)
    cdef double inv_embd, att_scale  # len(x)**-1 in rmsnorm; (head_dim**0.5)**-1
    cdef Py_ssize_t[::1] off  # (N_MODEL_MATRICES,): off[WTE] ... off[LM_HEAD]
    cdef Py_ssize_t[:, ::1] layer_off  # (L, N_LAYER_MATRICES): layer_off[l, WQ] ... layer_off[l, FC2]
    cdef double[::1] wt  # (n_weights,): each block's matrices transposed, at the matrix's own offset
    cdef Py_ssize_t vocab_lanes  # vocab rounded up to a multiple of LANES
    # (n_embd, vocab_lanes): lm_head transposed, each row padded with zeros to whole vectors
    # (the logits past vocab are computed and unused: no element-by-element tail)
    cdef double[::1] lm_t
    # Activations, flat; T = capacity.  (L + 1, T, E): each layer's input, the last one the top.
    cdef double[::1] emb, x_in  # emb: (T, E), token + position embedding
    cdef double[::1] s0, d0  # (T,): the first rmsnorm's scale and mean + eps
    cdef double[::1] xn1, q, k, v, heads, x_mid, xn2  # (L, T, E)
    cdef double[::1] s1, d1, s2, d2  # (L, T)
    cdef double[::1] h1, relu_out  # (L, T, F)
    cdef double[::1] kT, vT  # (L, E, lanes): keys and values transposed, positions side by side
    cdef double[::1] att_e, att_w  # (L, T, H, T): exps and weights of position t over u <= t
    cdef double[::1] att_total, att_inv  # (L, T, H)
    cdef double[::1] lm_e  # (T, V) + LANES: exps of the logits (exp_shifted stores whole groups)
    cdef double[::1] lm_total, lm_inv, lm_p  # (T,)
    # Gradients, of every position: a linear layer's output gradients are kept for its
    # weights' gradient (weight_backward), added once the positions are done
    cdef double[::1] gx  # (L + 1, T, E): of x_in
    cdef double[::1] gmid, gheads  # (L, T, E): of x_mid (wo's output), of the heads (its input)
    cdef double[::1] att_ds  # (L, T, H, T): of the scores of position t over u <= t
    # (L, T, 3E): of q, k and v side by side (slots WQ, WK, WV), the keys' and values' summed
    # over the positions that read them
    cdef double[::1] gqkv
    # (L, 2, 6E): the rows of wq, wk and wv whose sum is the gradient of their input at a
    # position > 0 ([l, 0]) and at position 0 ([l, 1]), in the search's order, as
    # axpy_rows_listed's pairs (the row's offset among the weights, its index in gqkv's 3E)
    cdef Py_ssize_t[:, :, ::1] qkv_rows
    cdef double[::1] gh  # (L, T, F): of h1 (fc1's output)
    cdef double[::1] glogit  # (T, V)
    cdef double[::1] logits, dxn, scratch  # (V,), (max(E, F),), (H, lanes)
    cdef double[::1] packed  # (H * T + LANES,): the heads' softmax arguments side by side (exp shortcut)
    cdef Py_ssize_t[::1] tokens  # (block + 1,): the pass's document, copied from the caller's sequence

    def __init__(self, Arena arena, int n_weights, int n_layer, int n_embd, int n_head, int vocab, int block,
                 int hidden, offsets, layer_offsets, double rmsnorm_eps, *, bint pow_shortcut=False,
                 bint exp_shortcut=False):
        if min(n_layer, n_embd, n_head, vocab, block, hidden) <= 0:  # before `%`: cdivision has no zero check
            raise ValueError("n_layer, n_embd, n_head, vocab, block and hidden must be positive")
        if n_embd % n_head:
            raise ValueError("n_embd must be divisible by n_head")
        if not 0 < n_weights <= arena.n_fixed:
            raise ValueError(f"the arena holds {arena.n_fixed} fixed nodes, not {n_weights} weights")
        self.arena = arena
        self.n_weights = n_weights
        self.n_layer, self.n_embd, self.n_head = n_layer, n_embd, n_head
        self.head_dim, self.vocab, self.block, self.hidden = n_embd // n_head, vocab, block, hidden
        self.rmsnorm_eps = rmsnorm_eps
        self.pow_shortcut = pow_shortcut
        self.exp_shortcut = exp_shortcut and HAVE_EXP_SHORTCUT
        # Python's int ** negative int and int ** float are float pow, as here
        self.inv_embd = pow(<double>n_embd, -1.0)
        self.att_scale = pow(pow(<double>self.head_dim, 0.5), -1.0)
        self.off = np.asarray(offsets, dtype=np.intp)
        self.layer_off = np.asarray(layer_offsets, dtype=np.intp).reshape(-1, N_LAYER_MATRICES)
        if self.off.shape[0] != N_MODEL_MATRICES or self.layer_off.shape[0] != n_layer:
            raise ValueError(f"offsets: need wte, wpe, lm_head, and {N_LAYER_MATRICES} per layer")
        E, F = n_embd, hidden
        check_inside(self.off, (vocab * E, block * E, vocab * E), n_weights)
        for l in range(n_layer):
            check_inside(self.layer_off[l], (E * E, E * E, E * E, E * E, F * E, E * F), n_weights)
        z = aligned_zeros
        self.wt = z(n_weights)
        self.vocab_lanes = (vocab + LANES - 1) // LANES * LANES
        self.lm_t = z(E * self.vocab_lanes)
        self.logits, self.dxn = z(self.vocab_lanes), z(max(E, F))  # logits: also read in whole groups (exp_shifted)
        self.tokens = z(block + 1, dtype=np.intp)
        self.qkv_rows = np.array([[qkv_input_rows(self.layer_off[l], E, self.head_dim, first) for first in (False, True)]
                                  for l in range(n_layer)], dtype=np.intp)
        self.capacity = 0
        self.reserve(1)

    cdef reserve(self, Py_ssize_t T):
        """Buffers for documents of up to T positions (grown to the longest seen)."""
        if T <= self.capacity:
            return
        L, E, F, H, V = self.n_layer, self.n_embd, self.hidden, self.n_head, self.vocab
        z = aligned_zeros
        self.emb, self.x_in, self.s0, self.d0 = z(T * E), z((L + 1) * T * E), z(T), z(T)
        self.xn1, self.q, self.k, self.v = z(L * T * E), z(L * T * E), z(L * T * E), z(L * T * E)
        self.heads, self.x_mid, self.xn2 = z(L * T * E), z(L * T * E), z(L * T * E)
        self.s1, self.d1, self.s2, self.d2 = z(L * T), z(L * T), z(L * T), z(L * T)
        self.h1, self.relu_out = z(L * T * F), z(L * T * F)
        self.lanes = (T + LANES - 1) // LANES * LANES
        self.kT, self.vT = z(L * E * self.lanes), z(L * E * self.lanes)
        self.att_e, self.att_w, self.att_ds = z(L * T * H * T), z(L * T * H * T), z(L * T * H * T)
        self.att_total, self.att_inv = z(L * T * H), z(L * T * H)
        self.lm_e, self.lm_total, self.lm_inv, self.lm_p = z(T * V + LANES), z(T), z(T), z(T)
        self.gx, self.gmid, self.gheads = z((L + 1) * T * E), z(L * T * E), z(L * T * E)
        self.gqkv = z(L * T * 3 * E)
        self.gh, self.glogit = z(L * T * F), z(T * V)
        self.scratch = z(H * self.lanes)
        self.packed = z(H * T + LANES)
        self.capacity = T

    def forward_backward(self, tokens):
        """Loss of one tokenised document (a sequence of ints, BOS ... BOS, truncated to block
        positions: read straight from a list, no array made); its gradients ADDED into the
        arena's weight gradients, as microgpt's backward adds them.

        Raises ValueError where microgpt's math.log does (a probability of exactly 0.0)."""
        cdef Py_ssize_t n = min(self.block, len(tokens) - 1), i, tok, bad
        if n < 1:
            raise ValueError("a document needs at least 2 tokens")
        if self.arena.n_fixed < self.n_weights:
            raise ValueError("the arena no longer holds the weights")
        for i in range(n + 1):
            tok = tokens[i]
            if not 0 <= tok < self.vocab:
                raise IndexError(f"token {tok} out of range for {self.vocab} tokens")
            self.tokens[i] = tok
        self.reserve(n)
        cdef double loss
        with nogil:
            bad = self.forward(&self.tokens[0], n, &loss)
            if bad < 0:
                self.backward(&self.tokens[0], n)
        if bad >= 0:
            raise ValueError(f"math domain error: log of probability {self.lm_p[bad]!r} at position {bad}")
        return loss

    cdef Py_ssize_t forward(self, const Py_ssize_t* tokens, Py_ssize_t n, double* loss) noexcept nogil:
        """The forward pass; loss[0] = the mean loss.  Returns -1, or the first position
        whose target probability is 0.0 (microgpt's math.log raises there)."""
        cdef Py_ssize_t L = self.n_layer, E = self.n_embd, F = self.hidden, H = self.n_head, hd = self.head_dim
        cdef Py_ssize_t V = self.vocab, T = self.capacity, Tl = self.lanes
        cdef Py_ssize_t t, u, l, h, j, lt, a, lanes, m, o
        cdef const double* w = &self.arena.data[0]
        cdef double* wt = &self.wt[0]
        cdef double* x
        cdef double* xo
        cdef double* ev
        cdef double* aw
        cdef double* out
        cdef double* scores  # (lanes,) of a head, in scratch
        cdef double* kt
        cdef double* vt
        cdef double* logits = &self.logits[0]
        cdef double* packed = &self.packed[0]
        cdef double inv, max_val, loss_sum = 0.0, eps = self.rmsnorm_eps
        # Layer by layer, and in each the positions in two sweeps: every value is computed as
        # microgpt computes it, only in another order (position t's attention reads the keys
        # and values of positions <= t, its layer's input only).  Each sweep's positions are
        # independent, so the core overlaps one position's dependent chains (rmsnorm's sum,
        # a matvec's) with the next one's.
        for t in range(n):
            x = &self.emb[t * E]  # (E,) token + position embedding
            each_add(x, w + self.off[WTE] + tokens[t] * E, w + self.off[WPE] + t * E, E)
            rmsnorm(x, &self.x_in[t * E], &self.d0[t], &self.s0[t], E, self.inv_embd, eps, self.pow_shortcut)
        # The forward's matvecs run on the weights transposed (wt), made from the weights as
        # they are now (the optimizer changed them since the last pass) just before each
        # sweep that uses them: the copies (the weights come from L2, where the optimizer
        # left them) overlap the arithmetic around them.
        for l in range(L):
            for m in range(WQ, WV + 1):
                o = self.layer_off[l, m]
                transpose(w + o, E, E, wt + o, E)
            for t in range(n):  # attention block: rmsnorm, q k v
                lt = l * T + t
                rmsnorm(&self.x_in[lt * E], &self.xn1[lt * E], &self.d1[lt], &self.s1[lt], E, self.inv_embd, eps,
                        self.pow_shortcut)
                matvec(wt + self.layer_off[l, WQ], &self.xn1[lt * E], &self.q[lt * E], E, E)
                matvec(wt + self.layer_off[l, WK], &self.xn1[lt * E], &self.k[lt * E], E, E)
                matvec(wt + self.layer_off[l, WV], &self.xn1[lt * E], &self.v[lt * E], E, E)
                kt = &self.kT[l * E * Tl + t]  # column t of the keys, and of the values
                vt = &self.vT[l * E * Tl + t]
                for j in range(E):
                    kt[j * Tl] = self.k[lt * E + j]
                    vt[j * Tl] = self.v[lt * E + j]
            o = self.layer_off[l, WO]
            transpose(w + o, E, E, wt + o, E)
            o = self.layer_off[l, FC1]
            transpose(w + o, F, E, wt + o, F)
            o = self.layer_off[l, FC2]
            transpose(w + o, E, F, wt + o, E)
            for t in range(n):  # causal softmax over positions <= t, the heads, wo; the MLP block
                lanes = (t + LANES) // LANES * LANES  # positions 0 .. t, rounded up: the lanes past t go unused
                lt = l * T + t
                x = &self.x_in[lt * E]
                # every head's scores (t+1,): q . k_u (j ascending, from 0.0; the positions u in lanes)
                axpy_rows_heads(H, &self.scratch[0], Tl, lanes, &self.kT[l * E * Tl], hd * Tl, Tl, &self.q[lt * E], hd,
                                1, hd, True)
                for h in range(H):  # * (head_dim**0.5)**-1 (the lanes past t too: unused)
                    each_scale_into(&self.scratch[h * Tl], self.att_scale, lanes)
                if self.exp_shortcut:  # every head's exps in one pass, side by side: fuller groups of lanes
                    for h in range(H):
                        scores = &self.scratch[h * Tl]
                        max_val = max_of(scores, t + 1)
                        each_shift(packed + h * (t + 1), scores, -max_val, t + 1)
                    exp_shifted(packed, -0.0, packed, H * (t + 1), EXP2_TABLE)  # x + -0.0 is x
                for h in range(H):
                    a = lt * H + h
                    ev = &self.att_e[a * T]
                    aw = &self.att_w[a * T]
                    if self.exp_shortcut:
                        inv = softmax_total(packed + h * (t + 1), ev, &self.att_total[a], t + 1, self.pow_shortcut)
                        # the weights from packed, not from its copy ev: vector loads of the copy's
                        # scalar stores, just made, would wait for them (no store forwarding)
                        each_scale(aw, packed + h * (t + 1), inv, t + 1)
                    else:
                        inv = softmax_forward(&self.scratch[h * Tl], ev, &self.att_total[a], t + 1, False,
                                              self.pow_shortcut)
                        each_scale(aw, ev, inv, t + 1)
                    self.att_inv[a] = inv
                # each head's output (hd,): sum over u ascending of weight_u * v_u, from 0
                axpy_rows_heads(H, &self.heads[lt * E], hd, hd, &self.v[l * T * E], hd, E, &self.att_w[lt * H * T], T,
                                1, t + 1, True)
                out = &self.x_mid[lt * E]
                matvec(wt + self.layer_off[l, WO], &self.heads[lt * E], out, E, E)
                each_add_into(out, x, E)
                # MLP block
                rmsnorm(out, &self.xn2[lt * E], &self.d2[lt], &self.s2[lt], E, self.inv_embd, eps, self.pow_shortcut)
                x = &self.h1[lt * F]
                matvec(wt + self.layer_off[l, FC1], &self.xn2[lt * E], x, F, E)
                each_relu(&self.relu_out[lt * F], x, F)
                xo = &self.x_in[((l + 1) * T + t) * E]
                matvec(wt + self.layer_off[l, FC2], &self.relu_out[lt * F], xo, E, F)
                each_add_into(xo, out, E)
        transpose(w + self.off[LM_HEAD], V, E, &self.lm_t[0], self.vocab_lanes)  # rows padded to whole vectors
        for t in range(n):  # lm_head, softmax, -log p[target]
            matvec(&self.lm_t[0], &self.x_in[(L * T + t) * E], logits, self.vocab_lanes, E)
            inv = softmax_forward(logits, &self.lm_e[t * V], &self.lm_total[t], V, self.exp_shortcut,
                                  self.pow_shortcut)
            self.lm_inv[t] = inv
            self.lm_p[t] = self.lm_e[t * V + tokens[t + 1]] * inv
            if self.lm_p[t] == 0.0:
                return t
            loss_sum = loss_sum + log(self.lm_p[t]) * -1.0
        loss[0] = loss_sum * (1.0 / n)  # (1 / n) * sum(losses)
        return -1

    cdef void backward(self, const Py_ssize_t* tokens, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t L = self.n_layer, E = self.n_embd, F = self.hidden, H = self.n_head, hd = self.head_dim
        cdef Py_ssize_t V = self.vocab, T = self.capacity, Tl = self.lanes
        cdef Py_ssize_t t, u, l, h, j, i, lt, a, last, tgt, lanes, lm = self.off[LM_HEAD]
        cdef const double* w = &self.arena.data[0]
        cdef double* g = &self.arena.grad[0]
        cdef double* dx  # the gradient of the current residual stream
        cdef double* dy  # of a layer's output
        cdef double* dmid
        cdef double* dheads
        cdef double* dq
        cdef double* dxn = &self.dxn[0]
        cdef double* dh
        cdef double* dlogit
        cdef double* da  # (lanes,) of a head, in scratch
        cdef double* dscore
        cdef double* dk
        cdef double* dv
        cdef const double* ev
        cdef double dloss = 1.0 / n  # each position's loss gets (1 / n) * 1
        cdef double dp, dinv, dtotal, local
        # Sweeps over the positions, as the forward's: every gradient is summed as microgpt sums
        # it, only the independent sums in another order.  A position's lm_head, MLP block, wo
        # and scores need nothing of another position; a key's or value's gradient needs every
        # later position's score gradients and heads' gradients (the first sweep's), and the
        # input of q, k and v needs them.  The embeddings' rows take the positions' parts last
        # first, as before (a token's row sums them in that order).
        for t in range(n - 1, -1, -1):
            # -log p: p's gradient is (1 / p) * (-1 * dloss); p = e[tgt] * total**-1
            tgt = tokens[t + 1]
            ev = &self.lm_e[t * V]
            dlogit = &self.glogit[t * V]
            dp = (1.0 / self.lm_p[t]) * (-1.0 * dloss)
            dinv = ev[tgt] * dp
            dtotal = (-1.0 * power(self.lm_total[t], MINUS_TWO, self.pow_shortcut)) * dinv
            each_scale(dlogit, ev, dtotal, V)  # logit_i's gradient: exp's local grad (e_i) times e_i's
            dlogit[tgt] = ev[tgt] * (self.lm_inv[t] * dp + dtotal)
            dx = &self.gx[(L * T + t) * E]  # lm_head's rows descending, the target's last
            add_rows_backwards(dx, w + lm, dlogit, E, tgt + 1, V, True)
            add_rows_backwards(dx, w + lm, dlogit, E, 0, tgt, False)
            add_rows_backwards(dx, w + lm, dlogit, E, tgt, tgt + 1, False)
        for l in range(L - 1, -1, -1):
            for t in range(n - 1, -1, -1):
                lanes = (t + LANES) // LANES * LANES
                lt = l * T + t
                # MLP block: x_out = fc2 relu(fc1 rmsnorm(x_mid)) + x_mid
                dy = &self.gx[((l + 1) * T + t) * E]
                dh = &self.gh[lt * F]
                linear_backward(w + self.layer_off[l, FC2], dy, dh, E, F)
                each_relu_backward(dh, &self.h1[lt * F], F)
                linear_backward(w + self.layer_off[l, FC1], dh, dxn, F, E)
                dmid = &self.gmid[lt * E]  # the residual's contribution first
                rmsnorm_backward(&self.x_mid[lt * E], self.d2[lt], self.s2[lt], dxn, dy, dmid, E, self.inv_embd,
                                 self.pow_shortcut)
                # attention block: x_mid = wo heads + x_in
                dheads = &self.gheads[lt * E]
                linear_backward(w + self.layer_off[l, WO], dmid, dheads, E, E)
                dq = &self.gqkv[lt * 3 * E + WQ * E]
                # every head's weights' gradients (t+1,): v_u . dheads (j descending, from 0.0; u in lanes)
                axpy_rows_heads(H, &self.scratch[0], Tl, lanes, &self.vT[(l * E + hd - 1) * Tl], hd * Tl, -Tl,
                                dheads + hd - 1, hd, -1, hd, True)
                for h in range(H):
                    a = lt * H + h
                    ev = &self.att_e[a * T]
                    dscore = &self.att_ds[a * T]
                    da = &self.scratch[h * Tl]
                    local = -1.0 * power(self.att_total[a], MINUS_TWO, self.pow_shortcut)
                    dtotal = 0.0
                    for u in range(t, -1, -1):  # one total**-1 node per weight, the last first
                        dtotal = dtotal + local * (ev[u] * da[u])
                    score_backward(dscore, ev, da, self.att_inv[a], dtotal, self.att_scale, t + 1)
                # q's gradient, each head's: the keys scaled by their scores' gradients, the last first
                axpy_rows_heads(H, dq, hd, hd, &self.k[(l * T + t) * E], hd, -E, &self.att_ds[lt * H * T + t], T, -1,
                                t + 1, True)
            for t in range(n - 1, -1, -1):
                lt = l * T + t
                dq = &self.gqkv[lt * 3 * E + WQ * E]
                # k and v of position t: every position t' >= t read them, and each added its
                # part (v: weight * dheads, k: score gradient * q), the last position first
                dk = &self.gqkv[lt * 3 * E + WK * E]
                dv = &self.gqkv[lt * 3 * E + WV * E]
                last = (l * T + n - 1) * H * T + t  # position n-1's head 0, over u = t (its heads T apart)
                axpy_rows_heads(H, dv, hd, hd, &self.gheads[(l * T + n - 1) * E], hd, -E, &self.att_w[last], T, -H * T,
                                n - t, True)
                axpy_rows_heads(H, dk, hd, hd, &self.q[(l * T + n - 1) * E], hd, -E, &self.att_ds[last], T, -H * T,
                                n - t, True)
                # the input's gradient: one sum over the rows of wq, wk and wv, in the search's order
                axpy_rows_listed(dxn, E, w, &self.qkv_rows[l, 1 if t == 0 else 0, 0], dq, 3 * E, True)
                # the residual's contribution first
                rmsnorm_backward(&self.x_in[lt * E], self.d1[lt], self.s1[lt], dxn, &self.gmid[lt * E], &self.gx[lt * E],
                                 E, self.inv_embd, self.pow_shortcut)
        for t in range(n - 1, -1, -1):  # the first rmsnorm (no residual around it), then the embeddings
            rmsnorm_backward(&self.emb[t * E], self.d0[t], self.s0[t], &self.gx[t * E], NULL, dxn, E, self.inv_embd,
                             self.pow_shortcut)
            axpy(g + self.off[WTE] + tokens[t] * E, dxn, 1.0, E)  # 1 * the sum's gradient
            axpy(g + self.off[WPE] + t * E, dxn, 1.0, E)
        self.weights_backward(n)

    cdef void weights_backward(self, Py_ssize_t n) noexcept nogil:
        """The linear layers' weight gradients over the document's n positions, from the
        inputs and output gradients the pass kept (positions descending in each weight)."""
        cdef Py_ssize_t L = self.n_layer, E = self.n_embd, F = self.hidden, T = self.capacity, l, m, base
        cdef double* g = &self.arena.grad[0]
        for l in range(L):
            base = l * T * E
            for m in range(WQ, WV + 1):
                weight_backward(g + self.layer_off[l, m], &self.xn1[base], E, &self.gqkv[3 * base + m * E], 3 * E,
                                E, E, n)
            weight_backward(g + self.layer_off[l, WO], &self.heads[base], E, &self.gmid[base], E, E, E, n)
            weight_backward(g + self.layer_off[l, FC1], &self.xn2[base], E, &self.gh[l * T * F], F, F, E, n)
            weight_backward(g + self.layer_off[l, FC2], &self.relu_out[l * T * F], F, &self.gx[base + T * E], E,
                            E, F, n)
        weight_backward(g + self.off[LM_HEAD], &self.x_in[L * T * E], E, &self.glogit[0], self.vocab,
                        self.vocab, E, n)


# --- the pow shortcut, exposed for its checks (tests/test_pow_shortcut.py, benchmarks/check_pow_shortcut.py) ---
POW_SHORTCUT_MARGIN = MARGIN  # t, in ULPs (pow_shortcut.h, argument 1)
POW_SHORTCUT_TAIL_ALLOWANCE = TAIL_ALLOWANCE  # fl(t 2^-52)
# exponent: (which, the x range where the shortcut may settle x ** exponent)
cdef dict POWERS = {-1.0: (MINUS_ONE, (MINUS_ONE_MIN, MINUS_ONE_MAX)),
                    -2.0: (MINUS_TWO, (MINUS_TWO_MIN, MINUS_TWO_MAX)),
                    -0.5: (MINUS_HALF, (MINUS_HALF_MIN, MINUS_HALF_MAX)),
                    -1.5: (MINUS_THREE_HALVES, (MINUS_THREE_HALVES_MIN, MINUS_THREE_HALVES_MAX))}
POW_SHORTCUT_RANGES = {exponent: bounds for exponent, (_, bounds) in POWERS.items()}


def power_array(const double[::1] base, double exponent, double[::1] out, *, bint shortcut) -> int:
    """out[i] = libm pow(base[i], exponent) for the fused pass's four exponents (-1.0, -2.0,
    -0.5, -1.5), as the pass computes it: where `shortcut`, pow_shortcut.h's proof
    (cymg_proven_power) settles what it can, libm pow the rest; returns how many elements
    called libm pow.  (Elementwise: out may be base.)"""
    if exponent not in POWERS:
        raise ValueError(f"power_array: exponent must be one of {sorted(POWERS)}, got {exponent!r}")
    if base.shape[0] != out.shape[0]:
        raise ValueError(f"power_array: base has {base.shape[0]} elements, out has {out.shape[0]}")
    cdef int which = POWERS[exponent][0]
    cdef Py_ssize_t i, libm_calls = 0
    cdef double settled  # not out[i]: proven_power writes its estimate even where it leaves x to pow
    with nogil:
        for i in range(base.shape[0]):
            if shortcut and proven_power(base[i], which, &settled):
                out[i] = settled
            else:
                out[i] = pow(base[i], exponent)
                libm_calls += 1
    return libm_calls
