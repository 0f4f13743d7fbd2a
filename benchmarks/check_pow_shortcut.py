"""Check the pow shortcuts (Adam's, the fused pass's) against libm pow, then time the Adam step.

The compiled Adam step (csrc/cymicrogpt/_adam.pyx) replaces Python's g**2 and
v_hat**0.5 by g*g and sqrt(v_hat) where it proves that libm pow returns exactly that
(glibc >= 2.28: the docstring's bound, margin t = SHORTCUT_MARGIN ULP).  This script tests
the proof empirically, through the very passes the step runs (`power_array`, shortcut
on vs off = plain libm pow), in the build the step runs (AVX2 where the CPU has it):

1. random inputs: squares of random doubles in the shortcut's range (2^-32..2^32) and
   over the whole exponent range (subnormal to 2^511), and of realistic gradients (20%
   zeros, N(0, 1) * 10^U(-8, 1)); roots of random doubles in range (2^-128..2^128) and
   over the whole range (subnormal to DBL_MAX), and of realistic v_hat values;
2. constructed inputs: x whose exact square lies within ~2^-49 ULP of a midpoint between
   two doubles or of the margin t (on either side), v whose exact root lies within
   ~2^-55 ULP of a midpoint or within 2^-14 ULP of the margin, and x or v whose square
   or root lies next to a power of two;

and reports mismatches (must be 0: the exit status is 1 otherwise) and the fraction sent
to libm pow.  glibc on x86_64 has two builds of pow (with FMA, and SSE2 without), chosen
by the CPU: GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA makes it take the SSE2 one (the
kernel's own build choice does not depend on it).

The fused training pass's shortcut (csrc/cymicrogpt/pow_shortcut.h: x ** -1.0, -2.0,
-0.5, -1.5 for x > 0) gets the same check, through `power_array` of the build the pass
runs (engines.fused.fused_module): per exponent, random doubles in its range and over the
whole positive range (subnormal to DBL_MAX), the inputs the pass sees (softmax totals in
[1, 64] for -1 and -2, rmsnorm's mean + eps in [1e-5, 1e6] for -0.5 and -1.5, log-uniform),
and constructed ones: x whose exact result lies within 2^-12 ULP of a midpoint or of the
margin t (either side; found among random x by an 80-bit long double estimate, then
measured exactly with 60-digit decimals), x next to powers of two and to the range's ends,
and the special values (0, inf, nan, negative, subnormal, 1.0), which must go to libm.

Then it times one Adam step on the default model's 4,192 parameters with real gradients
(step 100 of a names.txt run), as training calls it (optimizer.step, bound to the
engine's arena): each build of the kernel (baseline, AVX2) with plain pow and with the
shortcut, all interleaved in one run, each the best, median and 95th percentile of many
repeats; and counts the step's libm pow calls.

Optionally (--in-run STEPS) it times optimizer.step where the training step calls it, in
real runs of each compiled backend: median and percentiles over steps 2..STEPS.

    python benchmarks/check_pow_shortcut.py [--millions 100] [--powers all|adam|fused] [--data PATH]
                                            [--repeats 3000] [--in-run 1000]
"""
from __future__ import annotations

import argparse
import decimal
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import cymicrogpt as mg
from cymicrogpt import _adam
from cymicrogpt._adam import SHORTCUT_MARGIN, SHORTCUT_ROOT_RANGE
from cymicrogpt.engines.adam import ADAM_KERNELS, POW_SHORTCUT_REASON, VectorAdam, adam_kernels
from cymicrogpt.engines.fused import fused_module
from cymicrogpt.schedule import adam_scalars
from cymicrogpt.training import start_run

CHUNK = 5_000_000
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "names.txt"


# --- inputs ----------------------------------------------------------------------------------
def random_doubles(rng: np.random.Generator, size: int, lowest_exponent: int, highest_exponent: int) -> np.ndarray:
    """Doubles with uniformly random fraction bits and biased exponent field in
    [lowest_exponent, highest_exponent] (0 = subnormal), random sign."""
    fraction = rng.integers(0, 2**52, size, dtype=np.uint64)
    exponent = rng.integers(lowest_exponent, highest_exponent + 1, size, dtype=np.uint64)
    sign = rng.integers(0, 2, size, dtype=np.uint64) << np.uint64(63)
    return (sign | (exponent << np.uint64(52)) | fraction).view(np.float64)


