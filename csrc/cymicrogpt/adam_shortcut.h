/* The pow shortcut of the Adam kernel (_adam.pyx): its constants, and its AVX2 passes.

   The constants are the ranges and the margin that _adam.pyx's docstring proves
   (arguments 1-4 there); the scalar passes in _adam.pyx and the AVX2 passes here both
   read them.

   The AVX2 passes (compiled only in cymicrogpt._adam_avx2, built with -mavx2 -mfma) are
   the four-lane twins of the scalar functions named beside them: the same IEEE operations
   in the same order on every element (-ffp-contract=off forbids contracting a*b+c into an
   FMA), so both builds decide and compute the same bits.  The one exception is explicit
   and proven: each of the two residuals is one FMA here (cymg4_residual_of_square,
   cymg4_residual_of_root) instead of the scalar pass's eight or nine operations (Dekker's
   product, Veltkamp's split); both are exact where a proof reads them, so they are the
   same doubles.  That matters for speed: the update pass is bound by its multiplications
   as much as by the divider (benchmarks/RESULTS.md, "Adam at 9.2 us").

   Which elements the proof settles is noted without a branch, one byte per group of four
   (its bit k set where lane k is proven); the caller turns the bytes into the indices left
   to libm afterwards (cymg_unproven_indices), eight groups per test.  Each pass covers the
   first n - n % 4 elements; the caller finishes the rest with the scalar pass.  In the
   baseline build CYMG_AVX2 is 0 and the passes are stubs that are never called. */
#ifndef CYMICROGPT_ADAM_SHORTCUT_H
#define CYMICROGPT_ADAM_SHORTCUT_H

#include <stdint.h>
#include <string.h>

#include "avx2_bits.h"  /* the four-lane helpers, shared with exp_shortcut.h */
#include "pow_shortcut.h"  /* CYMG_MARGIN, CYMG_SPLITTER, CYMG_EXPONENT_BITS: shared with the fused pass */

/* |x| range where x*x is proven (2): its square lies in [2^-64, 2^64], where the margin holds.
   The passes test the square p = fl(x*x) against the squares of the ends (exact: 2^-64 and 2^64),
   which selects the same elements once powers of two are left out (2). */
#define CYMG_SQUARE_MIN 0x1p-32
#define CYMG_SQUARE_MAX 0x1p32
#define CYMG_SQUARE_RESULT_MIN (CYMG_SQUARE_MIN * CYMG_SQUARE_MIN)
#define CYMG_SQUARE_RESULT_MAX (CYMG_SQUARE_MAX * CYMG_SQUARE_MAX)
/* v range where sqrt(v) is proven (3): its root lies in [2^-64, 2^64]. */
#define CYMG_ROOT_MIN 0x1p-128
#define CYMG_ROOT_MAX 0x1p128
/* The lowest v whose root argument 5 settles (its root lies in [2^-484, 2^-64) below CYMG_ROOT_MIN:
   pow is still within E(484) < 0.53 ULP there, and the residual exact) */
#define CYMG_ROOT_SETTLE_MIN 0x1p-968
/* No finite |g| at most this has a square that overflows (2^1022 < DBL_MAX). */
#define CYMG_OVERFLOW_FREE_MAX 0x1p511
/* The margin t, in ULPs, for results in [2^-64, 2^64) (1): a square's residual may be
   t * 2^e * 2^-52 for a result in [2^e, 2^(e+1)), a root's residual twice that times s
   (3).  Both products by a power of two are exact. */
#define CYMG_SQUARE_ALLOWANCE (CYMG_MARGIN * 0x1p-52)
#define CYMG_ROOT_ALLOWANCE (CYMG_MARGIN * 0x1p-51)

/* The AVX2 passes need FMA as well (setup.py builds _adam_avx2 with -mavx2 -mfma); a build
   with AVX2 alone (say CFLAGS=-mavx2) keeps the scalar passes. */
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CYMG_AVX2 1

/* All ones in the lanes where low <= x <= high (0 < low < high; x any double: negative
   ones, nan and inf fall outside): one unsigned comparison of bit patterns,
   bits(x) - bits(low) < bits(high) - bits(low) + 1, done as a signed one with both sides
   shifted by 2^63 (AVX2 compares signed only).  For doubles >= 0 bit patterns order as
   their values; negative ones and nan lie above bits(high) unsigned. */
static inline __m256d cymg4_inside(__m256d x, double low, double high) {
    const uint64_t sign = UINT64_C(1) << 63;
    __m256i shifted = _mm256_add_epi64(_mm256_castpd_si256(x), _mm256_set1_epi64x((long long)(sign - cymg_bits(low))));
    return _mm256_castsi256_pd(
        _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(cymg_bits(high) - cymg_bits(low) + 1 + sign)), shifted));
}

/* Append to pending[count...] the indices 4 j + k of the bits k (k < 4) clear in masks[j],
   j < groups, in order; returns the new count.  Reads eight bytes at a time: eight groups
   that are all proven cost one test, and each unproven lane one trip through the inner
   loop (bit b of the eight inverted bytes is lane b % 8 of group j + b / 8). */
