/* The pow shortcut's shared constants, and the shortcut for x ** -1.0, x ** -2.0,
   x ** -0.5 and x ** -1.5 (x > 0) of the fused pass and the graph engine: the result
   computed without libm pow where it is proven to be the double pow returns, else libm pow.

   The fused training pass (_fused.pyx) calls pow about 110 times a step on the default
   model: softmax's total ** -1 and, in the backward, total ** -2 (five softmaxes a
   position), rmsnorm's (mean + eps) ** -0.5 and its backward's ** -1.5 (three a position).
   The graph engine's ops (_ops.pyx) compute the same powers, as node values and local
   gradients.  Every build uses this header (through pow_shortcut.pxd): the fused pass's
   AVX2 build (setup.py: -mavx2 -mfma) takes each exact product error from one FMA, its
   baseline build (SSE2) from Dekker's two-product; _ops, built once without FMA, has both
   copies (the template below: Dekker's, and one compiled for FMA, for CPUs with FMA);
   both are the same doubles (below), so all decide alike.  The caller
   decides where the shortcut may run (cymicrogpt.engines.adam.POW_SHORTCUT: glibc >= 2.28
   on x86_64 or aarch64, and not CYMICROGPT_PLAIN_POW=1) and passes `shortcut`.

   Why pow's result is known.  _adam.pyx's docstring (arguments A-C and 1) bounds glibc's
   pow (sysdeps/ieee754/dbl-64/e_pow.c, both of its x86_64 builds) for one input by
   E(e) = 0.511 + (|e| + 1) c ULP for a result in [2^e, 2^(e+1)), c = ln2 2^53 lambda
   (1 + 2^-50), lambda the relative error of the argument y log(x) it hands to exp: the bound
   depends on y only through lambda and |y log x| = |log X|, X = x^y the exact result.
   For these four y and every positive normal x, pow takes no special path: its first test
   (x subnormal, zero, inf, nan or negative, or |y| outside [2^-65, 2^63)) fails, as the
   exponent field of |y| (0x3FE-0x400) lies within it; no integer check runs for x > 0; so
   pow is exp_inline(y * log_inline(x)) with sign_bias 0, as for Adam's y = 2 and 0.5.
   A. lambda.  y = -1, -2 and -0.5 are (negated) powers of two: multiplying by them is
      exact, and argument A of _adam.pyx holds word for word (with FMA, ehi = y hi and
      elo = y lo exactly; without, yhi = y, ylo = 0 and ehi, elo exact), so lambda =
      1.5 2^-68 + 2^-78 (1 + 2^-25).  y = -1.5 has two significant bits: without FMA,
      yhi = y, ylo = 0, ehi = y lhi is exact (26 bits times 2) and elo = fl(y llo) rounds
      once more, by at most 2^-53 |y llo| <= 2^-78 (1 + 2^-25) |y hi|; with FMA,
      ehi = fl(y hi), fma(y, hi, -ehi) = y hi - ehi exactly, and the two roundings of
      elo = fl(fl(y lo) + (y hi - ehi)) err by under 2^-100 |y hi| (|lo| <= 2^-51 |hi|).
      So lambda(-1.5) = 1.5 2^-68 + 2^-77 (1 + 2^-25), the larger of the two.
   1. The margin (argument 1 of _adam.pyx, with a slack of 2^-46 ULP where Adam has
      2^-50): let c be a positive normal double, not a power of two, 2^e < c < 2^(e+1),
      u = 2^(e-52), |e| <= 64, and |X - c| <= (t + 2^-46) u.  Then X lies strictly inside
      c's binade, every other double is at least (1 - t - 2^-46) u from X, and pow's result,
      within E(e) u of X, is c, as t + 2^-46 + E(e) < 1 for t = CYMG_MARGIN = 0.4868 and
      |e| <= 64, with either lambda (tests/test_pow_shortcut.py checks it in exact
      rationals; E(64) = 0.51307 for y = -1.5, the sum 0.99987).
   S. Settling (cymg_settle_power): given doubles H, L with |L| <= |H| and
      |H + L - X| <= eta X, eta <= 2^-100, c = fl(H + L) and tail = L - (c - H) give
      H + L = c + tail exactly (Dekker's Fast2Sum: |H| >= |L|).  If c is not a power of two
      and |tail| <= 2^e fl(t 2^-52) (a power of two times a double: exact), then
      |tail| <= (t + 2^-55) u and |X - c| <= (t + 2^-55) u + eta X, where
      X <= c + |X - c| < 2^(e+1) (1 + 2^-50), so eta X < 2^-46.9 u: 1 applies, pow returns c.
      X lies in [2^-63, 2^63] for x in the ranges below, so c's binade has |e| <= 63.
   Each power below gives such an (H, L).  eps = 2^-53; delta_k are roundings, |delta_k| <= eps;
   "exact" products and differences are argued once, in R, and the others are the same
   cases.  In these ranges nothing overflows, Dekker's products need e_a + e_b >= -970 (they
   are at least -130), and a product that underflows errs by 2^-1075 at most: below
   2^-1000 X, folded into eta.  sqrt and / are correctly rounded (IEEE 754).
   R. x ** -1 (2^-63 <= x <= 2^63).  q = fl(1/x) = (1/x)(1 + delta0).  r = 1 - q x is a
      double: with x = M 2^a, q = N 2^b (M, N 53-bit integers), 1 and q x are multiples of
      g = 2^(a+b) <= 1 (q x <= 2 and M N >= 2^104), and |r| = x |1/x - q| <= x 2^(b-1) =
      M g / 2 < 2^52 g.  The FMA
      fl(1 - q x) is r; so is Dekker's (1 - P) - (q x - P), P = fl(q x): 1 - P is exact by
      Sterbenz (P in [1/2, 2]), q x - P exact (Dekker), and the last difference is r
      rounded once (cymg_one_minus_product rounds 1 - a b once, either way).  X = q / (1 - r),
      r = -delta0; H = q, L = fl(q r): H + L - X = q (r delta1 - r^2 / (1 - r)), at most
      2.01 eps^2 q <= 2.02 eps^2 X.
   Q. x ** -2 (2^-31 <= x <= 2^31).  s = fl(x x), sigma = x x - s (exact: one FMA or
      Dekker's product error), |sigma| <= eps s.  p = fl(1/s); r1 = 1 - p s exactly (R, with
      s for x), |r1| <= eps; rho = 1 - p x^2 = r1 - p sigma, |rho| <= 2 eps (1 + eps).  The
      computed rho' = fl(r1 - fl(p sigma)) errs by at most eps^2 (1 + eps) + eps (2.01 eps)
      <= 3.02 eps^2.  X = p / (1 - rho); H = p, L = fl(p rho'):
      |H + L - X| = p |(rho' - rho) + rho' delta - rho^2 / (1 - rho)| <= 9.1 eps^2 p
      <= 9.2 eps^2 X.
   H. x ** -0.5 (2^-126 <= x <= 2^126).  p = fl(1/fl(sqrt x)) = x^-1/2 (1 + delta1)/(1 + delta0),
      so rho = 1 - p^2 x has |rho| <= 4.01 eps.  P = fl(p p), pi = p p - P exact;
      a = fl(1 - P x) (rounded once, as in R; |1 - P x| <= |rho| + |pi| x <= 5.02 eps, so a errs
      by 5.02 eps^2), rho' = fl(a - fl(pi x)) errs from rho by at most
      5.02 eps^2 + 1.01 eps^2 + 4.02 eps^2 <= 10.1 eps^2.  X = p (1 - rho)^-1/2 =
      p (1 + rho/2 + R2), |R2| <= 3/8 rho^2 (1 - |rho|)^-5/2 <= 6.2 eps^2; H = p,
      L = 0.5 fl(p rho') (halving exact): |H + L - X| <= p (5.05 + 2.02 + 6.2) eps^2
      <= 13.5 eps^2 X (X >= 0.99 p).  |L| <= 2.02 eps p.
   T. x ** -1.5 (2^-42 <= x <= 2^42) = x^-1/2 x^-1: (p, L3) from H and (q, L1) from R,
      |p + L3 - x^-1/2| <= 13.5 eps^2 x^-1/2, |q + L1 - 1/x| <= 2.02 eps^2 / x, |L3| <= 2.02 eps p,
      |L1| <= 1.01 eps q.  m = fl(p q), mu = p q - m exact; H = m,
      L = fl(mu + fl(fl(p L1) + fl(L3 q))).  (p + L3)(q + L1) = m + mu + p L1 + L3 q + L3 L1;
      the roundings of p L1, L3 q, their sum and the last sum err by at most
      (1.01 + 2.02 + 3.04 + 4.05) eps^2 p q, L3 L1 (left out) is below 2.04 eps^2 p q, and
      the factors' own errors add 15.6 eps^2: |H + L - X| <= 28 eps^2 X.
   Every eta is below 28 eps^2 < 2^-101, and every |L| below 5 eps |H|.  Outside the ranges, for nan, inf, zero, negative
   and subnormal x, for a power of two c, and where the tail exceeds the margin (about
   2 (0.5 - t) = 2.6% of the inputs in range), libm pow decides.  One more case is exact
   without pow: x == 1.0, where CPython's float ** returns 1.0 before calling pow (and C99's
   pow(1, y) is 1 as well).
   benchmarks/check_pow_shortcut.py --powers fused compares the shortcut with libm pow on
   10^8 random and constructed inputs, for both of glibc's builds of pow. */
