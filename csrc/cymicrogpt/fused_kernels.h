/* The sums of scaled rows of the fused training pass (_fused.pyx), inlined into it.

   setup.py compiles _fused.pyx twice on x86-64, as it does _adam.pyx: cymicrogpt._fused
   (baseline: SSE2, which every x86-64 has) and cymicrogpt._fused_avx2 (-mavx2);
   engines/fused.py picks one at run time, as _kernels picks its own build.  So here the
   kernels choose their vectors when compiled (__AVX2__: 4 doubles, __SSE2__: 2, otherwise
   plain C) and are static inline: the pass calls them hundreds of times per document on
   short rows (a head of 4, a row of 16), where a call through a pointer cost as much as
   the work.  Never an FMA: -mavx2 does not enable FMA, and the build has -ffp-contract=off.

   cymg_fused_axpy_rows is axpy_rows.h's sum (the graph engine's, through _kernels), with
   what the pass needs beside it: a destination that starts from 0.0 instead of being
   loaded (the pass's sums start from 0.0: no memset, no loads), and blocks of 8 vectors
   where the rows are that long (one broadcast of c[i] serves 8).  cymg_fused_axpy_rows2
   does two such sums over the same rows at once (two weight rows' gradients over the same
   inputs: each row of m loaded once for both).  Lanes are elements of y, independent
   sums, each a chain of additions in row order: every build computes the same bits. */
#ifndef CYMICROGPT_FUSED_KERNELS_H
#define CYMICROGPT_FUSED_KERNELS_H

#include <stddef.h>
#if defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX2__)
#define CYMG_LANES 4
typedef __m256d cymg_vec;
#define cymg_load _mm256_loadu_pd
#define cymg_store _mm256_storeu_pd
#define cymg_add _mm256_add_pd
#define cymg_mul _mm256_mul_pd
#define cymg_set1 _mm256_set1_pd
#define cymg_zero _mm256_setzero_pd
#elif defined(__SSE2__)
#define CYMG_LANES 2
typedef __m128d cymg_vec;
#define cymg_load _mm_loadu_pd
#define cymg_store _mm_storeu_pd
#define cymg_add _mm_add_pd
#define cymg_mul _mm_mul_pd
#define cymg_set1 _mm_set1_pd
#define cymg_zero _mm_setzero_pd
#endif

#define CYMG_INLINE static inline __attribute__((always_inline))

/* Element j of y (and of y1 when two) over the rows, in plain C: the tail past the vectors. */
CYMG_INLINE void cymg_fused_rows_scalar(const int two, double *y, double *y1, const double *m, ptrdiff_t stride,
                                        const double *c, const double *c1, ptrdiff_t cstep, ptrdiff_t count,
                                        const int from_zero) {
    double a = from_zero ? 0.0 : *y, b = (two && !from_zero) ? *y1 : 0.0;
    for (ptrdiff_t i = 0; i < count; i++, m += stride) {
        a = a + *m * c[i * cstep];
        if (two) b = b + *m * c1[i * cstep];
    }
    *y = a;
    if (two) *y1 = b;
}

#ifdef CYMG_LANES
/* y[0 : K vectors] (+)= sum over i of m[i * stride : + K vectors] * c[i * cstep], and the
   same into y1 with c1 where two: the K (or 2K) sums held in registers across the rows.
   K, two and from_zero are constants where it is inlined: the loops over k unroll. */
CYMG_INLINE void cymg_fused_rows_block(const int K, const int two, double *y, double *y1, const double *m, ptrdiff_t stride,
                                       const double *c, const double *c1, ptrdiff_t cstep, ptrdiff_t count,
                                       const int from_zero) {
    cymg_vec a[8], b[8];
    for (int k = 0; k < K; k++) {
        a[k] = from_zero ? cymg_zero() : cymg_load(y + k * CYMG_LANES);
        if (two) b[k] = from_zero ? cymg_zero() : cymg_load(y1 + k * CYMG_LANES);
    }
    /* Unrolled by 2 where it is one sum; two (the weight rows, over a document's few
       positions) ran faster without (callgrind). */
#define CYMG_ROW(i)                                                                   \
    {                                                                                 \
        cymg_vec ci = cymg_set1(c[(i) * cstep]), di = two ? cymg_set1(c1[(i) * cstep]) : ci; \
        for (int k = 0; k < K; k++) {                                                 \
            cymg_vec row = cymg_load(m + k * CYMG_LANES);                               \
            a[k] = cymg_add(a[k], cymg_mul(row, ci));                                 \
            if (two) b[k] = cymg_add(b[k], cymg_mul(row, di));                        \
        }                                                                             \
    }
    if (two) {
#pragma GCC unroll 1
        for (ptrdiff_t i = 0; i < count; i++, m += stride) CYMG_ROW(i)
    } else {
#pragma GCC unroll 2
        for (ptrdiff_t i = 0; i < count; i++, m += stride) CYMG_ROW(i)
    }
#undef CYMG_ROW
    for (int k = 0; k < K; k++) {
        cymg_store(y + k * CYMG_LANES, a[k]);
        if (two) cymg_store(y1 + k * CYMG_LANES, b[k]);
    }
}
#endif

