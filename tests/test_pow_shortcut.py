"""The fused pass's pow shortcut (csrc/cymicrogpt/pow_shortcut.h): x ** -1.0, -2.0, -0.5 and
-1.5 settled without libm pow where its argument proves pow's result.  Each build of the
pass (baseline SSE2, AVX2 with FMA) against Python's own `x ** y` (libm pow, or CPython's
special cases), bit for bit; the margin's arithmetic in exact rationals; and the engine's
use of the Adam kernel's rule (engines.adam.POW_SHORTCUT).  The 10^8-input check is
benchmarks/check_pow_shortcut.py --powers fused."""
from __future__ import annotations

import importlib.util
import math
import os
import platform
import random
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from test_adam import check_script  # benchmarks/check_pow_shortcut.py as a module

from cymicrogpt import _adam, _fused
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.engines import adam, compiled, fused, make_engine
from cymicrogpt.params import MatrixSlot, init_weights, state_dict_layout

EXPONENTS = (-1.0, -2.0, -0.5, -1.5)


def bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.uint64)


def fused_builds():
    """The builds of the pass this machine runs: the baseline, and AVX2 (with FMA) where available."""
    builds = [_fused]
    if _adam.cpu_has_avx2_fma() and importlib.util.find_spec("cymicrogpt._fused_avx2") is not None:
        from cymicrogpt import _fused_avx2

        builds.append(_fused_avx2)
    return builds


BUILDS = pytest.mark.parametrize("module", fused_builds(), ids=lambda module: module.__name__.split("._")[-1])


def python_power(x: float, exponent: float) -> float | None:
    """Python's x ** exponent, or None where it raises (0 ** negative, an overflow)."""
    try:
        result = x ** exponent
    except (ZeroDivisionError, OverflowError):
        return None
    return result if isinstance(result, float) else None  # a negative base: complex


def test_the_margin_leaves_pows_error_no_room():
    """Argument 1 of pow_shortcut.h in exact rationals: for every binade [2^e, 2^(e+1)) a
    proven result can lie in (its x ranges put the results in [2^-63, 2^63]), the margin t,
    plus the slack 2^-46 that settling (S) may add, plus glibc pow's error bound
    E(e) = ulperr_exp + (|e| + 1) ln2 2^53 lambda (1 + 2^-50), is below 1 ULP, with
    lambda(-1.5), the larger (argument A: one more rounding of y llo without FMA)."""
    ln2_above = Fraction(6931471805599454, 10**16)
    ulperr_exp = Fraction(511, 1000)
    lam = Fraction(3, 2) / 2**68 + Fraction(1, 2**77) * (1 + Fraction(1, 2**25))
    t = Fraction(_fused.POW_SHORTCUT_MARGIN)
    assert t == Fraction(_adam.SHORTCUT_MARGIN)  # one margin, shared (pow_shortcut.h)
    assert _fused.POW_SHORTCUT_TAIL_ALLOWANCE == math.ldexp(_fused.POW_SHORTCUT_MARGIN, -52)
    for exponent, (low, high) in _fused.POW_SHORTCUT_RANGES.items():
        ends = [math.frexp(bound)[1] - 1 for bound in (low, high)]
        assert [math.ldexp(1.0, k) for k in ends] == [low, high]  # powers of two: 2^k ** y = 2^(k y)
        assert all(-63 <= k * exponent <= 63 for k in ends), exponent
    for e in range(-64, 64):
        bound = ulperr_exp + (abs(e) + 1) * ln2_above * 2**53 * lam * (1 + Fraction(1, 2**50))
        assert t + Fraction(1, 2**46) + bound < 1, f"binade 2^{e}: t + E = {float(t + bound)}"


def inputs(exponent: float) -> np.ndarray:
    """A few thousand x: random over the shortcut's range, the pass's own (softmax totals,
    rmsnorm's mean + eps), constructed ones within 2^-12 ULP of a midpoint or of the margin,
    and the edges (powers of two, range ends, specials) of benchmarks/check_pow_shortcut.py."""
    script = check_script()
    rng = np.random.default_rng(2026)
    low, high = _fused.POW_SHORTCUT_RANGES[exponent]
    seen = (1.0, 64.0) if exponent in (-1.0, -2.0) else (1e-5, 1e6)
    return np.concatenate([script.log_uniform(rng, 1000, low, high), script.log_uniform(rng, 1000, *seen),
                           script.fused_constructed(rng, exponent, 200, 200_000)])


@BUILDS
@pytest.mark.parametrize("exponent", EXPONENTS)
def test_shortcut_gives_pythons_bits(module, exponent):
    """Shortcut on: Python's x ** y wherever Python gives a float, and the bits of the plain
    path (libm pow for every x) everywhere; most x in range are settled without pow, the
    near-midpoint ones never."""
    base = inputs(exponent)
    fast, plain = np.empty_like(base), np.empty_like(base)
    calls = module.power_array(base, exponent, fast, shortcut=True)
    assert module.power_array(base, exponent, plain, shortcut=False) == base.size
    assert (bits(fast) == bits(plain)).all()
    expected = [python_power(float(x), exponent) for x in base]
    assert all(value is None or bits(value) == bits(got) for value, got in zip(expected, fast))
    assert calls < base.size // 2  # not vacuous: the shortcut settled most
    script = check_script()
    midpoints = np.array(script.fused_near(np.random.default_rng(1), exponent, 0.5, 50, 100_000))
    assert midpoints.size >= 10
    assert module.power_array(midpoints, exponent, np.empty_like(midpoints), shortcut=True) == midpoints.size


