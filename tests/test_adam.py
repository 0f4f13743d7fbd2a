"""The compiled Adam step (csrc/cymicrogpt/_adam.pyx) against microgpt's Python loop.

Bit-identity is checked on the bit patterns (np.uint64 views), so -0.0 vs 0.0 and nan
payloads count too.  Every test runs with the pow shortcut on and off: off, the kernel
calls libm pow as Python does; on, it must give the same bits wherever it skips it.
Both builds of the kernel (baseline, and AVX2 where the CPU runs it) are tested, each
against the Python loop and against the other.
"""
from __future__ import annotations

import math
import os
import platform
import random
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import avx2_build, benchmark_script

from cymicrogpt import _adam
from cymicrogpt._adam import adam_step, power_array
from cymicrogpt.config import ADAM_BETA2, ADAM_EPS, GPTConfig
from cymicrogpt.engines import adam, make_engine
from cymicrogpt.engines.adam import VectorAdam, pow_shortcut_allowed
from cymicrogpt.params import init_weights, state_dict_layout
from cymicrogpt.reference import ReferenceAdam, Value
from cymicrogpt.schedule import adam_scalars

SHORTCUT = pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "plain-pow"])
SQRT_MAX = math.sqrt(sys.float_info.max)  # about 1.34e154: larger gradients' squares overflow


def bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.uint64)


def odd_gradient(rng: random.Random) -> float:
    """Gradients of every kind: ~20% zeros, subnormal, tiny, huge, powers of two, and
    ordinary ones over 15 decades."""
    kind = rng.random()
    if kind < 0.2:
        return rng.choice([0.0, -0.0])
    if kind < 0.3:
        return rng.choice([5e-324, -5e-324, 1e-310, -2.2250738585072014e-308, 1e-160, -3e-155,
                           1e-170, 2.0**-480, 2.0**-481, 2.0**511, -(2.0**511) * 1.5, SQRT_MAX,
                           1e150, -1e153, 1.0, -1.0, 2.0, 0.5, 0.25, 3.0, 2.0**-40])
    return rng.gauss(0.0, 1.0) * 10.0 ** rng.uniform(-12, 3)


class Pair:
    """The same parameters under ReferenceAdam (Values) and VectorAdam (arrays)."""

    def __init__(self, size: int, shortcut: bool, seed: int = 0, lr: float = 0.01, kernels=adam.ADAM_KERNELS,
                 eps: float = ADAM_EPS) -> None:
        self.rng = random.Random(seed)
        self.values = [Value(self.rng.gauss(0.0, 0.08)) for _ in range(size)]
        self.params = np.array([p.data for p in self.values])
        self.grads = np.zeros(size)
        self.reference = ReferenceAdam(self.values, lr)
        self.reference.eps = eps
        self.fast = VectorAdam(lambda: (self.params, self.grads), size, lr, shortcut=shortcut, kernels=kernels, eps=eps)

    def set_gradients(self, gradients) -> None:
        for value, g in zip(self.values, gradients):
            value.grad = g
        self.grads[:] = gradients

    def step(self, step: int, num_steps: int) -> None:
        self.reference.step(step, num_steps)
        self.fast.step(step, num_steps)

    def assert_identical(self, what: str) -> None:
        assert (bits([p.data for p in self.values]) == bits(self.params)).all(), f"params differ {what}"
        assert (bits(self.reference.m) == bits(self.fast.m)).all(), f"m differs {what}"
        assert (bits(self.reference.v) == bits(self.fast.v)).all(), f"v differs {what}"
        assert (bits(self.grads) == bits(np.zeros_like(self.grads))).all(), f"grads not zeroed {what}"

    def assert_step_refused(self, error: type[Exception], match: str, step: int, num_steps: int) -> None:
        """The compiled step raises `error` and leaves params, grads, m and v untouched."""
        arrays = (self.params, self.grads, self.fast.m, self.fast.v)
        before = [bits(a).copy() for a in arrays]
        with pytest.raises(error, match=match):
            self.fast.step(step, num_steps)
        assert all((bits(a) == saved).all() for a, saved in zip(arrays, before))


@SHORTCUT
def test_steps_match_reference_adam_bit_for_bit(shortcut):
    pair = Pair(3000, shortcut, seed=1)
    num_steps = 12
    for step in range(num_steps):
        pair.set_gradients([odd_gradient(pair.rng) for _ in range(3000)])
        pair.step(step, num_steps)
        pair.assert_identical(f"after step {step}")


@SHORTCUT
def test_parameters_without_gradient_and_restored_moments(shortcut):
    """Zero gradients for several steps (v_hat decays, then is 0 for never-touched ones),
    and moments restored with set_moments, as after loading a checkpoint."""
    pair = Pair(500, shortcut, seed=2)
    m = [pair.rng.gauss(0, 1e-3) for _ in range(500)]
    v = [abs(pair.rng.gauss(0, 1e-6)) if i % 3 else 0.0 for i in range(500)]
    pair.reference.set_moments(m, v)
    pair.fast.set_moments(m, v)
    for step in range(6):
        pair.set_gradients([0.0 if i % 2 else pair.rng.gauss(0, 0.1) for i in range(500)] if step % 2 else [0.0] * 500)
        pair.step(step + 100, 1000)
        pair.assert_identical(f"after step {step}")
    m_fast, v_fast = pair.fast.moments()
    assert (bits(m_fast) == bits(pair.reference.m)).all() and (bits(v_fast) == bits(pair.reference.v)).all()


NONFINITE_GRADIENTS = [math.nan, math.inf, -math.inf, 1e-3, -math.nan, 0.0, 2.0, -1e300 * 1e10]


def python_adam_floats(params, grads, m, v, lr_t, bias_correction1, bias_correction2):
    """microgpt's loop on plain floats (its expressions, its order), for the kernel's own
    semantics where nothing is refused."""
    beta1, beta2 = VectorAdam.beta1, VectorAdam.beta2
    for i, g in enumerate(grads):
        m[i] = beta1 * m[i] + (1 - beta1) * g
        v[i] = beta2 * v[i] + (1 - beta2) * g**2
        params[i] -= lr_t * (m[i] / bias_correction1) / ((v[i] / bias_correction2) ** 0.5 + ADAM_EPS)


