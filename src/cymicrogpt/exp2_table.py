"""The table of the fused pass's exp shortcut (csrc/cymicrogpt/exp_shortcut.h): 2^(j/N) for
j = 0 .. N-1 as double-doubles hi + lo, hi = 2^(j/N) rounded to nearest and lo = the rest
rounded to nearest, from exact integer arithmetic (no libm, no decimal approximation).

2^(1/N) 2^P is bracketed by integers (nested isqrt: floor(sqrt(floor(v))) = floor(v^(1/4)),
so `bits` of them give floor(v^(1/N)) exactly), and so, multiplying, is every 2^(j/N) 2^P;
an entry is taken only where both ends of its bracket round to the same doubles (Python's
int / int is correctly rounded), else this raises.  About 2 ms, once per process, in the
build that uses it (cymicrogpt._fused_avx2)."""
from __future__ import annotations

import math

FRACTION_BITS = 160  # binary places of the brackets: ~50 more than the doubles need


def exp2_table(bits: int) -> tuple[list[float], list[float]]:
    """([hi_0 .. hi_{N-1}], [lo_0 .. lo_{N-1}]) for N = 2^bits: hi_j = RN(2^(j/N)),
    lo_j = RN(2^(j/N) - hi_j)."""
    n, scale = 1 << bits, 1 << FRACTION_BITS
    root = 1 << (FRACTION_BITS * n + 1)  # 2^(1/N) 2^P = (2^(P N + 1))^(1/N)
    for _ in range(bits):
        root = math.isqrt(root)  # now floor(2^(1/N) 2^P) <= 2^(1/N) 2^P < root + 1
    low = high = scale  # low <= 2^(j/N) 2^P <= high, for j = 0 (exact)
    his, los = [], []
    for j in range(n):
        hi = low / scale
        if high / scale != hi:
            raise ArithmeticError(f"2^({j}/{n}): {FRACTION_BITS} bits do not decide its rounding")
        hi_scaled = int(hi * 2.0**52) << (FRACTION_BITS - 52)  # hi 2^P, exactly (1 <= hi < 2)
        lo = (low - hi_scaled) / scale
        if (high - hi_scaled) / scale != lo:
            raise ArithmeticError(f"2^({j}/{n}): {FRACTION_BITS} bits do not decide its low part")
        his.append(hi)
        los.append(lo)
        low = low * root // scale
        high = -(-high * (root + 1) // scale)
    return his, los