static Py_ssize_t cymg_unproven_indices(const uint8_t* masks, Py_ssize_t groups, int32_t* pending, Py_ssize_t count) {
    Py_ssize_t j;
    uint64_t eight;
    int bit;
    for (j = 0; j < groups; j += 8) {
        if (groups - j >= 8) {
            memcpy(&eight, masks + j, 8);  /* one load */
            eight = ~eight & UINT64_C(0x0F0F0F0F0F0F0F0F);  /* the unproven lanes */
        } else {
            eight = ~UINT64_C(0);  /* bytes beyond the groups: all proven */
            memcpy(&eight, masks + j, (size_t)(groups - j));
            eight = ~eight & UINT64_C(0x0F0F0F0F0F0F0F0F);
        }
        while (eight != 0) {
            bit = __builtin_ctzll(eight);
            pending[count++] = (int32_t)(4 * (j + (bit >> 3)) + (bit & 7));
            eight &= eight - 1;
        }
    }
    return count;
}

/* residual_of_square, x*x - p, as one FMA: it rounds the exact x*x - p once, and where
   a proof reads the residual (argument 2's range) that value is representable, so the FMA
   returns it exactly: the double the scalar pass's Dekker product gives.  (Outside that
   range the two may differ, but cymg4_inside fails there first.) */
static inline __m256d cymg4_residual_of_square(__m256d x, __m256d p) {
    return _mm256_fmsub_pd(x, x, p);
}

/* residual_of_root, v - s*s, as one FMA: exact where argument 3 reads it (representable
   there), the double the scalar pass's split gives */
static inline __m256d cymg4_residual_of_root(__m256d v, __m256d s) {
    return _mm256_fnmadd_pd(s, s, v);
}

/* square_is_proven, for a gradient g and p = g*g (the same as |g|*|g|; so is the residual, g*g - p,
   and the range is read on p: no absolute value taken): all ones in the lanes where p is proven */
static inline __m256d cymg4_square_is_proven(__m256d g, __m256d p) {
    __m256d binade = cymg4_power_of_two_below(p);
    __m256d close = _mm256_cmp_pd(cymg4_abs(cymg4_residual_of_square(g, p)),
                                  _mm256_mul_pd(binade, _mm256_set1_pd(CYMG_SQUARE_ALLOWANCE)), _CMP_LE_OQ);
    __m256d proven = _mm256_and_pd(cymg4_inside(p, CYMG_SQUARE_RESULT_MIN, CYMG_SQUARE_RESULT_MAX),
                                   _mm256_and_pd(_mm256_cmp_pd(p, binade, _CMP_NEQ_UQ), close));
    return _mm256_or_pd(_mm256_cmp_pd(g, _mm256_setzero_pd(), _CMP_EQ_OQ), proven);
}

/* root_is_proven, for s = sqrt(v) */
static inline __m256d cymg4_root_is_proven(__m256d v, __m256d s) {
    __m256d binade = cymg4_power_of_two_below(s);
    __m256d rho = cymg4_residual_of_root(v, s);
    __m256d allowed = _mm256_mul_pd(_mm256_mul_pd(binade, _mm256_set1_pd(CYMG_ROOT_ALLOWANCE)), s);
    __m256d close = _mm256_cmp_pd(cymg4_abs(rho), allowed, _CMP_LE_OQ);
    __m256d proven = _mm256_and_pd(cymg4_inside(v, CYMG_ROOT_MIN, CYMG_ROOT_MAX),
                                   _mm256_and_pd(_mm256_cmp_pd(s, binade, _CMP_NEQ_UQ), close));
    return _mm256_or_pd(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_EQ_OQ), proven);
}

/* nothing_can_raise's quick tests, for i < n - n % 4 (n a multiple of 8 there or not);
   0 leaves the answer to the exact test (its ten operations per element).  Both first read
   the OR of the elements' bit patterns: one operation per four elements, two accumulators
   to hide its latency. */
static inline __m256d cymg4_or_of_bits(const double* x, Py_ssize_t n) {
    __m256d bits0 = _mm256_setzero_pd(), bits1 = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        bits0 = _mm256_or_pd(bits0, _mm256_loadu_pd(x + i));
        bits1 = _mm256_or_pd(bits1, _mm256_loadu_pd(x + i + 4));
    }
    if (i + 4 <= n)
        bits0 = _mm256_or_pd(bits0, _mm256_loadu_pd(x + i));
    return _mm256_or_pd(bits0, bits1);
}

/* The gradients': 1 when every |grads[i]| is at most CYMG_OVERFLOW_FREE_MAX (nan and inf fail:
   the step may be asked to refuse them, and the exact test tells).  First, whether every
   |grads[i]| is below 2: the top bit of the exponent field (bit 62) clear in all of them, so
   in their OR (nan and inf have it set); gradients rarely reach 2 (8 steps of a 20,000-step
   default run).  Else three operations per four elements: an absolute value, a comparison
   that is true for nan, a running OR. */