@SHORTCUT
@pytest.mark.parametrize("size", [8, 1003, 4192])
def test_nan_and_inf_gradients_pass_through_the_kernel_as_python_does(shortcut, size):
    """Asked not to refuse them (adam_step's default), the kernel writes nan as microgpt's
    loop does (the non-finite gradients scattered over the groups, blocks and tail)."""
    rng = random.Random(size)
    grads = [rng.gauss(0, 0.1) for _ in range(size - 8)] + NONFINITE_GRADIENTS
    rng.shuffle(grads)
    params = [rng.gauss(0, 0.08) for _ in range(size)]
    expected, m, v = list(params), [0.0] * size, [0.0] * size
    lr_t, bias_correction1, bias_correction2 = adam_scalars(0.01, 0, 10)
    python_adam_floats(expected, grads, m, v, lr_t, bias_correction1, bias_correction2)
    arrays = [np.array(params), np.array(grads), np.zeros(size), np.zeros(size), np.zeros(size)]
    for kernels in kernel_builds():
        got = [a.copy() for a in arrays]
        kernels.adam_step(*got, beta1=VectorAdam.beta1, beta2=VectorAdam.beta2, eps=ADAM_EPS,
                          one_minus_beta1=1 - VectorAdam.beta1, one_minus_beta2=1 - VectorAdam.beta2,
                          bias_correction1=bias_correction1, bias_correction2=bias_correction2, lr_t=lr_t,
                          shortcut=shortcut)
        assert (bits(got[0]) == bits(expected)).all() and (bits(got[2]) == bits(m)).all(), kernels.__name__
        assert (bits(got[3]) == bits(v)).all() and np.isnan(got[0]).sum() == 5  # one per nan or inf gradient


@SHORTCUT
@pytest.mark.parametrize("where", [0, 5, 701, 1002])  # in the quick test's groups of 8 or 4, in the tail
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -math.nan])
def test_optimizers_refuse_a_nan_or_infinite_gradient(shortcut, where, bad):
    """VectorAdam and ReferenceAdam (the Optimizer interface's rule) refuse the first nan or
    infinite gradient, FloatingPointError, changing nothing; in every build of the kernel."""
    for kernels in kernel_builds():
        pair = Pair(1003, shortcut, seed=3, kernels=kernels)
        gradients = [pair.rng.gauss(0, 0.1) for _ in range(1003)]
        gradients[where] = bad
        gradients[where - 1 if where else 1] = 1e155  # an overflowing square too: the non-finite one is reported
        pair.set_gradients(gradients)
        pair.assert_step_refused(FloatingPointError, f"parameter {where} is {bad!r}", 1, 10)
        with pytest.raises(FloatingPointError, match=f"parameter {where} is"):
            pair.reference.step(1, 10)


@SHORTCUT
@pytest.mark.parametrize("huge", [1.35e154, 1e155, -1e200, sys.float_info.max])
@pytest.mark.parametrize("where", [700, 1001])  # in a group of four, in the last n % 4
def test_overflowing_square_raises_and_changes_nothing(shortcut, huge, where):
    """Python's g**2 raises OverflowError for a finite gradient whose square overflows;
    the compiled step raises it too, before writing anything."""
    pair = Pair(1003, shortcut, seed=4)
    pair.set_gradients([pair.rng.gauss(0, 0.1) for _ in range(1003)])
    pair.step(0, 10)
    gradients = [pair.rng.gauss(0, 0.1) for _ in range(1003)]
    gradients[where] = huge
    pair.set_gradients(gradients)
    pair.assert_step_refused(OverflowError, f"parameter {where}", 1, 10)
    with pytest.raises(OverflowError):
        pair.reference.step(1, 10)


@SHORTCUT
def test_largest_finite_square_does_not_raise(shortcut):
    pair = Pair(3, shortcut, seed=5)
    pair.set_gradients([SQRT_MAX, -SQRT_MAX, 1.0])
    pair.step(0, 10)
    pair.assert_identical("after squaring sqrt(DBL_MAX)")


@SHORTCUT
def test_first_error_wins_and_negative_v_hat_is_refused(shortcut):
    """A negative second moment (only set_moments can make one) would make Python's
    v_hat**0.5 complex: the step refuses it, naming the first parameter that fails."""
    pair = Pair(10, shortcut, seed=6)
    pair.fast.set_moments([0.0] * 10, [0.0] * 4 + [-1.0] + [0.0] * 5)
    pair.set_gradients([0.1] * 8 + [1e200, 0.1])
    pair.assert_step_refused(ValueError, "parameter 4.*complex", 0, 10)
    pair.fast.set_moments([0.0] * 10, [0.0] * 9 + [-1e-300])  # in the last n % 4, not lifted by g**2
    pair.set_gradients([0.1] * 9 + [0.0])
    pair.assert_step_refused(ValueError, "parameter 9.*complex", 0, 10)


def test_optimizer_moments_are_read_only_and_set_moments_writes_them():
    optimizer = VectorAdam(lambda: (np.zeros(4), np.zeros(4)), 4, 0.01)
    for moment in (optimizer.m, optimizer.v):
        with pytest.raises(ValueError, match="read-only"):
            moment[0] = -1.0
    optimizer.set_moments([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0])
    assert optimizer.m.tolist() == [1.0, 2.0, 3.0, 4.0] and optimizer.v.tolist() == [5.0, 6.0, 7.0, 8.0]


@SHORTCUT
def test_negative_v_that_the_update_lifts_is_no_error(shortcut):
    pair = Pair(4, shortcut, seed=7)
    v = [-1e-12, 0.0, -0.0, 1e-9]
    pair.reference.set_moments([0.0] * 4, v)
    pair.fast.set_moments([0.0] * 4, v)
    pair.set_gradients([1.0, 0.5, 0.0, 0.0])
    pair.step(0, 10)
    pair.assert_identical("after lifting a negative v")


@SHORTCUT
def test_zero_denominator_raises_zero_division_like_python(shortcut):
    pair = Pair(3, shortcut, seed=8, eps=0.0)
    pair.set_gradients([0.1, 0.0, 0.2])  # parameter 1: v_hat**0.5 + 0.0 == 0
    pair.assert_step_refused(ZeroDivisionError, "parameter 1", 0, 10)
    with pytest.raises(ZeroDivisionError):
        pair.reference.step(0, 10)


# --- the power kernels against Python's float ** -----------------------------------------
SPECIAL_BASES = [0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 4.0, 3.0, math.nan, -math.nan, math.inf, -math.inf,
                 5e-324, -5e-324, 1e-310, 2.2250738585072014e-308, 1e-160, 1e-170, 1e-200, 2.0**-480,
                 2.0**-481, 2.0**-960, 2.0**-961, 2.0**511, 2.0**512, 2.0**1000, 2.0**1001, 1e300,
                 sys.float_info.max, SQRT_MAX, math.nextafter(SQRT_MAX, 0), 0.1, 1e-8, 123.456]


def python_power(base: float, exponent: float):
    try:
        return base**exponent
    except OverflowError:
        return OverflowError


