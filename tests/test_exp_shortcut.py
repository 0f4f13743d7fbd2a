"""The exp shortcut (csrc/cymicrogpt/exp_shortcut.h) of the fused pass and of the graph engine
against libm exp (math.exp).

Bit-identity is checked on the bit patterns (np.uint64 views), so -0.0 and nan payloads
count too.  The shortcut's table and constants are recomputed here from exact arithmetic,
and the error bound of its argument (steps 1-6 in the header) is summed in rationals.
benchmarks/check_exp_shortcut.py runs the same comparison on 10^8 inputs.
"""
from __future__ import annotations

import math
import platform
import subprocess
import sys
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from conftest import avx2_build, benchmark_script

from cymicrogpt import _fused
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.engines import compiled, make_engine
from cymicrogpt.engines import fused as fused_engine
from cymicrogpt.engines.adam import glibc_version
from cymicrogpt.engines.fused import exp_shortcut_allowed
from cymicrogpt.exp2_table import exp2_table
from cymicrogpt.params import MatrixSlot, init_weights, state_dict_layout

N = 2**_fused.EXP_TABLE_BITS


def shortcut_module():
    """The build with the shortcut (cymicrogpt._fused_avx2) where it is built and this CPU runs it."""
    module = avx2_build("_fused_avx2")
    assert module.EXP_SHORTCUT_BUILT
    return module


def bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.uint64)


def ln2(digits: int = 60) -> Fraction:
    """ln 2 to within 10^-(digits - 1) (Decimal's ln is correctly rounded)."""
    with localcontext() as context:
        context.prec = digits
        return Fraction(Decimal(2).ln())


def half_ulp(x: float) -> Fraction:
    return Fraction(math.ulp(x)) / 2


# --- the table and the constants, from exact arithmetic -----------------------------------
def test_table_entries_are_two_to_the_j_over_n_rounded_twice():
    """hi_j = RN(2^(j/N)) and lo_j = RN(2^(j/N) - hi_j): checked without any root, by raising
    the ends of each half-ULP interval to the N-th power and bracketing 2^j (exact rationals),
    and the table the build reads is that one."""
    module = shortcut_module()
    his, los = exp2_table(_fused.EXP_TABLE_BITS)
    assert module.exp_shortcut_table() == his + los
    assert (his[0], los[0]) == (1.0, 0.0)
    for j in range(1, N):
        hi, lo = his[j], los[j]
        assert (Fraction(hi) - half_ulp(hi)) ** N < 2**j < (Fraction(hi) + half_ulp(hi)) ** N, j
        both = Fraction(hi) + Fraction(lo)
        assert (both - half_ulp(lo)) ** N < 2**j < (both + half_ulp(lo)) ** N, j
        assert abs(lo) <= 2.0**-53 and half_ulp(lo) <= Fraction(1, 2**106)  # |Tl| and |tau| of step 3


def test_reduction_constants_come_from_ln2():
    constants = _fused.EXP_SHORTCUT_CONSTANTS
    ln2_n = ln2() / N
    tolerance = Fraction(1, 10**55)
    hi = Fraction(round(ln2_n * 2**43), 2**43)
    assert Fraction(constants["ln2_n_hi"]) == hi and (hi * 2**43).numerator < 2**36  # 36 bits: k * hi exact
    low, high = ln2_n - tolerance, ln2_n + tolerance  # both sides round alike: the doubles are decided
    assert float(low - hi) == float(high - hi) == constants["ln2_n_lo"]
    assert float(1 / high) == float(1 / low) == constants["inv_ln2_n"]
    assert abs(ln2_n - hi - Fraction(constants["ln2_n_lo"])) < Fraction(1, 2**100)  # |c3| of step 1
    assert (constants["lowest"], constants["margin"]) == (-512.0, 0.4888)


def exp_series_minus_one(v: Fraction, terms: int = 30) -> Fraction:
    """An upper bound of e^v - 1 for 0 <= v < 1: the series' first terms, with room for the rest."""
    return sum(v**n / math.factorial(n) for n in range(1, terms)) * (1 + Fraction(1, 2**100))


