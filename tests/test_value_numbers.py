"""cymicrogpt.Value with Fraction and NumPy scalar operands, against cymicrogpt.reference.Value.

Where the README lists no difference, the data, the gradients, the exception and the warnings
are the reference's (float ==).  Each difference its "Remaining differences" lists is pinned
here as documented, the reference's side computed by running the reference."""
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

from cymicrogpt import Value
from cymicrogpt.reference import Value as RefValue


def same_or_nan(x):
    """x itself, or the string "nan" for a NaN (which is == to nothing)."""
    return "nan" if x != x else x


def outcome(V, build, *inputs):
    """Leaves V(x) for the inputs, out = build(*leaves), out.backward(): the result is
    ("ok", out.data, leaf grads) or ("raise", the exception's type), with the warnings'
    categories."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            leaves = [V(x) for x in inputs]
            out = build(*leaves)
            out.backward()
            result = ("ok", same_or_nan(out.data), [same_or_nan(leaf.grad) for leaf in leaves])
        except (ArithmeticError, ValueError) as error:
            result = ("raise", type(error))
    return result + (sorted({w.category.__name__ for w in caught}),)


def assert_floats(result):
    """Value's data and gradients are Python floats (or NaN, as the string "nan")."""
    if result[0] == "ok":
        assert all(type(x) is float or x == "nan" for x in [result[1], *result[2]]), result


# --- Fraction ---------------------------------------------------------------------------

FRACTION_POWERS = [Fraction(1, 3), Fraction(2, 3), Fraction(-1, 2), Fraction(7, 3), Fraction(3),
                   Fraction(-2), Fraction(0)]


@pytest.mark.parametrize("base", [3.0, 0.5, 1e300, 2.0, 0.0])
@pytest.mark.parametrize("exponent", FRACTION_POWERS, ids=str)
def test_fraction_exponent_is_microgpts(base, exponent):
    """microgpt's local gradient `other * x ** (other - 1)` takes `other - 1` in Fractions:
    Value(3.0) ** Fraction(1, 3) once had a gradient one bit off (1/3 - 1 in floats)."""
    got = outcome(Value, lambda x: x**exponent, base)
    assert got == outcome(RefValue, lambda x: x**exponent, base)
    assert_floats(got)


FRACTION_OPS = {
    "x + F": lambda x: x + Fraction(1, 3),
    "F + x": lambda x: Fraction(1, 3) + x,
    "x - F": lambda x: x - Fraction(1, 3),
    "F - x": lambda x: Fraction(1, 3) - x,
    "F / x": lambda x: Fraction(1, 3) / x,
    # a float gradient reaches the Fraction product: the reference's gradients are floats
    "x * F * 1.5": lambda x: x * Fraction(1, 3) * 1.5,
    "x / F * 1.5": lambda x: x / Fraction(3, 7) * 1.5,
    "F * x * x.exp()": lambda x: Fraction(1, 10) * x * x.exp(),
    # a Fraction gradient reaches x * x, whose local gradients are floats
    "x * x * F": lambda x: x * x * Fraction(1, 3),
}


@pytest.mark.parametrize("op", FRACTION_OPS)
@pytest.mark.parametrize("base", [3.0, -0.7])
def test_fraction_operands_that_give_float_gradients_match(op, base):
    got = outcome(Value, FRACTION_OPS[op], base)
    assert got == outcome(RefValue, FRACTION_OPS[op], base)
    assert_floats(got)


@pytest.mark.parametrize(
    "build",
    [
        lambda x: x * Fraction(1, 3),
        lambda x: Fraction(2, 3) * x,
        lambda x: x / Fraction(3, 7),
        lambda x: x * Fraction(1, 3) * 2 + 1.5,  # through an int factor and an add
    ],
)
def test_a_fraction_factor_gives_the_reference_exact_gradients(build):
    """Documented: while the gradient reaching a Fraction product is an int or a Fraction,
    the reference's gradient is an exact Fraction; Value's is that Fraction rounded."""
    got, want = outcome(Value, build, 3.0), outcome(RefValue, build, 3.0)
    assert got[1] == want[1]
    assert type(want[2][0]) is Fraction and got[2][0] == float(want[2][0]) != want[2][0]
    assert_floats(got)


def test_fraction_gradients_are_rounded_at_each_addition():
    """Documented: three `x * Fraction(1, 10)` add up to exactly 3/10 in the reference and to
    0.1 + 0.1 + 0.1, rounded twice, here."""
    def build(x):
        return x * Fraction(1, 10) + x * Fraction(1, 10) + x * Fraction(1, 10)

    got, want = outcome(Value, build, 3.0), outcome(RefValue, build, 3.0)
    tenth = float(Fraction(1, 10))
    assert want[2] == [Fraction(3, 10)]
    assert got[2] == [0.0 + tenth + tenth + tenth] != [float(want[2][0])]


