/* The sum of scaled rows, the compiled core's one implementation of it:

       for i = 0, 1, ..., count - 1 in turn: y[j] += m[i * stride + j] * c[i * cstep]  (j < n),

   y starting from its contents, or from 0.0 where from_zero (no memset, no loads); negative
   strides walk the rows backwards.  count axpys, one per row of m, each element of y a
   chain of additions in row order; where count axpys load and store y at every row, this
   keeps y in registers across all the rows.  Lanes are elements of y, independent sums:
   every vector width computes the same bits.  Never an FMA: the builds have
   -ffp-contract=off and nothing here is an FMA instruction.

   Its users:
   - _kernels.pyx (the graph engine's backward: a linear group adds a run of a layer's rows,
     the last first, into its input's gradient): axpy_rows from y's contents, through a
     pointer to its SSE2 or its AVX2 copy (a target attribute), picked at run time;
   - _fused.pyx (the fused training pass; setup.py compiles it twice on x86-64, SSE2 and
     -mavx2 -mfma, and engines/fused.py picks one): all four forms, in this build's widest
     vectors, inlined (always_inline): the pass calls them hundreds of times per document on
     short rows (a head of 4, a row of 16), where a call through a pointer cost as much as
     the work.

   A template, included once per copy.  Before each #include define
     CYMG_ROWS(name)   the name this copy gives its function `name`, e.g. cymg_avx2_##name;
     CYMG_ROWS_LANES   doubles per vector: 4 (AVX2), 2 (SSE2) or 1 (plain C, no vectors);
                       CYMG_ROWS_COMPILED_LANES is the widest the compiler's flags allow;
     CYMG_ROWS_TARGET  the copy's function attributes: __attribute__((target("avx2"))) for
                       AVX2 in a build without -mavx2, else nothing;
   the header #undefs the three again.  Each copy defines (no y overlaps an m, a c or another y):
     CYMG_ROWS(axpy_rows)(y, n, m, stride, c, cstep, count, from_zero)   the sum;
     CYMG_ROWS(axpy_rows2)(y, y1, n, m, stride, c, c1, cstep, count)     the sum twice over
         the same rows, into y with c and into y1 with c1, each from its contents (two weight
         rows' gradients over the same inputs: each row of m loaded once for both);
     CYMG_ROWS(axpy_rows_heads)(P, y, ystep, n, m, mstep, stride, c, cstep_p, cstep, count,
         from_zero)   P sums side by side (the attention's heads), sum p:
         y[p * ystep + j] (+)= m[p * mstep + i * stride + j] * c[p * cstep_p + i * cstep];
     CYMG_ROWS(axpy_rows_listed)(y, n, m, at, c, count, from_zero)   the sum over rows in the
         order of a list: row i is m + at[2 i], scaled by c[at[2 i + 1]] (the rows of several
         matrices in one chain, y in registers across all of them).
   Tuned on the fused pass (callgrind): blocks of 8 vectors where the rows are that long
   (one broadcast of c[i] serves 8), the rows unrolled by 2 for one sum but not for two,
   four heads' chains interleaved in one loop over the rows. */

#ifndef CYMICROGPT_AXPY_ROWS_H
#define CYMICROGPT_AXPY_ROWS_H

#include <stddef.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX2__)
#define CYMG_ROWS_COMPILED_LANES 4
#elif defined(__SSE2__)
#define CYMG_ROWS_COMPILED_LANES 2
#else
#define CYMG_ROWS_COMPILED_LANES 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CYMG_ROWS_INLINE static inline __attribute__((always_inline))
#else
#define CYMG_ROWS_INLINE static inline
#endif

/* Row i of a sum, and its coefficient: m + i * stride and c[i * cstep], or where the rows are
   listed (`at`), m + at[2 i] and c[at[2 i + 1]]. */
#define CYMG_ROWS_AT(i) (listed ? m + at[2 * (i)] : m + (i) * stride)
#define CYMG_ROWS_COEFFICIENT(c, i) (listed ? (c)[at[2 * (i) + 1]] : (c)[(i) * cstep])

/* Element *y (and *y1 where two) over the rows, in plain C: the tail past the vectors,
   every copy's (inlined into an AVX2 copy too: its operations are a subset of AVX2's). */
CYMG_ROWS_INLINE void cymg_rows_scalar(const int two, double *y, double *y1, const double *m, ptrdiff_t stride,
                                       const double *c, const double *c1, ptrdiff_t cstep, ptrdiff_t count,
                                       const int from_zero, const int listed, const ptrdiff_t *at) {
    double a = from_zero ? 0.0 : *y, b = (two && !from_zero) ? *y1 : 0.0;
    for (ptrdiff_t i = 0; i < count; i++) {
        const double *row = CYMG_ROWS_AT(i);
        a = a + *row * CYMG_ROWS_COEFFICIENT(c, i);
        if (two) b = b + *row * CYMG_ROWS_COEFFICIENT(c1, i);
    }
    *y = a;
    if (two) *y1 = b;
}