def test_the_error_bound_leaves_libm_exp_no_room():
    """exp_shortcut.h's steps 1-5, bounded term by term in rationals: the computed value is
    within eps ULP of exp(x), and with the margin t, the allowance's rounding and res's,
    plus glibc's 0.511 ULP (e_exp.c, without FMA), stays below 1 ULP (step 6)."""
    constants = _fused.EXP_SHORTCUT_CONSTANTS
    u = Fraction(1, 2**53)
    hi, lo, inv = (Fraction(constants[name]) for name in ("ln2_n_hi", "ln2_n_lo", "inv_ln2_n"))
    ln2_n = ln2() / N
    c3 = abs(ln2_n - hi - lo) + Fraction(1, 10**55)
    # 1. reduction: |k| <= k_max; a exact, |a| <= rho; b = RN(-k lo), |b| <= beta; r = a + b + delta
    x_n = -Fraction(constants["lowest"]) / ln2_n  # |x N / ln 2| < x_n
    z_error = -Fraction(constants["lowest"]) * abs(inv - 1 / ln2_n) + (x_n + 1) * u  # |z - x N/ln 2|
    k_max = math.floor(x_n + z_error + Fraction(1, 2))
    assert k_max == 94548 and k_max * (hi * 2**43).numerator < 2**53 and z_error < Fraction(1, 2**36)
    rho = ln2_n * (Fraction(1, 2) + z_error) + k_max * (abs(lo) + c3)
    beta = k_max * abs(lo) * (1 + u)
    delta = k_max * (abs(lo) * u + c3)
    # 2. exp(a + b) - 1 = q + c: Horner's h_n = fma(h_{n+1}, a, RN(1/n!)) from n = 5 down to 3
    bound, error = Fraction(1, 720) * (1 + u), u / 720  # |poly|, |poly - Q(a)|
    for n in (5, 4, 3):
        bound = (bound * rho + Fraction(1, math.factorial(n)) * (1 + u)) * (1 + u)
        error = error * rho + u / math.factorial(n) + u * bound
    q_exact = sum(rho ** (m - 3) / math.factorial(m) for m in range(3, 7))
    a3 = rho**3 * (1 + u) ** 2
    p3 = a3 * bound * (1 + u)
    p3_error = a3 * error + q_exact * 2 * u * rho**3 * (1 + u) + u * a3 * bound
    truncation = sum(rho**n / math.factorial(n) for n in range(7, 40)) * (1 + Fraction(1, 2**100))
    q = (rho + rho**2 / 2 * (1 + u)) * (1 + u)
    qe, hl = u * q, u * rho**2 * (1 + u)
    w = (q + p3) * (1 + u)
    w_error = qe + hl / 2 + p3_error + truncation + u * w
    bt = (beta + beta**2 / 2) * (1 + u)
    bw = bt * (1 + w) * (1 + u)
    bw_error = u * bw + bt * w_error + (1 + exp_series_minus_one(rho)) * (u * bt + beta**3 / 6 * (1 + beta))
    c1 = (qe + hl / 2) * (1 + u)
    c2 = (c1 + p3) * (1 + u)
    c = (c2 + bw) * (1 + u)
    c_error = p3_error + truncation + bw_error + u * (c1 + c2 + c)
    # 3-4. times T = Th + Tl + tau (< 2), the four roundings of d, Tl c left out
    t_max, tl_max, tau = Fraction(2), Fraction(1, 2**53), Fraction(1, 2**106)
    d1 = (2 * u * 2 + u * t_max * q * (1 + u)) * (1 + u)  # |e| <= half an ULP of s < 4, |tqe| <= u |tq|
    d2 = (t_max * c + d1) * (1 + u)
    tlw = tl_max * (1 + q) * (1 + u)
    d = (d2 + tlw) * (1 + u)
    exp_a_b = (1 + exp_series_minus_one(rho)) * (1 + exp_series_minus_one(beta))
    eps_abs = (t_max * exp_a_b * exp_series_minus_one(delta) + t_max * c_error + tau * exp_a_b + tl_max * c
               + u * (d1 + d2 + tlw + d) + Fraction(1, 2**1060))  # + every underflow, 2^-1075 each
    assert rho < Fraction(27077, 10**7) and eps_abs < Fraction(1, 2**70)
    # 5-6. in ULPs of y (u_y >= 2^-53), and the margin
    eps = eps_abs / 2**-53
    allowance = Fraction(constants["margin"] * 2.0**-52) * 2**52  # RN(t 2^-52), in ULPs
    assert eps < Fraction(1, 2**17)
    assert allowance + Fraction(1, 2**54) + eps + Fraction(511, 1000) < 1