@SHORTCUT
@pytest.mark.parametrize("exponent", [2.0, 0.5])
def test_power_array_is_pythons_float_power(shortcut, exponent):
    for base in SPECIAL_BASES + [-b for b in SPECIAL_BASES] + [math.nextafter(SQRT_MAX, math.inf)]:
        expected = python_power(base, exponent)
        out = np.empty(1)
        if expected is OverflowError:
            with pytest.raises(OverflowError):
                power_array(np.array([base]), exponent, out, shortcut=shortcut)
        elif isinstance(expected, complex):
            with pytest.raises(ValueError, match="complex"):
                power_array(np.array([base]), exponent, out, shortcut=shortcut)
        else:
            power_array(np.array([base]), exponent, out, shortcut=shortcut)
            assert bits(out)[0] == bits([expected])[0], f"{base!r} ** {exponent}"


@SHORTCUT
def test_overflow_threshold_of_the_square_matches_python(shortcut):
    base = SQRT_MAX
    for _ in range(5):
        base = math.nextafter(base, 0.0)
    for _ in range(10):
        expected = python_power(base, 2.0)
        if expected is OverflowError:
            with pytest.raises(OverflowError):
                power_array(np.array([base]), 2.0, np.empty(1), shortcut=shortcut)
        else:
            out = np.empty(1)
            power_array(np.array([base]), 2.0, out, shortcut=shortcut)
            assert out[0] == expected
        base = math.nextafter(base, math.inf)


def test_shortcut_skips_libm_for_most_inputs_and_agrees():
    """The shortcut must actually fire (else it only costs), and agree with plain pow."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal(100_000) * 10.0 ** rng.uniform(-8, 1, 100_000)
    fast, plain = np.empty_like(grads), np.empty_like(grads)
    calls_fast = power_array(grads, 2.0, fast, shortcut=True)
    calls_plain = power_array(grads, 2.0, plain, shortcut=False)
    assert calls_plain == grads.size
    assert 0.015 * grads.size < calls_fast < 0.035 * grads.size  # |r| > 0.4868 ULP: ~2.6% in range
    assert (bits(fast) == bits(plain)).all()
    v_hat = np.abs(rng.standard_normal(100_000)) * 10.0 ** rng.uniform(-16, 2, 100_000)
    roots_fast, roots_plain = np.empty_like(v_hat), np.empty_like(v_hat)
    assert 0.015 * v_hat.size < power_array(v_hat, 0.5, roots_fast, shortcut=True) < 0.035 * v_hat.size
    power_array(v_hat, 0.5, roots_plain, shortcut=False)
    assert (bits(roots_fast) == bits(roots_plain)).all()


def test_the_margin_leaves_pows_error_no_room():
    """Argument 1 of _adam.pyx in exact rationals, from the kernel's own constants: for
    every binade [2^e, 2^(e+1)) a proven square or root can lie in, the margin t, plus the
    2^-50 the tests' roundings may add, plus glibc pow's error bound
    E(e) = ulperr_exp + (|e| + 1) ln2 2^53 lambda (1 + 2^-50) is below 1 ULP, so that pow
    can only return the proven double.  The figures are e_pow.c's without FMA (larger than
    with): ulperr_exp 0.511, relerr_log 1.5 * 2^-68, plus 2^-78 (1 + 2^-25) for its
    non-FMA rounding of the log's tail (argument A)."""
    ln2_above = Fraction(6931471805599454, 10**16)  # ln 2 = 0.69314718055994530942...
    ulperr_exp = Fraction(511, 1000)
    lam = Fraction(3, 2) / 2**68 + Fraction(1, 2**78) * (1 + Fraction(1, 2**25))
    t = Fraction(_adam.SHORTCUT_MARGIN)
    slack = Fraction(1, 2**50)
    assert _adam.SHORTCUT_ALLOWANCES == (math.ldexp(_adam.SHORTCUT_MARGIN, -52), math.ldexp(_adam.SHORTCUT_MARGIN, -51))
    for (low, high), power in ((_adam.SHORTCUT_SQUARE_RANGE, 2), (_adam.SHORTCUT_ROOT_RANGE, Fraction(1, 2))):
        exponents = [math.frexp(bound)[1] - 1 for bound in (low, high)]
        assert [math.ldexp(1.0, e) for e in exponents] == [low, high]  # powers of two: exact binades below
        first, last = (int(e * power) for e in exponents)  # the results' binades, 2^first .. 2^last
        assert last - first >= 128  # the range covers what Adam sees (|g| 2^-32..2^32, v_hat 2^-128..2^128)
        for e in range(first, last + 1):
            bound = ulperr_exp + (abs(e) + 1) * ln2_above * 2**53 * lam * (1 + slack)
            assert t + slack + bound < 1, f"binade 2^{e}: t {float(t)} + E {float(bound)} >= 1"


@pytest.mark.parametrize("exponent", [2.0, 0.5])
def test_shortcut_is_libm_pow_near_its_margin_and_the_midpoints(exponent):
    """Constructed inputs from benchmarks/check_pow_shortcut.py (exact squares and roots
    within ~2^-49 ULP of a midpoint or of the margin, or next to a power of two), through
    each build, shortcut against plain libm pow; and both builds send the same inputs to
    libm (their residuals, Dekker's in the baseline and one FMA in the AVX2 build, are the
    same doubles, so their decisions are the same)."""
    squares, roots = check_script().constructed_inputs(np.random.default_rng(7))
    base = squares if exponent == 2.0 else roots
    libm_calls = set()
    for kernels in kernel_builds():
        fast, plain = np.empty_like(base), np.empty_like(base)
        libm_calls.add(kernels.power_array(base, exponent, fast, shortcut=True))
        kernels.power_array(base, exponent, plain, shortcut=False)
        assert (bits(fast) == bits(plain)).all(), kernels.__name__
    assert len(libm_calls) == 1