static int cymg_avx2_gradients_square_finitely(const double* grads, Py_ssize_t n) {
    const __m256d limit = _mm256_set1_pd(CYMG_OVERFLOW_FREE_MAX);
    __m256d beyond0 = _mm256_setzero_pd(), beyond1 = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    if (_mm256_testz_si256(_mm256_castpd_si256(cymg4_or_of_bits(grads, n)),
                           _mm256_set1_epi64x((long long)(UINT64_C(1) << 62))))
        return 1;
    for (; i + 8 <= n; i += 8) {  /* not (|g| <= limit), unordered: all ones for nan too */
        beyond0 = _mm256_or_pd(_mm256_cmp_pd(cymg4_abs(_mm256_loadu_pd(grads + i)), limit, _CMP_NLE_UQ), beyond0);
        beyond1 = _mm256_or_pd(_mm256_cmp_pd(cymg4_abs(_mm256_loadu_pd(grads + i + 4)), limit, _CMP_NLE_UQ), beyond1);
    }
    if (i + 4 <= n)
        beyond0 = _mm256_or_pd(_mm256_cmp_pd(cymg4_abs(_mm256_loadu_pd(grads + i)), limit, _CMP_NLE_UQ), beyond0);
    return _mm256_movemask_pd(_mm256_or_pd(beyond0, beyond1)) == 0;
}

/* The second moments': 1 when no v[i] has its sign bit set (-0.0 counted). */
static int cymg_avx2_no_sign_bit(const double* v, Py_ssize_t n) {
    return _mm256_movemask_pd(cymg4_or_of_bits(v, n)) == 0;
}

/* prove_squares: out[i] = |x[i]|^2 for i < n - n % 4 (n <= BLOCK); masks[i / 4] notes
   the proven lanes. */
static void cymg_avx2_prove_squares(const double* x, double* out, uint8_t* masks, Py_ssize_t n) {
    Py_ssize_t i;
    for (i = 0; i + 4 <= n; i += 4) {
        __m256d g = _mm256_loadu_pd(x + i);
        __m256d p = _mm256_mul_pd(g, g);
        _mm256_storeu_pd(out + i, p);
        masks[i / 4] = cymg4_proven_bits(cymg4_square_is_proven(g, p));
    }
}

/* prove_roots: out[i] = |sqrt(x[i])| for i < n - n % 4 (fabs: Python's (-0.0) ** 0.5 is
   0.0); masks[i / 4] notes the proven lanes. */
static void cymg_avx2_prove_roots(const double* x, double* out, uint8_t* masks, Py_ssize_t n) {
    Py_ssize_t i;
    for (i = 0; i + 4 <= n; i += 4) {
        __m256d v = _mm256_loadu_pd(x + i);
        __m256d s = _mm256_sqrt_pd(v);
        _mm256_storeu_pd(out + i, cymg4_abs(s));
        masks[i / 4] = cymg4_proven_bits(cymg4_root_is_proven(v, s));
    }
}

/* a / c for a per-step constant c without the divider: the AVX2 pass's bias corrections,
   which took two of its four divider operations per group in a run's first 231 steps, and one
   up to the 3,726th (on the Intel Xeon measured, whose divider takes 2.3 ns a vdivpd, the pass
   ran 10.3 -> 7.8 ns a group at step 100).  _adam.pyx's argument 6 proves it the division's
   bits: one division per call makes hi = RN(1/c) and lo ~ 1/c - hi; per element,
   q0 = RN(a*hi + RN(a*lo)) is within one ulp of a/c, the remainder a - q0*c is exact (one FMA),
   and Markstein's correction q0 + rem*hi, rounded once (one FMA), is RN(a/c).  Lanes outside
   the argument's range (0 < |a| < 2^-890, |a| > 2^1000, nan) make the group divide; a c
   outside [2^-20, 1) puts every lane outside (low = inf, high = -1).  -0.0 keeps its sign by
   an OR of a's sign bit (the correction gives +0.0 there; elsewhere the sign is a's already). */
#define CYMG_RECIPROCAL_C_MIN 0x1p-20
#define CYMG_RECIPROCAL_A_MIN 0x1p-890
#define CYMG_RECIPROCAL_A_MAX 0x1p1000
struct cymg_reciprocal {
    double c, hi, lo, low, high;
};

static inline struct cymg_reciprocal cymg_reciprocal_of(double c) {
    struct cymg_reciprocal r;
    r.c = c;
    if (c >= CYMG_RECIPROCAL_C_MIN && c < 1.0) {
        r.hi = 1.0 / c;
        r.lo = __builtin_fma(-c, r.hi, 1.0) * r.hi;  /* (1 - c*hi)/c, to about 2^-105 relative */
        r.low = CYMG_RECIPROCAL_A_MIN;
        r.high = CYMG_RECIPROCAL_A_MAX;
    } else {
        r.hi = r.lo = 0.0;
        r.low = INFINITY;
        r.high = -1.0;
    }
    return r;
}

