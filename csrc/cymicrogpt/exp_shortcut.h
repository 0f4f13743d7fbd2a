/* The exp shortcut of the fused training pass (_fused.pyx): libm exp's result, proven four
   lanes at a time, for the softmax's exps (every argument logit - max <= 0).

   microgpt's softmax calls Python's math.exp, which is libm exp: ~330 calls a step on the
   default model, each a scalar call of ~47 instructions (~5 ns).  Where libm's exp comes with its
   error analysis (glibc >= 2.29 on x86_64 and aarch64: cymicrogpt.engines.fused decides,
   at run time), the pass computes exp(x) in double-double arithmetic, to within ~4e-6 ULP,
   and proves, lane by lane, which double exp must return; the lanes it cannot prove
   (about 2.2% of them, and every x outside (-512, 0]) call libm exp.  Only the AVX2 build
   (cymicrogpt._fused_avx2, -mavx2 -mfma) has the shortcut: the baseline build's
   cymg_exp_shifted calls libm exp for every element, the same bits by the proof.

   The argument, for one lane x in (-512, 0] (x = +-0, whose exp glibc returns as
   1.0 + x = 1.0, is settled apart: cymg4_exp).  u is 2^-53 below; |RN(v) - v| <= u |v| for every rounding to
   nearest of a normal result v, and an FMA rounds once.  N = 128.

   glibc's exp.  sysdeps/ieee754/dbl-64/e_exp.c (ARM's optimized-routines, glibc 2.29 on;
   x86_64 builds it with FMA and without, and picks one by the CPU) writes x = k ln2/N + r
   and returns scale + scale * tmp.  Its comments bound the error, for |x| < 512 (larger |x|
   take `specialcase`, never proven here), by "0.5 + 1.11/N + (abs poly error * 2^53) ulp",
   "0.25/N ulp larger" without FMA; e_exp_data.c gives the polynomial's 1.555 * 2^-66 and
   "ulp error: 0.509 (0.511 without fma)": 0.5 + 1.36/128 + 1.555 * 2^-13 = 0.51082.  So
   glibc returns R with |R - X| <= E u_X, E = 0.511, X = exp(x) exact, u_X its ULP.  (For
   |x| < 2^-54 it returns 1.0 + x, correctly rounded there; such lanes give y = 1.0 or a
   residual near 1/2 ULP below, never proven.)

   1. Reduction.  INV_LN2_N = RN(N/ln2); k = the integer nearest x * INV_LN2_N: one FMA,
      sh = RN(x * INV_LN2_N + 1.5 * 2^52), rounds it to an integer, ties to even, as the
      doubles in [2^52, 2^53) are the integers; sh - 1.5 * 2^52 is exact; |k| <= 94548, as
      |x N/ln2| < 94548.47 and |x INV_LN2_N - x N/ln2| < 2^-36.  Write k = 128 m + j,
      0 <= j < 128 (the low bits of sh's bit pattern, bits(1.5 * 2^52) + k, whose own low
      7 bits are 0).  ln2/N = LN2_N_HI + LN2_N_LO + c3: LN2_N_HI = round(ln2 2^36) 2^-43 (36
      significant bits), LN2_N_LO = RN(ln2/N - LN2_N_HI), |LN2_N_LO| < 2^-46,
      |c3| < 2^-100 (tests/test_exp_shortcut.py recomputes all three from ln 2).
      a = x - k LN2_N_HI is computed exactly: k LN2_N_HI is a multiple of 2^-43 below
      2^52 of them; where |x| >= 2^-9 both x and it are multiples of 2^-61, and the exact
      difference, |a| < 2^-8.5, is fewer than 2^53 of them; where |x| < 2^-9,
      |x INV_LN2_N| < 0.37, k = 0 and a = x.  b = RN(-k LN2_N_LO), |b| <= beta = 2^-29.61.  The exact
      r = x - k ln2/N = a + b + delta, |delta| <= 94548 (u |LN2_N_LO| + |c3|) < 2^-81.98,
      and |a| <= rho = (ln2/N)(1/2 + 2^-36) + 94548 (|LN2_N_LO| + |c3|) < 0.0027077.
   2. exp(a) - 1 = a + a^2/2 + a^3 Q(a) + R, Q(a) = 1/3! + a/4! + a^2/5! + a^3/6!,
      |R| <= rho^7/7! (1 + rho) < 2^-72.  hh + hl = a^2 exactly (hh = RN(a a), hl by FMA);
      q = RN(a + hh/2) and qe = a + hh/2 - q exactly (Fast2Sum: |a| >= |hh/2|, and hh/2
      is exact); poly = Q(a) by Horner's rule in FMAs on RN(1/n!); p3 = RN(RN(hh a) poly).
      exp(a + b) - 1 = P + (1 + P)(b + b^2/2 + R'), P = exp(a) - 1, |R'| <= beta^3/6 (1 + beta):
      bt = RN(b + (b/2) b) (one FMA), w = RN(q + p3) ~ P, bw = RN(bt + bt w) (one FMA).
      c = RN(RN(RN(qe + hl/2) + p3) + bw).  Then |exp(a + b) - 1 - (q + c)| <= Ec, the sum
      of the polynomial's error (coefficients, Horner's roundings, a^3), R, the b part's
      roundings and truncation, and the three roundings of c: Ec < 2^-71.9.
   3. The table.  T_j = 2^(j/N) = Th_j + Tl_j + tau_j, Th_j = RN(T_j), Tl_j = RN(T_j - Th_j),
      so |Tl_j| <= 2^-53 and |tau_j| <= 2^-106; computed exactly at import
      (cymicrogpt/exp2_table.py: integer roots, both bounds of an interval rounding to the
      same double) and checked by the test in rationals (the 128th powers bracket 2^j).
   4. Assembly: X' = exp(x) / 2^m = T_j exp(r) = T_j exp(a + b) exp(delta).
      tq = RN(Th q), tqe = Th q - tq (FMA, exact); s = RN(Th + tq), e = Th + tq - s
      (Fast2Sum, |Th| >= 1 > |tq|); d = RN(RN(Th c + RN(e + tqe)) + RN(Tl + Tl q)) (FMAs
      where a product meets a sum).  s + d approximates X' = Th + Th q + Th c + Tl (1 + q)
      + [Tl c + tau (exp(a+b)) + T (exp(a+b) - 1 - q - c) + T exp(a+b)(exp(delta) - 1)]
      to within the bracket plus d's four roundings: |X' - (s + d)| <= eps_abs < 2^-70.97
      (every term bounded in tests/test_exp_shortcut.py, in rationals; the largest are R,
      2^-71, and the products' roundings, 2^-78.7).  An operation whose result underflows
      adds at most 2^-1075 (absolute): far below, in a value X' >= 2^(-1/256) e^-rho.
   5. y = RN(s + d), and y - s is exact (Sterbenz: |d| < 2^-25 s), so
      res = RN(d - (y - s)) = (s + d - y)(1 + theta), |theta| <= u, |s + d - y| <= u_y/2:
      |X' - y - res| <= eps_abs + 2^-54 u_y, and u_y >= 2^-53 (y > 1/2): the computed
      value lies within eps = 3.9e-6 ULP of X'.
   6. The margin (as _adam.pyx's argument 1): y not a power of two, |res| <= t u_y
      (t u_y = 2^e RN(t 2^-52) for y in [2^e, 2^(e+1)): a product by a power of two,
      exact) give |X' - y| <= (t + 2^-53 + 2^-54 + eps) u_y < u_y, so X' lies strictly inside
      y's binade, every other double is at least (1 - t - 2^-53 - 2^-54 - eps) u_y from it,
      and t + 2^-53 + 2^-54 + eps + E < 1 for t = 0.4888 (the test checks it in rationals):
      glibc returns y.  Everything scales by 2^m exactly: 2^m (bits (m + 1023) << 52, from
      k's bits) and 2^m y are normal (y >= 2^-1, m >= -739), so exp(x) = 2^m y.
   Every lane not proven (|res| beyond the margin: ~2 (1/2 - t) = 2.2% of arguments; y a
   power of two; x outside (-512, 0], nan, -inf) keeps libm exp's own result.
   benchmarks/check_exp_shortcut.py compares with libm exp on 10^8 random and constructed
   inputs, for both of glibc's builds of exp. */