#endif  /* CYMICROGPT_AXPY_ROWS_H: what follows is the template, once per #include */

#if CYMG_ROWS_LANES == 4
#define CYMG_ROWS_V __m256d
#define CYMG_ROWS_OP(op) _mm256_##op##_pd
#elif CYMG_ROWS_LANES == 2
#define CYMG_ROWS_V __m128d
#define CYMG_ROWS_OP(op) _mm_##op##_pd
#endif

#if CYMG_ROWS_LANES > 1
/* y[0 : K vectors] (+)= sum over i of row i [0 : K vectors] * its coefficient (CYMG_ROWS_AT),
   and the same into y1 with c1 where two: the K (or 2K) sums held in registers across the
   rows.  K, two, from_zero and listed are constants where it is inlined: the loops over k
   unroll. */
CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(rows_block)(const int K, const int two, double *y, double *y1,
                                                             const double *m, ptrdiff_t stride, const double *c,
                                                             const double *c1, ptrdiff_t cstep, ptrdiff_t count,
                                                             const int from_zero, const int listed,
                                                             const ptrdiff_t *at) {
    CYMG_ROWS_V a[8], b[8];
    for (int k = 0; k < K; k++) {
        a[k] = from_zero ? CYMG_ROWS_OP(setzero)() : CYMG_ROWS_OP(loadu)(y + k * CYMG_ROWS_LANES);
        if (two) b[k] = from_zero ? CYMG_ROWS_OP(setzero)() : CYMG_ROWS_OP(loadu)(y1 + k * CYMG_ROWS_LANES);
    }
    /* Unrolled by 2 where it is one sum; two (the weight rows, over a document's few
       positions) ran faster without (callgrind). */
#define CYMG_ROWS_ROW(i)                                                                  \
    {                                                                                     \
        const double *r = CYMG_ROWS_AT(i);                                                \
        CYMG_ROWS_V ci = CYMG_ROWS_OP(set1)(CYMG_ROWS_COEFFICIENT(c, i));                 \
        CYMG_ROWS_V di = two ? CYMG_ROWS_OP(set1)(CYMG_ROWS_COEFFICIENT(c1, i)) : ci;     \
        for (int k = 0; k < K; k++) {                                                     \
            CYMG_ROWS_V row = CYMG_ROWS_OP(loadu)(r + k * CYMG_ROWS_LANES);               \
            a[k] = CYMG_ROWS_OP(add)(a[k], CYMG_ROWS_OP(mul)(row, ci));                   \
            if (two) b[k] = CYMG_ROWS_OP(add)(b[k], CYMG_ROWS_OP(mul)(row, di));          \
        }                                                                                 \
    }
    if (two) {
#pragma GCC unroll 1
        for (ptrdiff_t i = 0; i < count; i++) CYMG_ROWS_ROW(i)
    } else {
#pragma GCC unroll 2
        for (ptrdiff_t i = 0; i < count; i++) CYMG_ROWS_ROW(i)
    }
#undef CYMG_ROWS_ROW
    for (int k = 0; k < K; k++) {
        CYMG_ROWS_OP(storeu)(y + k * CYMG_ROWS_LANES, a[k]);
        if (two) CYMG_ROWS_OP(storeu)(y1 + k * CYMG_ROWS_LANES, b[k]);
    }
}

/* Four sums side by side, one vector each: sum q (q < 4) adds into y + q * ystep the rows
   m + q * mstep scaled by c[q * cstep_q + i * cstep] (the attention's heads, each its own
   sum: their chains interleaved, one loop over the rows for four). */
CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(rows_block4)(double *y, ptrdiff_t ystep, const double *m,
                                                              ptrdiff_t mstep, ptrdiff_t stride, const double *c,
                                                              ptrdiff_t cstep_q, ptrdiff_t cstep, ptrdiff_t count,
                                                              const int from_zero) {
    CYMG_ROWS_V a[4];
    for (int q = 0; q < 4; q++) a[q] = from_zero ? CYMG_ROWS_OP(setzero)() : CYMG_ROWS_OP(loadu)(y + q * ystep);
#pragma GCC unroll 2
    for (ptrdiff_t i = 0; i < count; i++, m += stride, c += cstep)
        for (int q = 0; q < 4; q++)
            a[q] = CYMG_ROWS_OP(add)(a[q], CYMG_ROWS_OP(mul)(CYMG_ROWS_OP(loadu)(m + q * mstep),
                                                             CYMG_ROWS_OP(set1)(c[q * cstep_q])));
    for (int q = 0; q < 4; q++) CYMG_ROWS_OP(storeu)(y + q * ystep, a[q]);
}
#endif

