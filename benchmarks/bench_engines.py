"""Training speed of the reference and compiled backends, side by side in one run.

For each config the backends start from the same seed (same weights, same document
order), take one warm-up step, then are timed with time.perf_counter over the same
following steps; the ratio is over those identical documents.  The compiled backends'
timing is the best of several repeats (fresh runs) because a step takes well under a
millisecond.  A breakdown splits each compiled backend's real training step (the one
`train` takes) into parts, timing engine methods and the optimizer's step from inside it:
the training pass (cython: the graph built or replayed, and its backward; fused: the
forward and backward loops), Adam and the rest (the step's checks, Python).
(cymicrogpt.Value has its own benchmark: bench_value.py.)

    python benchmarks/bench_engines.py [--data PATH] [--ref-steps 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import time

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig
from cymicrogpt.engines import DEFAULT_BACKEND, REFERENCE_BACKEND
from cymicrogpt.training import start_run

# the compiled backends, each with what its training pass is
COMPILED = {DEFAULT_BACKEND: "forward and backward (graph)", "fused": "forward and backward (loops)"}

CONFIGS = {
    "default (1 layer, n_embd 16, block 16)": (GPTConfig(), 20),
    "large (4 layers, n_embd 64, block 32)": (GPTConfig(n_layer=4, n_embd=64, block_size=32, n_head=4), 3),
}


def time_steps(run, count: int) -> float:
    """Seconds for `count` training steps after one untimed warm-up step."""
    run.train(until=run.step + 1)
    start = time.perf_counter()
    run.train(until=run.step + count)
    return time.perf_counter() - start


class Stopwatch:
    """A callable that calls `function` and adds the seconds each call takes to `seconds`."""

    def __init__(self, function) -> None:
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            return self.function(*args)
        finally:
            self.seconds += time.perf_counter() - start


def compiled_breakdown(docs, config, steps: int, backend: str) -> dict:
    """Seconds per step in the training pass, in Adam and in the rest, over `steps` real
    training steps after one warm-up step."""
    run = start_run(list(docs), config=config, steps=steps + 1, backend=backend)
    # The engine's training pass (which the run binds once, at its first step) and the
    # optimizer's step, timed where the real step calls them.
    training_pass, bind_pass = Stopwatch(None), run.engine.training_pass

    def bind_timed_pass(config: GPTConfig) -> Stopwatch:
        training_pass.function = bind_pass(config)
        return training_pass

    run.engine.training_pass = bind_timed_pass
    run.train(until=1)
    training_pass.seconds = 0.0  # the warm-up step's
    adam = run.optimizer.step = Stopwatch(run.optimizer.step)
    start = time.perf_counter()
    run.train()
    rest = time.perf_counter() - start - training_pass.seconds - adam.seconds
    if training_pass.seconds == 0.0 or adam.seconds == 0.0:
        raise SystemExit("bench_engines: the training pass or Adam was not timed (the step no longer calls "
                         "engine.training_pass's function or optimizer.step): the breakdown would be wrong")
    return {COMPILED[backend]: training_pass.seconds / steps, "Adam": adam.seconds / steps,
            "the rest (checks, Python)": rest / steps}


def bench_training(docs, ref_steps_override, repeats: int) -> None:
    for label, (config, ref_steps) in CONFIGS.items():
        ref_steps = ref_steps_override or ref_steps
        total = ref_steps + 2
        ref = start_run(list(docs), config=config, steps=total, backend=REFERENCE_BACKEND)
        ref_s = time_steps(ref, ref_steps) / ref_steps
        print(f"\n## {label}")
        print(f"python reference : {ref_s * 1e3:10.2f} ms/step  (steps 2..{ref_steps + 1})")
        for backend in COMPILED:
            fast_s = min(
                time_steps(start_run(list(docs), config=config, steps=total, backend=backend), ref_steps) / ref_steps
                for _ in range(repeats)
            )
            print(f"{backend + ' backend':17s}: {fast_s * 1e3:10.4f} ms/step  (same steps, best of {repeats}), "
                  f"{ref_s / fast_s:.0f}x the reference")
            if config == GPTConfig():  # a longer run, for a steadier number (docs of every length)
                long_run = start_run(list(docs), config=config, steps=1000, backend=backend)
                print(f"  {backend}, steps 2..1000 of a 1000-step run: {time_steps(long_run, 999) / 999 * 1e3:.4f} ms/step")
            for part, seconds in compiled_breakdown(docs, config, 200 if config == GPTConfig() else 20, backend).items():
                print(f"  {part:30s} {seconds * 1e3:8.4f} ms/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="text file, one document per line (default: names.txt)")
    parser.add_argument("--ref-steps", type=int, default=None, help="timed reference steps per config")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    path = args.data or mg.data.default_dataset()
    docs = mg.load_docs(path)
    print(f"# cymicrogpt {mg.__version__} | Python {platform.python_version()} | {platform.machine()} | "
          f"{platform.processor() or platform.platform()}")
    print(f"data: {path} ({len(docs)} docs)")
    bench_training(docs, args.ref_steps, args.repeats)


if __name__ == "__main__":
    main()
