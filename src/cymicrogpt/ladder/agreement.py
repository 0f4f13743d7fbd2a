"""How far a program's printed losses are from the exact reference's, at the precision printed.

A program prints its losses as text: `repr()` (every digit of the double), or rounded, e.g.
microgpt's original `loss 3.3660` (4 decimals).  Each loss is compared with the reference's
at the same step, and the whole run gets one verdict:

    identical  every printed loss is the reference's, rounded as printed.  When every loss
               is printed in full (each text reads back as one double, and the format has
               15 or more significant digits: `repr` or `%.17g`), that is float `==`: bit for bit.
    agrees     not identical, but every loss has at least AGREES_MIN_DIGITS significant
               digits right; `digits` says how many (the worst step's count).
    differs    some step has fewer: the run is not the reference's computation.

`first_difference` is the first step (1-based) whose printed loss is not the reference's
rounded as printed; None when identical.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

FULL_DIGITS = 17  # a double is identified by 17 significant digits
AGREES_MIN_DIGITS = 3  # fewer: a different run (losses near log(vocab) share 1-2 digits by chance)
IDENTICAL, AGREES, DIFFERS = "identical", "agrees", "differs"


@dataclass(frozen=True)
class Agreement:
    verdict: str  # IDENTICAL, AGREES or DIFFERS
    digits: int  # identical: the digits printed (17: bit for bit); otherwise the worst step's correct digits
    first_difference: Optional[int]  # 1-based step, None when identical
    steps: int  # how many losses were compared

    def describe(self) -> str:
        """The table's cell, e.g. "identical, bit for bit (300 steps)"."""
        if self.verdict == IDENTICAL:
            how = "bit for bit" if self.digits >= FULL_DIGITS else f"to the {self.digits} digits printed"
            return f"identical, {how} ({self.steps} steps)"
        if self.verdict == AGREES:
            return (f"agrees to {self.digits} digits (identical as printed up to step "
                    f"{self.first_difference - 1} of {self.steps})")
        return f"differs from step {self.first_difference} of {self.steps}"


def check_losses(printed: Sequence[str], reference: Sequence[float]) -> Agreement:
    """The verdict on `printed` (the texts of steps 1, 2, ...) against `reference` (as many floats)."""
    in_full = all(map(identifies_a_double, printed)) and max(map(significant_digits, printed), default=0) >= 15
    return _judge(printed, [_float(text) for text in printed], reference, in_full)


def check_floats(values: Sequence[float], reference: Sequence[float]) -> Agreement:
    """The verdict on floats known in full (a built-in rung's losses): float == or not."""
    return _judge([repr(value) for value in values], list(values), reference, in_full=True)


def _judge(printed: Sequence[str], values: Sequence[float], reference: Sequence[float], in_full: bool) -> Agreement:
    if len(printed) != len(reference) or not printed:
        raise ValueError(f"need as many losses as reference ones, got {len(printed)} and {len(reference)}")
    first_difference = None
    worst = FULL_DIGITS
    for step, (text, value, exact) in enumerate(zip(printed, values, reference), start=1):
        same = value == exact if in_full else abs(value - exact) <= half_unit(text) * (1 + 1e-9)
        if not same and first_difference is None:
            first_difference = step
        digits = (FULL_DIGITS if in_full else significant_digits(text)) if same else correct_digits(value, exact)
        worst = min(worst, digits)
    if first_difference is None:
        return Agreement(IDENTICAL, worst, None, len(printed))
    verdict = AGREES if worst >= AGREES_MIN_DIGITS else DIFFERS
    return Agreement(verdict, worst, first_difference, len(printed))


def correct_digits(value: float, exact: float) -> int:
    """How many leading significant digits of `exact` `value` gets right: the largest K in
    0..17 with |value - exact| at most half a unit in exact's K-th significant digit."""
    if value == exact:
        return FULL_DIGITS
    error = abs(value - exact)
    if not (math.isfinite(error) and exact != 0):
        return 0
    leading = math.floor(math.log10(abs(exact)))  # the exponent of exact's first significant digit
    return max(0, min(FULL_DIGITS, math.floor(leading + 1 - math.log10(2 * error))))


def significant_digits(text: str) -> int:
    """Significant digits in a printed number ("3.3660": 5, "0.0123": 3)."""
    mantissa = re.split(r"[eE]", text.lstrip("+-"))[0].replace(".", "")
    return len(mantissa.lstrip("0")) or 1


def half_unit(text: str) -> float:
    """Half a unit in the last printed place: how far the printed value may be from the true one."""
    mantissa, _, exponent = text.lower().lstrip("+-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def identifies_a_double(text: str) -> bool:
    """17 significant digits, or the shortest text that reads back as its double (repr)."""
    try:
        return significant_digits(text) >= FULL_DIGITS or repr(float(text)) == text
    except ValueError:
        return False


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