# --- the shortcut against math.exp ----------------------------------------------------------
def python_exp(x: float) -> float:
    """math.exp, with inf where it raises OverflowError (libm's result there)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 27])  # whole groups of 4 and partial ones
def test_shortcut_is_libm_exp(length):
    """Random arguments over the range that occurs and beyond it, tiny ones, edge cases, and
    constructed ones (benchmarks/check_exp_shortcut.py's: exp within ~2^-8 ULP of a midpoint
    or of the margin, and x = log(V) rounded for V within 2^-12 ULP of them), in arrays of
    `length`: each group of four lanes, and the last partial one, against math.exp."""
    module = shortcut_module()
    script = benchmark_script("check_exp_shortcut")
    rng = np.random.default_rng(length)
    targets = (0.5, _fused.EXP_SHORTCUT_CONSTANTS["margin"])
    inputs = np.concatenate([
        rng.uniform(-745.5, 0.0, 12_000), rng.uniform(-40.0, 0.0, 12_000), rng.uniform(-1e-3, 0.0, 4_000),
        -np.abs(rng.standard_normal(4_000)) * 10.0 ** rng.uniform(-20, 2, 4_000),
        script.near_fraction_of_an_ulp(rng, -40.0, targets, 3_000), script.logs_near_fractions(rng, targets, 400),
        script.edge_cases()])
    rng.shuffle(inputs)
    inputs = inputs[: inputs.size - inputs.size % length]
    expected = bits([python_exp(x) for x in inputs.tolist()])
    fast, plain = np.empty_like(inputs), np.empty_like(inputs)
    calls = 0
    for start in range(0, inputs.size, length):
        part = slice(start, start + length)
        calls += module.exp_array(inputs[part], fast[part], shortcut=True)
        module.exp_array(inputs[part], plain[part], shortcut=False)
    assert np.array_equal(bits(fast), expected)
    assert np.array_equal(bits(plain), expected)
    assert calls < inputs.size / 2  # most of (-512, 0] is proven


def test_the_baseline_build_calls_libm_for_every_exp():
    inputs = np.array([-1.0, -0.5, 0.0, -700.0, math.nan])
    out = np.empty_like(inputs)
    if _fused.EXP_SHORTCUT_BUILT:
        pytest.skip("this baseline build has the shortcut (built with AVX2 and FMA)")
    assert _fused.exp_array(inputs, out, shortcut=True) == inputs.size
    assert np.array_equal(bits(out), bits([python_exp(x) for x in inputs.tolist()]))


def test_exp_array_refuses_bad_arguments():
    with pytest.raises(ValueError, match="elements"):
        _fused.exp_array(np.zeros(3), np.empty(2), shortcut=True)
    same = np.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        _fused.exp_array(same, same, shortcut=True)
    assert _fused.exp_array(np.zeros(0), np.empty(0), shortcut=True) == 0


# --- in the training pass -------------------------------------------------------------------
@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "plain-exp"])
def test_fused_pass_gives_the_references_bits_with_the_shortcut_on_and_off(shortcut, monkeypatch):
    monkeypatch.setattr(fused_engine, "EXP_SHORTCUT", shortcut)
    config = GPTConfig(n_layer=1, n_embd=8, block_size=9, n_head=2)  # scores of 1 .. 9 positions: every tail
    layout = state_dict_layout(config, 27)
    weights = init_weights(__import__("random").Random(3), layout)
    ref, fused = make_engine("python", layout, weights), make_engine("fused", layout, weights)
    for tokens in ([26, 0, 1, 2, 3, 4, 5, 6, 7, 8, 26], [26, 4, 26]):
        assert fused.forward_backward(config, tokens) == ref.forward_backward(config, tokens)
        assert fused.gradients() == ref.gradients()
    assert fused._loops.exp_shortcut == (shortcut and type(fused._loops).__module__ == "cymicrogpt._fused_avx2")


# --- where the shortcut is enabled ----------------------------------------------------------
def test_exp_shortcut_needs_glibc_2_29_and_has_its_own_switch():
    """pow's rules (tests/test_adam.py), with glibc 2.29's exp (2.28's, IBM's, documents no
    bound below |x| = 1.04) and CYMICROGPT_PLAIN_EXP."""
    assert exp_shortcut_allowed("", "glibc 2.29", "aarch64", True) == (
        True, "exp shortcut: glibc 2.29 on aarch64, exp's error analysed (e_exp.c)")
    assert exp_shortcut_allowed("", "glibc 2.28", "x86_64", True) == (
        False, "plain exp: glibc 2.28 predates glibc 2.29's exp")
    assert exp_shortcut_allowed("1", "glibc 2.36", "x86_64", True) == (False, "plain exp: CYMICROGPT_PLAIN_EXP=1")
    assert not exp_shortcut_allowed("", "glibc 2.36", "i686", False)[0]  # 32-bit x86 has its own exp
    assert not exp_shortcut_allowed("", None, "x86_64", True)[0]  # musl, macOS, Windows


def test_environment_switch_forces_plain_exp():
    code = "import cymicrogpt.engines.fused as f; print(f.EXP_SHORTCUT)"
    allowed, _ = exp_shortcut_allowed("", glibc_version(), platform.machine(), sys.maxsize > 2**32)
    for value, expected in (("1", "False"), ("", str(allowed))):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"CYMICROGPT_PLAIN_EXP": value, "PATH": ""})
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [expected]


# --- in the graph engine (GraphOps, backend "cython") ---------------------------------------
def graph_ops(weights: list[float], exp_shortcut: bool) -> GraphOps:
    ops = GraphOps([MatrixSlot("w", 1, len(weights), 0)], weights, exp_shortcut=exp_shortcut)
    if exp_shortcut and not ops.exp_shortcut:
        pytest.skip("no exp shortcut in the graph engine here (not gcc on x86-64, or no AVX2 and FMA)")
    assert ops.exp_shortcut is exp_shortcut
    return ops


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 27])  # whole groups of 4 and partial ones
def test_graph_softmax_exps_are_libm_exp(length):
    """The softmax's exp nodes, with the shortcut, are math.exp's bits, for the inputs of
    test_shortcut_is_libm_exp in (-745.5, 0] (logits [0, x_1 .. x_{length-1}]: the shifted
    logits are the x, exactly), and the whole graph, values and gradients, is the plain one's
    bits: nll (one probability) and probs() (all of them, no graph).  The groups of four also
    write up to three values past the exps, into the nodes built next: those must end as
    the plain graph's too."""
    script = benchmark_script("check_exp_shortcut")
    rng = np.random.default_rng(100 + length)
    targets = (0.5, _fused.EXP_SHORTCUT_CONSTANTS["margin"])
    inputs = np.concatenate([
        rng.uniform(-745.5, 0.0, 600), rng.uniform(-40.0, 0.0, 600), rng.uniform(-1e-3, 0.0, 200),
        script.near_fraction_of_an_ulp(rng, -40.0, targets, 400), script.logs_near_fractions(rng, targets, 100),
        [x for x in script.edge_cases() if -745.5 < x <= 0.0]])
    rng.shuffle(inputs)
    width = length - 1 or 1
    for start in range(0, inputs.size - width + 1, width):
        logits = [0.0] + inputs[start:start + width].tolist() if length > 1 else [float(inputs[start])]
        graphs = []
        for shortcut in (True, False):
            ops = graph_ops(logits, shortcut)
            ops.backward(ops.nll(ops.row("w", 0), 0))  # the max: a probability above 0
            count = ops.num_nodes
            graphs.append((bits(ops.node_values()[:count]), bits(ops.node_grads()[:count]),
                           bits(ops.probs(ops.row("w", 0), 1.0))))
        fast, plain = graphs
        shifted = fast[0][length:2 * length].view(np.float64)  # after the weights: shifted logits, exps
        assert np.array_equal(fast[0][2 * length:3 * length], bits([python_exp(x) for x in shifted.tolist()]))
        for got, want in zip(fast, plain):
            assert np.array_equal(got, want), logits