#ifdef CYMG_LANES
/* Four sums side by side, one vector each: sum q (q < 4) adds into y + q * ystep the rows
   m + q * mstep scaled by c[q * cstep_q + i * cstep] (the attention's heads, each its own
   sum: their chains interleaved, one loop over the rows for four). */
CYMG_INLINE void cymg_fused_rows_block4(double *y, ptrdiff_t ystep, const double *m, ptrdiff_t mstep,
                                        ptrdiff_t stride, const double *c, ptrdiff_t cstep_q, ptrdiff_t cstep,
                                        ptrdiff_t count, const int from_zero) {
    cymg_vec a[4];
    for (int q = 0; q < 4; q++) a[q] = from_zero ? cymg_zero() : cymg_load(y + q * ystep);
#pragma GCC unroll 2
    for (ptrdiff_t i = 0; i < count; i++, m += stride, c += cstep)
        for (int q = 0; q < 4; q++)
            a[q] = cymg_add(a[q], cymg_mul(cymg_load(m + q * mstep), cymg_set1(c[q * cstep_q])));
    for (int q = 0; q < 4; q++) cymg_store(y + q * ystep, a[q]);
}
#endif

/* The sums over n elements: blocks of 8 vectors (one sum only: two take 2 x 4), then 4,
   then 1, then the elements left one at a time. */
CYMG_INLINE void cymg_fused_rows(const int two, double *y, double *y1, ptrdiff_t n, const double *m,
                                 ptrdiff_t stride, const double *c, const double *c1, ptrdiff_t cstep,
                                 ptrdiff_t count, const int from_zero) {
    ptrdiff_t j = 0;
#ifdef CYMG_LANES
    if (!two)
        for (; j + 8 * CYMG_LANES <= n; j += 8 * CYMG_LANES)
            cymg_fused_rows_block(8, 0, y + j, y1, m + j, stride, c, c1, cstep, count, from_zero);
    for (; j + 4 * CYMG_LANES <= n; j += 4 * CYMG_LANES)
        cymg_fused_rows_block(4, two, y + j, y1 + j, m + j, stride, c, c1, cstep, count, from_zero);
    for (; j + CYMG_LANES <= n; j += CYMG_LANES)
        cymg_fused_rows_block(1, two, y + j, y1 + j, m + j, stride, c, c1, cstep, count, from_zero);
#endif
    for (; j < n; j++)
        cymg_fused_rows_scalar(two, y + j, y1 + j, m + j, stride, c, c1, cstep, count, from_zero);
}

/* For i = 0, 1, ..., count - 1 in turn, y[j] += m[i * stride + j] * c[i * cstep] (j < n),
   y starting from its contents, or from 0.0 where from_zero; negative strides walk the
   rows backwards.  y overlaps neither m nor c. */
CYMG_INLINE void cymg_fused_axpy_rows(double *y, ptrdiff_t n, const double *m, ptrdiff_t stride,
                                        const double *c, ptrdiff_t cstep, ptrdiff_t count, int from_zero) {
    if (from_zero)
        cymg_fused_rows(0, y, y, n, m, stride, c, c, cstep, count, 1);  /* (y1, c1 unused) */
    else
        cymg_fused_rows(0, y, y, n, m, stride, c, c, cstep, count, 0);
}

/* P sums of n elements side by side, sum p: for i = 0 .. count-1 in turn,
   y[p * ystep + j] += m[p * mstep + i * stride + j] * c[p * cstep_p + i * cstep], y from
   0.0 where from_zero: one call for all of the attention's heads (p), four at a time
   where the rows hold whole vectors.  No y overlaps an m, a c or another y. */
CYMG_INLINE void cymg_fused_axpy_rows_heads(ptrdiff_t P, double *y, ptrdiff_t ystep, ptrdiff_t n, const double *m,
                                            ptrdiff_t mstep, ptrdiff_t stride, const double *c, ptrdiff_t cstep_p,
                                            ptrdiff_t cstep, ptrdiff_t count, int from_zero) {
    ptrdiff_t p = 0;
#ifdef CYMG_LANES
    if (n % CYMG_LANES == 0)
        for (; p + 4 <= P; p += 4)
            for (ptrdiff_t j = 0; j < n; j += CYMG_LANES) {
                if (from_zero)
                    cymg_fused_rows_block4(y + p * ystep + j, ystep, m + p * mstep + j, mstep, stride,
                                           c + p * cstep_p, cstep_p, cstep, count, 1);
                else
                    cymg_fused_rows_block4(y + p * ystep + j, ystep, m + p * mstep + j, mstep, stride,
                                           c + p * cstep_p, cstep_p, cstep, count, 0);
            }
#endif
    for (; p < P; p++)
        cymg_fused_axpy_rows(y + p * ystep, n, m + p * mstep, stride, c + p * cstep_p, cstep, count, from_zero);
}

/* The same sum twice over the same rows m: into y with c and into y1 with c1 (each
   adding to its contents).  None of y, y1 overlaps m, c, c1 or the other. */
CYMG_INLINE void cymg_fused_axpy_rows2(double *y, double *y1, ptrdiff_t n, const double *m, ptrdiff_t stride,
                                         const double *c, const double *c1, ptrdiff_t cstep, ptrdiff_t count) {
    cymg_fused_rows(1, y, y1, n, m, stride, c, c1, cstep, count, 0);
}

#endif
