"""microgpt.py against cymicrogpt, each run as its user runs it, timed T(N steps) - T(1 step).

Each program is a fresh process started from the command line: the seed's microgpt.py
(`python microgpt.py`, its environment variables set to the same data, step count and
number of samples) and `cymicrogpt train`.  Each is run for N steps and for 1 step with
everything else equal (start-up, data loading, the same 20 samples at the end), so the
difference of the two times is the cost of N - 1 training steps: start-up and sampling
cancel.  Both wall-clock time and CPU time (the child's user + system, from getrusage) are
measured: a step that starts helper threads (BLAS) would show more CPU than wall time.

cymicrogpt's step is thousands of times shorter, so its N must be larger for the
difference to dominate the jitter of a process start (~0.3 s): `--our-steps M` times it
over M steps (default 20 N).  Its losses are checked on its own run of N steps, float-== to
the N that microgpt.py printed (with repr(): the seed's extracted script does; both shuffle
the same file with seed 42, so they train on the same documents; the learning rate decays
over the run's length, so only equal lengths compare).  A repeat runs microgpt.py for N
and for 1 step once, then cymicrogpt for M and for 1 step, alternately, `--inner` times
each, and takes the median of each; the table gives every repeat and the median of the
ratios.

    python benchmarks/bench_microgpt.py --microgpt ../shared/seed/microgpt_from_article.py \
        [--data ../shared/data/names.txt] [--steps 1000] [--our-steps M] [--repeats 3] [--backend cython]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cymicrogpt as mg
from cymicrogpt.data import default_dataset
from cymicrogpt.engines import BACKENDS, DEFAULT_BACKEND
from cymicrogpt.ladder.bench import load_average

STEP_LINE = re.compile(r"^step\s+\d+\b.*?\bloss\s+(\S+)", re.MULTILINE)
SAMPLES = 20  # microgpt's default, in both programs and both step counts


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict, cwd: str) -> tuple[tuple[float, float], str]:
    """(wall-clock seconds, CPU seconds) of one process, and its standard output."""
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return (seconds, children_cpu() - cpu), done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microgpt", required=True, help="path of microgpt.py (the seed's extracted script)")
    parser.add_argument("--data", default=None, help="text file, one document per line (default: names.txt)")
    parser.add_argument("--steps", type=int, default=1000, help="N, the longer run (default: 1000)")
    parser.add_argument("--our-steps", type=int, default=None,
                        help="M, cymicrogpt's longer run (default: 20 N)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (default: 3)")
    parser.add_argument("--inner", type=int, default=5, help="cymicrogpt runs per step count and repeat (default: 5)")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS, help="cymicrogpt's engine")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    our_steps = args.our_steps or 20 * args.steps
    if our_steps < 2:
        parser.error("--our-steps must be at least 2")
    data = str(Path(args.data or default_dataset()).resolve())
    script = str(Path(args.microgpt).resolve())
    cli = shutil.which("cymicrogpt") or parser.error("the cymicrogpt command is not on PATH")
    report = [f"# microgpt.py against cymicrogpt {args.backend}, T(N steps) - T(1 step), N = {args.steps} "
              f"for microgpt.py and {our_steps} for cymicrogpt ({time.strftime('%Y-%m-%d %H:%M %Z')})", "",
              f"cymicrogpt {mg.__version__}, Python {platform.python_version()}, {platform.machine()}, "
              f"{platform.platform()}, {os.cpu_count()} CPUs; data {data}", "",
              "| repeat | microgpt.py T(N) s | T(1) s | ms/step | CPU ms/step | cymicrogpt T(N) s (median) "
              "| T(1) s (median) | ms/step | CPU ms/step | speed-up | CPU speed-up | losses float-== |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    ratios, cpu_ratios = [], []

    def train(steps: int, checkpoint: str) -> tuple[float, float]:
        return timed([cli, "train", "--data", data, "--steps", str(steps), "--samples", str(SAMPLES),
                      "--backend", args.backend, "--save", checkpoint], dict(os.environ), scratch)[0]

    with tempfile.TemporaryDirectory(prefix="bench-microgpt-") as scratch:
        checkpoint = str(Path(scratch) / "run.npz")
        for repeat in range(1, args.repeats + 1):
            seconds = {}
            for steps in (args.steps, 1):
                env = dict(os.environ, MG_INPUT=data, MG_STEPS=str(steps), MG_SAMPLES=str(SAMPLES))
                seconds["microgpt", steps], printed = timed([sys.executable, script], env, scratch)
                if steps == args.steps:
                    script_losses = [float(x) for x in STEP_LINE.findall(printed)]
            train(args.steps, checkpoint)  # the run whose losses are checked
            our_losses = mg.Run.load(checkpoint).losses
            ours = {our_steps: [], 1: []}
            for _ in range(args.inner):
                for steps in (our_steps, 1):
                    ours[steps].append(train(steps, checkpoint))
            for steps, times in ours.items():
                seconds["cymicrogpt", steps] = tuple(statistics.median(t[k] for t in times) for k in (0, 1))
            n = {"microgpt": args.steps, "cymicrogpt": our_steps}
            per_step = {(name, k): (seconds[name, n[name]][k] - seconds[name, 1][k]) / (n[name] - 1)
                        for name in n for k in (0, 1)}  # k: 0 wall, 1 CPU
            ratios.append(per_step["microgpt", 0] / per_step["cymicrogpt", 0])
            cpu_ratios.append(per_step["microgpt", 1] / per_step["cymicrogpt", 1])
            same = "yes" if our_losses == script_losses and len(our_losses) == args.steps else "NO"
            report.append(f"| {repeat} | {seconds['microgpt', args.steps][0]:.2f} | {seconds['microgpt', 1][0]:.2f} "
                          f"| {per_step['microgpt', 0] * 1e3:.2f} | {per_step['microgpt', 1] * 1e3:.2f} "
                          f"| {seconds['cymicrogpt', our_steps][0]:.3f} | {seconds['cymicrogpt', 1][0]:.3f} "
                          f"| {per_step['cymicrogpt', 0] * 1e3:.4f} | {per_step['cymicrogpt', 1] * 1e3:.4f} "
                          f"| {ratios[-1]:,.0f}x | {cpu_ratios[-1]:,.0f}x | {same} |")
            print(report[-1], flush=True)
    report += ["", f"Load average: {load_average().removeprefix('; load average ') or 'not available'}.", "",
               f"cymicrogpt {args.backend} is {statistics.median(ratios):,.0f}x microgpt.py per training step "
               f"(median of {len(ratios)} repeats; range {min(ratios):,.0f}-{max(ratios):,.0f}x) in wall time, "
               f"{statistics.median(cpu_ratios):,.0f}x in CPU time "
               f"(range {min(cpu_ratios):,.0f}-{max(cpu_ratios):,.0f}x)."]
    print("\n" + "\n".join(report))


if __name__ == "__main__":
    main()