@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "plain-exp"])
def test_graph_engine_gives_the_references_bits_with_the_shortcut_on_and_off(shortcut, monkeypatch):
    """Backend "cython" takes engines.fused.EXP_SHORTCUT where the fused loops would run their
    AVX2 build (builds.avx2_fma_in_use), and gives the reference's bits either way."""
    monkeypatch.setattr(fused_engine, "EXP_SHORTCUT", shortcut)
    config = GPTConfig(n_layer=1, n_embd=8, block_size=9, n_head=2)  # scores of 1 .. 9 positions: every tail
    layout = state_dict_layout(config, 27)
    weights = init_weights(__import__("random").Random(3), layout)
    ref, graph = make_engine("python", layout, weights), make_engine("cython", layout, weights)
    assert graph.ops.exp_shortcut == (shortcut and compiled.avx2_fma_in_use() and graph_exp_available())
    for tokens in ([26, 0, 1, 2, 3, 4, 5, 6, 7, 8, 26], [26, 4, 26], [26, 5, 6, 7, 8, 0, 1, 2, 3, 4, 26]):
        assert graph.forward_backward(config, tokens) == ref.forward_backward(config, tokens)
        assert graph.gradients() == ref.gradients()
    assert graph.ops.step_replays_done == 1  # the third document replayed the first's program


def graph_exp_available() -> bool:
    """Does this build's graph engine have the shortcut, and this CPU run it?"""
    return GraphOps([MatrixSlot("w", 1, 1, 0)], [0.0], exp_shortcut=True).exp_shortcut


def test_compiled_engine_follows_the_fused_loops_rule(monkeypatch):
    config = GPTConfig(n_layer=1, n_embd=8, block_size=6, n_head=2)
    layout = state_dict_layout(config, 6)
    weights = init_weights(__import__("random").Random(3), layout)
    for allowed, fast in ((True, True), (True, False), (False, True)):
        monkeypatch.setattr(fused_engine, "EXP_SHORTCUT", allowed)
        monkeypatch.setattr(compiled, "avx2_fma_in_use", lambda fast=fast: fast)
        assert make_engine("cython", layout, weights).ops.exp_shortcut is (allowed and fast and graph_exp_available())
    assert GraphOps(layout, weights).exp_shortcut is False  # by default
