/* axpy_rows for the fused training pass (_fused.pyx), inlined into it.

   setup.py compiles _fused.pyx twice on x86-64, as it does _adam.pyx: cymicrogpt._fused
   (baseline: SSE2, which every x86-64 has) and cymicrogpt._fused_avx2 (-mavx2);
   engines/fused.py picks one at run time, as _kernels picks its own build.  So here the
   kernel chooses its vectors when compiled (__AVX2__: 4 doubles, __SSE2__: 2, otherwise
   plain C) and is static inline: the pass calls it hundreds of times per document on
   short rows (a head of 4, a row of 16), where a call through _kernels' pointer cost as
   much as the work.  The body is axpy_rows.h's, shared with _kernels.  Never an FMA:
   -mavx2 does not enable FMA, and the build has -ffp-contract=off. */
#ifndef CYMICROGPT_FUSED_KERNELS_H
#define CYMICROGPT_FUSED_KERNELS_H

#include "axpy_rows.h"
#if defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

static inline void cymg_fused_axpy_rows(double *y, ptrdiff_t n, const double *m, ptrdiff_t stride,
                                        const double *c, ptrdiff_t cstep, ptrdiff_t count) {
#if defined(__AVX2__)
    CYMG_AXPY_ROWS_VECTORS(__m256d, _mm256, 4)
#elif defined(__SSE2__)
    CYMG_AXPY_ROWS_VECTORS(__m128d, _mm, 2)
#else
    cymg_axpy_rows_from(0, y, n, m, stride, c, cstep, count);
#endif
}

#endif
