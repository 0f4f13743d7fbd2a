"""microgpt's Adam step in compiled passes over the parameters, bit-identical to Python.

Per parameter, in microgpt's operation order (reference.py, ReferenceAdam):

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1 ** (step + 1))
    v_hat = v / (1 - beta2 ** (step + 1))
    p -= lr_t * m_hat / (v_hat**0.5 + eps)
    g = 0

`*`, `+`, `-`, `/` are single IEEE operations, the same in C as in Python (the build
forbids contracting them into FMA), so their order is all that matters.  The two `**`
are Python's float ** (CPython's float_pow): its special cases (nan, inf, zero, one,
negative base), then libm `pow` with errno read.  `python_power` reproduces that line for
line; the pow shortcut (below) skips the libm call where its result is proven.

The step runs in passes, so that the plain arithmetic vectorises (SSE2 on any x86-64):
every g**2 first, into a scratch array (a vectorised pass settles the proven ones, libm
the rest, one by one), then per block of BLOCK parameters: the moments and their
estimates, every v_hat**0.5 (likewise), the parameter update.  The AVX2 build
(adam_shortcut.h) runs each block's update as one software-pipelined pass, where the
parameters whose root is not proven keep their old value until libm's root updates them,
and when nothing can raise (no finite gradient above 2^511, no negative v: checked in
one pass first) it squares each block's gradients inside the pass that updates the
block before.  Each element still sees microgpt's expressions in microgpt's order; only
the interleaving across elements changes, which no result depends on.  (The pass skips
a division by a bias correction that is 1.0, bias_correction1 from the 231st step on:
m / 1.0 is m, bit for bit, for every m but a signaling nan, which no arithmetic result is;
and divides by the others without the divider: argument 6.)

Errors are atomic.  Where Python's loop would raise (OverflowError when a finite
gradient's square overflows, ZeroDivisionError) or produce a complex number (a negative
v_hat), nothing is changed: the squares are computed before any state is written, and
where they or the inputs leave any doubt (an overflow, a negative v, unusual scalars) the
elements are replayed one by one without storing, to find the first one Python would
stop at.

The pow shortcut
----------------
`x*x` and `sqrt(v)` are correctly rounded (IEEE 754).  libm `pow` is not.  The shortcut
runs only on glibc >= 2.28 on x86_64 and aarch64 (cymicrogpt.engines.adam decides, at run
time).  From glibc 2.29 on, pow is ARM's optimized-routines code, sysdeps/ieee754/dbl-64/
e_pow.c (musl's is the same; glibc commit 424c4f60ed, "Add new pow implementation", is
first in glibc-2.29); x86_64 builds it twice, with FMA and without (SSE2), and picks one
by the CPU.  (glibc 2.28's pow is IBM's: see "glibc 2.28" after argument 1.)  Its error
analysis, in that file's header comment:

    Worst-case error: 0.54 ULP (~= ulperr_exp + 1024*Ln2*relerr_log*2^53)
    relerr_log: 1.3 * 2^-68 (Relative error of log, 1.5 * 2^-68 without fma)
    ulperr_exp: 0.509 ULP (ULP error of exp, 0.511 ULP without fma)

pow(x, y) computes hi + lo ~ log(x) (log_inline), then y*log(x) as ehi + elo, then
exp(ehi + elo) (exp_inline), rounded once at the end.  A relative error of the argument
of exp becomes an error of the result proportional to |y log x|, whose largest value for
a finite, nonzero result is 1024*Ln2: hence the 0.54 ULP.  For one input the same sum
reads ulperr_exp + |y log x| * relerr_log * 2^53, and |y log x| = |log X| for the exact
result X = x**y, small for the magnitudes Adam sees.  We take the larger (non-FMA)
figures, since either build may run, and bound what the comment leaves implicit:

A. The argument of exp.  For y = 2 and y = 0.5, multiplying by y is exact.  With FMA,
   ehi = y*hi and elo = y*lo + fma(y, hi, -ehi) = y*lo exactly.  Without FMA, yhi = y and
   ylo = 0 (2 and 0.5 have no low bits), lhi is hi with its low 27 bits cleared (hi - lhi
   exact, |hi - lhi| < 2^-25 |hi|), and llo = (hi - lhi) + lo is one rounding: with
   |lo| <= 2^-51 |hi| (lo is the tail of the double-double hi + lo), its error is at most
   2^-53 |llo| < 2^-78 (1 + 2^-26) |hi|; ehi = y*lhi and elo = y*llo are exact.  (Were lo
   so tiny that y*lo underflowed, that loses 2^-1075: nothing, beside the slack below.)
   So ehi + elo = y log(x) (1 + delta) with |delta| <= lambda = 1.5 * 2^-68 + 2^-78 (1 + 2^-25)
   (relerr_log plus the rounding of llo, |hi| <= |log x| (1 + 2^-50) folded in).
B. From the argument to the result.  exp(ehi + elo) = X exp(delta log X), so
   |exp(ehi + elo) - X| <= X lambda |log X| (1 + 2^-50) < 2^53 lambda |log X| (1 + 2^-50) u,
   where 2^e <= X < 2^(e+1) and u = 2^(e-52) is the ULP there (X < 2^53 u).
C. exp.  exp_inline's own comment bounds its error by 0.5 + 1.11/N + (abs poly error) * 2^53
   ULP, 0.25/N more without FMA; with N = 128 and the polynomial's 1.09 * 2^-65 for
   |r| < ln2/256 + 2^-15 (exp_data.c; |elo| is far below 2^-15 here) that is
   0.5 + 1.36/128 + 1.09 * 2^-12 = 0.51089 <= 0.511 = ulperr_exp, the ULP taken at
   exp(ehi + elo), which lies in X's binade wherever it is used below.  Results beyond
   2^+-738 take exp_inline's specialcase, which rounds once at a shifted exponent and
   scales exactly (no subnormal result here): the same bound.
So pow returns R with |R - X| <= E(e) u, E(e) = 0.511 + (|e| + 1) c, where
|log X| <= (|e| + 1) ln 2 and c = ln2 * 2^53 * lambda * (1 + 2^-50) < 3.1751e-5.
E(0) = 0.51103, E(20) = 0.51167, E(64) = 0.51306; E(1023) = 0.5435 is the source's 0.54.

1. The margin.  Let p be a positive normal double that is NOT a power of two,
   2^e < p < 2^(e+1), u = 2^(e-52) its spacing, and let the exact value X satisfy
   |X - p| <= (t + 2^-50) u.  Since p >= 2^e + u and p <= 2^(e+1) - u, X lies strictly
   inside (2^e, 2^(e+1)), so u is X's ULP, and every double other than p is at least
   (1 - t - 2^-50) u from X.  pow's result, within E(e) u of X, must be p wherever
   t + 2^-50 + E(e) < 1: for every e with the margin t(e) = 0.4889 - 3.18e-5 |e|, since
   t(e) + E(e) <= 0.4889 + 0.511 + 3.1751e-5 - (3.18e-5 - 3.1751e-5) |e| < 0.99994.
   t(e) is 0.4889 at 2^0, 0.4883 at 2^+-20, 0.4869 at 2^+-64, 0.4564 at 2^+-1022.
   The kernel uses one margin, t = 0.4868 <= t(64), for results in [2^-64, 2^64)
   (|e| <= 64: t + 2^-50 + E(e) < 0.99987), and libm for the rest: one constant is
   cheaper to test than a margin computed per binade (measured: the AVX2 update pass
   took 10.7 us with it, 9.4 us without, for 29 more pow calls a step, 0.4 us), and
   gradients, moments and their powers lie far inside that range.  The tests below allow
   fl(0.4868) u (u a power of two: exact), within (t + 2^-54) u.  A power of two
   p = 2^e has a neighbour below at u/2 only, so an exact value just above it could
   round (within E ULP) to that neighbour: powers of two always go to libm pow.

   glibc 2.28.  Its pow (IBM's, the same file name in 2.28) returns x*x for y = 2 and
   1.0/x for y = -1 (correctly rounded: what the shortcuts return where they settle),
   and for every other finite y and x > 0 computes exp(y log x) from a log and an exp of
   relative errors 1.0e-21 and 8.8e-22, which its comment turns into a relative error of
   7.1e-19 and "The worst-case ULP error is 0.5064": E = 0.5064 < E(0) for every result,
   so argument 1, and every shortcut that rests on it (this one, and the fused pass's in
   pow_shortcut.h), hold there with the same margin (t + 2^-50 + 0.5064 < 0.9933).

2. Square (g**2, x = |g|, Python squares |g|).  p = x*x (rounded) and the residual
   r = x^2 - p, which is exactly representable: x = M 2^(k-52) with integer M < 2^53,
   so x^2 is a multiple of 2^(2k-104), far above the subnormal grid for
   2^-32 <= x <= 2^32, and r (|r| <= u/2) has at most 53 significant bits of that grid.
   There x^2 lies in [2^-64, 2^64] (p a power of two at both ends), so e is in [-64, 63].
   `residual_of_square` computes r exactly (Dekker/Veltkamp's two-product: every partial
   product is exact in that range, the build forbids FMA contraction, so the compiler
   cannot reassociate them); the AVX2 build's twin is one explicit FMA, fl(x*x - p), the
   exact value rounded once: r itself, since r is representable.  The exact square is p + r: if
   |r| <= 2^e * fl(t 2^-52), then |r| <= (t + 2^-54) u and pow(x, 2.0) == p.
   The passes read the range on p: 2^-64 <= p <= 2^64 with p not a power of two selects
   the same x as 2^-32 <= x <= 2^32 does, since fl(x*x) is monotonic in x and the ends'
   squares, 2^-64 and 2^64, are exact powers of two (below 2^-32 p is at most 2^-64, above
   2^32 at least 2^64).  So the AVX2 passes square g itself (g*g and the FMA's residual are
   the same for -g), with no absolute value taken.

3. Root (v_hat**0.5, 2^-128 <= v <= 2^128).  s = sqrt(v) (rounded), 2^e < s < 2^(e+1)
   with e in [-64, 63], and rho = v - s^2, exactly representable: s^2 is a multiple of
   2^(2e-104) (the grid argument of 2), so is v (v >= 2^(2e)), and
   |rho| = |sqrt(v) - s| (sqrt(v) + s) < 2^(e-53) 2^(e+2) = 2^(2e-51), at most 2^53 units
   of that grid.  `residual_of_root` computes it exactly from Veltkamp's split
   s = hi + lo (as in 2: hi has 26 significant bits and is a multiple of 2^(e-25);
   lo = s - hi is exact, fits in 26 bits, is a multiple of 2^(e-52), |lo| <= 2^(e-26)), as
   ((v - hi*hi) - (hi + hi)*lo) - lo*lo, every operation exact: hi*hi, hi + hi,
   (hi + hi)*lo and lo*lo have at most 52 significant bits; v - hi*hi by Sterbenz
   (hi = s (1 + a), |a| <= 2^-26, and s^2 = v (1 + b), |b| <= 2^-51, put hi*hi within a
   factor 2 of v); the next difference's exact value is lo^2 + rho, a multiple of
   2^(2e-76) (both operands are) below 2^(2e-52) + 2^(2e-51) < 2^(2e-50) in magnitude,
   fewer than 26 bits of its grid; and the last one's exact value is rho, representable.
   (The AVX2 build computes it as one explicit FMA, fl(v - s*s): rho itself, likewise.)
   (The grids lie far above the subnormal one: 2e - 104 >= -232.)  The exact root is s + d with
   d = rho / (sqrt(v) + s), and sqrt(v) >= s - u/2, so |d| <= |rho| / (2s - u/2).
   The test |rho| <= fl(2^e fl(t 2^-51) s) (one rounding) gives
   |rho| <= 2 (t + 2^-54) u s (1 + 2^-53), so
   |d| <= (t + 2^-54) u (1 + 2^-53) / (1 - u/(4s)) <= (t + 2^-50) u, as u/(4s) <= 2^-54:
   pow(v, 0.5) == s.

4. Everything else goes to `python_power` (Python's special cases, then libm pow):
   x outside [2^-32, 2^32] and v outside [2^-128, 2^128] (subnormal, tiny or huge, among
   them every g whose square can overflow), nan and inf, p or s a power of two, and every
   residual beyond the margin: about 2 (0.5 - t) = 2.6% of the inputs in range, as |r|/u
   is spread evenly over [0, 0.5].  Zero is settled without pow as well: Python's
   (+-0.0) ** 2.0 and (+-0.0) ** 0.5 are 0.0, and so are 0.0 * 0.0 and |sqrt(+-0.0)|.

5. Outcomes that do not depend on pow's last bit (the AVX2 step, for the elements 1-3
   leave).  In the ranges of 2 and 3, with p (or s) not a power of two, pow returns p or
   p', p's neighbour on the side of the exact value X (the sign of the exact residual):
   |X - p| <= u/2, so X is at least u/2 from p' and at least u from every other double
   (below a p' = 2^e the spacing halves, but the next double is u/2 + |X - p'| >= u
   away), while |R - X| <= E(e) u < u.  The step stores g**2 only through the new
   v = beta2 * v + (1 - beta2) * g**2, and v_hat**0.5 only through the new parameter
   p - lr_t * m_hat / (v_hat**0.5 + eps): where that comes out the same, bit for bit, for
   both candidates, it is what Python computes whichever pow returns, and pow is not
   called (adam_shortcut.h: cymg_avx2_settle_squares, cymg_avx2_settle_roots, four
   elements at a time; the side of p' is the sign of residual_of_square or
   residual_of_root, and p' is p's bit pattern plus or minus one).
   For roots this holds below 3's range as well, for 2^-968 <= v < 2^-128 (s in [2^-484,
   2^-64)): there E(e) <= E(484) = 0.511 + 485 c < 0.527 < 1, and rho is still exact (3's
   grid, 2^(2e-104) >= 2^-1072, lies on the subnormal one or above, and |rho| < 2^(2e-51)),
   so cymg_avx2_settle_roots takes those elements too: where a gradient stays 0, v decays by
   beta2 a step, below 2^-128 some 7,500 steps later, and the step lr_t * m_hat / (s + eps),
   s far below eps, then hardly ever depends on the root's last bit (a 100,000-step run
   spent a fifth of its time in libm pow for them).

6. The bias corrections without the divider (the AVX2 update pass; adam_shortcut.h,
   cymg4_divide_by_reciprocal).  m_hat = m / c1 and v_hat = v / c2 divide by one constant c
   per step.  For 2^-20 <= c < 1 (c = 1.0 is not divided by at all), once per pass:
   hi = RN(1/c) (a division), e = RN(1 - c*hi) (an FMA), lo = RN(e*hi).  Then per element a
   with a = +-0 or 2^-890 <= |a| <= 2^1000 (the others, nan and inf among them, are divided:
   their whole group of four), q0 = RN(a*hi + RN(a*lo)) (a multiplication and an FMA),
   r = RN(a - q0*c) and q = RN(q0 + r*hi) (two FMAs), and q is RN(a/c), the division's result:
   a. |hi - 1/c| <= ulp(1/c)/2 <= 2^-53/c, so |1 - c*hi| <= 2^-53, and hi + lo = hi + (1 - c hi)
      hi (1 + eta), |eta| <= 2^-52 + 2^-106 (e's and lo's roundings), = (1/c)(1 - d^2 + d c hi
      eta) with d = 1 - c hi: hi + lo = (1/c)(1 + rho), |rho| <= 2^-106 + 2^-53 (1 + 2^-53)
      (2^-52 + 2^-106) < 2^-104.  1 - c*hi lies on the grid of c*hi, ulp(c) ulp(hi) >= 2^-124,
      so lo is 0 or |lo| >= 2^-124, and a*lo is 0 or at least 2^(-890-124): normal.
   b. |RN(a*lo) - a*lo| <= 2^-53 |a lo| <= 2^-106 (1 + 2^-52) |a hi|, so
      a*hi + RN(a*lo) = (a/c)(1 + rho') with |rho'| < 2^-104 + 2^-106 (1 + 2^-51) < 2^-103,
      and q0, its one rounding, is within ulp(a/c)/2 + 2^-103 |a/c| < ulp(a/c) of a/c (where
      the perturbed value crosses the power of two above a/c, q0 is that power, closer still).
   c. Markstein's theorem (P. Markstein, "Computation of elementary functions on the IBM
      RISC System/6000 processor", IBM J. Res. Develop. 34(1), 1990; restated in J.-M. Muller
      et al., Handbook of Floating-Point Arithmetic, on division with an FMA): in binary
      arithmetic with round to nearest, if y is within ulp(1/b)/2 of 1/b and q within
      ulp(a/b) of a/b, then r = RN(a - b q) is exactly a - b q and RN(q + r y) = RN(a/b),
      provided no underflow or overflow occurs.  Here b = c, y = hi (a correctly rounded
      division), q = q0 (b).  Nothing over- or underflows: 1 < hi <= 2^20,
      2^-890 <= |a/c|, |q0| <= 2^1021, and r, when not 0, is a multiple of
      ulp(c) ulp(q0) >= 2^(e(a) - 106) >= 2^-996 (c q0 lies within a factor 2 of a,
      2^e(a) <= |a|): a normal double; the FMAs round once.
   d. a = +-0: q0 = RN(+-0 * hi + RN(+-0 * lo)) is +0.0 for a = +0.0 (+0 + -0 is +0 in round
      to nearest), then r = +0.0 and q = +0.0 = +0.0 / c; for a = -0.0 the sum may give +0.0
      where -0.0 / c is -0.0: the pass ORs a's sign bit into q, which changes nothing where
      a != 0 (q = RN(a/c) has a's sign, c > 0).
   So the AVX2 pass's m_hat and v_hat are the baseline build's, bit for bit; the scalar
   passes and argument 5's settling divide.  tests/test_adam.py compares divide_array (this
   route) with the division on near-midpoint and random quotients for the run's bias
   corrections; benchmarks/check_division.py on 10^8 of them.

7. First moments stuck in the subnormals (the AVX2 pass, where no bias correction divides;
   adam_shortcut.h, cymg_tiny_moment).  Where a gradient stays 0, m decays by beta1 a step
   into the subnormals and sticks at 1-3 units of 2^-1074 (0.85 * 3 units rounds back to 3).
   On Intel cores every multiplication or division with a subnormal operand or result takes a
   microcode assist (~70 ns); so where a group has |m| < 2^-1022 (a shift and a comparison
   find it), the pass computes its new m without multiplying a subnormal, and leaves some
   parameters as they are without computing their step:
   a. beta1 * m for |m| = K 2^-1074, K < 2^52 an integer (|m|'s bit pattern), and
      2^-60 <= beta1 < 1: the exact product lies below 2^-1022, where the doubles are the
      multiples of 2^-1074 (up to 2^-1021), so RN(beta1 * m) = sign(m) RN_int(beta1 K) 2^-1074,
      ties to even (an even multiple has an even significand).  K is a double exactly,
      (2^52 + K) - 2^52 from the bits of 2^52 ORed with K's; p = RN(beta1 K) >= 2^-60 is normal,
      and e = fma(beta1, K, -p) is beta1 K - p exactly (a product's error is a double where
      nothing underflows).  R = (p + 2^52) - 2^52 is p rounded to an integer, ties to even
      (p <= 2^52; in [2^52, 2^53] the doubles are the integers; the subtraction is exact).
      beta1 K = p + e with |e| <= ulp(p)/2: where p - R = +-1/2 (p a tie, so ulp(p) <= 1/2),
      e decides: R + 1 where p - R = 1/2 and e > 0, R - 1 where p - R = -1/2 and e < 0; elsewhere
      the half-integers lie on p's grid (ulp(p) <= 1/2) at least ulp(p) from p, or ulp(p)/2
      below a power of two p where e >= -ulp(p)/4, so RN_int(p + e) = R.  The bit pattern of
      R 2^-1074 is R itself, bits(R + 2^52) - bits(2^52) (2^52 + R exact for R <= 2^52), with
      m's sign ORed in (a zero product keeps it: beta1 > 0).  The new m then adds
      (1 - beta1) * g as everywhere; the group's other lanes multiply as everywhere.
      (A C check of 4 * 10^7 products, 40 betas, K over the whole range and where p lands on
      a half-integer, against the multiplication: 0 differences; without e's correction,
      712,012.)
   b. With bias_correction1 in [2^-10, 1], 0 <= lr_t <= 2^10 and eps >= 2^-100 (checked per
      pass): a lane whose new m is subnormal or zero, whose new v is not nan and whose
      parameter has |p| >= 2^-800 keeps p, whatever the root: Python's m_hat = m / c1 has
      |m_hat| <= 2^-1012, lr_t * m_hat at most 2^-1002, the denominator root + eps is at
      least eps >= 2^-100 for every root pow may return (v_hat >= 0 gives a root >= 0, or
      +inf, which makes the step 0), so |step| <= 2^-902 (each rounding is monotonic), while
      p's neighbours lie at least ulp(p)/4 >= 2^-854 away: p - step rounds to p.  The pass
      gives such lanes m_hat = v_hat = +0: their root is 0 (proven: v_hat == 0), their step
      +0 (lr_t >= 0, eps > 0), and p - (+0) is p, -0.0 included: the same bits, with no
      division or multiplication of a subnormal, and no root left to argument 5 or libm.

The shortcut is only correct where libm's pow carries that analysis; the caller decides
where (cymicrogpt.engines.adam detects glibc >= 2.28 at run time) and passes `shortcut`.
benchmarks/check_pow_shortcut.py compares it with libm pow on 10^8 random and
constructed inputs (near a midpoint, near the margin, next to a power of two), for both
of glibc's builds of pow; tests/test_adam.py checks the margin's arithmetic (t + E(e) < 1
over the range) in exact rationals.
"""
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.errno cimport ERANGE, errno
from libc.math cimport INFINITY, NAN, fabs, floor, isinf, isnan, pow, sqrt
from libc.stdint cimport int32_t, uint8_t, uint64_t