@pytest.mark.slow
@pytest.mark.parametrize("tunables", ["", "glibc.cpu.hwcaps=-AVX2,-FMA"], ids=["pow-as-chosen", "pow-sse2"])
def test_shortcut_equals_libm_pow_on_millions_of_inputs(tunables):
    """A smaller run of benchmarks/check_pow_shortcut.py (2M random inputs in and beyond
    the shortcut's range, and the constructed ones), with the pow glibc picks for this CPU
    and with its SSE2 build (the tunable hides FMA from glibc's choice on x86_64)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "check_pow_shortcut.py"
    env = dict(os.environ, GLIBC_TUNABLES=tunables)
    out = subprocess.run([sys.executable, str(script), "--millions", "2", "--repeats", "0"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "shortcut == libm pow on every input: True" in out.stdout


def check_script():
    """benchmarks/check_pow_shortcut.py as a module (its input constructors)."""
    return benchmark_script("check_pow_shortcut")


def kernel_builds():
    """The builds of the kernel this machine runs: the baseline, and AVX2 where available."""
    builds = [_adam]
    if _adam.cpu_has_avx2_fma():
        try:
            from cymicrogpt import _adam_avx2
        except ImportError:
            pass
        else:
            builds.append(_adam_avx2)
    return builds


BUILDS = pytest.mark.parametrize("kernels", kernel_builds(), ids=lambda module: module.__name__.split("._")[-1])


def safe_gradient(rng: random.Random) -> float:
    """Gradients of every kind whose square cannot overflow, all finite (so the step takes
    its fast path; nan and inf it refuses: test_optimizers_refuse_a_nan_or_infinite_gradient):
    ~15% zeros, subnormal, tiny (below the shortcut's 2^-32), huge (up to 2^511), powers of
    two, and ordinary ones over 15 decades."""
    kind = rng.random()
    if kind < 0.15:
        return rng.choice([0.0, -0.0])
    if kind < 0.2:
        return rng.choice([5e-324, -1e-310, 1e-160, 2.0**-33, 2.0**-32,
                           2.0**32, 3.0 * 2.0**40, 2.0**511, -(2.0**511), 1.0, -1.0, 2.0, 0.5, 0.25, 3.0])
    return rng.gauss(0.0, 1.0) * 10.0 ** rng.uniform(-12, 3)


@SHORTCUT
@BUILDS
@pytest.mark.parametrize("size", [1, 3, 4, 5, 255, 256, 257, 511, 512, 513, 515, 1024, 1029, 4192])
def test_fast_path_steps_match_reference_adam_at_every_size(kernels, shortcut, size):
    """Steps with no gradient whose square can overflow take the fast path (in the AVX2
    build: squares computed a block ahead, pipelined update, libm for the unproven), for
    sizes around the groups of four and the blocks of 512; bit for bit with the Python loop."""
    pair = Pair(size, shortcut, seed=size, kernels=kernels)
    for step in range(4):
        pair.set_gradients([safe_gradient(pair.rng) for _ in range(size)])
        pair.step(step, 4)
        pair.assert_identical(f"after step {step}")


def scaled_like(rng: np.random.Generator, values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Random signs times |values| * 10^U(low, high): from far below to far above them."""
    return rng.choice([-1.0, 1.0], values.size) * np.abs(values) * 10.0 ** rng.uniform(low, high, values.size)


@SHORTCUT
@BUILDS
def test_fast_path_with_odd_moments_matches_reference_adam(kernels, shortcut):
    """Restored moments of every kind but negative (nan, inf, subnormal, huge, +-0.0 v;
    nan and inf m) keep the fast path: the same bits as the Python loop."""
    size = 1031
    pair = Pair(size, shortcut, seed=11, kernels=kernels)
    odd_v = [math.nan, math.inf, 5e-324, 1e-310, 2.0**-129, 2.0**-128, 2.0**128, 1e300, 0.0, -0.0]
    odd_m = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-320]
    v = [odd_v[i % len(odd_v)] if i % 3 == 0 else abs(pair.rng.gauss(0, 1e-4)) for i in range(size)]
    m = [odd_m[i % len(odd_m)] if i % 5 == 0 else pair.rng.gauss(0, 1e-3) for i in range(size)]
    pair.reference.set_moments(m, v)
    pair.fast.set_moments(m, v)
    for step in range(3):
        pair.set_gradients([safe_gradient(pair.rng) for _ in range(size)])
        pair.step(step + 20, 100)
        pair.assert_identical(f"after step {step}")


@SHORTCUT
@BUILDS
@pytest.mark.parametrize("step, ones", [(229, (False, False)), (230, (True, False)), (5000, (True, True))])
def test_steps_whose_bias_corrections_are_one_match_reference_adam(kernels, shortcut, step, ones):
    """From the 231st step on, 1 - beta1 ** (step + 1) rounds to 1.0 (from the 3,726th,
    1 - beta2 ** (step + 1) too), and the AVX2 pass does not divide by it (m / 1.0 is m):
    the same bits as the Python loop, with moments of every kind (nan, inf, +-0.0, subnormal)."""
    scalars = adam_scalars(0.01, step, 10_000)
    assert (scalars.bias_correction1 == 1.0, scalars.bias_correction2 == 1.0) == ones
    size = 1031
    pair = Pair(size, shortcut, seed=step, kernels=kernels)
    odd = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-320, -1e-320]
    m = [odd[i % len(odd)] if i % 5 == 0 else pair.rng.gauss(0, 1e-3) for i in range(size)]
    v = [abs(odd[i % len(odd)]) if i % 7 == 0 else abs(pair.rng.gauss(0, 1e-4)) for i in range(size)]
    pair.reference.set_moments(m, v)
    pair.fast.set_moments(m, v)
    for offset in range(2):
        pair.set_gradients([safe_gradient(pair.rng) for _ in range(size)])
        pair.step(step + offset, 10_000)
        pair.assert_identical(f"after step {step + offset}")


def decayed_v_near_midpoints(rng: random.Random, count: int, tries: int = 20_000) -> list[float]:
    """`count` v whose update with a zero gradient, fl(beta2 * v), lies in [2^-968, 2^-128)
    next to the square of a midpoint between two doubles, where libm's root (Python's ** 0.5)
    may differ from sqrt's (once in about 500 such v with glibc 2.36): first those where it
    does, found among `tries` of them."""
    differing, others = [], []
    for _ in range(tries):
        root = 2.0 ** rng.uniform(-480, -65)
        target = float((Fraction(root) + Fraction(math.ulp(root)) / 2) ** 2)
        v = target / ADAM_BETA2
        for _ in range(4):  # fl(beta2 * v) moves by about an ULP per ULP of v
            if ADAM_BETA2 * v == target:
                (differing if target**0.5 != math.sqrt(target) else others).append(v)
                break
            v = math.nextafter(v, math.inf if ADAM_BETA2 * v < target else 0.0)
    return (differing + others)[:count]


