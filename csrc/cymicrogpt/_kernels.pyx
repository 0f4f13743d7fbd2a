"""The vector kernels of the graph's forward (dot_rows) and backward (axpy) passes, and the
choice between their two builds.

Exactness allows SIMD only across independent sums: each lane is one element's own
chain of IEEE operations, in microgpt's order, so a lane computes the very bits the scalar
loop computes.  axpy's lanes are different gradients (each gets one contribution); dot_rows'
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

    /* --- axpy: y[i] += x[i] * a.  Written with intrinsics: the ranges are short (a head,
       a row: 4 to 64) and a compiler's vectorised loop spends more on alignment and
       remainder checks than on the work.  One body, LANES doubles per vector V through
       P's operations. */
    #define CYMG_AXPY(V, P, LANES)                                                      \\
        Py_ssize_t i = 0;                                                             \\
        V va = P##_set1_pd(a);                                                        \\
        for (; i + LANES <= n; i += LANES)                                            \\
            P##_storeu_pd(y + i, P##_add_pd(P##_loadu_pd(y + i), P##_mul_pd(P##_loadu_pd(x + i), va))); \\
        for (; i < n; i++) y[i] += x[i] * a;

    #if CYMG_X86
    static void cymg_axpy_baseline(double *y, const double *x, double a, Py_ssize_t n) {
        CYMG_AXPY(__m128d, _mm, 2)
    }
    __attribute__((target("avx2")))
    static void cymg_axpy_avx2(double *y, const double *x, double a, Py_ssize_t n) {
        CYMG_AXPY(__m256d, _mm256, 4)
    }
    #else
    static void cymg_axpy_baseline(double *y, const double *x, double a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] += x[i] * a;
    }
    #endif

    /* --- dot_rows: out[r] = sum_j w[r, j] * x[j].  A row's sum is a chain of dependent
       additions, so a loop over one row waits on the adder's latency at every term; rows
       computed side by side overlap.  The baseline runs four rows as four scalar chains;
       AVX2 runs eight rows as two chains of four lanes (lane k of a vector: row k of its
       group, gathered column by column).  Rows left over go one by one. */
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
    __attribute__((target("avx2")))
    static void cymg_dot_rows_avx2(const double *w, Py_ssize_t cols, const double *x, double *out,
                                   Py_ssize_t rows) {
        Py_ssize_t r = 0, c = cols;
        for (; r + 8 <= rows; r += 8) {
            const double *row = w + r * cols;
            __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
            for (Py_ssize_t j = 0; j < cols; j++) {
                __m256d xj = _mm256_set1_pd(x[j]);
                __m256d w0 = _mm256_set_pd(row[3 * c + j], row[2 * c + j], row[c + j], row[j]);
                __m256d w1 = _mm256_set_pd(row[7 * c + j], row[6 * c + j], row[5 * c + j], row[4 * c + j]);
                acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(w0, xj));
                acc1 = _mm256_add_pd(acc1, _mm256_mul_pd(w1, xj));
            }
            _mm256_storeu_pd(out + r, acc0);
            _mm256_storeu_pd(out + r + 4, acc1);
        }
        cymg_dot_rows_baseline(w + r * cols, cols, x, out + r, rows - r);
    }
    #endif

    static void (*cymg_axpy)(double *, const double *, double, Py_ssize_t) = cymg_axpy_baseline;
    static void (*cymg_dot_rows)(const double *, Py_ssize_t, const double *, double *, Py_ssize_t)
        = cymg_dot_rows_baseline;

    static int cymg_use_avx2(int allowed) {  /* returns whether the AVX2 build is in use */
        cymg_axpy = cymg_axpy_baseline;
        cymg_dot_rows = cymg_dot_rows_baseline;
    #if CYMG_X86
        __builtin_cpu_init();  /* libgcc's check includes the OS's saving of the AVX registers */
        if (allowed && __builtin_cpu_supports("avx2")) {
            cymg_axpy = cymg_axpy_avx2;
            cymg_dot_rows = cymg_dot_rows_avx2;
            return 1;
        }
    #endif
        return 0;
    }
    """
    void c_axpy "cymg_axpy"(double* y, const double* x, double a, Py_ssize_t n) noexcept nogil
    void c_dot_rows "cymg_dot_rows"(const double* w, Py_ssize_t cols, const double* x, double* out,
                                    Py_ssize_t rows) noexcept nogil
    int c_use_avx2 "cymg_use_avx2"(int allowed) noexcept nogil


cdef void axpy(double* y, const double* x, double a, Py_ssize_t n) noexcept nogil:
    c_axpy(y, x, a, n)


cdef void dot_rows(const double* w, Py_ssize_t cols, const double* x, double* out, Py_ssize_t rows) noexcept nogil:
    c_dot_rows(w, cols, x, out, rows)


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