import numpy as np

from cymicrogpt._arena cimport Arena
from cymicrogpt._kernels cimport all_finite

cdef extern from "adam_shortcut.h":
    # The shortcut's ranges and margin (1-4 above), and its AVX2 passes: the twins of
    # prove_squares, prove_roots and update_block, defined where the build has AVX2.
    const double SQUARE_MIN "CYMG_SQUARE_MIN"
    const double SQUARE_MAX "CYMG_SQUARE_MAX"
    const double SQUARE_RESULT_MIN "CYMG_SQUARE_RESULT_MIN"  # SQUARE_MIN**2 and SQUARE_MAX**2, exact
    const double SQUARE_RESULT_MAX "CYMG_SQUARE_RESULT_MAX"
    const double ROOT_MIN "CYMG_ROOT_MIN"
    const double ROOT_MAX "CYMG_ROOT_MAX"
    const double OVERFLOW_FREE_MAX "CYMG_OVERFLOW_FREE_MAX"
    const double SPLITTER "CYMG_SPLITTER"
    const double MARGIN "CYMG_MARGIN"
    const double SQUARE_ALLOWANCE "CYMG_SQUARE_ALLOWANCE"
    const double ROOT_ALLOWANCE "CYMG_ROOT_ALLOWANCE"
    const bint HAVE_AVX2_PASSES "CYMG_AVX2"
    # 2^e for a positive normal double 2^e <= x < 2^(e+1) (pow_shortcut.h: the one copy)
    double power_of_two_below "cymg_power_of_two_below"(double x) noexcept nogil
    Py_ssize_t unproven_indices "cymg_unproven_indices"(
        const uint8_t* masks, Py_ssize_t groups, int32_t* pending, Py_ssize_t count) noexcept nogil
    bint avx2_gradients_square_finitely "cymg_avx2_gradients_square_finitely"(
        const double* grads, Py_ssize_t n) noexcept nogil
    bint avx2_no_sign_bit "cymg_avx2_no_sign_bit"(const double* v, Py_ssize_t n) noexcept nogil
    void avx2_prove_squares "cymg_avx2_prove_squares"(
        const double* x, double* out, uint8_t* masks, Py_ssize_t n) noexcept nogil
    void avx2_prove_roots "cymg_avx2_prove_roots"(
        const double* x, double* out, uint8_t* masks, Py_ssize_t n) noexcept nogil
    Py_ssize_t avx2_settle_roots "cymg_avx2_settle_roots"(
        double* params, const double* m, const double* v, int32_t* pending, Py_ssize_t count,
        double bias_correction1, double bias_correction2, double lr_t, double eps) noexcept nogil
    void avx2_divide "cymg_avx2_divide"(const double* a, double c, double* out, Py_ssize_t n) noexcept nogil
    Py_ssize_t avx2_settle_squares "cymg_avx2_settle_squares"(
        const double* grads, const double* v, double* squares, int32_t* pending, Py_ssize_t count,
        double beta2, double one_minus_beta2) noexcept nogil
    void avx2_update "cymg_avx2_update"(
        double* params, double* grads, double* m, double* v, const double* squares, Py_ssize_t n,
        const double* next_grads, double* next_squares, Py_ssize_t next_n, uint8_t* square_masks,
        double beta1, double beta2, double one_minus_beta1, double one_minus_beta2, double bias_correction1,
        double bias_correction2, double lr_t, double eps, uint8_t* root_masks) noexcept nogil

