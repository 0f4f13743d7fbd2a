/* axpy_rows's body, for _kernels.pyx (the graph engine's backward, a call through a pointer
   to its SSE2 or AVX2 build).  The fused pass has its own variant of it, inlined into each
   of its two builds (fused_kernels.h: also from 0.0, in blocks of 8, two sums at once).

   For i = 0, 1, ..., count - 1 in turn, y[j] += m[i * stride + j] * c[i * cstep] (j < n):
   count axpys, one per row of m, each element of y a chain of additions in row order;
   negative strides walk the rows backwards.  Where count axpys load and store y at every
   row, this keeps y in registers across all the rows, four vectors at a time (then one
   vector, then one element).  Lanes are elements of y, independent sums: every build
   computes the same bits.  The graph engine's linear groups add a run of a layer's rows
   (the last first) into their input's gradient with it. */
#ifndef CYMICROGPT_AXPY_ROWS_H
#define CYMICROGPT_AXPY_ROWS_H

#include <stddef.h>

/* Elements j .. n-1, one at a time (the tail of the vector body; all of it in plain C). */
static inline void cymg_axpy_rows_from(ptrdiff_t j, double *y, ptrdiff_t n, const double *m, ptrdiff_t stride,
                                       const double *c, ptrdiff_t cstep, ptrdiff_t count) {
    for (; j < n; j++) {
        const double *row = m + j;
        double yj = y[j];
        for (ptrdiff_t i = 0; i < count; i++, row += stride) yj = yj + *row * c[i * cstep];
        y[j] = yj;
    }
}

/* The body, LANES doubles per vector V through P's operations (P##_add_pd ...), over the
   arguments y, n, m, stride, c, cstep, count. */
#define CYMG_AXPY_ROWS_VECTORS(V, P, LANES)                                                 \
    ptrdiff_t j = 0, i;                                                                   \
    const double *row;                                                                    \
    for (; j + 4 * LANES <= n; j += 4 * LANES) {  /* y[j : j + 4 LANES]: four vectors */    \
        V y0 = P##_loadu_pd(y + j), y1 = P##_loadu_pd(y + j + LANES);                     \
        V y2 = P##_loadu_pd(y + j + 2 * LANES), y3 = P##_loadu_pd(y + j + 3 * LANES);     \
        for (i = 0, row = m + j; i < count; i++, row += stride) {                         \
            V ci = P##_set1_pd(c[i * cstep]);                                             \
            y0 = P##_add_pd(y0, P##_mul_pd(P##_loadu_pd(row), ci));                       \
            y1 = P##_add_pd(y1, P##_mul_pd(P##_loadu_pd(row + LANES), ci));               \
            y2 = P##_add_pd(y2, P##_mul_pd(P##_loadu_pd(row + 2 * LANES), ci));           \
            y3 = P##_add_pd(y3, P##_mul_pd(P##_loadu_pd(row + 3 * LANES), ci));           \
        }                                                                                 \
        P##_storeu_pd(y + j, y0); P##_storeu_pd(y + j + LANES, y1);                       \
        P##_storeu_pd(y + j + 2 * LANES, y2); P##_storeu_pd(y + j + 3 * LANES, y3);       \
    }                                                                                     \
    for (; j + LANES <= n; j += LANES) {  /* y[j : j + LANES]: one vector */                \
        V y0 = P##_loadu_pd(y + j);                                                       \
        for (i = 0, row = m + j; i < count; i++, row += stride)                           \
            y0 = P##_add_pd(y0, P##_mul_pd(P##_loadu_pd(row), P##_set1_pd(c[i * cstep]))); \
        P##_storeu_pd(y + j, y0);                                                         \
    }                                                                                     \
    cymg_axpy_rows_from(j, y, n, m, stride, c, cstep, count);

#endif
