"""Check the fused pass's exp shortcut against libm exp.

The fused training pass (csrc/cymicrogpt/_fused.pyx, AVX2 build) replaces the softmax's
libm exp calls by a double-double exp where it proves that libm exp returns that very
double (glibc >= 2.29: exp_shortcut.h's argument, margin t = 0.4888 ULP).  This script
tests the proof empirically through the very loop the pass runs (`exp_array`, shortcut on
vs off = plain libm exp):

1. random inputs: 10^8 (--millions) of each kind: uniform over [-745, 0] (every result
   down to the subnormals, and the arguments past the proven range (-512, 0]), uniform
   [-40, 0] (the logit differences that occur), random doubles of every magnitude
   from the subnormals up to 2^10, negative (tiny arguments, the range's edge);
2. constructed inputs: x whose exact exp lies within ~2^-8 ULP of a midpoint between two
   doubles or of the margin t (above or below a double), picked from random x with long
   double arithmetic (64-bit significand), over [-40, 0] and [-745, 0]; x = log(V) rounded,
   for V within 2^-12 ULP of a midpoint or of the margin next to a double just below 1
   (decimal arithmetic: there exp(x) = V (1 + 2^-65 at most)); and the edge cases
   (+-0, tiny, -512 and its neighbours, -inf, nan, positive, huge);

and reports mismatches (must be 0: the exit status is 1 otherwise) and the fraction sent
to libm exp.  glibc on x86_64 has several builds of exp (FMA, and AVX or SSE2 without),
chosen by the CPU: GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA makes it take one without
FMA (the pass's own build choice does not depend on it).

Then (--repeats) it times the fused training pass (forward and backward, one document) with
the shortcut and without, on the documents of steps 100-199 of the default run on
names.txt and its weights at step 100: each document --repeats times with each, the two
interleaved and each first in turn (the one run second finds the caches the other left);
it reports the mean over the documents of each one's fastest pass, and compares the
losses of both (float ==).

    python benchmarks/check_exp_shortcut.py [--millions 100] [--seed 2026] [--repeats 30]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script's tally and machine line
from check_pow_shortcut import CHUNK, Tally, machine, random_doubles

from cymicrogpt import _fused
from cymicrogpt.data import default_dataset, load_docs
from cymicrogpt.engines.fused import EXP_SHORTCUT_REASON, fused_module
from cymicrogpt.training import start_run

MARGIN = _fused.EXP_SHORTCUT_CONSTANTS["margin"]


def near_fraction_of_an_ulp(rng: np.random.Generator, low: float, targets: tuple[float, ...], count: int,
                            width: float = 2.0**-8) -> np.ndarray:
    """x in [low, 0] whose exp lies within ~width ULP of a target fraction of an ULP above or
    below a double (0.5: a midpoint; the margin), picked with long double arithmetic (exact
    to about 2^-10 ULP of a double with x86-64's 64-bit significand; none where long double
    is double)."""
    if np.finfo(np.longdouble).nmant < 63:
        return np.empty(0)
    found: list[np.ndarray] = []
    while sum(map(len, found)) < count:
        x = rng.uniform(low, 0.0, 200_000)
        precise = np.exp(x.astype(np.longdouble))
        nearest = precise.astype(np.float64)
        fraction = np.abs(((precise - nearest) / np.spacing(nearest).astype(np.longdouble)).astype(np.float64))
        keep = np.zeros(x.size, dtype=bool)
        for target in targets:
            keep |= np.abs(fraction - target) < width
        found.append(x[keep])
    return np.concatenate(found)[:count]


def logs_near_fractions(rng: np.random.Generator, targets: tuple[float, ...], count: int) -> np.ndarray:
    """x = RN(log V) for V = y + f ULP (f a target, either sign) and y a random double in
    [1 - 2^-11, 1): |x| < 2^-10, so |x - log V| <= 2^-64 and exp(x) lies within 2^-12 ULP of V."""
    xs = []
    with localcontext() as context:
        context.prec = 40  # ln is correctly rounded to 40 digits; float(Decimal) rounds to nearest
        while len(xs) < count:
            y = 1.0 - float(rng.integers(1, 2**42)) * 2.0**-53
            for target in targets:
                for sign in (-1, 1):
                    xs.append(float((Decimal(y) + Decimal(sign * target) * Decimal(math.ulp(y))).ln()))
    return np.array(xs[:count])


def edge_cases() -> np.ndarray:
    lowest = _fused.EXP_SHORTCUT_CONSTANTS["lowest"]
    neighbours = [lowest]
    for direction in (-math.inf, 0.0):
        neighbours += [math.nextafter(lowest, direction), math.nextafter(math.nextafter(lowest, direction), direction)]
    return np.array(neighbours + [0.0, -0.0, 5e-324, -5e-324, -1e-300, -2.0**-54, -2.0**-53, -1e-17, -2.0**-9,
                                  -math.log(2) / 256, -math.log(2), -708.4, -745.2, -746.0, -1e308, -math.inf,
                                  math.inf, math.nan, 1e-300, 1.0, 709.0, 710.0])


def constructed_inputs(rng: np.random.Generator) -> np.ndarray:
    targets = (0.5, MARGIN)
    return np.concatenate([near_fraction_of_an_ulp(rng, -40.0, targets, 100_000),
                           near_fraction_of_an_ulp(rng, -745.0, targets, 100_000),
                           logs_near_fractions(rng, targets, 8_000), edge_cases()])


def check_exactness(millions: int, seed: int) -> bool:
    module = fused_module()
    rng = np.random.default_rng(seed)
    per_kind = millions * 1_000_000

    def exps(inputs: np.ndarray, out: np.ndarray, shortcut: bool) -> int:
        return module.exp_array(inputs, out, shortcut=shortcut)

    kinds = {
        "uniform [-745, 0]": lambda n: rng.uniform(-745.0, 0.0, n),
        "uniform [-40, 0] (logit differences)": lambda n: rng.uniform(-40.0, 0.0, n),
        "random doubles -2^-1074 .. -2^10": lambda n: -np.abs(random_doubles(rng, n, 0, 1023 + 9)),
    }
    print(f"exp through {module.__name__}.exp_array (shortcut built: {module.EXP_SHORTCUT_BUILT})")
    print("| inputs | count | mismatches | sent to libm exp |\n|---|---:|---:|---:|")
    total = 0
    for label, make in kinds.items():
        tally = Tally(exps)
        for start in range(0, per_kind, CHUNK):
            tally.check(make(min(CHUNK, per_kind - start)))
        print(tally.line(label), flush=True)
        total += tally.mismatches
    tally = Tally(exps)
    tally.check(constructed_inputs(rng))
    print(tally.line("constructed (near a midpoint or the margin; edge cases)"))
    return total + tally.mismatches == 0


def time_pass(repeats: int, documents: int = 100, at_step: int = 100) -> None:
    run = start_run(load_docs(default_dataset()), steps=1000, backend="fused")
    run.train(until=at_step)
    tokens = [run.tokenizer.encode(run.docs[step % len(run.docs)]) for step in range(at_step, at_step + documents)]
    loops = {flag: run.engine.make_loops(run.config, flag) for flag in (True, False)}
    best: dict[bool, list[float]] = {True: [], False: []}  # per document, the fastest of its repeats
    losses: dict[bool, list[float]] = {True: [], False: []}
    for document in tokens:
        fastest = {True: math.inf, False: math.inf}
        for repeat in range(repeats):
            for flag in ((True, False) if repeat % 2 else (False, True)):  # either first, in turn
                begin = time.perf_counter()
                loss = loops[flag].forward_backward(document)
                fastest[flag] = min(fastest[flag], time.perf_counter() - begin)
                if repeat == 0:
                    losses[flag].append(loss)
        for flag in fastest:
            best[flag].append(fastest[flag])
    print(f"\nthe fused pass ({fused_module().__name__}), documents of steps {at_step}-{at_step + documents - 1}, "
          f"weights of step {at_step}; each document {repeats} times with each, interleaved (exp shortcut runs: "
          f"{loops[True].exp_shortcut})")
    print("| exps | mean over the documents of their fastest pass |\n|---|---:|")
    for flag, label in ((False, "libm exp"), (True, "shortcut")):
        print(f"| {label} | {statistics.mean(best[flag]) * 1e6:.2f} us |")
    print(f"losses float-== with and without: {losses[True] == losses[False]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", type=int, default=100, help="random inputs of each kind, in millions")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeats", type=int, default=30, help="timed passes of each document (0: skip)")
    args = parser.parse_args()
    print(f"machine: {machine(f'{EXP_SHORTCUT_REASON}; loops {fused_module().__name__}')}")
    begin = time.perf_counter()
    exact = check_exactness(args.millions, args.seed)
    print(f"shortcut == libm exp on every input: {exact} ({time.perf_counter() - begin:.0f} s)")
    if args.repeats:
        time_pass(args.repeats)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