#ifndef CYMICROGPT_EXP_SHORTCUT_H
#define CYMICROGPT_EXP_SHORTCUT_H

#include <math.h>

#include "avx2_bits.h"

#define CYMG_EXP_TABLE_BITS 7
#define CYMG_EXP_N (1 << CYMG_EXP_TABLE_BITS)  /* the table's entries: 2^(j/N), j < N */
#define CYMG_EXP_LOWEST (-512.0)  /* the proven range is (LOWEST, 0]: glibc's main path */
#define CYMG_EXP_MARGIN 0.4888  /* t (6) */
#define CYMG_EXP_ALLOWANCE (CYMG_EXP_MARGIN * 0x1p-52)  /* RN(t 2^-52), folded by the compiler */
#define CYMG_EXP_INV_LN2_N 0x1.71547652b82fep+7  /* RN(N / ln 2) */
#define CYMG_EXP_LN2_N_HI 0x1.62e42fefa0000p-8  /* round(ln 2 * 2^36) * 2^-43 (1) */
#define CYMG_EXP_LN2_N_LO 0x1.cf79abc9e3b3ap-47  /* RN(ln 2 / N - LN2_N_HI) (1) */
#define CYMG_EXP_SHIFT 0x1.8p52  /* 1.5 * 2^52: z + SHIFT rounds z to an integer (1) */

