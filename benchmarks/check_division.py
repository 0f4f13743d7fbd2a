"""Check the AVX2 Adam pass's division by a bias correction against the division itself.

The AVX2 update pass (csrc/cymicrogpt/adam_shortcut.h, cymg4_divide_by_reciprocal) divides
m and v by the step's bias corrections c without the divider: q0 = RN(a*hi + RN(a*lo)) from
hi = RN(1/c) and lo ~ 1/c - hi, then Markstein's correction (two FMAs).  _adam.pyx's
argument 6 proves the result is RN(a/c); this script tests it through the very route the
pass takes (`divide_array` of the AVX2 build), on

1. the divisors a run uses: every bias correction below 1 of a run with microgpt's betas
   (1 - 0.85**t for t = 1..230, 1 - 0.99**t for t = 1..3725), and log-uniform random ones
   in the route's range [2^-20, 1) with a few edges (2^-20, 0.5, 0.75, the double below 1);
2. dividends: log-uniform random doubles over the route's range [2^-890, 2^1000] (random
   signs), moments as the step sees them (N(0, 1) * 10^U(-14, 1)), and constructed ones
   whose quotient lies next to a midpoint between two doubles: a ~ c * (q + ulp(q)/2) (two
   roundings) for random q, and up to two doubles either side (quotients on both sides of
   the midpoint, down to ~2^-27 ULP from it over 10^8 of them), and the hardest: quotients
   within ~2^-104 of their size from a midpoint, closer than q0's own error, constructed
   from c's significand (hardest_dividends), on which only the correction rounds right;
   plus the values outside the route (0, -0, subnormal, the range's edges, inf, nan), which
   the pass divides;

against NumPy's division (IEEE, correctly rounded), bit for bit; mismatches must be 0 (the
exit status is 1 otherwise).

    python benchmarks/check_division.py [--millions 100]
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from cymicrogpt import _adam
from cymicrogpt.config import ADAM_BETA1, ADAM_BETA2


def run_divisors() -> np.ndarray:
    """The bias corrections below 1.0 of a run with microgpt's betas, as Python computes them."""
    corrections = [1 - beta ** t for beta in (ADAM_BETA1, ADAM_BETA2) for t in range(1, 4000)]
    return np.array(sorted({c for c in corrections if c < 1.0}))


def dividends(rng: np.random.Generator, c: float, n: int) -> np.ndarray:
    """n dividends for divisor c: a third random over the route's range, a third moment-like,
    a third next to a midpoint of the quotient (a ~ c (q + ulp(q)/2) and its neighbours)."""
    third = n // 3
    signs = rng.choice([-1.0, 1.0], n)
    wide = signs[:third] * np.exp2(rng.uniform(-890, 1000, third))
    moments = rng.standard_normal(third) * 10.0 ** rng.uniform(-14, 1, third)
    q = np.exp2(rng.uniform(-60, 20, n - 2 * third)) * signs[2 * third:]
    half_ulp = np.spacing(np.abs(q)) / 2  # exact: a power of two
    near = c * q + c * half_ulp  # one rounding each; the midpoint's image, within ~an ulp
    step = rng.integers(-2, 3, near.size)  # and up to two doubles either side
    near = np.where(step > 0, np.nextafter(near, np.inf), np.where(step < 0, np.nextafter(near, -np.inf), near))
    return np.concatenate([wide, moments, near])


def hardest_dividends(c: float, rng: np.random.Generator) -> np.ndarray:
    """Dividends whose quotient by c lies within ~2^-104 of its size from a midpoint between
    two doubles: closer than q0's own error (argument 6, b), where only the correction
    rounds right.  With c = C 2^-d (C odd), an odd N in [2^53, 2^54) with C N = r (mod 2^54),
    r odd and small, makes C N = A 2^54 + r with A < 2^53: a = A 2^(54+t) is a double, and
    a / c = N 2^(t+d) - r 2^(t+d) / C, next to the midpoint N 2^(t+d) (N has 54 bits)."""
    if not (math.isfinite(c) and c != 0.0):
        return np.empty(0)
    numerator = float(c).as_integer_ratio()[0]
    inverse = pow(numerator, -1, 2**54)
    found = []
    for r in range(-15, 16, 2):
        n = r * inverse % 2**54
        if n >= 2**53:
            a = (numerator * n - r) >> 54
            found.extend(float(a) * 2.0 ** float(54 + t) for t in rng.integers(-900, 900, 2))
    return np.array([sign * x for x in found for sign in (1.0, -1.0) if 2.0**-890 <= x <= 2.0**1000])


SPECIAL = np.array([0.0, -0.0, 5e-324, -1e-310, 2.0**-1022, 2.0**-890, np.nextafter(2.0**-890, 0.0),
                    -(2.0**-890), 2.0**1000, np.nextafter(2.0**1000, np.inf), 1e308, -np.inf, np.inf, np.nan])


def check(divide, divisors: np.ndarray, per_divisor: int, rng: np.random.Generator) -> tuple[int, int]:
    """(mismatches, inputs) over `divisors`, `per_divisor` random dividends each."""
    mismatches = inputs = 0
    out = np.empty(0)
    for c in divisors:
        a = np.concatenate([dividends(rng, float(c), per_divisor), hardest_dividends(float(c), rng), SPECIAL])
        if out.size != a.size:
            out = np.empty(a.size)
        divide(a, float(c), out)
        with np.errstate(all="ignore"):
            expected = a / c
        bad = out.view(np.uint64) != expected.view(np.uint64)
        if bad.any():
            i = int(np.argmax(bad))
            print(f"  MISMATCH c={float(c).hex()} a={a[i].hex()}: {out[i].hex()} vs {expected[i].hex()}")
        mismatches += int(bad.sum())
        inputs += a.size
    return mismatches, inputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", type=float, default=100.0, help="random dividends, in millions")
    args = parser.parse_args()
    if not _adam.cpu_has_avx2_fma():
        print("this CPU does not run the AVX2 build: nothing to check")
        return 0
    from cymicrogpt import _adam_avx2

    rng = np.random.default_rng(2026)
    run = run_divisors()
    edges = np.array([2.0**-20, 0.5, 0.75, np.nextafter(1.0, 0.0)])
    total = int(args.millions * 1e6)
    random_count = max(1, total // 2 // 100_000)
    randoms = np.exp2(rng.uniform(-20, 0, random_count))
    started = time.perf_counter()
    failures = 0
    for name, divisors in (("the run's bias corrections", run), ("random divisors in [2^-20, 1)", randoms),
                           ("edge divisors", edges)):
        per = max(1_000, total // 2 // max(1, divisors.size)) if name != "edge divisors" else 1_000_000
        bad, count = check(_adam_avx2.divide_array, divisors, per, rng)
        failures += bad
        print(f"{name}: {divisors.size} divisors, {count:,} dividends, {bad} mismatches")
    print(f"{time.perf_counter() - started:.0f} s; {'OK' if failures == 0 else 'FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
