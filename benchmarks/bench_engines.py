"""Training speed of the reference and compiled backends, side by side in one run.

For each config both backends start from the same seed (same weights, same document
order), take one warm-up step, then are timed with time.perf_counter over the same
following steps; the ratio is over those identical documents.  The compiled backend's
timing is the best of several repeats (fresh runs) because a step takes well under a
millisecond.  A breakdown splits the compiled backend's real training step (the one
`train` takes) into the training pass (graph build and backward), Adam and the rest (the
step's checks), timing the engine's training pass and the optimizer's step from inside it.
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


def compiled_breakdown(docs, config, steps: int) -> dict:
    """Seconds per step in the training pass (graph build and backward: one C call once a
    step is replayed), in Adam and in the rest (the step's checks and bookkeeping), over
    `steps` real training steps after one warm-up step."""
    run = start_run(list(docs), config=config, steps=steps + 1, backend=DEFAULT_BACKEND)
    run.train(until=1)
    # The engine's training pass and the optimizer's step, timed where the real step calls them.
    training_pass = run.engine.forward_backward = Stopwatch(run.engine.forward_backward)
    adam = run.optimizer.step = Stopwatch(run.optimizer.step)
    start = time.perf_counter()
    run.train()
    rest = time.perf_counter() - start - training_pass.seconds - adam.seconds
    return {"build + backward": training_pass.seconds / steps, "Adam": adam.seconds / steps,
            "checks, bookkeeping": rest / steps}


def bench_training(docs, ref_steps_override, repeats: int) -> None:
    for label, (config, ref_steps) in CONFIGS.items():
        ref_steps = ref_steps_override or ref_steps
        total = ref_steps + 2
        ref = start_run(list(docs), config=config, steps=total, backend=REFERENCE_BACKEND)
        ref_s = time_steps(ref, ref_steps) / ref_steps
        fast_s = min(
            time_steps(start_run(list(docs), config=config, steps=total, backend=DEFAULT_BACKEND), ref_steps) / ref_steps
            for _ in range(repeats)
        )
        # a longer compiled run, for a steadier number (docs of every length)
        long_run = start_run(list(docs), config=config, steps=1000, backend=DEFAULT_BACKEND)
        long_s = time_steps(long_run, 999) / 999 if config == GPTConfig() else None
        print(f"\n## {label}")
        print(f"python reference : {ref_s * 1e3:10.2f} ms/step  (steps 2..{ref_steps + 1})")
        print(f"cython backend   : {fast_s * 1e3:10.4f} ms/step  (same steps, best of {repeats})")
        print(f"speed-up         : {ref_s / fast_s:10.0f}x")
        if long_s is not None:
            print(f"cython, steps 2..1000 of a 1000-step run: {long_s * 1e3:.4f} ms/step")
        for part, seconds in compiled_breakdown(docs, config, 200 if config == GPTConfig() else 20).items():
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