/* The AVX2 pass needs FMA (setup.py builds _fused_avx2 with -mavx2 -mfma; engines/fused.py
   runs it where the CPU has both); a build with AVX2 alone keeps plain libm exp. */
#if defined(__AVX2__) && defined(__FMA__)
#define CYMG_EXP_AVX2 1

/* exp of four lanes (1-6): the candidate 2^m y in each lane, all ones in *proven where it
   is exp's result.  That includes x = +-0, whose y = 1.0, a power of two, is exp's 1.0
   without the margin: k = 0 (+-0 * INV_LN2_N + SHIFT is SHIFT), j = 0, Th = 1, Tl = 0,
   2^m = 1, and every other term is +-0, so s = y = 1.0.  table: Th_0..Th_{N-1}, then
   Tl_0..Tl_{N-1}. */
static inline __m256d cymg4_exp(__m256d x, const double *table, __m256d *proven) {
    const __m256d shift = _mm256_set1_pd(CYMG_EXP_SHIFT), half = _mm256_set1_pd(0.5);
    /* 1. k, j, 2^m, a, b */
    __m256d shifted = _mm256_fmadd_pd(x, _mm256_set1_pd(CYMG_EXP_INV_LN2_N), shift);
    __m256d k = _mm256_sub_pd(shifted, shift);
    __m256i k_bits = _mm256_castpd_si256(shifted);  /* bits(SHIFT) + k: k in the low bits */
    __m256i j = _mm256_and_si256(k_bits, _mm256_set1_epi64x(CYMG_EXP_N - 1));
    /* (k - j) << (52 - 7) = m << 52 modulo 2^64 (bits(SHIFT) << 45 is 0 modulo 2^64) */
    __m256d two_to_m = _mm256_castsi256_pd(_mm256_add_epi64(
        _mm256_slli_epi64(_mm256_sub_epi64(k_bits, j), 52 - CYMG_EXP_TABLE_BITS),
        _mm256_set1_epi64x((long long)cymg_bits(1.0))));
    int64_t index[4];  /* eight scalar loads: faster than two gathers here (Zen 4) */
    _mm256_storeu_si256((__m256i *)index, j);
    __m256d th = _mm256_setr_pd(table[index[0]], table[index[1]], table[index[2]], table[index[3]]);
    __m256d tl = _mm256_setr_pd(table[CYMG_EXP_N + index[0]], table[CYMG_EXP_N + index[1]],
                                table[CYMG_EXP_N + index[2]], table[CYMG_EXP_N + index[3]]);
    __m256d a = _mm256_fnmadd_pd(k, _mm256_set1_pd(CYMG_EXP_LN2_N_HI), x);  /* exact */
    __m256d b = _mm256_mul_pd(k, _mm256_set1_pd(-CYMG_EXP_LN2_N_LO));
    /* 2. exp(a + b) - 1 = q + c */
    __m256d hh = _mm256_mul_pd(a, a);
    __m256d hl = _mm256_fmsub_pd(a, a, hh);
    __m256d q = _mm256_fmadd_pd(hh, half, a);
    __m256d qe = _mm256_fmadd_pd(hh, half, _mm256_sub_pd(a, q));
    __m256d poly = _mm256_fmadd_pd(_mm256_set1_pd(1.0 / 720), a, _mm256_set1_pd(1.0 / 120));
    poly = _mm256_fmadd_pd(poly, a, _mm256_set1_pd(1.0 / 24));
    poly = _mm256_fmadd_pd(poly, a, _mm256_set1_pd(1.0 / 6));
    __m256d p3 = _mm256_mul_pd(_mm256_mul_pd(hh, a), poly);
    __m256d bt = _mm256_fmadd_pd(b, _mm256_mul_pd(b, half), b);
    __m256d bw = _mm256_fmadd_pd(bt, _mm256_add_pd(q, p3), bt);
    __m256d c = _mm256_add_pd(_mm256_add_pd(_mm256_fmadd_pd(hl, half, qe), p3), bw);
    /* 4. T (1 + q + c) = s + d */
    __m256d tq = _mm256_mul_pd(th, q);
    __m256d tqe = _mm256_fmsub_pd(th, q, tq);
    __m256d s = _mm256_add_pd(th, tq);
    __m256d e = _mm256_add_pd(_mm256_sub_pd(th, s), tq);
    __m256d d = _mm256_add_pd(_mm256_fmadd_pd(th, c, _mm256_add_pd(e, tqe)), _mm256_fmadd_pd(tl, q, tl));
    /* 5. y and the residual res */
    __m256d y = _mm256_add_pd(s, d);
    __m256d res = _mm256_sub_pd(d, _mm256_sub_pd(y, s));
    /* 6. the margin */
    __m256d binade = cymg4_power_of_two_below(y);
    __m256d close = _mm256_cmp_pd(cymg4_abs(res), _mm256_mul_pd(binade, _mm256_set1_pd(CYMG_EXP_ALLOWANCE)),
                                  _CMP_LE_OQ);
    __m256d in_range = _mm256_and_pd(_mm256_cmp_pd(x, _mm256_set1_pd(CYMG_EXP_LOWEST), _CMP_GT_OQ),
                                     _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LE_OQ));
    __m256d zero = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_EQ_OQ);
    *proven = _mm256_or_pd(zero, _mm256_and_pd(_mm256_and_pd(in_range, close), _mm256_cmp_pd(y, binade, _CMP_NEQ_UQ)));
    return _mm256_mul_pd(y, two_to_m);
}