def realistic_gradients(rng: np.random.Generator, size: int) -> np.ndarray:
    grads = rng.standard_normal(size) * 10.0 ** rng.uniform(-8, 1, size)
    grads[rng.random(size) < 0.2] = 0.0
    return grads


def realistic_v_hats(rng: np.random.Generator, size: int) -> np.ndarray:
    """Squared gradients averaged and decayed: |N(0, 1)| * 10^U(-20, 2), some zero."""
    v = np.abs(rng.standard_normal(size)) * 10.0 ** rng.uniform(-20, 2, size)
    v[rng.random(size) < 0.02] = 0.0
    return v


def odd_roots_mod_power_of_two(c: int, bits: int) -> list[int]:
    """The four odd r with r*r == c (mod 2^bits), for c == 1 (mod 8) (Hensel lifting)."""
    r = 1
    for k in range(3, bits):
        if (r * r - c) % (1 << (k + 1)):
            r += 1 << (k - 1)
    modulus = 1 << bits
    return sorted({r % modulus, -r % modulus, (r + modulus // 2) % modulus, (-r + modulus // 2) % modulus})


SQRT2_2_52 = 6369051672525773  # ceil(sqrt(2) * 2^52): M*M >= 2^105 from here on
SQRT2_2_53 = 12738103345051546  # ceil(sqrt(2) * 2^53)


def squares_near(fraction: float, count: int) -> list[int]:
    """53-bit integers M whose square lies `fraction` of an ULP above a double, to within
    count * 2^-49 ULP: M*M == c (mod 2^L), c / 2^L ~ fraction, where L, the number of bits
    rounding drops, is 52 below M = sqrt(2) * 2^52 and 53 from there on."""
    found: list[int] = []
    for dropped, low, high in ((52, 1 << 52, SQRT2_2_52), (53, SQRT2_2_52, 1 << 53)):
        c = int(fraction * (1 << dropped)) // 8 * 8 + 1
        wanted = len(found) + count
        while len(found) < wanted:
            for root in odd_roots_mod_power_of_two(c, dropped):
                candidate = root + ((low - root + (1 << dropped) - 1) >> dropped << dropped)
                if low <= candidate < high:
                    found.append(candidate)
            c += 8
    return found


def roots_near_midpoint(count: int) -> list[tuple[int, int]]:
    """(V, k): v = V * 2^k (V of 53 bits) whose root lies |d| / 4T ULP (about |d| 2^-55.5)
    below or above the midpoint T/2 between two consecutive 53-bit integers, T odd:
    T*T - d == V * 2^(k+2), for the small d == 1 (mod 8) tried in turn."""
    found: list[tuple[int, int]] = []
    step = 0
    while len(found) < count:
        for d in (1 + 8 * step, -7 - 8 * step):
            for shift, low, high in ((54, 1 << 53, SQRT2_2_53), (55, SQRT2_2_53, 1 << 54)):
                for root in odd_roots_mod_power_of_two(d % (1 << shift), shift):
                    if low <= root < high:
                        found.append(((root * root - d) >> shift, shift - 2))
        step += 1
    return found[:count]


def binade_exponents(rng: np.random.Generator, count: int, low: int, high: int) -> np.ndarray:
    """Exponents to scale constructed mantissas by: uniform in [low, high), so that the
    results span the shortcut's range and a few binades beyond it on either side."""
    return rng.integers(low, high, count)


def roots_near_margin(rng: np.random.Generator, count: int, width: float = 2.0**-14) -> np.ndarray:
    """v in the shortcut's range whose exact root lies within `width` ULP of the margin t
    (inside or outside it): drawn at random and kept when |rho| / (2 s u), rho = v - s^2
    computed exactly (Dekker's two-product, as in the kernel), is that close to t."""
    low, high = (int(np.log2(bound)) for bound in SHORTCUT_ROOT_RANGE)
    found: list[np.ndarray] = []
    while sum(map(len, found)) < count:
        v = np.abs(random_doubles(rng, 1_000_000, 1023 + low, 1023 + high - 1))
        s = np.sqrt(v)
        split = 134217729.0 * s
        hi = split - (split - s)
        lo = s - hi
        square = s * s
        rho = (v - square) - (((hi * hi - square) + 2.0 * (hi * lo)) + lo * lo)
        ulp = np.ldexp(1.0, np.frexp(s)[1] - 53)
        distance = np.abs(rho) / (2.0 * s * ulp)  # ~|d|/u, to well within 2^-40
        found.append(v[np.abs(distance - SHORTCUT_MARGIN) < width])
    return np.concatenate(found)[:count]


def constructed_inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(bases to square, bases to take the root of), scaled over the shortcut's binades."""
    squares = []
    t = SHORTCUT_MARGIN
    for fraction in (0.5, t, 1.0 - t, t - 2.0**-40, 1.0 - t + 2.0**-40, 0.0, 0.9999):
        mantissas = squares_near(fraction, 500)
        # x = M 2^k with M ~ 2^52.5: k in [-86, -18) puts x^2 in [2^-67, 2^69)
        for mantissa, k in zip(mantissas, binade_exponents(rng, len(mantissas), -86, -18)):
            squares.append(math.ldexp(float(mantissa), int(k)) * rng.choice([-1.0, 1.0]))
    for exponent in range(-40, 40):  # squares next to a power of two (x near 2^e, sqrt(2) 2^e)
        for base in (1.0, math.sqrt(2.0)):
            squares.extend(math.ldexp(base + k * 2.0**-52, exponent) for k in range(-4, 5))
    midpoints = roots_near_midpoint(4000)
    # v = V 2^(shift + 2j) with V ~ 2^52.5 and shift 52 or 53: 2j in [-240, 30) spans 2^-135..2^136
    roots = [math.ldexp(float(mantissa), shift + 2 * int(j))
             for (mantissa, shift), j in zip(midpoints, binade_exponents(rng, len(midpoints), -120, 15))]
    for exponent in range(-135, 136):  # roots next to a power of two
        roots.extend(math.ldexp(1.0 + k * 2.0**-52, exponent) for k in range(-4, 5))
    roots.extend(roots_near_margin(rng, 2000))
    return np.array(squares), np.array(roots)


# --- the exactness check -------------------------------------------------------------------
class Tally:
    """Counts of a shortcut checked against plain libm: `compute(inputs, out, shortcut)` fills
    out and returns its libm calls (the shortcut off: plain libm for every input)."""

    def __init__(self, compute: Callable[[np.ndarray, np.ndarray, bool], int]) -> None:
        self.compute = compute
        self.inputs = self.mismatches = self.libm_calls = 0

    def check(self, inputs: np.ndarray) -> None:
        fast, plain = np.empty_like(inputs), np.empty_like(inputs)
        self.libm_calls += self.compute(inputs, fast, True)
        self.compute(inputs, plain, False)
        self.mismatches += int(np.count_nonzero(fast.view(np.uint64) != plain.view(np.uint64)))
        self.inputs += inputs.size

    def line(self, label: str) -> str:
        return (f"| {label} | {self.inputs:,} | {self.mismatches} | "
                f"{self.libm_calls / max(self.inputs, 1):.2%} |")


def powers(exponent: float, power_array: Callable[..., int] = ADAM_KERNELS.power_array
           ) -> Callable[[np.ndarray, np.ndarray, bool], int]:
    """bases ** exponent through a build's power_array (Adam's, or the fused pass's), as a
    Tally computes."""
    return lambda bases, out, shortcut: power_array(bases, exponent, out, shortcut=shortcut)


def check_exactness(millions: int, seed: int) -> bool:
    rng = np.random.default_rng(seed)
    per_kind = millions * 1_000_000 // 6
    kinds = {
        "g**2, random doubles 2^-32..2^32 (the shortcut's range)": lambda n: random_doubles(rng, n, 1023 - 32, 1023 + 31),
        "g**2, random doubles 2^-1074..2^511": lambda n: random_doubles(rng, n, 0, 1023 + 510),
        "g**2, realistic gradients": lambda n: realistic_gradients(rng, n),
        "v**0.5, random doubles 2^-128..2^128 (the shortcut's range)": lambda n: np.abs(
            random_doubles(rng, n, 1023 - 128, 1023 + 127)),
        "v**0.5, random doubles 2^-1074..DBL_MAX": lambda n: np.abs(random_doubles(rng, n, 0, 2046)),
        "v**0.5, realistic v_hat": lambda n: realistic_v_hats(rng, n),
    }
    print("| inputs | count | mismatches | sent to libm pow |\n|---|---:|---:|---:|")
    total = 0
    for label, make in kinds.items():
        tally = Tally(powers(2.0 if label.startswith("g") else 0.5))
        for start in range(0, per_kind, CHUNK):
            tally.check(make(min(CHUNK, per_kind - start)))
        print(tally.line(label), flush=True)
        total += tally.mismatches
    squares, roots = constructed_inputs(rng)
    for label, bases, exponent in (("g**2, constructed (near midpoint/margin/2^k)", squares, 2.0),
                                   ("v**0.5, constructed (near midpoint/margin/2^k)", roots, 0.5)):
        tally = Tally(powers(exponent))
        tally.check(bases)
        print(tally.line(label))
        total += tally.mismatches
    return total == 0


# --- the fused pass's powers --------------------------------------------------------------------
FUSED_EXPONENTS = (-1.0, -2.0, -0.5, -1.5)


def log_uniform(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def exact_power(x: float, exponent: float) -> decimal.Decimal:
    """x ** exponent to 60 digits (about 2^-199 relative: exact for telling ULPs apart)."""
    with decimal.localcontext() as context:
        context.prec = 60
        d = decimal.Decimal(x)  # exact
        return {-1.0: 1 / d, -2.0: 1 / (d * d), -0.5: 1 / d.sqrt(), -1.5: 1 / (d * d.sqrt())}[exponent]


def ulps_from_nearest(x: float, exponent: float) -> float:
    """(X - c) / ulp(c), X = x ** exponent exactly and c the double nearest to it."""
    exact = exact_power(x, exponent)
    nearest = float(exact)  # correctly rounded
    with decimal.localcontext() as context:
        context.prec = 60
        return float((exact - decimal.Decimal(nearest)) / decimal.Decimal(math.ulp(nearest)))


def estimated_ulps(x: np.ndarray, exponent: float) -> np.ndarray:
    """ulps_from_nearest, estimated in long double (80-bit on x86: to about 2^-10 ULP)."""
    wide = x.astype(np.longdouble)
    power = {-1.0: 1 / wide, -2.0: 1 / (wide * wide), -0.5: 1 / np.sqrt(wide),
             -1.5: 1 / (wide * np.sqrt(wide))}[exponent]
    nearest = power.astype(np.float64)
    return ((power - nearest) / np.spacing(nearest)).astype(np.float64)


def fused_near(rng: np.random.Generator, exponent: float, target: float, count: int, draws: int,
               width: float = 2.0**-12) -> list[float]:
    """Up to `count` x in the shortcut's range whose exact x ** exponent lies within `width`
    ULP of `target` ULPs from the nearest double (0.5: a midpoint; the margin t), either
    side, among `draws` random x: a long double estimate picks the candidates, 60-digit
    decimals keep those that truly are that close."""
    low, high = fused_module().POW_SHORTCUT_RANGES[exponent]
    x = log_uniform(rng, draws, low, high)
    candidates = x[np.abs(np.abs(estimated_ulps(x, exponent)) - target) < 2.0**-8]
    found = [float(v) for v in candidates if abs(abs(ulps_from_nearest(float(v), exponent)) - target) < width]
    return found[:count]


def fused_edges(exponent: float) -> list[float]:
    """x next to powers of two (results next to powers of two), at and next to the range's
    ends, and special values (0, inf, nan, negative, subnormal, 1.0: all to libm but 1.0)."""
    low, high = fused_module().POW_SHORTCUT_RANGES[exponent]
    edges = [math.ldexp(1.0 + k * 2.0**-52, e) for e in range(-130, 131, 2) for k in range(-4, 5)]
    for bound in (low, high):
        edges += [bound, math.nextafter(bound, 0.0), math.nextafter(bound, math.inf)]
    edges += [0.0, -0.0, math.inf, -math.inf, math.nan, -1.0, -2.0, 5e-324, 2.0**-1030, 2.0**-1022,
              1.0, math.nextafter(1.0, 0.0), math.nextafter(1.0, 2.0), sys.float_info.max]
    return edges


def fused_constructed(rng: np.random.Generator, exponent: float, count: int, draws: int) -> np.ndarray:
    margin = fused_module().POW_SHORTCUT_MARGIN
    near = [fused_near(rng, exponent, target, count, draws) for target in (0.5, margin)]
    return np.array(near[0] + near[1] + fused_edges(exponent))


def check_fused_exactness(millions: int, seed: int) -> bool:
    rng = np.random.default_rng(seed)
    module = fused_module()
    per_kind = millions * 1_000_000 // (3 * len(FUSED_EXPONENTS))
    print(f"\nThe fused pass's shortcut ({module.__name__}):")
    print("| inputs | count | mismatches | sent to libm pow |\n|---|---:|---:|---:|")
    total = 0
    for exponent in FUSED_EXPONENTS:
        low, high = module.POW_SHORTCUT_RANGES[exponent]
        seen = (1.0, 64.0) if exponent in (-1.0, -2.0) else (1e-5, 1e6)
        fields = (1023 + math.frexp(low)[1] - 1, 1023 + math.frexp(high)[1] - 2)  # biased exponents in range
        kinds = {
            f"x ** {exponent}, random doubles {low:g}..{high:g} (the shortcut's range)":
                lambda n, fields=fields: np.abs(random_doubles(rng, n, *fields)),
            f"x ** {exponent}, random doubles 2^-1074..DBL_MAX": lambda n: np.abs(random_doubles(rng, n, 0, 2046)),
            f"x ** {exponent}, the pass's inputs, log-uniform in [{seen[0]:g}, {seen[1]:g}]":
                lambda n, seen=seen: log_uniform(rng, n, *seen),
        }
        for label, make in kinds.items():
            tally = Tally(powers(exponent, module.power_array))
            for start in range(0, per_kind, CHUNK):
                tally.check(make(min(CHUNK, per_kind - start)))
            print(tally.line(label), flush=True)
            total += tally.mismatches
        tally = Tally(powers(exponent, module.power_array))
        tally.check(fused_constructed(rng, exponent, 2000, 4_000_000))
        print(tally.line(f"x ** {exponent}, constructed (near midpoint/margin, 2^k, range ends, specials)"),
              flush=True)
        total += tally.mismatches
    return total == 0


# --- timing ----------------------------------------------------------------------------------
def step_powers(params_grads_m_v: list[np.ndarray], step: int, num_steps: int, lr: float) -> str:
    """How many of the step's g**2 and v_hat**0.5 the shortcut leaves to libm pow."""
    _, grads, _, v = params_grads_m_v
    beta2 = VectorAdam.beta2
    squares = np.empty_like(grads)
    square_calls = ADAM_KERNELS.power_array(grads, 2.0, squares, shortcut=True)
    v_hat = (beta2 * v + (1 - beta2) * squares) / adam_scalars(lr, step, num_steps).bias_correction2
    root_calls = ADAM_KERNELS.power_array(v_hat, 0.5, np.empty_like(v_hat), shortcut=True)
    nonzero = np.count_nonzero(grads)
    return (f"libm pow calls: {square_calls} of {grads.size} g**2 ({square_calls / nonzero:.2%} of the {nonzero} "
            f"nonzero), {root_calls} of {v_hat.size} v_hat**0.5 ({root_calls / v_hat.size:.2%})")


def time_adam(data: Path, repeats: int, at_step: int) -> None:
    run = start_run(mg.load_docs(data), steps=1000, backend="cython")
    run.train(until=at_step)
    run.forward_backward()  # the gradients of step `at_step`, left in the engine
    engine = run.engine
    saved = [engine.weight_array.copy(), engine.grad_array.copy(), run.optimizer.m.copy(), run.optimizer.v.copy()]
    size = saved[0].size

    def optimizer(module, shortcut: bool) -> VectorAdam:
        """An optimizer over the engine's arena, as the run's own (make_optimizer), with this build."""
        return VectorAdam(engine.ops.arena, size, run.lr, shortcut=shortcut, kernels=module)

    variants = {"baseline build, plain libm pow": optimizer(_adam, False),
                "baseline build, pow shortcut": optimizer(_adam, True)}
    avx2 = adam_kernels(no_avx2="")
    if avx2 is not _adam:
        variants.update({"AVX2 build, plain libm pow": optimizer(avx2, False),
                         "AVX2 build, pow shortcut": optimizer(avx2, True)})
    times: dict[str, list[float]] = {label: [] for label in variants}
    results = {}
    for _ in range(repeats):
        for label, adam in variants.items():
            params, grads = engine.weight_array, engine.grad_array
            params[:], grads[:] = saved[:2]
            adam.set_moments(*saved[2:])  # as a resumed run does (the moments are read-only views)
            begin = time.perf_counter()
            adam.step(at_step, run.num_steps)
            times[label].append(time.perf_counter() - begin)
            results[label] = np.concatenate([params, adam.m, adam.v]).view(np.uint64).copy()
    first = next(iter(results.values()))
    identical = all((r == first).all() for r in results.values())
    zeros = np.count_nonzero(saved[1] == 0.0)
    print(f"\nAdam step on the default model: {size:,} parameters, the gradients of step {at_step} "
          f"of a names.txt run ({zeros / size:.0%} exactly 0); {repeats} interleaved repeats of optimizer.step "
          "as training calls it (bound to the engine's arena)")
    print(step_powers(saved, at_step, run.num_steps, run.lr))
    print("| implementation | best | median | 95th percentile |\n|---|---:|---:|---:|")
    for label, seconds in times.items():
        p95 = statistics.quantiles(seconds, n=20)[-1]
        print(f"| {label} | {min(seconds) * 1e6:.1f} us | {statistics.median(seconds) * 1e6:.1f} us | "
              f"{p95 * 1e6:.1f} us |")
    print(f"all bit-identical: {identical}")


def timed_step(step: Callable[[int, int], None], times: list[float]) -> Callable[[int, int], None]:
    """`step`, recording the seconds of each call in `times`."""
    def timed(step_index: int, num_steps: int) -> None:
        begin = time.perf_counter()
        step(step_index, num_steps)
        times.append(time.perf_counter() - begin)
    return timed


def time_adam_in_runs(data: Path, steps: int) -> None:
    """optimizer.step timed where the training step calls it, steps 2..`steps` of the default
    run, for each compiled backend (the arrays as a real step leaves them in the caches)."""
    print(f"\nAdam in real runs: optimizer.step, steps 2-{steps} of the default {steps}-step run on names.txt")
    print("| backend | median | 5th percentile | 95th percentile |\n|---|---:|---:|---:|")
    for backend in ("cython", "fused"):
        run = start_run(mg.load_docs(data), steps=steps, backend=backend)
        times: list[float] = []
        run.optimizer.step = timed_step(run.optimizer.step, times)
        run.train()
        quantiles = statistics.quantiles(times[1:], n=20)
        print(f"| {backend} | {statistics.median(times[1:]) * 1e6:.1f} us | {quantiles[0] * 1e6:.1f} us | "
              f"{quantiles[-1] * 1e6:.1f} us |")


def machine(shortcut: str = f"{POW_SHORTCUT_REASON}; kernels {ADAM_KERNELS.__name__}, {fused_module().__name__}"
            ) -> str:
    """The machine, its load and libraries, and `shortcut`: where it runs and which build."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.machine()} {cpu}, {os.cpu_count()} cores, load average {load}; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}; {shortcut}; "
            f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", type=int, default=100, help="random inputs, in millions (0: skip the check)")
    parser.add_argument("--powers", choices=("all", "adam", "fused"), default="all",
                        help="whose shortcut to check: the Adam kernel's, the fused pass's, or both")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="names.txt, for real gradients")
    parser.add_argument("--repeats", type=int, default=3000, help="timed Adam steps per implementation (0: skip)")
    parser.add_argument("--at-step", type=int, default=100, help="take the gradients of this training step")
    parser.add_argument("--in-run", type=int, default=0, metavar="STEPS",
                        help="also time optimizer.step inside real runs of this many steps (0: skip)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    exact = True
    if args.millions:
        begin = time.perf_counter()
        exact = True
        if args.powers in ("all", "adam"):
            exact = check_exactness(args.millions, args.seed)
        if args.powers in ("all", "fused"):
            exact = check_fused_exactness(args.millions, args.seed) and exact
        print(f"shortcut == libm pow on every input: {exact} ({time.perf_counter() - begin:.0f} s)")
    if (args.repeats or args.in_run) and not args.data.is_file():
        print(f"no names.txt at {args.data}: pass --data PATH to time the Adam step", file=sys.stderr)
        return 2
    if args.repeats:
        time_adam(args.data, args.repeats, args.at_step)
    if args.in_run:
        time_adam_in_runs(args.data, args.in_run)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