/* q = RN(a/c) in the lanes inside the range, by Markstein's correction; *outside gains all
   ones in the lanes outside it (their q is not RN(a/c)). */
static inline __m256d cymg4_divide_by_reciprocal(__m256d a, const struct cymg_reciprocal* r, __m256d* outside) {
    __m256d q0 = _mm256_fmadd_pd(a, _mm256_set1_pd(r->hi), _mm256_mul_pd(a, _mm256_set1_pd(r->lo)));
    __m256d rem = _mm256_fnmadd_pd(q0, _mm256_set1_pd(r->c), a);  /* a - q0*c, exact */
    __m256d q = _mm256_fmadd_pd(rem, _mm256_set1_pd(r->hi), q0);
    __m256d size = cymg4_abs(a);
    *outside = _mm256_or_pd(*outside, _mm256_or_pd(
        _mm256_cmp_pd(size, _mm256_set1_pd(r->high), _CMP_NLE_UQ),
        _mm256_and_pd(_mm256_cmp_pd(size, _mm256_set1_pd(r->low), _CMP_LT_OQ),
                      _mm256_cmp_pd(a, _mm256_setzero_pd(), _CMP_NEQ_OQ))));
    return _mm256_or_pd(q, _mm256_and_pd(a, _mm256_set1_pd(-0.0)));  /* -0.0 / c is -0.0: rem*hi + q0 gave +0.0 */
}

/* The first moments that stick at a few subnormal units (argument 7 of _adam.pyx): where a
   gradient stays 0 for thousands of steps, m decays by beta1 a step into the subnormals and
   stays at 1-3 units of 2^-1074 (0.85 * 3 units rounds back to 3).  On Intel cores a
   multiplication or division with a subnormal operand or result takes a microcode assist
   (measured here: ~70 ns, against 0.5 ns), and each group holding such an m took two or three
   (beta1 * m, lr_t * m_hat, a division): ~1.6-2.2 us of a step late in a 20,000-step run.  The
   pass sends those groups here (one shift and one comparison per group find them): beta1 * m
   computed in integers for the subnormal lanes (cymg4_product_of_subnormal), and the lanes
   whose parameter provably stays put (*kept) cut out of the step. */
#define CYMG_KEPT_PARAM_MIN 0x1p-800  /* |param| at least this: a step below 2^-902 cannot move it */

/* Lanes where m may be subnormal: all ones where 2|m|'s bit pattern (the sign shifted out) is
   below 2^53, i.e. |m| < 2^-1022 (zero included), or where |m| >= 2 (the shift's top bit): a
   superset, which cymg_tiny_moment narrows. */
static inline __m256i cymg4_maybe_subnormal(__m256d m) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(UINT64_C(1) << 53)),
                              _mm256_slli_epi64(_mm256_castpd_si256(m), 1));
}

/* RN(beta1 * m) for |m| = K 2^-1074, K < 2^52 (subnormal or zero), 2^-60 <= beta1 < 1, with no
   subnormal operand: the product is subnormal, so it is RN_int(beta1 K) 2^-1074 with m's sign
   (ties to even; argument 7).  K as a double (bits of 2^52 + K, minus 2^52: exact), p = RN(beta1 K)
   and its error e (an FMA, exact), p rounded to an integer by adding and removing 2^52, and a tie
   of p that e breaks moved by one. */
static inline __m256d cymg4_product_of_subnormal(__m256d m, double beta1) {
    const __m256d two52 = _mm256_set1_pd(0x1p52), one = _mm256_set1_pd(1.0), half = _mm256_set1_pd(0.5);
    __m256d k = _mm256_sub_pd(_mm256_or_pd(cymg4_abs(m), two52), two52);
    __m256d p = _mm256_mul_pd(_mm256_set1_pd(beta1), k);
    __m256d e = _mm256_fmsub_pd(_mm256_set1_pd(beta1), k, p);
    __m256d r = _mm256_sub_pd(_mm256_add_pd(p, two52), two52);
    __m256d d = _mm256_sub_pd(p, r);
    __m256d up = _mm256_and_pd(_mm256_cmp_pd(d, half, _CMP_EQ_OQ), _mm256_cmp_pd(e, _mm256_setzero_pd(), _CMP_GT_OQ));
    __m256d down = _mm256_and_pd(_mm256_cmp_pd(d, _mm256_sub_pd(_mm256_setzero_pd(), half), _CMP_EQ_OQ),
                                 _mm256_cmp_pd(e, _mm256_setzero_pd(), _CMP_LT_OQ));
    r = _mm256_sub_pd(_mm256_add_pd(r, _mm256_and_pd(up, one)), _mm256_and_pd(down, one));
    __m256i units = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(r, two52)),
                                     _mm256_set1_epi64x((long long)cymg_bits(0x1p52)));
    return _mm256_or_pd(_mm256_castsi256_pd(units), _mm256_and_pd(m, _mm256_set1_pd(-0.0)));
}

