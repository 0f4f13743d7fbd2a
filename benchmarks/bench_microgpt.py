"""microgpt.py itself against our pure-Python reference and our compiled backend.

The ladder's speed-ups are over our reference, which computes microgpt's floats exactly but
is not microgpt.py; other ports quote speed-ups over microgpt.py.  This script measures the
factor between the two, and the compiled backend against microgpt.py directly.  Each repeat
is one ladder run of the reference, the compiled backend and the script (each in a fresh
process, on the same documents, seed 42, default config): per-step times, step 1
excluded, medians over the same steps.  Printed: every repeat, then the medians over the
repeats, as Markdown.

    python benchmarks/bench_microgpt.py --microgpt PATH/microgpt.py [--data names.txt]
        [--steps 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import cymicrogpt as mg
from cymicrogpt.ladder.bench import compare, load_average, run_ladder
from cymicrogpt.config import GPTConfig
from cymicrogpt.data import default_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microgpt", required=True, help="path of microgpt.py")
    parser.add_argument("--data", default=None, help="text file, one document per line (default: names.txt)")
    parser.add_argument("--steps", type=int, default=20, help="steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=5, help="ladder runs (default: 5)")
    args = parser.parse_args()
    docs = mg.load_docs(args.data or default_dataset())
    report = [f"# microgpt.py against the pure-Python reference ({time.strftime('%Y-%m-%d')})", "",
              f"Command: `python benchmarks/bench_microgpt.py --microgpt {args.microgpt} --data {args.data} "
              f"--steps {args.steps} --repeats {args.repeats}`", "",
              f"cymicrogpt {mg.__version__}, Python {platform.python_version()}, {platform.machine()}, "
              f"{platform.platform()}; {len(docs)} documents, default config, seed 42; "
              f"{args.steps} steps per run, step 1 not timed", "",
              "| repeat | reference ms/step | cython ms/step | microgpt.py ms/step | microgpt.py / reference "
              "| cython vs microgpt.py | cython vs reference | microgpt.py's losses float-== |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    factors, speedups = [], []
    for repeat in range(1, args.repeats + 1):
        rows = run_ladder(docs, GPTConfig(), args.steps, ["python", "cython"], ref_steps=args.steps,
                          microgpt=args.microgpt)
        bad = [f"{row.impl}: {row.status}" for row in rows if row.status != "ok"]
        if bad:
            raise SystemExit(f"repeat {repeat}: " + "; ".join(bad))
        cells = {c["impl"]: c for c in compare(rows)}
        ref_ms, fast_ms, script_ms = (cells[name]["ms_shared"] for name in ("python", "cython", "microgpt.py"))
        factors.append(script_ms / ref_ms)
        speedups.append(script_ms / fast_ms)
        same = "yes" if rows[2].losses == rows[0].losses else "no (as printed)"
        report.append(f"| {repeat} | {ref_ms:.2f} | {fast_ms:.4f} | {script_ms:.2f} | {factors[-1]:.3f} "
                      f"| {speedups[-1]:,.0f}x | {ref_ms / fast_ms:,.0f}x | {same} |")
    report += ["", f"Load average: {load_average().removeprefix('; load average ') or 'not available'}.",
               "", f"microgpt.py takes {statistics.median(factors):.2f}x the reference's time per step "
               f"(median of {len(factors)} repeats; range {min(factors):.2f}-{max(factors):.2f}); the compiled "
               f"backend is {statistics.median(speedups):,.0f}x faster than microgpt.py "
               f"(range {min(speedups):,.0f}-{max(speedups):,.0f}x)."]
    print("\n" + "\n".join(report))  # after the runs' progress lines

if __name__ == "__main__":
    main()
