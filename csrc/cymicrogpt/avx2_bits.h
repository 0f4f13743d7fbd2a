/* Four-lane helpers shared by the shortcuts that prove a libm result instead of calling
   libm: Adam's pow shortcut (adam_shortcut.h) and the fused pass's exp shortcut
   (exp_shortcut.h).  Defined where the build has AVX2 (the _avx2 modules, setup.py). */
#ifndef CYMICROGPT_AVX2_BITS_H
#define CYMICROGPT_AVX2_BITS_H

#include <stdint.h>
#include <string.h>

#include "pow_shortcut.h"  /* CYMG_EXPONENT_BITS */

#if defined(__AVX2__)
#include <immintrin.h>

/* The byte noting a group's proven lanes: bit k set where lane k of `proven` is all ones. */
static inline uint8_t cymg4_proven_bits(__m256d proven) {
    return (uint8_t)_mm256_movemask_pd(proven);
}

/* The bit pattern of a double (a constant one folds at compile time). */
static inline uint64_t cymg_bits(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline __m256d cymg4_abs(__m256d x) {
    return _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
}

/* 2^e for a positive normal x in [2^e, 2^(e+1)): x with its fraction bits cleared (the
   scalar passes' power_of_two_below) */
static inline __m256d cymg4_power_of_two_below(__m256d x) {
    return _mm256_and_pd(x, _mm256_castsi256_pd(_mm256_set1_epi64x((long long)CYMG_EXPONENT_BITS)));
}
#endif

#endif