#ifndef CYMICROGPT_POW_SHORTCUT_H
#define CYMICROGPT_POW_SHORTCUT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The margin t in ULPs (argument 1 above and in _adam.pyx), for results in [2^-64, 2^64) */
#define CYMG_MARGIN 0.4868
#define CYMG_SPLITTER 134217729.0  /* 2^27 + 1: Veltkamp's split into 26 + 27 bits */
#define CYMG_EXPONENT_BITS 0x7FF0000000000000ULL
/* fl(t 2^-52): times 2^e, the largest tail (S) of a result in [2^e, 2^(e+1)) */
#define CYMG_TAIL_ALLOWANCE (CYMG_MARGIN * 0x1p-52)

/* The x range of each power (R, Q, H, T above): the results lie in [2^-63, 2^63]. */
#define CYMG_MINUS_ONE_MIN 0x1p-63
#define CYMG_MINUS_ONE_MAX 0x1p63
#define CYMG_MINUS_TWO_MIN 0x1p-31
#define CYMG_MINUS_TWO_MAX 0x1p31
#define CYMG_MINUS_HALF_MIN 0x1p-126
#define CYMG_MINUS_HALF_MAX 0x1p126
#define CYMG_MINUS_THREE_HALVES_MIN 0x1p-42
#define CYMG_MINUS_THREE_HALVES_MAX 0x1p42