@BUILDS
@pytest.mark.parametrize("exponent", EXPONENTS)
def test_power_array_in_place(module, exponent):
    """out may be base (power_array's docstring): in place, the bits of a separate out, also
    for the x the shortcut estimates and then leaves to libm (4.0: a power of two result; the
    near-midpoint ones), whose estimate must not replace the x pow is called with."""
    base = np.concatenate([[4.0, 3.0, 1.0], inputs(exponent)])
    separate = np.empty_like(base)
    module.power_array(base, exponent, separate, shortcut=True)
    in_place = base.copy()
    module.power_array(in_place, exponent, in_place, shortcut=True)
    assert (bits(in_place) == bits(separate)).all()
    assert in_place[0] == 4.0 ** exponent


@BUILDS
@pytest.mark.parametrize("exponent", EXPONENTS)
def test_what_the_proof_leaves_goes_to_libm(module, exponent):
    """nan, inf, zero, negative, subnormal x, x just outside the range and x whose result is
    a power of two call libm pow; x == 1.0 gives 1.0 without it, as CPython's ** does."""
    low, high = module.POW_SHORTCUT_RANGES[exponent]
    for x in (math.nan, math.inf, -math.inf, 0.0, -0.0, -3.0, 5e-324, 2.0**-1030, math.nextafter(low, 0.0),
              math.nextafter(high, math.inf), 4.0):  # 4 ** y: a power of two for each y
        fast, plain = np.empty(1), np.empty(1)
        assert module.power_array(np.array([x]), exponent, fast, shortcut=True) == 1, x
        module.power_array(np.array([x]), exponent, plain, shortcut=False)
        assert bits(fast) == bits(plain), x
    out = np.empty(1)
    assert module.power_array(np.array([1.0]), exponent, out, shortcut=True) == 0
    assert out[0] == 1.0 == 1.0 ** exponent
    with pytest.raises(ValueError, match="exponent must be one of"):
        module.power_array(np.ones(1), 2.0, np.empty(1), shortcut=True)
    with pytest.raises(ValueError, match="1 elements, out has 2"):
        module.power_array(np.ones(1), exponent, np.empty(2), shortcut=True)


def test_engine_follows_the_adam_kernels_rule(monkeypatch):
    """The fused engine's loops take the shortcut where engines.adam.POW_SHORTCUT allows it,
    and give the same bits without it (loss and gradients of two passes)."""
    config = GPTConfig(n_layer=1, n_embd=8, block_size=6, n_head=2)
    layout = state_dict_layout(config, 6)
    weights = init_weights(random.Random(3), layout)
    results = {}
    for allowed in (True, False):
        monkeypatch.setattr(fused, "POW_SHORTCUT", allowed)
        engine = make_engine("fused", layout, weights)
        losses = [engine.forward_backward(config, tokens) for tokens in ([5, 0, 1, 2, 3, 4, 5], [5, 2, 5])]
        assert engine._loops.pow_shortcut is allowed
        results[allowed] = (bits(losses).tolist(), bits(engine.gradients()).tolist())
    assert results[True] == results[False]


def test_plain_pow_switch_reaches_the_fused_loops():
    code = ("from cymicrogpt.engines import fused, adam; "
            "print(fused.POW_SHORTCUT, adam.POW_SHORTCUT)")
    allowed, _ = adam.pow_shortcut_allowed("", adam.glibc_version(), platform.machine(), sys.maxsize > 2**32)
    for value, expected in (("1", "False False"), ("", f"{allowed} {allowed}")):
        env = dict(os.environ, CYMICROGPT_PLAIN_POW=value)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == expected.split()


@pytest.mark.parametrize("exponent", EXPONENTS)
def test_both_builds_leave_the_same_inputs_to_libm(exponent):
    """The baseline's Dekker products and the AVX2 build's FMAs are the same doubles
    (pow_shortcut.h), so the builds settle the same inputs."""
    base = inputs(exponent)
    calls = {module.power_array(base, exponent, np.empty_like(base), shortcut=True) for module in fused_builds()}
    assert len(calls) == 1


# --- the graph engine's powers (GraphOps, backend "cython") ---------------------------------
# How GraphOps computes them: libm pow, the shortcut with Dekker's products, with FMAs (its
# copy of pow_shortcut.h compiled for FMA, run where the CPU has it)
GRAPH_MODES = pytest.mark.parametrize("mode", [
    "plain", "dekker",
    pytest.param("fma", marks=pytest.mark.skipif(not _adam.cpu_has_avx2_fma(), reason="the CPU has no FMA"))])