def test_fraction_and_int_data_are_floats():
    """Documented: the reference keeps a Fraction's or an int's data and computes on exactly."""
    assert type(RefValue(Fraction(1, 3)).data) is Fraction
    assert Value(Fraction(1, 3)).data == float(Fraction(1, 3))
    assert type((RefValue(10) ** 400).data) is int
    with pytest.raises(OverflowError):
        Value(10) ** 400


def test_negative_base_to_a_fraction_power_raises():
    """Documented: the reference makes a complex number."""
    assert type((RefValue(-8.0) ** Fraction(1, 3)).data) is complex
    with pytest.raises(ValueError, match="fractional"):
        Value(-8.0) ** Fraction(1, 3)


# --- NumPy scalars ----------------------------------------------------------------------

NUMPY_POWERS = [
    (3.0, np.float64(0.5)),
    (0.0, np.float64(0.5)),  # the gradient 0.5 * 0.0 ** -0.5: inf, with a RuntimeWarning
    (0.0, np.float64(-1.0)),  # inf where Python's float ** raises ZeroDivisionError
    (0.0, np.int64(-1)),
    (10.0, np.float64(400.0)),  # inf where Python's float ** raises OverflowError
    (-8.0, np.float64(1 / 3)),  # nan where Python's float ** makes a complex number
    (3.0, np.int64(2)),
    (3.0, np.float32(0.1)),  # NumPy computes this one in float32
    (2.0, np.float16(0.3)),
]


@pytest.mark.parametrize("base, exponent", NUMPY_POWERS, ids=repr)
def test_numpy_exponent_is_numpys_power_as_in_microgpt(base, exponent):
    got = outcome(Value, lambda x: x**exponent, base)
    assert got == outcome(RefValue, lambda x: x**exponent, base)
    assert_floats(got)


NUMPY_OPS = {
    "x + c": lambda x: x + np.float64(0.1),
    "x - c": lambda x: x - np.float64(0.1),
    "x * c": lambda x: x * np.float64(-0.5),
    "x / c": lambda x: x / np.float64(0.1),
    "x / 0": lambda x: x / np.float64(0.0),  # inf from NumPy's 0.0 ** -1, with its warning
    "x * c, exp, log, relu": lambda x: (x * np.float64(0.3)).exp().log().relu(),
    # on the left NumPy hands the Value a Python float: 0.0 ** -1 raises in both
    "(c * x) ** -1": lambda x: (np.float64(0.0) * x) ** -1,
    "(c - x) ** -1": lambda x: (np.float64(2.0) - x) ** -1,
    "c / x": lambda x: np.float64(1.5) / x,
}


@pytest.mark.parametrize("op", NUMPY_OPS)
@pytest.mark.parametrize("base", [2.0, 0.0])
def test_numpy_float64_operands_match(op, base):
    got = outcome(Value, NUMPY_OPS[op], base)
    assert got == outcome(RefValue, NUMPY_OPS[op], base)
    assert_floats(got)


NUMPY_DATA = [
    # (build, inputs, Value's error): the reference's node holds a np.float64
    (lambda x: (x * np.float64(0.0)) ** -1, (3.0,), ZeroDivisionError),
    (lambda x: (x - np.float64(4.0)) ** 0.5, (3.0,), ValueError),
    (lambda x: (x * np.float64(1e100)) ** 2, (1e200,), OverflowError),
    (lambda x: (x ** np.int64(2)) ** -1, (0.0,), ZeroDivisionError),
    (lambda x: x**-1, (np.float64(0.0),), ZeroDivisionError),
    (lambda x, y: y / (x * np.float64(0.0)), (3.0, 1.0), ZeroDivisionError),
]


@pytest.mark.parametrize("build, inputs, error", NUMPY_DATA)
def test_a_later_power_of_numpy_data_raises_where_the_reference_gives_inf_or_nan(build, inputs, error):
    """Documented: such a node holds a np.float64 in the reference, whose NumPy power gives
    inf or nan with a RuntimeWarning."""
    want = outcome(RefValue, build, *inputs)
    assert want[0] == "ok" and not math.isfinite(float(want[1])) and want[-1] == ["RuntimeWarning"]
    assert outcome(Value, build, *inputs) == ("raise", error, [])


def test_numpy_overflow_in_a_product_gives_no_warning():
    """Documented: the same inf, without NumPy's overflow RuntimeWarning."""
    def build(x):
        return x * np.float64(1e300)

    got, want = outcome(Value, build, 1e300), outcome(RefValue, build, 1e300)
    assert got[:3] == want[:3] and got[1] == math.inf
    assert (got[3], want[3]) == ([], ["RuntimeWarning"])


def test_numpy_float32_operand_is_its_float_value():
    """Documented: the reference adds in float32."""
    def build(x):
        return x + np.float32(0.1)

    got, want = outcome(Value, build, 3.0), outcome(RefValue, build, 3.0)
    assert type(build(RefValue(3.0)).data) is np.float32
    assert got[1] == 3.0 + float(np.float32(0.1)) != float(want[1])  # (== would compare in float32)