cdef extern from *:
    """
    #include <math.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* out[i] = sqrt(x[i]), correctly rounded (IEEE), as SSE2's sqrtpd where there is one:
       libm's errno contract (sqrt of a negative sets EDOM) keeps compilers from vectorising
       a sqrt() loop.  A negative x gives nan (no errno), which no caller takes as a proven
       root. */
    static void cymg_sqrt_array(const double* x, double* out, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__SSE2__)
        for (; i + 2 <= n; i += 2)
            _mm_storeu_pd(out + i, _mm_sqrt_pd(_mm_loadu_pd(x + i)));
    #endif
        for (; i < n; i++)
            out[i] = sqrt(x[i]);
    }
    """
    void sqrt_array "cymg_sqrt_array"(const double* x, double* out, Py_ssize_t n) noexcept nogil

cdef extern from *:
    """
    /* Can this CPU, and the OS, run the AVX2 build (AVX2 and FMA code)?  (gcc and clang
       on x86: libgcc's check includes the OS's saving of the AVX registers.)  Elsewhere: no. */
    static int cymg_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    int c_cpu_has_avx2_fma "cymg_cpu_has_avx2_fma"() noexcept nogil

cdef enum:
    BLOCK = 512  # elements per block of the passes (a few stack arrays of this size: ~0.1 us faster
    #              than 256 on the default model, fewer blocks' bookkeeping; 1024 no faster)
    BLOCK_GROUPS = 128  # BLOCK / 4: a block's groups of four, one byte each in the AVX2 passes' masks


# --- the pow shortcut's proofs (branch-free, so that their loops vectorise) ---------------
cdef inline void split_26(double x, double* hi, double* lo) noexcept nogil:
    """x = hi + lo exactly, hi with 26 significant bits, lo in 26 bits (Veltkamp's split)."""
    cdef double split = SPLITTER * x
    hi[0] = split - (split - x)
    lo[0] = x - hi[0]


cdef inline double residual_of_square(double x, double p) noexcept nogil:
    """x*x - p exactly, for p = fl(x*x) and SQUARE_MIN <= |x| <= SQUARE_MAX (Dekker's
    two-product with Veltkamp's split; see 2)."""
    cdef double hi, lo
    split_26(x, &hi, &lo)
    return ((hi * hi - p) + 2.0 * (hi * lo)) + lo * lo


cdef inline double residual_of_root(double v, double s) noexcept nogil:
    """v - s*s exactly, for s = sqrt(v) and ROOT_MIN <= v <= ROOT_MAX (see 3)."""
    cdef double hi, lo
    split_26(s, &hi, &lo)
    return ((v - hi * hi) - (hi + hi) * lo) - lo * lo


cdef inline bint square_is_proven(double x, double p) noexcept nogil:
    """Is p = fl(x*x) what Python's x ** 2.0 gives, for x = |g| (argument 2, or x == 0)?
    `&`, not `and`: every test runs (nan fails the comparisons), nothing branches."""
    cdef double binade = power_of_two_below(p)
    return (x == 0.0) | ((p >= SQUARE_RESULT_MIN) & (p <= SQUARE_RESULT_MAX) & (p != binade)
                         & (fabs(residual_of_square(x, p)) <= binade * SQUARE_ALLOWANCE))


cdef inline bint root_is_proven(double v, double s) noexcept nogil:
    """Is |s|, s = sqrt(v), what Python's v ** 0.5 gives (argument 3, or v == 0: Python's
    (-0.0) ** 0.5 is 0.0)?  Branch-free, like square_is_proven."""
    cdef double binade = power_of_two_below(s)
    return (v == 0.0) | ((v >= ROOT_MIN) & (v <= ROOT_MAX) & (s != binade)
                         & (fabs(residual_of_root(v, s)) <= binade * ROOT_ALLOWANCE * s))


# --- Python's x ** 2.0 and x ** 0.5, one element -------------------------------------------
cdef int python_power(double x,  # IN
                      double exponent,  # IN: 2.0 or 0.5 (positive, not an odd integer)
                      double* out,  # OUT: x ** exponent as CPython's float_pow computes it
                      ) noexcept nogil:
    """CPython's float_pow, line for line, for Adam's two exponents: its special cases,
    then libm pow with errno read as it reads it (_Py_ADJUST_ERANGE1)."""
    if isnan(x):
        out[0] = x
        return POW_EXACT
    if isinf(x):
        out[0] = fabs(x)  # (+-inf) ** positive non-odd = inf
        return POW_EXACT
    if x == 0.0:
        out[0] = 0.0  # also for -0.0 (where sqrt would keep the sign)
        return POW_EXACT
    if x < 0.0:
        if exponent != floor(exponent):
            return POW_COMPLEX  # Python returns a complex number
        x = -x  # an even exponent: pow(-x), not negated
    if x == 1.0:
        out[0] = 1.0
        return POW_EXACT
    errno = 0
    out[0] = pow(x, exponent)
    if errno == 0:
        return POW_OVERFLOW if isinf(out[0]) else POW_LIBM
    if errno == ERANGE:
        return POW_LIBM if out[0] == 0.0 else POW_OVERFLOW  # underflow to 0 is no error
    return POW_DOMAIN


cdef inline int python_square(double x,  # IN
                              double* out,  # OUT: x ** 2.0 as Python computes it
                              ) noexcept nogil:
    cdef double a = fabs(x)  # Python squares |x|
    if SQUARE_MIN <= a <= SQUARE_MAX:  # no special case, result normal: pow sets no errno
        out[0] = pow(a, 2.0)  # C99 makes pow(1, y) 1.0, Python's special case
        return POW_LIBM
    return python_power(x, 2.0, out)


cdef inline int python_root(double x,  # IN
                            double* out,  # OUT: x ** 0.5 as Python computes it
                            ) noexcept nogil:
    if ROOT_MIN <= x <= ROOT_MAX:  # no special case, result normal: pow sets no errno
        out[0] = pow(x, 0.5)
        return POW_LIBM
    return python_power(x, 0.5, out)


# --- Python's x ** 2.0 and x ** 0.5 over a block: proven pass, then the rest ------------------
cdef inline Py_ssize_t prove_squares(const double* x,  # IN (n,)
                                     double* out,  # OUT (n,)
                                     int32_t* pending,  # OUT (n,): the unproven indices, in order
                                     Py_ssize_t n,  # <= BLOCK
                                     ) noexcept nogil:
    """out[i] = x[i]*x[i] where that is proven to be Python's x[i] ** 2.0; returns how many
    indices are not proven (their out[i] is to be computed by libm)."""
    cdef uint8_t masks[BLOCK_GROUPS]
    cdef Py_ssize_t count = 0, done = 0
    if HAVE_AVX2_PASSES:  # a constant: the build decides
        avx2_prove_squares(x, out, masks, n)
        done = n - n % 4
        count = unproven_indices(masks, done // 4, pending, 0)
    return prove_squares_from(x, out, pending, count, done, n)


cdef inline Py_ssize_t prove_squares_from(const double* x, double* out,  # IN (n,), OUT (n,)
                                          int32_t* pending,  # IN/OUT: count unproven indices, then more
                                          Py_ssize_t count, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """prove_squares for the indices in [start, n), in scalar code (vectorised with SSE2),
    after the `count` unproven ones of [0, start) found by an AVX2 pass."""
    cdef Py_ssize_t i
    cdef double a
    for i in range(start, n):
        a = fabs(x[i])
        out[i] = a * a if square_is_proven(a, a * a) else NAN
    return gather_unproven(out, pending, count, start, n)


cdef inline Py_ssize_t prove_roots(const double* x,  # IN (n,)
                                   double* out,  # OUT (n,)
                                   int32_t* pending,  # OUT (n,): the unproven indices, in order
                                   Py_ssize_t n,  # <= BLOCK
                                   ) noexcept nogil:
    """out[i] = |sqrt(x[i])| where that is proven to be Python's x[i] ** 0.5; returns how
    many indices are not proven."""
    cdef uint8_t masks[BLOCK_GROUPS]
    cdef Py_ssize_t i, count = 0, done = 0
    if HAVE_AVX2_PASSES:
        avx2_prove_roots(x, out, masks, n)
        done = n - n % 4
        count = unproven_indices(masks, done // 4, pending, 0)
    sqrt_array(x + done, out + done, n - done)
    for i in range(done, n):  # vectorised; fabs: sqrt(-0.0) is -0.0, Python's (-0.0)**0.5 is 0.0
        out[i] = fabs(out[i]) if root_is_proven(x[i], out[i]) else NAN
    return gather_unproven(out, pending, count, done, n)


cdef inline Py_ssize_t gather_unproven(const double* out, int32_t* pending, Py_ssize_t count,
                                       Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """Append to pending[:count] the indices in [start, n) that the scalar pass left nan
    (unproven), without a branch: every index is written, only the unproven ones kept."""
    cdef Py_ssize_t i
    for i in range(start, n):
        pending[count] = <int32_t>i
        count += isnan(out[i])
    return count


cdef Py_ssize_t python_powers(const double* x,  # IN (n,)
                              double* out,  # OUT (n,): x ** 2.0 or x ** 0.5, as Python
                              Py_ssize_t n,  # <= BLOCK
                              bint square,  # IN: ** 2.0, else ** 0.5
                              bint shortcut,  # IN: may proven x*x / sqrt replace libm pow?
                              Py_ssize_t* libm_calls,  # IN/OUT: += pow calls made
                              int* status,  # OUT: the failing element's PowStatus
                              ) noexcept nogil:
    """The index of the first element where Python raises (or makes a complex number),
    else -1.  With the shortcut, a vectorised pass settles the proven elements and only
    the others go to libm one by one."""
    cdef int32_t pending[BLOCK]
    cdef Py_ssize_t i, j, count
    cdef int result
    if shortcut:
        count = prove_squares(x, out, pending, n) if square else prove_roots(x, out, pending, n)
    else:
        for i in range(n):
            pending[i] = <int32_t>i
        count = n
    for j in range(count):
        i = pending[j]
        result = python_square(x[i], &out[i]) if square else python_root(x[i], &out[i])
        if result < 0:
            status[0] = result
            return i
        libm_calls[0] += result  # POW_LIBM is 1, POW_EXACT 0
    return -1


cdef Py_ssize_t power_kernel(const double* base, Py_ssize_t n, bint square, bint shortcut, double* out,
                             Py_ssize_t* libm_calls, int* status) noexcept nogil:
    """out[i] = base[i] ** exponent, block by block; the first index that raises, or -1."""
    cdef Py_ssize_t start = 0, failed
    libm_calls[0] = 0
    while start < n:
        failed = python_powers(&base[start], &out[start], min(<Py_ssize_t>BLOCK, n - start),
                               square, shortcut, libm_calls, status)
        if failed >= 0:
            return start + failed
        start += BLOCK
    return -1


# --- Adam --------------------------------------------------------------------------------
cdef int adam_element(double param, double grad, double m, double v,  # IN
                      const AdamScalars* s,  # IN
                      AdamElement* out,  # OUT: the updated param, m, v
                      ) noexcept nogil:
    """One parameter's update, microgpt's expressions in its order, one element at a time
    (plain libm pow: the shortcut gives the same values); returns < 0 (a PowStatus) where
    Python raises, before computing the rest."""
    cdef double square, root, m_hat, v_hat, denominator
    cdef int status
    m = s.beta1 * m + s.one_minus_beta1 * grad
    status = python_square(grad, &square)
    if status < 0:
        return status
    v = s.beta2 * v + s.one_minus_beta2 * square
    if s.bias_correction1 == 0.0 or s.bias_correction2 == 0.0:
        return ADAM_ZERO_DIVISION
    m_hat = m / s.bias_correction1
    v_hat = v / s.bias_correction2
    status = python_root(v_hat, &root)
    if status < 0:
        return status
    denominator = root + s.eps
    if denominator == 0.0:
        return ADAM_ZERO_DIVISION
    out.param = param - s.lr_t * m_hat / denominator
    out.m = m
    out.v = v
    return POW_EXACT


cdef inline bint scalars_keep_signs(const AdamScalars* s) noexcept nogil:
    """True when v >= 0 implies v_hat >= 0 (or nan) and a denominator > 0 (or nan), so that
    with no negative v an element can only raise through g**2."""
    return (s.beta2 >= 0.0 and s.one_minus_beta2 >= 0.0 and s.bias_correction1 > 0.0
            and s.bias_correction2 > 0.0 and s.eps > 0.0)


cdef inline bint any_negative(const double* v, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint64_t found = 0  # an integer OR: reordered freely, so the loop vectorises
    for i in range(n):
        found |= v[i] < 0.0
    return found != 0


cdef Py_ssize_t update_block(double* params, double* grads, double* m, double* v,  # IN/OUT (n,)
                       const double* squares,  # IN (n,): grads ** 2
                       Py_ssize_t n,  # IN: <= BLOCK
                       const AdamScalars* s,  # IN
                       bint shortcut,  # IN
                       const double* next_grads,  # IN (next_n,): the next block's gradients
                       double* next_squares,  # OUT (next_n,): their squares, where proven
                       Py_ssize_t next_n,  # IN: <= n; 0 unless AVX2 and shortcut
                       int32_t* square_pending,  # OUT (next_n,): the next block's unproven squares
                       ) noexcept nogil:
    """The rest of the step for n parameters that cannot raise; returns how many of the
    next block's squares are left to libm (indices in square_pending).  With the shortcut
    in the AVX2 build: one pass over groups of four (cymg_avx2_update, which also squares
    the next block), then argument 5 for the roots it leaves, four at a time
    (cymg_avx2_settle_roots), libm for those whose outcome depends on pow's result, and
    the scalar passes for the last
    n % 4 elements and the next block's last next_n % 4 squares.  Otherwise (next_n is 0
    there): the scalar passes."""
    cdef int32_t root_pending[BLOCK]
    cdef uint8_t root_masks[BLOCK_GROUPS]
    cdef uint8_t square_masks[BLOCK_GROUPS]
    cdef Py_ssize_t i, j, root_count, square_count = 0, done = 0
    cdef double m_hat, v_hat, root = 0.0  # python_root always sets it here (it cannot fail)
    if HAVE_AVX2_PASSES and shortcut:
        avx2_update(params, grads, m, v, squares, n, next_grads, next_squares, next_n, square_masks,
                    s.beta1, s.beta2, s.one_minus_beta1, s.one_minus_beta2, s.bias_correction1,
                    s.bias_correction2, s.lr_t, s.eps, root_masks)
        root_count = unproven_indices(root_masks, n // 4, root_pending, 0)
        root_count = avx2_settle_roots(params, m, v, root_pending, root_count, s.bias_correction1,
                                       s.bias_correction2, s.lr_t, s.eps)  # argument 5
        square_count = unproven_indices(square_masks, next_n // 4, square_pending, 0)
        for j in range(root_count):  # what argument 5 leaves: their m and v are new, their parameter old
            i = root_pending[j]
            v_hat = v[i] / s.bias_correction2
            m_hat = m[i] / s.bias_correction1
            python_root(v_hat, &root)
            params[i] = params[i] - s.lr_t * m_hat / (root + s.eps)
        done = n - n % 4
        square_count = prove_squares_from(next_grads, next_squares, square_pending, square_count,
                                          next_n - next_n % 4, next_n)
    if done < n:
        update_in_passes(params + done, grads + done, m + done, v + done, squares + done, n - done, s, shortcut)
    return square_count


cdef void update_in_passes(double* params, double* grads, double* m, double* v,  # IN/OUT (n,)
                           const double* squares,  # IN (n,): grads ** 2
                           Py_ssize_t n,  # IN: <= BLOCK
                           const AdamScalars* s,  # IN
                           bint shortcut,  # IN
                           ) noexcept nogil:
    """update_block in three scalar passes (vectorised with SSE2)."""
    cdef double m_hats[BLOCK]
    cdef double v_hats[BLOCK]
    cdef double roots[BLOCK]
    cdef Py_ssize_t i, libm_calls = 0
    cdef int status
    # locals: stores into the arrays could alias *s for all the compiler knows
    cdef double beta1 = s.beta1, beta2 = s.beta2, one_minus_beta1 = s.one_minus_beta1
    cdef double one_minus_beta2 = s.one_minus_beta2, bias_correction1 = s.bias_correction1
    cdef double bias_correction2 = s.bias_correction2, lr_t = s.lr_t, eps = s.eps
    for i in range(n):  # vectorised
        m[i] = beta1 * m[i] + one_minus_beta1 * grads[i]
        v[i] = beta2 * v[i] + one_minus_beta2 * squares[i]
        m_hats[i] = m[i] / bias_correction1
        v_hats[i] = v[i] / bias_correction2
    python_powers(v_hats, roots, n, False, shortcut, &libm_calls, &status)  # cannot raise here
    for i in range(n):  # vectorised
        params[i] = params[i] - lr_t * m_hats[i] / (roots[i] + eps)
        grads[i] = 0.0


cdef inline bint nothing_can_raise(const double* grads, const double* v, Py_ssize_t n,
                                   bint v_nonnegative, bint refuse_non_finite) noexcept nogil:
    """No finite gradient beyond OVERFLOW_FREE_MAX (whose square could overflow), no negative v
    (not read where the caller knows: v_nonnegative), and where the step refuses them no
    nan or infinite gradient: with scalars_keep_signs, no element of the step can raise.
    The AVX2 build tries quicker, stricter tests first (no nan or infinite gradient, no -0.0
    in v either)."""
    cdef Py_ssize_t i, done = n - n % 4
    cdef uint64_t found = 0  # an integer OR: reordered freely, so the loop vectorises
    cdef bint beyond  # |g| > OVERFLOW_FREE_MAX, inf or nan
    if not (HAVE_AVX2_PASSES and avx2_gradients_square_finitely(grads, n)
            and (v_nonnegative or avx2_no_sign_bit(v, n))):
        done = 0
    for i in range(done, n):
        beyond = not (fabs(grads[i]) <= OVERFLOW_FREE_MAX)
        found |= ((v[i] < 0.0) & (not v_nonnegative)) | (beyond & (refuse_non_finite | (fabs(grads[i]) < INFINITY)))
    return found == 0


cdef inline Py_ssize_t first_non_finite(const double* x, Py_ssize_t n) noexcept nogil:
    """The index of the first nan or infinite x[i], or -1 (one vector pass when there is none)."""
    cdef Py_ssize_t i
    if not all_finite(x, n):
        for i in range(n):
            if isnan(x[i]) or isinf(x[i]):
                return i
    return -1


cdef void squares_ahead_step(double* params, double* grads, double* m, double* v,  # IN/OUT (n,)
                             Py_ssize_t n, const AdamScalars* s) noexcept nogil:
    """The step when nothing can raise, in the AVX2 build with the shortcut: each block's
    g**2 is computed (by cymg_avx2_update) while the block before it is updated, into two
    stack arrays used in turn (a block's squares stay in the L1 cache: a scratch array of
    the step's length would add its length to the memory traffic)."""
    cdef int32_t square_pending[BLOCK]
    cdef double squares[2][BLOCK]
    cdef Py_ssize_t start = 0, size = min(<Py_ssize_t>BLOCK, n), next_size, square_count, block = 0
    square_count = prove_squares(grads, squares[0], square_pending, size)
    while start < n:
        settle_squares(grads + start, v + start, squares[block % 2], square_pending, square_count, s)
        next_size = min(<Py_ssize_t>BLOCK, n - start - size)
        square_count = update_block(params + start, grads + start, m + start, v + start, squares[block % 2], size,
                                    s, True, grads + start + size, squares[(block + 1) % 2], next_size,
                                    square_pending)
        start += size
        size = next_size
        block += 1


cdef inline void settle_squares(const double* grads, const double* v, double* squares, int32_t* pending,
                                Py_ssize_t count, const AdamScalars* s) noexcept nogil:
    """squares[i] = grads[i] ** 2.0 for the unproven indices (pending is overwritten): libm
    (Python's way), unless the new v (this step's, from the old v[i]) is the same for both
    results pow may give (argument 5, four at a time: cymg_avx2_settle_squares)."""
    cdef Py_ssize_t i, j
    count = avx2_settle_squares(grads, v, squares, pending, count, s.beta2, s.one_minus_beta2)
    for j in range(count):
        i = pending[j]
        python_square(grads[i], &squares[i])  # cannot raise: nothing_can_raise


cdef Py_ssize_t adam_kernel(double* params, double* grads, double* m, double* v, double* squares,
                            Py_ssize_t n, const AdamScalars* s, bint shortcut, bint v_nonnegative,
                            bint refuse_non_finite, int* status) noexcept nogil:
    """The step over all parameters, or nothing: the index of the first parameter whose
    update Python would raise on (status says why), else -1 after updating them all.
    v_nonnegative: the caller knows that no v[i] is negative (it is not read to check).
    refuse_non_finite: the first nan or infinite gradient is refused (ADAM_NOT_FINITE)
    before anything else is looked at: training's divergence check, read here from the
    pass over the gradients the step makes anyway."""
    cdef Py_ssize_t i, start, libm_calls = 0
    cdef AdamElement unused
    if n == 0:
        return -1
    if HAVE_AVX2_PASSES and shortcut and scalars_keep_signs(s) and nothing_can_raise(grads, v, n, v_nonnegative,
                                                                                    refuse_non_finite):
        squares_ahead_step(params, grads, m, v, n, s)
        return -1
    if refuse_non_finite:
        i = first_non_finite(grads, n)
        if i >= 0:
            status[0] = ADAM_NOT_FINITE
            return i
    # Every g**2 first, into the scratch: no state is written yet.
    if (power_kernel(grads, n, True, shortcut, squares, &libm_calls, status) >= 0
            or any_negative(v, n) or not scalars_keep_signs(s)):
        for i in range(n):  # rare: replay one by one, without storing, to the first error
            status[0] = adam_element(params[i], grads[i], m[i], v[i], s, &unused)
            if status[0] < 0:
                return i
        power_kernel(grads, n, True, shortcut, squares, &libm_calls, status)  # all of them, then
    start = 0
    while start < n:
        update_block(&params[start], &grads[start], &m[start], &v[start], &squares[start],
                     min(<Py_ssize_t>BLOCK, n - start), s, shortcut, NULL, NULL, 0, NULL)
        start += BLOCK
    return -1


# --- Python wrappers ---------------------------------------------------------------------
# The shortcut's constants as the kernel uses them, for the tests that check its proof.
SHORTCUT_MARGIN = MARGIN  # t, in ULPs (argument 1)
SHORTCUT_SQUARE_RANGE = (SQUARE_MIN, SQUARE_MAX)  # |g| where g**2 may be proven (2)
SHORTCUT_ROOT_RANGE = (ROOT_MIN, ROOT_MAX)  # v_hat where v_hat**0.5 may be proven (3)
SHORTCUT_ALLOWANCES = (SQUARE_ALLOWANCE, ROOT_ALLOWANCE)  # t 2^-52 and t 2^-51, as doubles


cdef inline bint overlap(const double* a, Py_ssize_t a_size, const double* b, Py_ssize_t b_size) noexcept:
    """Do two non-empty arrays share memory?"""
    return a_size > 0 and b_size > 0 and a < b + b_size and b < a + a_size


cdef int check_step_arrays(double[::1] params, double[::1] grads, double[::1] m, double[::1] v,
                           double[::1] squares) except -1:
    """ValueError unless the five arrays have one length and share no memory."""
    cdef Py_ssize_t n = params.shape[0], i, j
    cdef const double* starts[5]
    if not (grads.shape[0] == m.shape[0] == v.shape[0] == squares.shape[0] == n):
        raise ValueError(f"adam_step: params, grads, m, v, squares have {n}, {grads.shape[0]}, "
                         f"{m.shape[0]}, {v.shape[0]}, {squares.shape[0]} elements")
    if n == 0:
        return 0
    starts[0], starts[1], starts[2], starts[3], starts[4] = &params[0], &grads[0], &m[0], &v[0], &squares[0]
    for i in range(5):
        for j in range(i):
            if overlap(starts[i], n, starts[j], n):
                raise ValueError("adam_step: params, grads, m, v and squares must not share memory")
    return 0


cdef int run_step(double* params, double* grads, double* m, double* v, double* squares, Py_ssize_t n,
                  const AdamScalars* s, bint shortcut, bint v_nonnegative=False, bint refuse_non_finite=False) except -1:
    """adam_kernel without the GIL, then Python's exception where the kernel refused."""
    cdef Py_ssize_t failed
    cdef int status = 0
    with nogil:
        failed = adam_kernel(params, grads, m, v, squares, n, s, shortcut, v_nonnegative, refuse_non_finite, &status)
    if failed < 0:
        return 0
    where = f"parameter {failed} (gradient {grads[failed]!r}, v {v[failed]!r})"
    if status == POW_OVERFLOW:
        raise OverflowError(f"Adam: the square of the gradient of {where} overflows; nothing was updated")
    if status == ADAM_ZERO_DIVISION:
        raise ZeroDivisionError(f"Adam: division by zero at {where}; nothing was updated")
    if status == ADAM_NOT_FINITE:
        raise FloatingPointError(f"Adam: the gradient of parameter {failed} is {grads[failed]!r}; nothing was updated")
    if status == POW_COMPLEX:
        raise ValueError(f"Adam: negative v_hat at {where} (Python's ** 0.5 would give a complex "
                         "number); nothing was updated")
    raise ValueError(f"Adam: libm pow failed (errno) at {where}; nothing was updated")


def adam_step(double[::1] params, double[::1] grads, double[::1] m, double[::1] v,
              double[::1] squares, *, double beta1, double beta2, double eps,
              double one_minus_beta1, double one_minus_beta2, double bias_correction1,
              double bias_correction2, double lr_t, bint shortcut, bint refuse_non_finite=False) -> None:
    """microgpt's Adam step in place: params, m, v updated, grads zeroed; bit-identical to
    the per-parameter Python loop given the same scalars, computed in Python (AdamScalars).
    `squares` is scratch space of the same length (overwritten).

    Raises where that loop would (OverflowError when a finite gradient's square overflows,
    ZeroDivisionError) and ValueError where it would make a complex number (negative
    v_hat), in every case before changing anything.  `shortcut` allows the proven
    x*x / sqrt shortcut for pow (only where libm's pow has the documented bound).
    `refuse_non_finite`: FloatingPointError, changing nothing, where a gradient is nan or
    infinite (microgpt's loop would write nan into the weights; training refuses it)."""
    cdef AdamScalars s = AdamScalars(
        beta1=beta1, beta2=beta2, eps=eps, one_minus_beta1=one_minus_beta1,
        one_minus_beta2=one_minus_beta2, bias_correction1=bias_correction1,
        bias_correction2=bias_correction2, lr_t=lr_t)
    check_step_arrays(params, grads, m, v, squares)
    if params.shape[0]:
        run_step(&params[0], &grads[0], &m[0], &v[0], &squares[0], params.shape[0], &s, shortcut, False,
                 refuse_non_finite)


# --- the schedule's scalars in C -------------------------------------------------------------
cdef extern from *:
    """
    #include <errno.h>
    #include <math.h>
    /* Python's beta ** n for a float 0 < beta < 1 and an int 1 <= n <= 2^53 (float_pow: no
       special case applies, so libm pow with errno read); 0 where Python would set an
       error or the caller should not trust it (then *ok = 0). */
    static double cymg_python_int_power(double beta, double n, int* ok) {
        double result;
        errno = 0;
        result = pow(beta, n);
        if (errno != 0)
            *ok = 0;
        return result;
    }
    """
    double python_int_power "cymg_python_int_power"(double beta, double n, int* ok) noexcept nogil


cdef const long long EXACT_INT_LIMIT = 1LL << 53  # ints up to this convert to double exactly


cdef bint schedule_in_c(double lr, object step_index, object num_steps, double beta1, double beta2,
                        AdamScalars* s) noexcept:
    """schedule.adam_scalars's three floats, as Python computes them, where that is plain
    IEEE arithmetic and libm pow; False (s untouched) elsewhere, for the caller to ask
    schedule.adam_scalars itself.  For ints 0 <= step_index < 2^53 and 0 < num_steps <= 2^53:
    Python's int / int converts both to double exactly and divides once (long_true_divide's
    fast path), `1 - x` and `lr * y` are one IEEE operation each (lr a float: checked by the
    caller), and float ** int converts the int exactly and, for 0 < beta < 1 and an exponent
    >= 1, calls libm pow and fails only where pow sets errno (float_pow: _Py_ADJUST_ERANGE1
    lets an underflow to 0 pass; here any errno falls back to Python, which decides).
    tests/test_adam.py checks these against schedule.adam_scalars."""
    cdef long long step, total
    cdef int ok = 1, overflow = 0
    cdef double power1, power2
    if type(step_index) is not int or type(num_steps) is not int:
        return False
    step = PyLong_AsLongLongAndOverflow(step_index, &overflow)  # an int: no error, at most overflow
    total = PyLong_AsLongLongAndOverflow(num_steps, &overflow)
    if overflow or not (0 <= step < EXACT_INT_LIMIT and 0 < total <= EXACT_INT_LIMIT):
        return False
    if not (0.0 < beta1 < 1.0 and 0.0 < beta2 < 1.0):
        return False
    power1 = python_int_power(beta1, <double>(step + 1), &ok)
    power2 = python_int_power(beta2, <double>(step + 1), &ok)
    if not ok:
        return False
    s.lr_t = lr * (1.0 - <double>step / <double>total)
    s.bias_correction1 = 1.0 - power1
    s.bias_correction2 = 1.0 - power2
    return True


cdef class AdamState:
    """One optimizer's Adam step, bound once: its moments, its scratch, its constants, and
    where the weights live.  `step(step_index, num_steps)` is VectorAdam.step without
    Python in between: the scalars of schedule.adam_scalars computed in C (schedule_in_c;
    the Python function where that does not apply), no buffers acquired per step.

    m, v: the moments (float64, contiguous; kept, not copied).  lr: the base learning rate.
    schedule: schedule.adam_scalars.  arena (optional): the weights and their gradients are
    its first len(m) nodes, read afresh each step (a growing arena moves them); without
    it, `step_on` takes them.

    private_moments: the caller writes m and v only before a step, and then calls
    moments_changed (VectorAdam hands out read-only views).  The state then knows when no
    v is negative, and skips that check (a read of v: ~0.3 us of a default step): after
    moments_changed found none, and after every step from such v with beta2 >= 0 and
    1 - beta2 >= 0 (each new v = beta2 * v + (1 - beta2) * g**2 is then >= 0 or nan; g**2
    is), unless moments_changed was called while that step ran (the kernel runs without the
    GIL: another thread may write the moments meanwhile; the next step then checks).
    A step that did not raise proves nothing about v by itself: a negative v passes where
    v_hat = v / bias_correction2 overflows to -inf (Python's (-inf) ** 0.5 is inf) or
    rounds to -0.0 (bias_correction2 > 1, a schedule's own), and stays negative; so after
    moments_changed found a negative v every step checks, until it is called again.

    refuse_non_finite: a step refuses (FloatingPointError, changing nothing) a nan or
    infinite gradient, as training must (VectorAdam asks for it): the step reads every
    gradient anyway, so the check costs training no pass of its own."""
    cdef double[::1] m, v, squares
    cdef AdamScalars constants  # beta1, beta2, eps and 1 - beta; the step's three fields per step
    cdef object lr
    cdef double lr_value
    cdef bint lr_is_float, shortcut, refuse_non_finite
    cdef bint private_moments, v_nonnegative  # v_nonnegative: no v[i] < 0 (known only with private moments)
    cdef Py_ssize_t writes  # calls of moments_changed: a step that saw them change knows nothing of v
    cdef object schedule
    cdef Arena arena
    cdef Py_ssize_t size

    def __init__(self, double[::1] m not None, double[::1] v not None, lr, *, double beta1, double beta2,
                 double eps, bint shortcut, schedule, Arena arena=None, bint private_moments=False,
                 bint refuse_non_finite=False):
        self.size = m.shape[0]
        if v.shape[0] != self.size:
            raise ValueError(f"AdamState: m has {self.size} elements, v {v.shape[0]}")
        if self.size and overlap(&m[0], self.size, &v[0], self.size):
            raise ValueError("AdamState: m and v must not share memory")
        if arena is not None and arena.n_fixed < self.size:
            raise ValueError(f"AdamState: the arena has {arena.n_fixed} weights, the moments {self.size}")
        self.m, self.v = m, v
        self.squares = np.empty(self.size)
        self.constants = AdamScalars(beta1=beta1, beta2=beta2, eps=eps, one_minus_beta1=1 - beta1,
                                     one_minus_beta2=1 - beta2, bias_correction1=0.0, bias_correction2=0.0,
                                     lr_t=0.0)
        self.lr, self.lr_is_float = lr, type(lr) is float
        self.lr_value = lr if self.lr_is_float else 0.0
        self.shortcut, self.schedule, self.arena = shortcut, schedule, arena
        self.private_moments = private_moments
        self.refuse_non_finite = refuse_non_finite
        self.moments_changed()

    def moments_changed(self) -> None:
        """m or v were written from outside: check v's signs afresh (private moments only)."""
        self.writes += 1
        self.v_nonnegative = self.private_moments and not (self.size and any_negative(&self.v[0], self.size))

    cdef int step_weights(self, double* params, double* grads, const AdamScalars* s) except -1:
        """One step of the state's moments on these weights and gradients (self.size of each,
        alive until it returns).  From v with no negative, beta2 >= 0 and 1 - beta2 >= 0 leave
        none (see the class), unless moments were written while it ran (then what
        moments_changed found may be stale).  (Not "a step that did not raise": one with
        v = -1.7e308 passes while v / bias_correction2 overflows, tests/test_adam.py.)"""
        cdef Py_ssize_t writes_before = self.writes
        run_step(params, grads, &self.m[0], &self.v[0], &self.squares[0], self.size, s, self.shortcut,
                 self.v_nonnegative, self.refuse_non_finite)
        self.v_nonnegative = (self.v_nonnegative and s.beta2 >= 0.0 and s.one_minus_beta2 >= 0.0
                              and self.writes == writes_before)
        return 0

    def scalars(self, step_index, num_steps) -> tuple:
        """(lr_t, bias_correction1, bias_correction2) as the step uses them."""
        cdef AdamScalars s = self.constants
        self.fill_scalars(step_index, num_steps, &s)
        return s.lr_t, s.bias_correction1, s.bias_correction2

    cdef int fill_scalars(self, object step_index, object num_steps, AdamScalars* s) except -1:
        if not (self.lr_is_float and schedule_in_c(self.lr_value, step_index, num_steps, s.beta1, s.beta2, s)):
            s.lr_t, s.bias_correction1, s.bias_correction2 = self.schedule(self.lr, step_index, num_steps)
        return 0

    def step(self, step_index, num_steps) -> None:
        """One step on the arena's weights (see adam_step for what it raises)."""
        cdef AdamScalars s = self.constants
        cdef double[::1] params, grads  # held: the memory lives while the kernel runs
        if self.arena is None:
            raise TypeError("AdamState.step: bound to no arena (use step_on)")
        self.fill_scalars(step_index, num_steps, &s)
        if self.size:
            params, grads = self.arena.data[:self.size], self.arena.grad[:self.size]
            self.step_weights(&params[0], &grads[0], &s)

    def step_on(self, double[::1] params, double[::1] grads, step_index, num_steps) -> None:
        """One step on these weights and gradients (as step)."""
        cdef AdamScalars s = self.constants
        check_step_arrays(params, grads, self.m, self.v, self.squares)
        self.fill_scalars(step_index, num_steps, &s)
        if self.size:
            self.step_weights(&params[0], &grads[0], &s)


def cpu_has_avx2_fma() -> bool:
    """Can this process run the AVX2 build of this module (cymicrogpt._adam_avx2, compiled
    with AVX2 and FMA)?"""
    return c_cpu_has_avx2_fma() != 0


def divide_array(const double[::1] a, double c, double[::1] out) -> None:
    """out[i] = a[i] / c as the Adam step divides by a bias correction: in the AVX2 build
    without the divider where argument 6 applies, else (and in the baseline build) by
    division; the same bits either way (the tests compare them)."""
    cdef Py_ssize_t i, done = 0, n = a.shape[0]
    if out.shape[0] != n:
        raise ValueError(f"divide_array: a has {n} elements, out has {out.shape[0]}")
    if n == 0:
        return
    if &a[0] < &out[0] + n and &out[0] < &a[0] + n:
        raise ValueError("divide_array: a and out must not share memory")
    with nogil:
        if HAVE_AVX2_PASSES:
            avx2_divide(&a[0], c, &out[0], n)
            done = n - n % 4
        for i in range(done, n):
            out[i] = a[i] / c


def power_array(const double[::1] base, double exponent, double[::1] out, *, bint shortcut) -> int:
    """out[i] = base[i] ** exponent exactly as Python's float ** computes it, for Adam's
    two exponents (2.0 and 0.5), through the very passes the Adam step runs; returns how
    many elements called libm pow.  Raises at the first element where Python raises
    (OverflowError) or would return a complex number (ValueError); out is then partial."""
    cdef Py_ssize_t libm_calls = 0, failed
    cdef int status = 0
    cdef bint square = exponent == 2.0
    if not square and exponent != 0.5:
        raise ValueError(f"power_array: exponent must be 2.0 or 0.5, got {exponent!r}")
    if base.shape[0] != out.shape[0]:
        raise ValueError(f"power_array: base has {base.shape[0]} elements, out has {out.shape[0]}")
    if base.shape[0] and &base[0] < &out[0] + out.shape[0] and &out[0] < &base[0] + base.shape[0]:
        raise ValueError("power_array: base and out must not share memory")
    with nogil:
        failed = power_kernel(&base[0] if base.shape[0] else NULL, base.shape[0], square, shortcut,
                              &out[0] if out.shape[0] else NULL, &libm_calls, &status)
    if failed < 0:
        return libm_calls
    message = f"{base[failed]!r} ** {exponent!r} (element {failed})"
    if status == POW_OVERFLOW:
        raise OverflowError(f"{message} overflows")
    if status == POW_COMPLEX:
        raise ValueError(f"{message} is complex")
    raise ValueError(f"{message}: libm pow failed (errno)")