/* The new m = beta1 * m + (1 - beta1) * g of a group with lanes cymg4_maybe_subnormal found,
   the same bits as the pass's own expression; *kept: all ones in the lanes whose new m is
   subnormal or zero, whose parameter has |param| >= CYMG_KEPT_PARAM_MIN and whose new v is
   not nan (argument 7: with the call's scalars checked, such a parameter stays as it is
   whatever the root). */
static inline __attribute__((always_inline)) __m256d cymg_tiny_moment(__m256d m, __m256d g, __m256d v_new, const double* params,
                                                           double beta1, double one_minus_beta1, __m256d* kept) {
    const __m256d smallest_normal = _mm256_set1_pd(0x1p-1022);
    __m256d subnormal = _mm256_cmp_pd(cymg4_abs(m), smallest_normal, _CMP_LT_OQ);  /* no assist: a comparison */
    __m256d product = _mm256_blendv_pd(_mm256_mul_pd(_mm256_set1_pd(beta1), _mm256_andnot_pd(subnormal, m)),
                                       cymg4_product_of_subnormal(_mm256_and_pd(subnormal, m), beta1), subnormal);
    __m256d m_new = _mm256_add_pd(product, _mm256_mul_pd(_mm256_set1_pd(one_minus_beta1), g));
    *kept = _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(cymg4_abs(m_new), smallest_normal, _CMP_LT_OQ),
                                        _mm256_cmp_pd(v_new, v_new, _CMP_ORD_Q)),
                          _mm256_cmp_pd(cymg4_abs(_mm256_loadu_pd(params)), _mm256_set1_pd(CYMG_KEPT_PARAM_MIN),
                                        _CMP_GE_OQ));
    return m_new;
}

/* May the pass take cymg_tiny_moment's route (argument 7's conditions on the call's scalars)? */
static inline int cymg_tiny_moments_allowed(double beta1, double bias_correction1, double lr_t, double eps) {
    return beta1 >= 0x1p-60 && beta1 < 1.0 && bias_correction1 >= 0x1p-10 && bias_correction1 <= 1.0
           && lr_t >= 0.0 && lr_t <= 0x1p10 && eps >= 0x1p-100 && eps <= 0x1p1000;
}

/* out[i] = a[i] / c as the update pass computes it, for i < n - n % 4 (the tests' window on
   cymg4_divide_by_reciprocal: _adam.divide_array) */
static void cymg_avx2_divide(const double* a, double c, double* out, Py_ssize_t n) {
    const struct cymg_reciprocal reciprocal = cymg_reciprocal_of(c);
    Py_ssize_t i;
    for (i = 0; i + 4 <= n; i += 4) {
        __m256d outside = _mm256_setzero_pd(), x = _mm256_loadu_pd(a + i);
        __m256d q = cymg4_divide_by_reciprocal(x, &reciprocal, &outside);
        _mm256_storeu_pd(out + i, _mm256_testz_pd(outside, outside) ? q : _mm256_div_pd(x, _mm256_set1_pd(c)));
    }
}

/* The Adam update of one block, for i < n - n % 4, software-pipelined in three stages so
   that the divider (three divisions and a square root per element, the step's floor) never
   waits for the proofs: an iteration runs the moments and the divisions of group i + 8,
   the root and the step of group i + 4, and the root's proof and the parameter update of
   group i.  m, v and grads (zeroed) are written for every element; a parameter only where
   its root v_hat ** 0.5 is proven: the others keep their old value, noted in root_masks
   (as prove_roots does) for the caller to update with libm's root.  Meanwhile, for
   j < next_n - next_n % 4 (<= n - n % 4), it squares the next block's gradients as
   prove_squares does (next_squares, square_masks): work for the other execution units
   while the divider is busy.  squares[i] must be final. */