@SHORTCUT
@BUILDS
@pytest.mark.parametrize("eps", [ADAM_EPS, 1e-300], ids=["eps", "tiny-eps"])
def test_moments_decayed_below_the_proofs_range_match_reference_adam(kernels, shortcut, eps):
    """Parameters whose gradient has stayed 0 for thousands of steps: v decayed below the root
    proof's 2^-128, to the AVX2 build's settling range (down to 2^-968) and past it, some
    next to a midpoint's square, m down to a few subnormal units (0.85 * 3 units rounds back
    to 3).  With eps, the step's outcome no longer depends on the root's last bit (argument
    5 settles it without libm); with a tiny eps it does (libm decides): the same bits as the
    Python loop either way."""
    size = 1031
    pair = Pair(size, shortcut, seed=7, kernels=kernels, eps=eps)
    edges = [2.0**-968, math.nextafter(2.0**-968, 0.0), 2.0**-967 * 1.5, 2.0**-128, math.nextafter(2.0**-128, 0.0),
             1e-300, 5e-324, 0.0]
    near = iter(decayed_v_near_midpoints(pair.rng, size // 3 + 1))
    v = [edges[i % len(edges)] if i % 11 == 0 else next(near) if i % 3 == 1 else 2.0 ** pair.rng.uniform(-1000, -100)
         for i in range(size)]
    m = [pair.rng.choice([3e-323, -1.5e-323, 5e-324, 0.0]) if i % 3 == 0
         else pair.rng.gauss(0.0, 10.0) * math.sqrt(v[i]) for i in range(size)]  # steps of about 0.1
    pair.reference.set_moments(m, v)
    pair.fast.set_moments(m, v)
    pair.set_gradients([0.0 if i % 20 else safe_gradient(pair.rng) for i in range(size)])
    pair.step(5000, 20_000)  # the first step: v next to the midpoints' squares
    pair.assert_identical("after the first step")
    for step in range(2):
        pair.set_gradients([0.0 if i % 4 else safe_gradient(pair.rng) for i in range(size)])
        pair.step(step + 5001, 20_000)
        pair.assert_identical(f"after step {step + 1}")


@SHORTCUT
@BUILDS
@pytest.mark.parametrize("lr", [0.01, 3000.0], ids=["lr", "huge-lr"])
def test_subnormal_first_moments_match_reference_adam(kernels, shortcut, lr):
    """m in the subnormals (argument 7: the AVX2 pass computes beta1 * m in integers there
    and keeps the parameters whose step cannot move them): units over the whole subnormal
    range, a few units, zeros of both signs, with zero, tiny and ordinary gradients, v of
    every kind but negative (nan, inf, 0, tiny), and parameters from ordinary to below the
    2^-800 where a step of 2^-902 could move them (0.0, -0.0, subnormal); a learning rate
    past the route's 2^10 as well: the same bits as the Python loop."""
    size = 1031
    pair = Pair(size, shortcut, seed=17, lr=lr, kernels=kernels)
    units = [pair.rng.randrange(1, 2**52), pair.rng.randrange(2**51, 2**52), pair.rng.randrange(1, 8), 0]
    m = [pair.rng.choice([-1.0, 1.0]) * 5e-324 * units[i % 4] if i % 9 else pair.rng.gauss(0.0, 1e-3)
         for i in range(size)]
    odd_v = [math.nan, math.inf, 0.0, 5e-324, 1e-310, 2.0**-968, 1e-200]
    v = [odd_v[i % len(odd_v)] if i % 13 == 0 else abs(pair.rng.gauss(0.0, 1e-6)) ** pair.rng.choice([1, 4, 20])
         for i in range(size)]
    odd_p = [0.0, -0.0, 5e-324, -1e-300, 2.0**-800, -math.nextafter(2.0**-800, 0.0), 2.0**-700, 1.0]
    for i in range(0, size, 5):
        pair.values[i].data = pair.params[i] = odd_p[(i // 5) % len(odd_p)]
    pair.reference.set_moments(m, v)
    pair.fast.set_moments(m, v)
    for step in range(3):
        pair.set_gradients([pair.rng.choice([0.0, -0.0, 5e-324, 1e-3]) if i % 7 == 0 else 0.0 for i in range(size)])
        pair.step(5000 + step, 20_000)
        pair.assert_identical(f"after step {step}")


@BUILDS
def test_update_pass_roots_match_libm_near_the_margin(kernels):
    """The update pass's own root decisions, isolated: with beta2 = 1, 1 - beta2 = 0 and
    both bias corrections 1, v_hat is v itself and each parameter becomes
    p - lr_t m / (v**0.5 + eps); v set to constructed roots near the margin and the
    midpoints (where pow's last bit is in doubt), and random ones; the step's size from
    far below the parameter's last bit to far above it, so that the outcome sometimes
    depends on which neighbour pow returns and sometimes not (argument 5).  The
    shortcut's parameters must be plain pow's, bit for bit."""
    rng = np.random.default_rng(3)
    _, near = check_script().constructed_inputs(rng)
    v = np.concatenate([near, np.abs(rng.standard_normal(20_000)) * 10.0 ** rng.uniform(-30, 5, 20_000)])
    start = rng.standard_normal(v.size)
    m = scaled_like(rng, start * np.sqrt(v), -18, 1)  # steps 1e-18..10 times the parameter
    results = []
    for shortcut in (True, False):
        params, grads, moment, second, squares = start.copy(), np.zeros(v.size), m.copy(), v.copy(), np.empty(v.size)
        kernels.adam_step(params, grads, moment, second, squares, beta1=1.0, beta2=1.0, eps=1e-300,
                          one_minus_beta1=0.0, one_minus_beta2=0.0, bias_correction1=1.0, bias_correction2=1.0,
                          lr_t=1.0, shortcut=shortcut)
        assert (bits(second) == bits(v)).all()
        results.append(bits(params).copy())
    assert (results[0] == results[1]).all()
    assert (results[0] != bits(start)).any() and (results[0] == bits(start)).any()  # both kinds of step occur


@BUILDS
def test_squares_near_midpoints_give_pythons_moments(kernels):
    """Gradients whose exact square lies within ~2^-49 ULP of a midpoint (pow may return
    either neighbour), with second moments from far below to far above (1 - beta2) g**2,
    so that the new v sometimes depends on pow's last bit and sometimes not (argument
    5): the compiled step's v and parameters are the Python loop's, bit for bit."""
    rng = np.random.default_rng(5)
    squares, _ = check_script().constructed_inputs(rng)
    low, high = _adam.SHORTCUT_SQUARE_RANGE
    grads = squares[(np.abs(squares) >= low) & (np.abs(squares) <= high)][:3000]
    pair = Pair(grads.size, True, seed=9, kernels=kernels)
    v = np.abs(scaled_like(rng, 0.01 * grads * grads, -4, 20))
    pair.reference.set_moments([0.0] * grads.size, v.tolist())
    pair.fast.set_moments(np.zeros(grads.size), v)
    pair.set_gradients(grads.tolist())
    pair.step(7, 100)
    pair.assert_identical("after a step on near-midpoint squares")


@BUILDS
def test_division_by_a_bias_correction_is_the_division(kernels):
    """The AVX2 pass divides m and v by the step's bias corrections without the divider
    (argument 6: Markstein's correction from RN(1/c)); divide_array takes that very route.
    For every bias correction below 1 of a run (and divisors outside the route's range,
    which divide), on dividends next to a midpoint of the quotient (both sides), random
    ones, and the values the route leaves to the division (zeros, subnormal, the range's
    edges, inf, nan): NumPy's division, bit for bit.  benchmarks/check_division.py runs
    10^8 of them."""
    check = benchmark_script("check_division")
    rng = np.random.default_rng(8)
    run = check.run_divisors()
    divisors = np.concatenate([run[:: max(1, run.size // 400)], [2.0**-20, np.nextafter(2.0**-20, 0.0), 0.75,
                                                                 np.nextafter(1.0, 0.0), 1.0, 1.5, 0.0, -0.5]])
    assert check.check(kernels.divide_array, divisors, 3_000, rng)[0] == 0


# --- input validation ----------------------------------------------------------------------
SCALARS = dict(beta1=0.85, beta2=0.99, eps=1e-8, one_minus_beta1=1 - 0.85, one_minus_beta2=1 - 0.99,
               bias_correction1=1 - 0.85, bias_correction2=1 - 0.99, lr_t=0.01, shortcut=True)


def test_adam_step_rejects_bad_arrays_cleanly():
    good = [np.zeros(4) for _ in range(5)]
    with pytest.raises(ValueError, match="elements"):
        adam_step(np.zeros(3), *good[1:], **SCALARS)
    with pytest.raises(ValueError):
        adam_step(np.zeros(4, dtype=np.float32), *good[1:], **SCALARS)
    with pytest.raises(ValueError):
        adam_step(np.zeros(8)[::2], *good[1:], **SCALARS)
    frozen = np.zeros(4)
    frozen.setflags(write=False)
    with pytest.raises(ValueError):
        adam_step(frozen, *good[1:], **SCALARS)
    shared = np.zeros(6)
    with pytest.raises(ValueError, match="share memory"):
        adam_step(shared[:4], shared[2:], *good[2:], **SCALARS)
    with pytest.raises(TypeError):
        adam_step(*good)  # the scalars are keyword-only and required
    adam_step(*[np.zeros(0) for _ in range(5)], **SCALARS)  # nothing to do, no error


def test_power_array_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exponent"):
        power_array(np.ones(2), 3.0, np.empty(2), shortcut=True)
    with pytest.raises(ValueError, match="elements"):
        power_array(np.ones(2), 2.0, np.empty(3), shortcut=True)
    same = np.ones(3)
    with pytest.raises(ValueError, match="share memory"):
        power_array(same, 2.0, same, shortcut=True)


# --- where the shortcut is enabled ----------------------------------------------------------
@pytest.mark.parametrize("plain, libc, machine, is_64bit, allowed", [
    ("", "glibc 2.36", "x86_64", True, True),
    ("", "glibc 2.28", "aarch64", True, True),
    ("", "glibc 2.39.9000", "x86_64", True, True),
    ("1", "glibc 2.36", "x86_64", True, False),  # CYMICROGPT_PLAIN_POW=1
    ("", "glibc 2.27", "x86_64", True, False),  # before the documented pow
    ("", "glibc 2.36", "i686", False, False),  # 32-bit x86 has its own pow
    ("", "glibc 2.36", "x86_64", False, False),  # a 32-bit interpreter on a 64-bit kernel
    ("", "glibc 2.36", "ppc64le", True, False),
    ("", None, "x86_64", True, False),  # musl, macOS, Windows: not glibc
])
def test_pow_shortcut_allowed_only_where_pows_bound_is_documented(plain, libc, machine, is_64bit, allowed):
    result, reason = pow_shortcut_allowed(plain, libc, machine, is_64bit)
    assert result is allowed
    assert reason.startswith("pow shortcut" if allowed else "plain pow")


def test_environment_switch_forces_plain_pow():
    code = "import cymicrogpt.engines.adam as a; print(a.POW_SHORTCUT, a.VectorAdam(lambda: None, 1, 0.1).shortcut)"
    # without the switch: what this machine allows (not this process's POW_SHORTCUT, which the
    # switch may have turned off: the suite also runs under CYMICROGPT_PLAIN_POW=1)
    allowed, _ = pow_shortcut_allowed("", adam.glibc_version(), platform.machine(), sys.maxsize > 2**32)
    for value, expected in (("1", "False False"), ("", f"{allowed} {allowed}")):
        env = {"CYMICROGPT_PLAIN_POW": value, "PATH": ""}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == expected.split()


# --- the AVX2 build (setup.py compiles _adam.pyx a second time with -mavx2 -mfma on x86-64) ----
def avx2_kernels():
    """cymicrogpt._adam_avx2 where it is built and this CPU runs it, else skip."""
    return avx2_build("_adam_avx2")


@SHORTCUT
@pytest.mark.parametrize("exponent", [2.0, 0.5])
def test_avx2_build_gives_the_baselines_bits(shortcut, exponent):
    """Python's ** on a million inputs of every kind, from both builds: the same bits."""
    kernels = avx2_kernels()
    rng = random.Random(11)
    base = np.array([abs(odd_gradient(rng)) if exponent == 0.5 else odd_gradient(rng) for _ in range(10**6)])
    base = base[np.abs(base) < SQRT_MAX]  # no overflow: both raise alike (tested below)
    baseline, avx2 = np.empty_like(base), np.empty_like(base)
    calls = power_array(base, exponent, baseline, shortcut=shortcut)
    assert kernels.power_array(base, exponent, avx2, shortcut=shortcut) == calls
    assert (bits(baseline) == bits(avx2)).all()


@SHORTCUT
def test_avx2_build_steps_and_refuses_like_the_baseline(shortcut):
    """Fifty Adam steps on odd gradients (nan, inf, zeros, subnormals) from both builds, bit
    for bit; then a step whose square overflows, refused by both, changing nothing."""
    kernels = avx2_kernels()
    rng = random.Random(12)
    size = 3000
    start = np.array([rng.gauss(0, 0.1) for _ in range(size)])
    # name -> params, grads, m, v, squares (scratch)
    state = {name: [start.copy(), np.zeros(size), np.zeros(size), np.zeros(size), np.empty(size)]
             for name in ("baseline", "avx2")}
    steps = {"baseline": adam_step, "avx2": kernels.adam_step}
    for step in range(50):
        grads = [odd_gradient(rng) for _ in range(size)]
        grads = [g for g in grads if abs(g) < SQRT_MAX] + [0.0] * sum(abs(g) >= SQRT_MAX for g in grads)
        for name, (params, g, m, v, squares) in state.items():
            g[:] = grads
            steps[name](params, g, m, v, squares, beta1=0.85, beta2=0.99, eps=1e-8, one_minus_beta1=1 - 0.85,
                        one_minus_beta2=1 - 0.99, bias_correction1=1 - 0.85 ** (step + 1),
                        bias_correction2=1 - 0.99 ** (step + 1), lr_t=0.01 * (1 - step / 50), shortcut=shortcut)
        for a, b in zip(state["baseline"][:4], state["avx2"][:4]):
            assert (bits(a) == bits(b)).all(), f"step {step}"
    for name, (params, g, m, v, squares) in state.items():
        g[size // 2] = 1e200
        before = [bits(a).copy() for a in (params, g, m, v)]
        with pytest.raises(OverflowError, match=f"parameter {size // 2} "):
            steps[name](params, g, m, v, squares, beta1=0.85, beta2=0.99, eps=1e-8, one_minus_beta1=1 - 0.85,
                        one_minus_beta2=1 - 0.99, bias_correction1=0.5, bias_correction2=0.5, lr_t=0.01,
                        shortcut=shortcut)
        assert all((bits(a) == saved).all() for a, saved in zip((params, g, m, v), before))


def test_avx2_build_is_chosen_where_it_runs_and_the_switch_keeps_the_baseline():
    from cymicrogpt import _adam

    try:
        from cymicrogpt import _adam_avx2
    except ImportError:
        _adam_avx2 = None
    assert adam.adam_kernels(no_avx2="1") is _adam
    chosen = adam.adam_kernels(no_avx2="")
    assert chosen is (_adam_avx2 if _adam.cpu_has_avx2_fma() and _adam_avx2 is not None else _adam)
    code = "import cymicrogpt.engines.adam as a; print(a.ADAM_KERNELS.__name__)"
    for value, expected in (("1", "cymicrogpt._adam"), ("", chosen.__name__)):
        env = {"CYMICROGPT_NO_AVX2": value, "PATH": ""}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected


# --- the bound state: the schedule's scalars in C, the weights read from an arena ---------------
def bound_state(lr=0.01, size: int = 1, kernels=adam.ADAM_KERNELS, schedule=adam_scalars):
    return kernels.AdamState(np.zeros(size), np.zeros(size), lr, beta1=VectorAdam.beta1, beta2=VectorAdam.beta2,
                             eps=ADAM_EPS, shortcut=True, schedule=schedule)


@BUILDS
def test_bound_state_takes_the_schedules_scalars_bit_for_bit(kernels):
    """The step's lr_t and bias corrections, computed in C where that is Python's arithmetic,
    are schedule.adam_scalars's floats, for every step of runs of several lengths and at the
    edges; elsewhere (huge or negative steps, non-int steps, an int lr) the state calls it."""
    cases = [(step, total) for total in (1, 7, 1000, 4096) for step in range(total + 3)]
    cases += [(10**6, 10**7), (4400, 5000), (2**53 - 1, 2**53), (2**53, 2**53), (2**53 + 1, 2**60), (2**70, 3),
              (-1, 10), (-7, 10), (3, -10), (np.int64(5), 10), (5, np.int64(10)), (True, 10), (3, 2**53)]
    underflowing = [(10**6, 10**7), (2**53 - 1, 2**53)]  # beta ** (step + 1) underflows to 0: pow sets errno
    in_c = [type(step) is type(total) is int and 0 <= step < 2**53 and 0 < total <= 2**53
            and (step, total) not in underflowing for step, total in cases]
    for lr in (0.01, 1e-3, 0.5, 1, -0.01):
        asked: list[tuple] = []

        def schedule(*args, asked=asked):
            asked.append(args)
            return adam_scalars(*args)

        state = bound_state(lr, kernels=kernels, schedule=schedule)
        for step, total in cases:
            assert bits(state.scalars(step, total)).tolist() == bits(adam_scalars(lr, step, total)).tolist(), \
                (lr, step, total)
        expected = [(lr, step, total) for (step, total), c in zip(cases, in_c) if type(lr) is int or not c]
        assert asked == expected  # the C twin computed all the others
    with pytest.raises(ZeroDivisionError):
        adam_scalars(0.01, 3, 0)
    with pytest.raises(ZeroDivisionError):
        bound_state().scalars(3, 0)


def test_optimizer_over_an_arena_steps_its_weights_and_follows_its_growth():
    """make_optimizer binds VectorAdam to the engine's arena: each step reads the weights
    where the arena keeps them then, also after a longer document made it grow (and move)."""
    config = GPTConfig(n_layer=1, n_embd=4, block_size=12, n_head=1)
    layout = state_dict_layout(config, 27)
    engine = make_engine("cython", layout, init_weights(random.Random(5), layout))
    optimizer = engine.make_optimizer(0.01)
    twin_params = engine.weight_array.copy()
    twin_grads = np.zeros_like(twin_params)
    twin = VectorAdam(lambda: (twin_params, twin_grads), twin_params.size, 0.01)
    capacities = set()
    for step, length in enumerate((3, 5, 12, 4)):  # 12: the arena grows
        engine.forward_backward(config, [26] + [step % 26] * (length - 2) + [26])
        capacities.add(engine.capacity)
        twin_grads[:] = engine.grad_array
        optimizer.step(step, 4)
        twin.step(step, 4)
        assert (bits(engine.weight_array) == bits(twin_params)).all() and not engine.grad_array.any()
        assert (bits(optimizer.m) == bits(twin.m)).all() and (bits(optimizer.v) == bits(twin.v)).all()
    assert len(capacities) > 1  # the arena did move


@BUILDS
@SHORTCUT
def test_a_negative_v_set_after_steps_is_refused(kernels, shortcut):
    """Between its own steps the state knows that no v is negative and does not read v to
    check (VectorAdam's moments are private): one written by set_moments after steps is
    still refused, in the AVX2 passes' groups or in the last n % 4."""
    for where in (517, 1001):
        pair = Pair(1002, shortcut, seed=8, kernels=kernels)
        for step in range(3):
            pair.set_gradients([pair.rng.gauss(0.0, 0.01) for _ in range(1002)])
            pair.step(step, 10)
        pair.assert_identical("after three steps")
        m, v = pair.fast.moments()
        v[where] = -1e-3  # 0.99 * v + 0.01 * g**2 stays negative for |g| < 0.3
        pair.fast.set_moments(m, v)
        pair.set_gradients([0.01] * 1002)
        pair.assert_step_refused(ValueError, f"parameter {where} .*complex", 3, 10)


@BUILDS
@SHORTCUT
def test_a_negative_v_that_a_step_let_pass_is_refused_when_python_would_refuse_it(kernels, shortcut):
    """set_moments writes v = -1.7e308: for the first ~65 steps of zero gradients v_hat =
    v / bias_correction2 overflows to -inf, whose ** 0.5 Python takes (inf: the weight
    stays), so those steps pass and v stays negative; from the step where v_hat is finite
    Python's ** 0.5 gives a complex number and the step is refused.  (The AVX2 build with
    the shortcut had declared v free of negatives after the first step that did not raise,
    and stepped on without reading v: no error, the weights written.)"""
    pair = Pair(9, shortcut, seed=3, kernels=kernels)
    m, v = pair.fast.moments()
    v[5] = v[8] = -1.7e308  # in a group of four, and in the last n % 4
    pair.fast.set_moments(m, v)
    pair.reference.set_moments(m, v)
    for step in range(200):
        pair.set_gradients([0.0] * 9)
        v_hat = ADAM_BETA2 * pair.reference.v[5] / adam_scalars(0.01, step, 1000).bias_correction2
        if v_hat > -math.inf:
            break
        pair.step(step, 1000)
        pair.assert_identical(f"at step {step}")
    assert 10 < step < 100
    pair.assert_step_refused(ValueError, "parameter 5 .*complex", step, 1000)


@BUILDS
def test_a_negative_v_whose_v_hat_rounds_to_minus_zero_is_refused_when_python_would_refuse_it(kernels):
    """The same through a schedule's bias_correction2 > 1: v = -2^-1074 over 2.0 is -0.0 (a
    tie, to even), whose ** 0.5 Python takes; over 0.5 it is complex, and refused."""
    m, v = np.zeros(5), np.full(5, -5e-324)
    corrections = iter([2.0, 0.5])
    state = kernels.AdamState(m, v, 1, beta1=0.85, beta2=0.99, eps=1e-8, shortcut=True, private_moments=True,
                              schedule=lambda lr, step, total: (0.01, 1.0, next(corrections)))  # int lr: asked
    params, grads = np.ones(5), np.zeros(5)
    state.step_on(params, grads, 0, 10)
    assert (bits(v) == bits([-5e-324] * 5)).all() and (params == 1.0).all()
    before = [bits(a).copy() for a in (params, grads, m, v)]
    with pytest.raises(ValueError, match="parameter 0 .*complex"):
        state.step_on(params, grads, 1, 10)
    assert all((bits(a) == saved).all() for a, saved in zip((params, grads, m, v), before))


@BUILDS
def test_a_state_with_shared_moments_checks_v_every_step(kernels):
    """Without private_moments the caller may write m and v between steps: a negative v
    written directly is refused."""
    m, v = np.zeros(9), np.zeros(9)
    state = kernels.AdamState(m, v, 0.01, beta1=0.85, beta2=0.99, eps=1e-8, shortcut=True, schedule=adam_scalars)
    params, grads = np.zeros(9), np.full(9, 0.1)
    state.step_on(params, grads, 0, 10)
    v[3] = -1.0
    with pytest.raises(ValueError, match="parameter 3 .*complex"):
        state.step_on(params, grads, 1, 10)


@BUILDS
def test_moments_set_by_another_thread_during_a_step_are_checked_at_the_next(kernels):
    """The kernel runs without the GIL, so another thread can write v and call
    moments_changed while it runs; the step that ends after it must not then declare v
    free of negatives (it did: the next step took the unchecked pass over v[0] = -1 and
    stored a weight of -19000 instead of refusing).  Large enough that the step outlasts
    the writer (~1 ms of its ~3-30 ms); a writer that runs before the step instead is
    refused by that step."""
    size = 2**20
    for _ in range(3):
        m, v = np.zeros(size), np.zeros(size)
        state = kernels.AdamState(m, v, 0.01, beta1=0.85, beta2=0.99, eps=1e-8, shortcut=True,
                                  schedule=adam_scalars, private_moments=True)
        params, grads = np.zeros(size), np.full(size, 0.01)
        go = threading.Event()

        def write_a_negative_v(go, v, state):
            go.wait()
            v[0] = -1.0  # mostly after the step has passed element 0 (it then stays)
            state.moments_changed()

        writer = threading.Thread(target=write_a_negative_v, args=(go, v, state))
        writer.start()
        go.set()
        try:
            state.step_on(params, grads, 0, 10)
        except ValueError:
            pass  # the writer ran first: this step saw v[0] = -1
        writer.join()
        assert v[0] < 0.0
        grads[:] = 0.01
        with pytest.raises(ValueError, match="parameter 0 .*complex"):
            state.step_on(params, grads, 1, 10)


@BUILDS
def test_the_read_only_moments_cannot_be_made_writeable(kernels):
    """numpy lets a plain view's WRITEABLE flag be set back on (its base is writeable), and
    the state trusts v's signs between its steps: a negative v written that way was stepped
    on without a check (the AVX2 build stored a finite, wrong weight instead of refusing).
    Neither the flag nor the view's base may write the moments."""
    params, grads = np.zeros(8), np.full(8, 0.01)
    optimizer = VectorAdam(lambda: (params, grads), 8, 0.01, kernels=kernels)
    optimizer.step(0, 10)
    for moment in (optimizer.m, optimizer.v):
        with pytest.raises(ValueError):
            moment.flags.writeable = True
        with pytest.raises(ValueError, match="read-only"):
            np.asarray(moment.base)[5] = -1e-3
    before = params.copy()
    grads[:] = 0.01
    optimizer.step(1, 10)  # still steps, from moments nobody could write
    assert (params != before).all() and (optimizer.v >= 0.0).all()


def test_bound_state_rejects_bad_arrays_cleanly():
    with pytest.raises(ValueError, match="m has 3 elements, v 2"):
        adam.ADAM_KERNELS.AdamState(np.zeros(3), np.zeros(2), 0.01, beta1=0.85, beta2=0.99, eps=1e-8, shortcut=True,
                                    schedule=adam_scalars)
    shared = np.zeros(6)
    with pytest.raises(ValueError, match="share memory"):
        adam.ADAM_KERNELS.AdamState(shared[:4], shared[2:], 0.01, beta1=0.85, beta2=0.99, eps=1e-8, shortcut=True,
                                    schedule=adam_scalars)
    state = bound_state(size=4)
    with pytest.raises(TypeError, match="bound to no arena"):
        state.step(0, 10)
    with pytest.raises(ValueError, match="elements"):
        state.step_on(np.zeros(3), np.zeros(4), 0, 10)
    params = np.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        state.step_on(params, params, 0, 10)