def graph_ops(weights: list[float], mode: str, *, eps: float = 1e-5) -> GraphOps:
    ops = GraphOps([MatrixSlot("w", 1, len(weights), 0)], weights, rmsnorm_eps=eps, pow_shortcut=mode != "plain",
                   pow_fma=mode == "fma")
    assert ops.pow_fma is (mode == "fma")
    return ops


def settled(x: float, exponent: float) -> bool:
    """Does pow_shortcut.h settle x ** exponent without libm pow?"""
    return _fused.power_array(np.array([x]), exponent, np.empty(1), shortcut=True) == 0


@pytest.mark.parametrize("exponent", (-0.5, -1.5))
@GRAPH_MODES
def test_graph_rmsnorm_gives_pythons_bits(exponent, mode):
    """rmsnorm's scale (ms + eps) ** -0.5 and its local gradient -0.5 * (ms + eps) ** -1.5
    in the graph are Python's, for ms + eps = s near a midpoint or the margin of
    s ** exponent (which the shortcut leaves to libm pow) and for random s (which it
    settles): x = [1.0] and eps = s - 1 (exact: s in [1, 2]) make the graph's shifted node s."""
    script = check_script()
    rng = np.random.default_rng(19)
    def in_one_to_two(xs: list[float]) -> list[float]:
        """Each x of [2^e, 2^(e+1)) with e even, scaled by 4^(-e/2) into [1, 2): x ** exponent
        scaled by a power of two, exactly, so just as near a midpoint (or the margin)."""
        return [math.ldexp(m, 1) for m, e in map(math.frexp, xs) if e % 2]  # m 2^e, m in [0.5, 1)

    midpoints, margins = (in_one_to_two(script.fused_near(rng, exponent, target, 200, 200_000))
                          for target in (0.5, _fused.POW_SHORTCUT_MARGIN))
    assert len(midpoints) >= 20 and len(margins) >= 20
    assert not any(settled(s, exponent) for s in midpoints)
    randoms = [float(s) for s in rng.uniform(1.0, 2.0, 200)]
    assert sum(settled(s, exponent) for s in randoms) > 150  # the shortcut's own path, mostly
    for s in midpoints + margins + randoms:
        ops = graph_ops([1.0], mode, eps=s - 1.0)
        out = ops.rmsnorm(ops.row("w", 0))
        ops.backward(out)
        shifted, scale = 3, 4  # nodes after the weight: sum of squares, mean, + eps, ** -0.5, output
        values, grads = ops.node_values(), ops.node_grads()
        assert values[shifted] == s
        assert bits(values[scale]) == bits(s ** -0.5), s
        assert bits(grads[shifted]) == bits(-0.5 * s ** -1.5), s  # its local gradient, times 1.0


@pytest.mark.parametrize("exponent", (-1.0, -2.0))
@GRAPH_MODES
def test_graph_softmax_gives_pythons_bits(exponent, mode):
    """softmax's total ** -1 (the value of each probability's inverse node: nll's, and
    probs()' for sampling) and its local gradient -1 * total ** -2 in the graph are
    Python's, for totals the shortcut leaves to libm pow and totals it settles: logits
    [0, L] make total = 1 + exp(L)."""
    rng = np.random.default_rng(20)
    logits = [float(v) for v in rng.uniform(-30.0, 0.0, 20_000)]
    declined = [L for L in logits if not settled(1.0 + math.exp(L), exponent)][:60]
    assert len(declined) >= 30
    for L in declined + logits[:100]:
        total = 1.0 + math.exp(L)
        ops = graph_ops([0.0, L], mode)
        row = ops.row("w", 0)
        assert bits(ops.probs(row, 1.0)[0]) == bits(total ** -1), L  # 1.0 * total ** -1
        ops.begin_sequence()
        ops.backward(ops.nll(ops.row("w", 0), 1))
        total_node, inverse = 6, 7  # after the 2 weights: 2 shifted logits, 2 exps, total, total ** -1
        values, grads = ops.node_values(), ops.node_grads()
        assert values[total_node] == total
        assert bits(values[inverse]) == bits(total ** -1), L
        assert grads[total_node] == (-1.0 * total ** -2) * grads[inverse], L


def test_compiled_engine_follows_the_adam_kernels_rule(monkeypatch):
    """Backend "cython" builds its GraphOps with engines.adam.POW_SHORTCUT, and with FMA
    products where the fused loops run their AVX2 build (builds.avx2_fma_in_use)."""
    config = GPTConfig(n_layer=1, n_embd=8, block_size=6, n_head=2)
    layout = state_dict_layout(config, 6)
    for allowed, fma in ((True, True), (True, False), (False, True)):
        monkeypatch.setattr(compiled, "POW_SHORTCUT", allowed)
        monkeypatch.setattr(compiled, "avx2_fma_in_use", lambda fma=fma: fma)
        ops = make_engine("cython", layout, init_weights(random.Random(3), layout)).ops
        assert ops.pow_shortcut is allowed
        assert ops.pow_fma is (allowed and fma and _adam.cpu_has_avx2_fma())
    assert GraphOps(layout, init_weights(random.Random(3), layout)).pow_fma is False  # by default