static inline __attribute__((always_inline)) void cymg_avx2_update_pass(
        double* params, double* grads, double* m, double* v, const double* squares, Py_ssize_t n,
        const double* next_grads, double* next_squares, Py_ssize_t next_n, uint8_t* square_masks, double beta1,
        double beta2, double one_minus_beta1, double one_minus_beta2, double bias_correction1,
        double bias_correction2, double lr_t, double eps, uint8_t* root_masks, const int divide_m,
        const int divide_v) {
    const Py_ssize_t n4 = n - n % 4, next_n4 = next_n - next_n % 4;
    Py_ssize_t i;
    __m256d m_hat_a = _mm256_setzero_pd(), v_hat_a = _mm256_setzero_pd();  /* stage a's output */
    __m256d v_hat_b = _mm256_setzero_pd(), s_b = _mm256_setzero_pd(), step_b = _mm256_setzero_pd();  /* stage b's */
    const struct cymg_reciprocal reciprocal1 = cymg_reciprocal_of(divide_m ? bias_correction1 : 1.0);
    const struct cymg_reciprocal reciprocal2 = cymg_reciprocal_of(divide_v ? bias_correction2 : 1.0);
    /* only where no bias correction divides (from the 3,726th step of a run): m reaches the
       subnormals after some 4,000 steps of zero gradient, and where the pass is dividing its
       test costs more than it saves (the step at 100 ran 8.2 -> 8.9 us with it) */
    const int tiny_moments = !divide_m && !divide_v && cymg_tiny_moments_allowed(beta1, bias_correction1, lr_t, eps);
/* stage a: the moments (stored) and m_hat, v_hat of group j */
#define CYMG_STAGE_A(j) do { \
        __m256d m_old = _mm256_loadu_pd(m + (j)), g_j = _mm256_loadu_pd(grads + (j)), m_new, m_in, v_in; \
        __m256d v_new = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(beta2), _mm256_loadu_pd(v + (j))), \
                                      _mm256_mul_pd(_mm256_set1_pd(one_minus_beta2), _mm256_loadu_pd(squares + (j)))); \
        __m256i maybe_subnormal = cymg4_maybe_subnormal(m_old); \
        if (__builtin_expect(tiny_moments && !_mm256_testz_si256(maybe_subnormal, maybe_subnormal), 0)) { \
            __m256d kept; /* argument 7: these lanes' parameters stay; a zero m_hat and v_hat leave them so */ \
            m_new = cymg_tiny_moment(m_old, g_j, v_new, params + (j), beta1, one_minus_beta1, &kept); \
            m_in = _mm256_andnot_pd(kept, m_new); \
            v_in = _mm256_andnot_pd(kept, v_new); \
        } else { \
            m_new = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(beta1), m_old), \
                                  _mm256_mul_pd(_mm256_set1_pd(one_minus_beta1), g_j)); \
            m_in = m_new; \
            v_in = v_new; \
        } \
        _mm256_storeu_pd(m + (j), m_new); \
        _mm256_storeu_pd(v + (j), v_new); \
        _mm256_storeu_pd(grads + (j), _mm256_setzero_pd()); \
        __m256d outside = _mm256_setzero_pd(); \
        m_hat_a = divide_m ? cymg4_divide_by_reciprocal(m_in, &reciprocal1, &outside) : m_in; \
        v_hat_a = divide_v ? cymg4_divide_by_reciprocal(v_in, &reciprocal2, &outside) : v_in; \
        if (!_mm256_testz_pd(outside, outside)) { \
            m_hat_a = divide_m ? _mm256_div_pd(m_in, _mm256_set1_pd(bias_correction1)) : m_in; \
            v_hat_a = divide_v ? _mm256_div_pd(v_in, _mm256_set1_pd(bias_correction2)) : v_in; \
        } \
    } while (0)
/* stage b: the root s = sqrt(v_hat) and the step lr_t * m_hat / (s + eps) of stage a's group
   (no fabs here: v_hat >= +0 when nothing can raise, and where it is nan the root is not
   proven, so this step is not stored) */
#define CYMG_STAGE_B() do { \
        v_hat_b = v_hat_a; \
        s_b = _mm256_sqrt_pd(v_hat_a); \
        step_b = _mm256_div_pd(_mm256_mul_pd(_mm256_set1_pd(lr_t), m_hat_a), _mm256_add_pd(s_b, _mm256_set1_pd(eps))); \
    } while (0)
    if (n4 > 0) {
        CYMG_STAGE_A(0);
        CYMG_STAGE_B();
    }
    if (n4 > 4)
        CYMG_STAGE_A(4);
    for (i = 0; i < n4; i += 4) {
        __m256d v_hat = v_hat_b, s = s_b, step = step_b;  /* group i's, from stage b */
        if (i + 4 < n4)
            CYMG_STAGE_B();
        if (i + 8 < n4)
            CYMG_STAGE_A(i + 8);
        if (i < next_n4) {
            __m256d g = _mm256_loadu_pd(next_grads + i);
            __m256d p = _mm256_mul_pd(g, g);
            _mm256_storeu_pd(next_squares + i, p);
            square_masks[i / 4] = cymg4_proven_bits(cymg4_square_is_proven(g, p));
        }
        __m256d proven = cymg4_root_is_proven(v_hat, s);
        __m256d param = _mm256_loadu_pd(params + i);
        _mm256_storeu_pd(params + i, _mm256_blendv_pd(param, _mm256_sub_pd(param, step), proven));
        root_masks[i / 4] = cymg4_proven_bits(proven);
    }
#undef CYMG_STAGE_A
#undef CYMG_STAGE_B
}

/* The pass, compiled four times: a bias correction that is 1.0 (bias_correction1 from the
   231st step on, bias_correction2 from the 3,726th) is not divided by, as x / 1.0 is x, bit
   for bit, for every x but a signaling nan, which no arithmetic result (the new m and v)
   is.  That takes one of the divider's four operations per group away. */