/* The sums over n elements: blocks of 8 vectors (one sum only: two take 2 x 4), then 4,
   then 1, then the elements left one at a time. */
CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(rows)(const int two, double *y, double *y1, ptrdiff_t n,
                                                       const double *m, ptrdiff_t stride, const double *c,
                                                       const double *c1, ptrdiff_t cstep, ptrdiff_t count,
                                                       const int from_zero, const int listed, const ptrdiff_t *at) {
    ptrdiff_t j = 0;
#if CYMG_ROWS_LANES > 1
    if (!two)
        for (; j + 8 * CYMG_ROWS_LANES <= n; j += 8 * CYMG_ROWS_LANES)
            CYMG_ROWS(rows_block)(8, 0, y + j, y1, m + j, stride, c, c1, cstep, count, from_zero, listed, at);
    for (; j + 4 * CYMG_ROWS_LANES <= n; j += 4 * CYMG_ROWS_LANES)
        CYMG_ROWS(rows_block)(4, two, y + j, y1 + j, m + j, stride, c, c1, cstep, count, from_zero, listed, at);
    for (; j + CYMG_ROWS_LANES <= n; j += CYMG_ROWS_LANES)
        CYMG_ROWS(rows_block)(1, two, y + j, y1 + j, m + j, stride, c, c1, cstep, count, from_zero, listed, at);
#endif
    for (; j < n; j++)
        cymg_rows_scalar(two, y + j, y1 + j, m + j, stride, c, c1, cstep, count, from_zero, listed, at);
}

CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(axpy_rows)(double *y, ptrdiff_t n, const double *m,
                                                            ptrdiff_t stride, const double *c, ptrdiff_t cstep,
                                                            ptrdiff_t count, int from_zero) {
    if (from_zero)  /* a constant in each branch: the loads or the zeros are compiled away */
        CYMG_ROWS(rows)(0, y, y, n, m, stride, c, c, cstep, count, 1, 0, NULL);  /* (y1, c1 unused) */
    else
        CYMG_ROWS(rows)(0, y, y, n, m, stride, c, c, cstep, count, 0, 0, NULL);
}

CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(axpy_rows2)(double *y, double *y1, ptrdiff_t n, const double *m,
                                                             ptrdiff_t stride, const double *c, const double *c1,
                                                             ptrdiff_t cstep, ptrdiff_t count) {
    CYMG_ROWS(rows)(1, y, y1, n, m, stride, c, c1, cstep, count, 0, 0, NULL);
}

CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(axpy_rows_listed)(double *y, ptrdiff_t n, const double *m,
                                                                   const ptrdiff_t *at, const double *c,
                                                                   ptrdiff_t count, int from_zero) {
    if (from_zero)
        CYMG_ROWS(rows)(0, y, y, n, m, 0, c, c, 0, count, 1, 1, at);
    else
        CYMG_ROWS(rows)(0, y, y, n, m, 0, c, c, 0, count, 0, 1, at);
}

/* Four heads at a time where the rows hold whole vectors, the others one by one. */
CYMG_ROWS_TARGET CYMG_ROWS_INLINE void CYMG_ROWS(axpy_rows_heads)(ptrdiff_t P, double *y, ptrdiff_t ystep,
                                                                  ptrdiff_t n, const double *m, ptrdiff_t mstep,
                                                                  ptrdiff_t stride, const double *c,
                                                                  ptrdiff_t cstep_p, ptrdiff_t cstep,
                                                                  ptrdiff_t count, int from_zero) {
    ptrdiff_t p = 0;
#if CYMG_ROWS_LANES > 1
    if (n % CYMG_ROWS_LANES == 0)
        for (; p + 4 <= P; p += 4)
            for (ptrdiff_t j = 0; j < n; j += CYMG_ROWS_LANES) {
                if (from_zero)
                    CYMG_ROWS(rows_block4)(y + p * ystep + j, ystep, m + p * mstep + j, mstep, stride,
                                           c + p * cstep_p, cstep_p, cstep, count, 1);
                else
                    CYMG_ROWS(rows_block4)(y + p * ystep + j, ystep, m + p * mstep + j, mstep, stride,
                                           c + p * cstep_p, cstep_p, cstep, count, 0);
            }
#endif
    for (; p < P; p++)
        CYMG_ROWS(axpy_rows)(y + p * ystep, n, m + p * mstep, stride, c + p * cstep_p, cstep, count, from_zero);
}

#undef CYMG_ROWS_V
#undef CYMG_ROWS_OP
#undef CYMG_ROWS
#undef CYMG_ROWS_LANES
#undef CYMG_ROWS_TARGET
