"""ladder/agreement.py: printed losses against the exact ones, at the precision printed."""
from __future__ import annotations

import math

import pytest

from cymicrogpt.ladder.agreement import AGREES_MIN_DIGITS, FULL_DIGITS, check_floats, check_losses, correct_digits

EXACT = [3.3659669475848504, 3.4242727838717717, 3.177802125458052, 2.9050361931826434]


def test_repr_prints_of_the_same_floats_are_identical_bit_for_bit():
    agreement = check_losses([repr(x) for x in EXACT], EXACT)
    assert (agreement.verdict, agreement.digits, agreement.first_difference) == ("identical", FULL_DIGITS, None)
    assert agreement.describe() == f"identical, bit for bit ({len(EXACT)} steps)"


def test_one_ulp_off_in_full_precision_is_not_identical():
    printed = [repr(x) for x in EXACT]
    printed[2] = repr(math.nextafter(EXACT[2], 0.0))
    agreement = check_losses(printed, EXACT)
    assert (agreement.verdict, agreement.first_difference) == ("agrees", 3)
    assert agreement.digits == correct_digits(math.nextafter(EXACT[2], 0.0), EXACT[2]) >= 15


def test_rounded_prints_are_identical_to_the_digits_printed():
    agreement = check_losses([f"{x:.4f}" for x in EXACT], EXACT)
    assert (agreement.verdict, agreement.digits) == ("identical", 5)
    assert agreement.describe() == f"identical, to the 5 digits printed ({len(EXACT)} steps)"


def test_a_four_decimal_print_that_reads_back_as_a_double_is_still_rounded():
    # "3.3660" is no repr, but "2.5000" of exactly 2.5 is read as rounded, not as a full print
    assert check_losses(["2.5000", "2.2500"], [2.5, 2.25]).digits == 5


def test_a_drift_beyond_the_printed_digits_agrees_to_fewer():
    drifted = [x * (1 + 1e-6 * i) for i, x in enumerate(EXACT)]  # a float32-like drift, growing
    agreement = check_losses([repr(x) for x in drifted], EXACT)
    assert agreement.verdict == "agrees" and agreement.first_difference == 2
    assert agreement.digits == min(correct_digits(d, x) for d, x in zip(drifted, EXACT))
    assert AGREES_MIN_DIGITS <= agreement.digits < FULL_DIGITS


def test_another_run_differs_from_the_first_step_that_is_off():
    other = [EXACT[0], EXACT[1] + 0.2, EXACT[2], EXACT[3]]
    agreement = check_losses([f"{x:.4f}" for x in other], EXACT)
    assert (agreement.verdict, agreement.first_difference) == ("differs", 2)
    assert agreement.describe() == f"differs from step 2 of {len(EXACT)}"


@pytest.mark.parametrize("value, exact, digits", [(3.3660, 3.36596, 5), (3.4, 3.36596, 2), (1.0, 2.0, 0),
                                                  (math.nan, 2.0, 0), (2.0, 2.0, FULL_DIGITS)])
def test_correct_digits(value, exact, digits):
    assert correct_digits(value, exact) == digits


def test_unreadable_or_missing_losses():
    assert check_losses(["nan"] * len(EXACT), EXACT).verdict == "differs"
    with pytest.raises(ValueError, match="as many"):
        check_losses(["3.0"], EXACT)


def test_floats_known_in_full_are_compared_with_float_equality():
    assert check_floats([3.0, 2.5], [3.0, 2.5]).describe() == "identical, bit for bit (2 steps)"  # short reprs too
    assert check_floats([3.0, 2.5 + 2**-51], [3.0, 2.5]).first_difference == 2