static void cymg_avx2_update(double* params, double* grads, double* m, double* v, const double* squares,
                             Py_ssize_t n, const double* next_grads, double* next_squares, Py_ssize_t next_n,
                             uint8_t* square_masks, double beta1, double beta2, double one_minus_beta1,
                             double one_minus_beta2, double bias_correction1, double bias_correction2, double lr_t,
                             double eps, uint8_t* root_masks) {
#define CYMG_PASS(divide_m, divide_v) \
    cymg_avx2_update_pass(params, grads, m, v, squares, n, next_grads, next_squares, next_n, square_masks, beta1, \
                          beta2, one_minus_beta1, one_minus_beta2, bias_correction1, bias_correction2, lr_t, eps, \
                          root_masks, divide_m, divide_v)
    if (bias_correction1 != 1.0 && bias_correction2 != 1.0)
        CYMG_PASS(1, 1);
    else if (bias_correction2 != 1.0)
        CYMG_PASS(0, 1);
    else if (bias_correction1 != 1.0)
        CYMG_PASS(1, 0);
    else
        CYMG_PASS(0, 0);
#undef CYMG_PASS
}

/* Argument 5 of _adam.pyx's docstring, for the elements the proofs leave, four at a time
   (AVX2 only: the baseline build's step never asks it): the elements are gathered by
   index, and those whose stored outcome does not depend on pow's last bit are settled
   here, with microgpt's expressions in its order; the others' indices are written back
   to pending[0...], in order, and their count returned, for the caller to settle with
   libm. */
/* index[k] = pending[j + k], the last index repeated past count (its lanes are not stored) */
static inline void cymg4_indices(const int32_t* pending, Py_ssize_t j, Py_ssize_t count, int32_t* index) {
    int k;
    for (k = 0; k < 4; k++)
        index[k] = pending[j + k < count ? j + k : count - 1];
}

/* The double next to each positive finite lane, above where `above` is all ones, else below */
static inline __m256d cymg4_neighbour(__m256d x, __m256d above) {
    __m256i step = _mm256_blendv_epi8(_mm256_set1_epi64x(-1), _mm256_set1_epi64x(1), _mm256_castpd_si256(above));
    return _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(x), step));
}

/* All ones in the lanes where a and b have the same bit pattern */
static inline __m256d cymg4_same_bits(__m256d a, __m256d b) {
    return _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_castpd_si256(a), _mm256_castpd_si256(b)));
}

/* x[index[k]] in lane k (four scalar loads: AMD's vgatherdpd is slower) */
static inline __m256d cymg4_gather(const double* x, const int32_t* index) {
    return _mm256_set_pd(x[index[3]], x[index[2]], x[index[1]], x[index[0]]);
}

/* One group's decision: the value to store for index[0..3] (*value) and the bits of the
   lanes it settles. */
typedef int (*cymg4_decision)(const int32_t* index, const void* data, __m256d* value);

#define CYMG_SETTLE_CHUNK 64

/* The driver of both: out[i] = the decided value for the settled i in pending[:count], the
   others' indices kept.  Per chunk, every group's decision first (independent of each
   other, so the divider and the rest overlap across groups), then the stores, without a
   branch (which lanes settle is unpredictable): an unsettled lane writes its element's
   own value back, and its index is kept by advancing `kept`. */
static inline Py_ssize_t cymg_settle(int32_t* pending, Py_ssize_t count, double* out, cymg4_decision decide,
                                     const void* data) {
    double values[CYMG_SETTLE_CHUNK];
    uint8_t settled[CYMG_SETTLE_CHUNK / 4];
    int32_t index[4];
    Py_ssize_t start, j, k, size, kept = 0;
    int32_t i;
    int bit;
    for (start = 0; start < count; start += CYMG_SETTLE_CHUNK) {
        size = count - start < CYMG_SETTLE_CHUNK ? count - start : CYMG_SETTLE_CHUNK;
        for (j = 0; j < size; j += 4) {
            __m256d value;
            cymg4_indices(pending + start, j, size, index);
            settled[j / 4] = (uint8_t)decide(index, data, &value);
            _mm256_storeu_pd(values + j, value);
        }
        for (k = 0; k < size; k++) {  /* pending[kept] is never ahead of pending[start + k] */
            i = pending[start + k];
            bit = settled[k / 4] >> (k % 4) & 1;
            out[i] = bit ? values[k] : out[i];
            pending[kept] = i;
            kept += 1 - bit;
        }
    }
    return kept;
}

struct cymg_root_data {
    const double *params, *m, *v;
    double bias_correction1, bias_correction2, lr_t, eps;
};

/* The new param - lr_t * m_hat / (v_hat ** 0.5 + eps), where it is the same for both roots
   pow may give.  Its range reaches below the proof's, to CYMG_ROOT_SETTLE_MIN: there the
   moments of a parameter whose gradient has stayed 0 decay (v by beta2 a step, below 2^-128
   after about 7,500 steps), and the step's outcome rarely depends on the root's last bit.
   A bias correction of 1.0 is not divided by (as in the update pass). */
