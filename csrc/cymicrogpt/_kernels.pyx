"""The vector kernels of the graph's forward (dot_rows; sum_rows over a transposed matrix) and
backward (axpy_pair; a linear layer's rows: outer_add and axpy_rows; its rows at every position:
outer_add_many) passes, transpose, the check that a step's gradients are finite, and the choice
between their two builds.

Exactness allows SIMD only across independent sums: each lane is one element's own
chain of IEEE operations, in microgpt's order, so a lane computes the very bits the scalar
loop computes.  axpy_pair's lanes are different gradients (each gets one contribution); dot_rows'
lanes are different rows of a matrix-vector product (each row summed left to right from
0.0, as microgpt's `sum(wi * xi for ...)` from the int 0).  Never an FMA: the build has
-ffp-contract=off and the kernels use no FMA instruction.

Two builds on x86-64, in C below: the baseline (SSE2, which every x86-64 has) and AVX2,
picked at import where the CPU and OS run AVX2; CYMICROGPT_NO_AVX2=1 keeps the baseline
(as it does for Adam: engines/adam.py).  Elsewhere only the baseline, in plain C.
"""
import os

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #include <immintrin.h>
    #define CYMG_X86 1
    #else
    #define CYMG_X86 0
    #endif

    /* --- axpy_pair: y[i] += x[i] * a, then u[i] += v[i] * a, for i < n: both halves of a DOT
       node's backward in one call.  y and u are disjoint or one range (x . x: each element
       gets its first contribution, then its second); neither overlaps x or v.  Written with
       intrinsics: the ranges are short (a head, a row: 4 to 64) and a compiler's vectorised
       loop spends more on alignment and remainder checks than on the work.  One body,
       LANES doubles per vector V through P's operations: a block of y, then u's. */
    #define CYMG_AXPY_PAIR(V, P, LANES)                                                 \\
        Py_ssize_t i = 0;                                                             \\
        V va = P##_set1_pd(a);                                                        \\
        for (; i + LANES <= n; i += LANES) {                                          \\
            P##_storeu_pd(y + i, P##_add_pd(P##_loadu_pd(y + i), P##_mul_pd(P##_loadu_pd(x + i), va))); \\
            P##_storeu_pd(u + i, P##_add_pd(P##_loadu_pd(u + i), P##_mul_pd(P##_loadu_pd(v + i), va))); \\
        }                                                                             \\
        for (; i < n; i++) {                                                          \\
            y[i] += x[i] * a;                                                         \\
            u[i] += v[i] * a;                                                         \\
        }

    #if CYMG_X86
    static void cymg_axpy_pair_baseline(double *y, const double *x, double *u, const double *v, double a,
                                        Py_ssize_t n) {
        CYMG_AXPY_PAIR(__m128d, _mm, 2)
    }
    __attribute__((target("avx2")))
    static void cymg_axpy_pair_avx2(double *y, const double *x, double *u, const double *v, double a, Py_ssize_t n) {
        CYMG_AXPY_PAIR(__m256d, _mm256, 4)
    }
    #else
    static void cymg_axpy_pair_baseline(double *y, const double *x, double *u, const double *v, double a,
                                        Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            y[i] += x[i] * a;
            u[i] += v[i] * a;
        }
    }
    #endif

    /* --- dot_rows: out[r] = sum_j w[r, j] * x[j].  A row's sum is a chain of dependent
       additions, so a loop over one row waits on the adder's latency at every term; rows
       computed side by side overlap.  The baseline runs four rows as four scalar chains;
       AVX2 runs eight rows as two chains of four lanes (lane k of a vector: row k of its
       group), then four as one, taking four columns of four rows at a time as four row
       loads transposed in registers.  Rows left over go one by one. */
    static void cymg_dot_row(const double *w, Py_ssize_t cols, const double *x, double *out) {
        double acc = 0.0;
        for (Py_ssize_t j = 0; j < cols; j++) acc = acc + w[j] * x[j];
        *out = acc;
    }
    static void cymg_dot_rows_baseline(const double *w, Py_ssize_t cols, const double *x, double *out,
                                       Py_ssize_t rows) {
        Py_ssize_t r = 0;
        for (; r + 4 <= rows; r += 4) {
            const double *row = w + r * cols;
            double acc0 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0;
            for (Py_ssize_t j = 0; j < cols; j++) {
                double xj = x[j];
                acc0 = acc0 + row[j] * xj;
                acc1 = acc1 + row[cols + j] * xj;
                acc2 = acc2 + row[2 * cols + j] * xj;
                acc3 = acc3 + row[3 * cols + j] * xj;
            }
            out[r] = acc0; out[r + 1] = acc1; out[r + 2] = acc2; out[r + 3] = acc3;
        }
        for (; r < rows; r++) cymg_dot_row(w + r * cols, cols, x, out + r);
    }
    #if CYMG_X86
    /* Four rows' columns j .. j+3 as four vectors, one per column (lane k: row k): a 4x4
       transpose in registers of four row loads, for the lanes of dot_rows_avx2. */
    __attribute__((target("avx2")))
    static inline void cymg_columns_4x4(const double *row, Py_ssize_t cols, Py_ssize_t j, __m256d out[4]) {
        __m256d r0 = _mm256_loadu_pd(row + j), r1 = _mm256_loadu_pd(row + cols + j);
        __m256d r2 = _mm256_loadu_pd(row + 2 * cols + j), r3 = _mm256_loadu_pd(row + 3 * cols + j);
        __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);  /* (r0j r1j r0j+2 r1j+2), (.. j+1, j+3) */
        __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
        out[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
        out[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
        out[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
        out[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
    }
    /* One column of four rows (lane k: row k), for the columns left after the blocks of 4. */
    __attribute__((target("avx2")))
    static inline __m256d cymg_column_4(const double *row, Py_ssize_t cols, Py_ssize_t j) {
        return _mm256_set_pd(row[3 * cols + j], row[2 * cols + j], row[cols + j], row[j]);
    }
    __attribute__((target("avx2")))
    static void cymg_dot_rows_avx2(const double *w, Py_ssize_t cols, const double *x, double *out,
                                   Py_ssize_t rows) {
        Py_ssize_t r = 0, j;
        __m256d c0[4], c1[4];
        for (; r + 8 <= rows; r += 8) {  /* two chains of four lanes: rows r .. r+3, r+4 .. r+7 */
            const double *row = w + r * cols;
            __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
            for (j = 0; j + 4 <= cols; j += 4) {
                cymg_columns_4x4(row, cols, j, c0);
                cymg_columns_4x4(row + 4 * cols, cols, j, c1);
                for (int k = 0; k < 4; k++) {  /* columns j .. j+3, in order */
                    __m256d xj = _mm256_set1_pd(x[j + k]);
                    acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(c0[k], xj));
                    acc1 = _mm256_add_pd(acc1, _mm256_mul_pd(c1[k], xj));
                }
            }
            for (; j < cols; j++) {
                __m256d xj = _mm256_set1_pd(x[j]);
                acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(cymg_column_4(row, cols, j), xj));
                acc1 = _mm256_add_pd(acc1, _mm256_mul_pd(cymg_column_4(row + 4 * cols, cols, j), xj));
            }
            _mm256_storeu_pd(out + r, acc0);
            _mm256_storeu_pd(out + r + 4, acc1);
        }
        for (; r + 4 <= rows; r += 4) {  /* one chain of four lanes */
            const double *row = w + r * cols;
            __m256d acc0 = _mm256_setzero_pd();
            for (j = 0; j + 4 <= cols; j += 4) {
                cymg_columns_4x4(row, cols, j, c0);
                for (int k = 0; k < 4; k++)
                    acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(c0[k], _mm256_set1_pd(x[j + k])));
            }
            for (; j < cols; j++)
                acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(cymg_column_4(row, cols, j), _mm256_set1_pd(x[j])));
            _mm256_storeu_pd(out + r, acc0);
        }
        for (; r < rows; r++) cymg_dot_row(w + r * cols, cols, x, out + r);
    }
    #endif

    /* --- axpy_rows: y += a sum of scaled rows, in a given order, from y's contents (its body
       and the why: axpy_rows.h, a template: here a baseline copy, SSE2 on x86-64 and plain C
       elsewhere, and an AVX2 copy; the fused pass inlines its own build's copy). */
    #define CYMG_ROWS(name) cymg_baseline_##name
    #define CYMG_ROWS_LANES CYMG_ROWS_COMPILED_LANES
    #define CYMG_ROWS_TARGET
    #include "axpy_rows.h"
    static void cymg_axpy_rows_baseline(double *y, Py_ssize_t n, const double *m, Py_ssize_t stride,
                                        const double *c, Py_ssize_t cstep, Py_ssize_t count) {
        cymg_baseline_axpy_rows(y, n, m, stride, c, cstep, count, 0);
    }
    static void cymg_sum_rows_baseline(double *y, Py_ssize_t n, const double *m, Py_ssize_t stride,
                                       const double *c, Py_ssize_t cstep, Py_ssize_t count) {
        cymg_baseline_axpy_rows(y, n, m, stride, c, cstep, count, 1);
    }
    #if CYMG_X86
    #define CYMG_ROWS(name) cymg_avx2_##name
    #define CYMG_ROWS_LANES 4
    #define CYMG_ROWS_TARGET __attribute__((target("avx2")))
    #include "axpy_rows.h"
    __attribute__((target("avx2")))
    static void cymg_axpy_rows_avx2(double *y, Py_ssize_t n, const double *m, Py_ssize_t stride,
                                    const double *c, Py_ssize_t cstep, Py_ssize_t count) {
        cymg_avx2_axpy_rows(y, n, m, stride, c, cstep, count, 0);
    }
    __attribute__((target("avx2")))
    static void cymg_sum_rows_avx2(double *y, Py_ssize_t n, const double *m, Py_ssize_t stride,
                                   const double *c, Py_ssize_t cstep, Py_ssize_t count) {
        cymg_avx2_axpy_rows(y, n, m, stride, c, cstep, count, 1);
    }
    #endif

    /* --- transpose: wt[j * rows + r] = w[r * cols + j], for the fused forward's matvec (a copy:
       no arithmetic, so the order of the moves does not matter).  Square blocks through
       registers (baseline 2 x 2, AVX2 4 x 4), then the edges (the last rows % B rows, and the
       last cols % B columns of the other rows) one element at a time. */
    static void cymg_transpose_edges(const double *w, Py_ssize_t rows, Py_ssize_t cols, double *wt,
                                     Py_ssize_t block_rows, Py_ssize_t block_cols) {
        for (Py_ssize_t r = 0; r < rows; r++)
            for (Py_ssize_t j = r < block_rows ? block_cols : 0; j < cols; j++) wt[j * rows + r] = w[r * cols + j];
    }
    static void cymg_transpose_baseline(const double *w, Py_ssize_t rows, Py_ssize_t cols, double *wt) {
        Py_ssize_t block_rows = 0, block_cols = 0;
    #if CYMG_X86
        block_rows = rows - rows % 2, block_cols = cols - cols % 2;
        for (Py_ssize_t r = 0; r < block_rows; r += 2)
            for (Py_ssize_t j = 0; j < block_cols; j += 2) {
                __m128d a = _mm_loadu_pd(w + r * cols + j), b = _mm_loadu_pd(w + (r + 1) * cols + j);  /* rows r, r+1 */
                _mm_storeu_pd(wt + j * rows + r, _mm_unpacklo_pd(a, b));  /* column j: (a0, b0) */
                _mm_storeu_pd(wt + (j + 1) * rows + r, _mm_unpackhi_pd(a, b));  /* column j+1: (a1, b1) */
            }
    #endif
        cymg_transpose_edges(w, rows, cols, wt, block_rows, block_cols);
    }
    #if CYMG_X86
    __attribute__((target("avx2")))
    static void cymg_transpose_avx2(const double *w, Py_ssize_t rows, Py_ssize_t cols, double *wt) {
        Py_ssize_t block_rows = rows - rows % 4, block_cols = cols - cols % 4;
        for (Py_ssize_t r = 0; r < block_rows; r += 4)
            for (Py_ssize_t j = 0; j < block_cols; j += 4) {
                __m256d columns[4];  /* columns j .. j+3 of rows r .. r+3 */
                cymg_columns_4x4(w + r * cols, cols, j, columns);
                for (int k = 0; k < 4; k++) _mm256_storeu_pd(wt + (j + k) * rows + r, columns[k]);
            }
        cymg_transpose_edges(w, rows, cols, wt, block_rows, block_cols);
    }
    #endif

    /* --- outer_add: a[r * cols + j] += x[j] * g[r], the weight gradients of rows of a linear
       layer (each element gets one contribution: the order of the rows does not matter).
       A block of x stays in registers across all the rows, WIDTH vectors at a time (four,
       then one), then the columns left one by one. */
    #define CYMG_OUTER_ADD_COLUMNS(V, P, LANES, WIDTH)                                  \
        for (; j + WIDTH * LANES <= cols; j += WIDTH * LANES) {                        \
            V xs[WIDTH];                                                              \
            for (int v = 0; v < WIDTH; v++) xs[v] = P##_loadu_pd(x + j + v * LANES);    \
            for (Py_ssize_t r = 0; r < rows; r++) {                                   \
                V gr = P##_set1_pd(g[r]);                                             \
                double *row = a + r * cols + j;                                       \
                for (int v = 0; v < WIDTH; v++)                                       \
                    P##_storeu_pd(row + v * LANES, P##_add_pd(P##_loadu_pd(row + v * LANES), P##_mul_pd(xs[v], gr))); \
            }                                                                         \
        }
    static void cymg_outer_add_from(Py_ssize_t j, double *a, const double *x, const double *g, Py_ssize_t rows,
                                    Py_ssize_t cols) {
        for (; j < cols; j++)
            for (Py_ssize_t r = 0; r < rows; r++) a[r * cols + j] += x[j] * g[r];
    }
    #define CYMG_OUTER_ADD(V, P, LANES)                                                 \
        Py_ssize_t j = 0;                                                             \
        CYMG_OUTER_ADD_COLUMNS(V, P, LANES, 4)                                        \
        CYMG_OUTER_ADD_COLUMNS(V, P, LANES, 1)                                        \
        cymg_outer_add_from(j, a, x, g, rows, cols);
    #if CYMG_X86
    static void cymg_outer_add_baseline(double *a, const double *x, const double *g, Py_ssize_t rows,
                                        Py_ssize_t cols) {
        CYMG_OUTER_ADD(__m128d, _mm, 2)
    }
    __attribute__((target("avx2")))
    static void cymg_outer_add_avx2(double *a, const double *x, const double *g, Py_ssize_t rows, Py_ssize_t cols) {
        CYMG_OUTER_ADD(__m256d, _mm256, 4)
    }
    #else
    static void cymg_outer_add_baseline(double *a, const double *x, const double *g, Py_ssize_t rows,
                                        Py_ssize_t cols) {
        cymg_outer_add_from(0, a, x, g, rows, cols);
    }
    #endif

    /* --- outer_add_many: outer_add of `count` pairs into one matrix, in turn: for e = 0 .. count-1,
       a[r * cols + j] += xs[e][j] * gs[e][r] for r < rows, j < cols.  Each element gets its count
       contributions in e's order, each the same IEEE product and sum as outer_add's, so the same bits as
       count calls of outer_add; but a block of a row stays in registers across all the pairs, so `a` is
       loaded and stored once instead of count times (a layer's weight gradients at every position of a
       step: _arena.pyx's deferred groups).  WIDTH vectors of a row at a time (four, then one), then the
       columns left one by one. */
    #define CYMG_OUTER_ADD_MANY_COLUMNS(V, P, LANES, WIDTH)                             \
        for (; j + WIDTH * LANES <= cols; j += WIDTH * LANES)                          \
            for (Py_ssize_t r = 0; r < rows; r++) {                                   \
                double *row = a + r * cols + j;                                       \
                V acc[WIDTH];                                                         \
                for (int v = 0; v < WIDTH; v++) acc[v] = P##_loadu_pd(row + v * LANES);  \
                for (Py_ssize_t e = 0; e < count; e++) {                              \
                    V ge = P##_set1_pd(gs[e][r]);                                     \
                    for (int v = 0; v < WIDTH; v++)                                   \
                        acc[v] = P##_add_pd(acc[v], P##_mul_pd(P##_loadu_pd(xs[e] + j + v * LANES), ge)); \
                }                                                                     \
                for (int v = 0; v < WIDTH; v++) P##_storeu_pd(row + v * LANES, acc[v]);  \
            }
    static void cymg_outer_add_many_from(Py_ssize_t j, double *a, Py_ssize_t rows, Py_ssize_t cols,
                                         const double *const *xs, const double *const *gs, Py_ssize_t count) {
        for (; j < cols; j++)
            for (Py_ssize_t r = 0; r < rows; r++) {
                double acc = a[r * cols + j];
                for (Py_ssize_t e = 0; e < count; e++) acc = acc + xs[e][j] * gs[e][r];
                a[r * cols + j] = acc;
            }
    }
    #define CYMG_OUTER_ADD_MANY(V, P, LANES)                                            \
        Py_ssize_t j = 0;                                                             \
        CYMG_OUTER_ADD_MANY_COLUMNS(V, P, LANES, 4)                                   \
        CYMG_OUTER_ADD_MANY_COLUMNS(V, P, LANES, 1)                                   \
        cymg_outer_add_many_from(j, a, rows, cols, xs, gs, count);
    #if CYMG_X86
    static void cymg_outer_add_many_baseline(double *a, Py_ssize_t rows, Py_ssize_t cols, const double *const *xs,
                                             const double *const *gs, Py_ssize_t count) {
        CYMG_OUTER_ADD_MANY(__m128d, _mm, 2)
    }
    __attribute__((target("avx2")))
    static void cymg_outer_add_many_avx2(double *a, Py_ssize_t rows, Py_ssize_t cols, const double *const *xs,
                                         const double *const *gs, Py_ssize_t count) {
        CYMG_OUTER_ADD_MANY(__m256d, _mm256, 4)
    }
    #else
    static void cymg_outer_add_many_baseline(double *a, Py_ssize_t rows, Py_ssize_t cols, const double *const *xs,
                                             const double *const *gs, Py_ssize_t count) {
        cymg_outer_add_many_from(0, a, rows, cols, xs, gs, count);
    }
    #endif

    /* --- all_finite: no nan or inf in x[0:n].  x[i] - x[i] is +0.0 (all bits 0) for a
       finite x[i] and nan otherwise, so the OR of their bits is 0 exactly when all are
       finite: no early exit and no floating-point sum, a loop the compiler vectorises
       (four lanes in the AVX2 build, two in the baseline). */
    #define CYMG_ALL_FINITE                                                             \
        uint64_t bad = 0, bits;                                                       \
        for (Py_ssize_t i = 0; i < n; i++) {                                          \
            double difference = x[i] - x[i];                                          \
            memcpy(&bits, &difference, sizeof bits);                                  \
            bad |= bits;                                                              \
        }                                                                             \
        return bad == 0;
    static int cymg_all_finite_baseline(const double *x, Py_ssize_t n) { CYMG_ALL_FINITE }
    #if CYMG_X86
    __attribute__((target("avx2")))
    static int cymg_all_finite_avx2(const double *x, Py_ssize_t n) { CYMG_ALL_FINITE }
    #endif

    static void (*cymg_axpy_pair)(double *, const double *, double *, const double *, double, Py_ssize_t)
        = cymg_axpy_pair_baseline;
    static void (*cymg_dot_rows)(const double *, Py_ssize_t, const double *, double *, Py_ssize_t)
        = cymg_dot_rows_baseline;
    static void (*cymg_axpy_rows)(double *, Py_ssize_t, const double *, Py_ssize_t, const double *, Py_ssize_t,
                                  Py_ssize_t) = cymg_axpy_rows_baseline;
    static void (*cymg_sum_rows)(double *, Py_ssize_t, const double *, Py_ssize_t, const double *, Py_ssize_t,
                                 Py_ssize_t) = cymg_sum_rows_baseline;
    static void (*cymg_transpose)(const double *, Py_ssize_t, Py_ssize_t, double *) = cymg_transpose_baseline;
    static void (*cymg_outer_add)(double *, const double *, const double *, Py_ssize_t, Py_ssize_t)
        = cymg_outer_add_baseline;
    static void (*cymg_outer_add_many)(double *, Py_ssize_t, Py_ssize_t, const double *const *, const double *const *,
                                       Py_ssize_t) = cymg_outer_add_many_baseline;
    static int (*cymg_all_finite)(const double *, Py_ssize_t) = cymg_all_finite_baseline;

    static int cymg_use_avx2(int allowed) {  /* returns whether the AVX2 build is in use */
        cymg_axpy_pair = cymg_axpy_pair_baseline;
        cymg_dot_rows = cymg_dot_rows_baseline;
        cymg_axpy_rows = cymg_axpy_rows_baseline;
        cymg_sum_rows = cymg_sum_rows_baseline;
        cymg_transpose = cymg_transpose_baseline;
        cymg_outer_add = cymg_outer_add_baseline;
        cymg_outer_add_many = cymg_outer_add_many_baseline;
        cymg_all_finite = cymg_all_finite_baseline;
    #if CYMG_X86
        __builtin_cpu_init();  /* libgcc's check includes the OS's saving of the AVX registers */
        if (allowed && __builtin_cpu_supports("avx2")) {
            cymg_axpy_pair = cymg_axpy_pair_avx2;
            cymg_dot_rows = cymg_dot_rows_avx2;
            cymg_axpy_rows = cymg_axpy_rows_avx2;
            cymg_sum_rows = cymg_sum_rows_avx2;
            cymg_transpose = cymg_transpose_avx2;
            cymg_outer_add = cymg_outer_add_avx2;
            cymg_outer_add_many = cymg_outer_add_many_avx2;
            cymg_all_finite = cymg_all_finite_avx2;
            return 1;
        }
    #endif
        return 0;
    }
    """
    void c_axpy_pair "cymg_axpy_pair"(double* y, const double* x, double* u, const double* v, double a,
                                      Py_ssize_t n) noexcept nogil
    void c_dot_rows "cymg_dot_rows"(const double* w, Py_ssize_t cols, const double* x, double* out,
                                    Py_ssize_t rows) noexcept nogil
    void c_axpy_rows "cymg_axpy_rows"(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride,
                                      const double* c, Py_ssize_t cstep, Py_ssize_t count) noexcept nogil
    void c_sum_rows "cymg_sum_rows"(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride,
                                    const double* c, Py_ssize_t cstep, Py_ssize_t count) noexcept nogil
    void c_transpose "cymg_transpose"(const double* w, Py_ssize_t rows, Py_ssize_t cols, double* wt) noexcept nogil
    void c_outer_add "cymg_outer_add"(double* a, const double* x, const double* g, Py_ssize_t rows,
                                      Py_ssize_t cols) noexcept nogil
    void c_outer_add_many "cymg_outer_add_many"(double* a, Py_ssize_t rows, Py_ssize_t cols, const double* const* xs,
                                                const double* const* gs, Py_ssize_t count) noexcept nogil
    int c_all_finite "cymg_all_finite"(const double* x, Py_ssize_t n) noexcept nogil
    int c_use_avx2 "cymg_use_avx2"(int allowed) noexcept nogil


cdef void axpy_pair(double* y, const double* x, double* u, const double* v, double a, Py_ssize_t n) noexcept nogil:
    c_axpy_pair(y, x, u, v, a, n)


cdef void dot_rows(const double* w, Py_ssize_t cols, const double* x, double* out, Py_ssize_t rows) noexcept nogil:
    c_dot_rows(w, cols, x, out, rows)


cdef void axpy_rows(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride, const double* c, Py_ssize_t cstep,
                    Py_ssize_t count) noexcept nogil:
    c_axpy_rows(y, n, m, stride, c, cstep, count)


cdef void sum_rows(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride, const double* c, Py_ssize_t cstep,
                   Py_ssize_t count) noexcept nogil:
    c_sum_rows(y, n, m, stride, c, cstep, count)


cdef void transpose(const double* w, Py_ssize_t rows, Py_ssize_t cols, double* wt) noexcept nogil:
    c_transpose(w, rows, cols, wt)


cdef void outer_add(double* a, const double* x, const double* g, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    c_outer_add(a, x, g, rows, cols)


cdef void outer_add_many(double* a, Py_ssize_t rows, Py_ssize_t cols, const double* const* xs, const double* const* gs,
                         Py_ssize_t count) noexcept nogil:
    c_outer_add_many(a, rows, cols, xs, gs, count)


cdef bint all_finite(const double* x, Py_ssize_t n) noexcept nogil:
    return c_all_finite(x, n)


cdef bint avx2_in_use = c_use_avx2(os.environ.get("CYMICROGPT_NO_AVX2", "") != "1")


def uses_avx2() -> bool:
    """Do the kernels run their AVX2 build (the CPU has AVX2, CYMICROGPT_NO_AVX2 unset)?"""
    return avx2_in_use


def use_avx2(bint allowed) -> bool:
    """Switch the AVX2 build on (where the CPU has AVX2) or off, for tests that compare
    both builds bit for bit; returns whether it is on now."""
    global avx2_in_use
    avx2_in_use = c_use_avx2(allowed)
    return avx2_in_use