/* Which power: x ** cymg_exponent(which) */
enum { CYMG_MINUS_ONE, CYMG_MINUS_TWO, CYMG_MINUS_HALF, CYMG_MINUS_THREE_HALVES };

static inline double cymg_exponent(int which) {
    return which == CYMG_MINUS_ONE ? -1.0 : which == CYMG_MINUS_TWO ? -2.0 : which == CYMG_MINUS_HALF ? -0.5 : -1.5;
}

/* 2^e for a positive normal double 2^e <= x < 2^(e+1): x with its fraction bits cleared */
static inline double cymg_power_of_two_below(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits &= CYMG_EXPONENT_BITS;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* S: *out = c = fl(high + low); 1 where c is proven to be pow's result */
static inline int cymg_settle_power(double high, double low, double* out) {
    double c = high + low;
    double tail = low - (c - high);
    double binade = cymg_power_of_two_below(c);
    *out = c;
    return (c != binade) & (fabs(tail) <= binade * CYMG_TAIL_ALLOWANCE);
}

#endif  /* CYMICROGPT_POW_SHORTCUT_H */

/* The shortcut itself, a template (as axpy_rows.h): one copy of the functions below per
   #include.  Before an #include a module may define
     CYMG_POW(name)   this copy's name for `name` (default cymg_##name: the module's own copy,
                      which pow_shortcut.pxd declares);
     CYMG_POW_FMA     1: the exact products from FMA instructions, 0: from Dekker's two-product
                      (default: 1 where the build's flags have FMA, __FMA__, else 0);
     CYMG_POW_TARGET  this copy's function attributes (default none), e.g.
                      __attribute__((target("fma"))) for an FMA copy in a build without -mfma
                      (_ops.pyx: called only where the CPU has FMA);
   the header #undefs the three again.  Either way the products are the same doubles (R).
   The default copy is made once per module, however often the header is included (also by
   adam_shortcut.h and avx2_bits.h, for the constants above). */
#if defined(CYMG_POW) || !defined(CYMICROGPT_POW_SHORTCUT_DEFAULT_COPY)
#ifndef CYMG_POW
#define CYMICROGPT_POW_SHORTCUT_DEFAULT_COPY
#define CYMG_POW(name) cymg_##name
#endif
#ifndef CYMG_POW_FMA
#if defined(__FMA__)
#define CYMG_POW_FMA 1
#else
#define CYMG_POW_FMA 0
#endif
#endif
#ifndef CYMG_POW_TARGET
#define CYMG_POW_TARGET
#endif

/* a b - p exactly, for p = fl(a b) (no overflow; exponents of a and b summing to -970 or
   more): one FMA, or Dekker's two-product with Veltkamp's splits (every operation exact;
   the build forbids contracting them into FMAs) */
CYMG_POW_TARGET static inline double CYMG_POW(product_error)(double a, double b, double p) {
#if CYMG_POW_FMA
    return __builtin_fma(a, b, -p);
#else
    double sa = CYMG_SPLITTER * a, sb = CYMG_SPLITTER * b;
    double a_hi = sa - (sa - a), b_hi = sb - (sb - b);
    double a_lo = a - a_hi, b_lo = b - b_hi;
    return ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo;
#endif
}

/* fl(1 - a b), the exact value rounded once, for a b in [1/2, 2] (R): the same double in
   both builds */
CYMG_POW_TARGET static inline double CYMG_POW(one_minus_product)(double a, double b) {
#if CYMG_POW_FMA
    return __builtin_fma(-a, b, 1.0);
#else
    double p = a * b;
    return (1.0 - p) - CYMG_POW(product_error)(a, b, p);
#endif
}

/* R's (q, L) ~ 1/x */
CYMG_POW_TARGET static inline double CYMG_POW(reciprocal_parts)(double x, double* low) {
    double q = 1.0 / x;
    *low = q * CYMG_POW(one_minus_product)(q, x);
    return q;
}

/* H's (p, L) ~ x^-1/2 */
CYMG_POW_TARGET static inline double CYMG_POW(inverse_root_parts)(double x, double* low) {
    double p = 1.0 / sqrt(x);
    double square = p * p;
    double rho = CYMG_POW(one_minus_product)(square, x) - CYMG_POW(product_error)(p, p, square) * x;
    *low = 0.5 * (p * rho);
    return p;
}

/* Q's (p, L) ~ x^-2 */
CYMG_POW_TARGET static inline double CYMG_POW(inverse_square_parts)(double x, double* low) {
    double s = x * x;
    double p = 1.0 / s;
    *low = p * (CYMG_POW(one_minus_product)(p, s) - p * CYMG_POW(product_error)(x, x, s));
    return p;
}

/* T's (m, L) ~ x^-3/2 */
CYMG_POW_TARGET static inline double CYMG_POW(inverse_root3_parts)(double x, double* low) {
    double root_low, reciprocal_low;
    double p = CYMG_POW(inverse_root_parts)(x, &root_low);
    double q = CYMG_POW(reciprocal_parts)(x, &reciprocal_low);
    double m = p * q;
    *low = CYMG_POW(product_error)(p, q, m) + (p * reciprocal_low + root_low * q);
    return m;
}

/* 1 and *out = x ** cymg_exponent(which) where that is proven to be libm pow's result (for
   x == 1.0: Python's), else 0 (*out then undefined).  (cymg_proven_power in the default copy) */
CYMG_POW_TARGET static inline int CYMG_POW(proven_power)(double x, int which, double* out) {
    double high, low;
    switch (which) {
    case CYMG_MINUS_ONE:
        if (!(x >= CYMG_MINUS_ONE_MIN && x <= CYMG_MINUS_ONE_MAX))  /* nan fails too */
            return 0;
        high = CYMG_POW(reciprocal_parts)(x, &low);
        break;
    case CYMG_MINUS_TWO:
        if (!(x >= CYMG_MINUS_TWO_MIN && x <= CYMG_MINUS_TWO_MAX))
            return 0;
        high = CYMG_POW(inverse_square_parts)(x, &low);
        break;
    case CYMG_MINUS_HALF:
        if (!(x >= CYMG_MINUS_HALF_MIN && x <= CYMG_MINUS_HALF_MAX))
            return 0;
        high = CYMG_POW(inverse_root_parts)(x, &low);
        break;
    default:
        if (!(x >= CYMG_MINUS_THREE_HALVES_MIN && x <= CYMG_MINUS_THREE_HALVES_MAX))
            return 0;
        high = CYMG_POW(inverse_root3_parts)(x, &low);
    }
    return cymg_settle_power(high, low, out) | (x == 1.0);  /* for x == 1.0 every path gives c = 1.0 */
}

/* x ** cymg_exponent(which) as libm pow gives it: proven where `shortcut`, else pow
   (cymg_power in the default copy) */
CYMG_POW_TARGET static inline double CYMG_POW(power)(double x, int which, int shortcut) {
    double out;
    if (shortcut && CYMG_POW(proven_power)(x, which, &out))
        return out;
    return pow(x, cymg_exponent(which));
}


#undef CYMG_POW
#undef CYMG_POW_FMA
#undef CYMG_POW_TARGET
#endif  /* a copy */