static inline int cymg4_root_decision(const int32_t* index, const void* data, __m256d* value) {
    const struct cymg_root_data* d = (const struct cymg_root_data*)data;
    __m256d v = cymg4_gather(d->v, index), m = cymg4_gather(d->m, index);
    __m256d v_hat = d->bias_correction2 != 1.0 ? _mm256_div_pd(v, _mm256_set1_pd(d->bias_correction2)) : v;
    __m256d m_hat = d->bias_correction1 != 1.0 ? _mm256_div_pd(m, _mm256_set1_pd(d->bias_correction1)) : m;
    __m256d param = cymg4_gather(d->params, index);
    __m256d root = _mm256_sqrt_pd(v_hat);
    __m256d usable = _mm256_and_pd(cymg4_inside(v_hat, CYMG_ROOT_SETTLE_MIN, CYMG_ROOT_MAX),
                                   _mm256_cmp_pd(root, cymg4_power_of_two_below(root), _CMP_NEQ_UQ));
    __m256d other = cymg4_neighbour(root, _mm256_cmp_pd(cymg4_residual_of_root(v_hat, root), _mm256_setzero_pd(),
                                                        _CMP_GT_OQ));
    __m256d numerator = _mm256_mul_pd(_mm256_set1_pd(d->lr_t), m_hat);
    __m256d first = _mm256_sub_pd(param, _mm256_div_pd(numerator, _mm256_add_pd(root, _mm256_set1_pd(d->eps))));
    __m256d second = _mm256_sub_pd(param, _mm256_div_pd(numerator, _mm256_add_pd(other, _mm256_set1_pd(d->eps))));
    *value = first;
    return _mm256_movemask_pd(_mm256_and_pd(usable, cymg4_same_bits(first, second)));
}

/* params[i] for i in pending[:count], their m and v already new */
static Py_ssize_t cymg_avx2_settle_roots(double* params, const double* m, const double* v, int32_t* pending,
                                         Py_ssize_t count, double bias_correction1, double bias_correction2,
                                         double lr_t, double eps) {
    struct cymg_root_data data = {params, m, v, bias_correction1, bias_correction2, lr_t, eps};
    return cymg_settle(pending, count, params, cymg4_root_decision, &data);
}

struct cymg_square_data {
    const double *grads, *v;
    double beta2, one_minus_beta2;
};

/* |g| * |g|, where the new v = beta2 * v + (1 - beta2) * g ** 2 is the same for both
   squares pow may give */
static inline int cymg4_square_decision(const int32_t* index, const void* data, __m256d* value) {
    const struct cymg_square_data* d = (const struct cymg_square_data*)data;
    __m256d a = cymg4_abs(cymg4_gather(d->grads, index));
    __m256d kept_v = _mm256_mul_pd(_mm256_set1_pd(d->beta2), cymg4_gather(d->v, index));
    __m256d p = _mm256_mul_pd(a, a);
    __m256d usable = _mm256_and_pd(cymg4_inside(a, CYMG_SQUARE_MIN, CYMG_SQUARE_MAX),
                                   _mm256_cmp_pd(p, cymg4_power_of_two_below(p), _CMP_NEQ_UQ));
    __m256d other = cymg4_neighbour(p, _mm256_cmp_pd(cymg4_residual_of_square(a, p), _mm256_setzero_pd(), _CMP_GT_OQ));
    __m256d first = _mm256_add_pd(kept_v, _mm256_mul_pd(_mm256_set1_pd(d->one_minus_beta2), p));
    __m256d second = _mm256_add_pd(kept_v, _mm256_mul_pd(_mm256_set1_pd(d->one_minus_beta2), other));
    *value = p;
    return _mm256_movemask_pd(_mm256_and_pd(usable, cymg4_same_bits(first, second)));
}

/* squares[i] = grads[i] ** 2 for i in pending[:count], v still old */
static Py_ssize_t cymg_avx2_settle_squares(const double* grads, const double* v, double* squares, int32_t* pending,
                                           Py_ssize_t count, double beta2, double one_minus_beta2) {
    struct cymg_square_data data = {grads, v, beta2, one_minus_beta2};
    return cymg_settle(pending, count, squares, cymg4_square_decision, &data);
}

#else  /* the baseline build: no AVX2 passes (never called: CYMG_AVX2 is 0) */
#define CYMG_AVX2 0
#define cymg_unproven_indices(masks, groups, pending, count) (count)
#define cymg_avx2_gradients_square_finitely(grads, n) 0
#define cymg_avx2_no_sign_bit(v, n) 0
#define cymg_avx2_divide(a, c, out, n) ((void)0)
#define cymg_avx2_prove_squares(x, out, masks, n) ((void)0)
#define cymg_avx2_prove_roots(x, out, masks, n) ((void)0)
#define cymg_avx2_settle_roots(params, m, v, pending, count, bias_correction1, bias_correction2, lr_t, eps) (count)
#define cymg_avx2_settle_squares(grads, v, squares, pending, count, beta2, one_minus_beta2) (count)
#define cymg_avx2_update(params, grads, m, v, squares, n, next_grads, next_squares, next_n, square_masks, beta1, \
                         beta2, one_minus_beta1, one_minus_beta2, bias_correction1, bias_correction2, lr_t, eps, \
                         root_masks) ((void)0)
#endif

#endif