/* The lanes of one group that the proof left (bit k of `unproven`: lane k), from libm exp,
   into out (the group's stored results).  Apart: rare (~9% of groups), and its calls would
   otherwise make every caller save its vector registers. */
static __attribute__((noinline)) Py_ssize_t cymg_exp_unproven(__m256d argument, int unproven, double *out) {
    double arguments[4];
    Py_ssize_t calls = 0;
    int lane;
    _mm256_storeu_pd(arguments, argument);
    for (lane = 0; lane < 4; lane++) {
        if (unproven >> lane & 1) {
            out[lane] = exp(arguments[lane]);
            calls++;
        }
    }
    return calls;
}

/* out[i] = exp(x[i] + shift) for i < n, as libm exp returns it (x + shift rounded first, as
   the softmax's `logit + (-max)`; shift -0.0 adds nothing, to any x): four lanes at a time,
   libm exp for the lanes not proven.  Whole groups: x is read and out written up to n
   rounded up to a multiple of 4 (the lanes past n compute exp(0.0) = 1.0, settled without
   libm).  Each group is loaded by four scalar loads: the softmax's inputs were just stored
   by scalar or shorter stores, which a 32-byte load could not take from the store buffer
   (measured: ~50 cycles each time).  Returns the number of libm calls.  Inlined: the
   softmax calls it on a few elements. */
static inline __attribute__((always_inline)) Py_ssize_t cymg_exp_shifted(const double *x, double shift, double *out,
                                                                         Py_ssize_t n, const double *table) {
    Py_ssize_t i, calls = 0;
    int unproven;
    for (i = 0; i < n; i += 4) {
        __m256d proven, result;
        __m256d argument = _mm256_add_pd(_mm256_setr_pd(x[i], x[i + 1], x[i + 2], x[i + 3]), _mm256_set1_pd(shift));
        if (n - i < 4)  /* zero in the lanes i + lane >= n */
            argument = _mm256_and_pd(argument, _mm256_castsi256_pd(_mm256_cmpgt_epi64(
                _mm256_set1_epi64x((long long)(n - i)), _mm256_setr_epi64x(0, 1, 2, 3))));
        result = cymg4_exp(argument, table, &proven);
        _mm256_storeu_pd(out + i, result);
        unproven = ~cymg4_proven_bits(proven) & 15;
        if (__builtin_expect(unproven != 0, 0))
            calls += cymg_exp_unproven(argument, unproven, out + i);
    }
    return calls;
}

#else  /* the baseline build: libm exp throughout */
#define CYMG_EXP_AVX2 0

static Py_ssize_t cymg_exp_shifted(const double *x, double shift, double *out, Py_ssize_t n, const double *table) {
    Py_ssize_t i;
    (void)table;
    for (i = 0; i < n; i++)
        out[i] = exp(x[i] + shift);
    return n;
}
#endif

#endif
