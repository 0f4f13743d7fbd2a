"""cymicrogpt.Value against the reference Value on micrograd's demo: an MLP trained with SGD.

The workload is micrograd's demo.ipynb, written with microgpt's Value: a 2-16-16-1 ReLU MLP
(micrograd's Neuron: `sum(w_i * x_i, b)`, ReLU on the hidden layers), 100 two-dimensional
points of two interleaved half moons (generated here from a fixed seed: no sklearn), the
SVM max-margin loss `mean(relu(1 - y_i * score_i))` plus L2 regularisation
`1e-4 * sum(p * p)`, and SGD with micrograd's learning-rate decay.  The model is built once;
every step is a fresh forward (inputs wrapped as Values, as the demo does), zero_grad,
backward and update.

Both engines run the same steps from the same weights, in this process, step by step in
lockstep (reference step k, then Value step k, the order swapped every step), after one
untimed warm-up step each; --repeats runs start again from the seed.  Each engine's time
is the median of all its timed steps: a step lasts 5-200 ms, so a burst of load on the
machine (they last from tens of milliseconds to seconds here) spoils a few samples of
both engines, not a whole run of one.  The script checks that both engines produce
identical losses and parameters (float ==) and prints the ratio.

    python benchmarks/bench_value.py [--steps 10] [--repeats 5]

`--engine value` (or `reference`) runs one engine only, for profilers: callgrind's
instructions per step are `(I(K steps) - I(1 step)) / (K - 1)`, e.g.

    valgrind --tool=callgrind python benchmarks/bench_value.py --engine value --steps 9 --repeats 1
"""
from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time

import cymicrogpt as mg
from cymicrogpt.reference import Value as RefValue

SIZES = (2, 16, 16, 1)
POINTS = 100
SEED = 1337


def make_moons(count: int, noise: float, rng: random.Random):
    """Two interleaved half circles (sklearn's make_moons, re-created), labels -1 / +1."""
    points, labels = [], []
    for i in range(count):
        upper = i < count // 2
        t = math.pi * (i if upper else i - count // 2) / (count // 2 - 1)
        x, y = (math.cos(t), math.sin(t)) if upper else (1 - math.cos(t), 0.5 - math.sin(t))
        points.append([x + rng.gauss(0, noise), y + rng.gauss(0, noise)])
        labels.append(-1 if upper else 1)
    return points, labels


class MLP:
    """micrograd's MLP of Neurons, over any Value class."""

    def __init__(self, V, sizes, rng: random.Random):
        self.layers = []
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            neurons = [([V(rng.uniform(-1, 1)) for _ in range(fan_in)], V(0)) for _ in range(fan_out)]
            self.layers.append(neurons)

    def __call__(self, x):
        last = len(self.layers) - 1
        for depth, neurons in enumerate(self.layers):
            acts = [sum((wi * xi for wi, xi in zip(w, x)), b) for w, b in neurons]
            x = acts if depth == last else [act.relu() for act in acts]
        return x[0]

    def parameters(self):
        return [p for neurons in self.layers for w, b in neurons for p in (*w, b)]


def train_step(V, model: MLP, points, labels, step: int, total: int) -> float:
    """One step of micrograd's demo loop; returns the loss."""
    inputs = [[V(c) for c in row] for row in points]
    scores = [model(x) for x in inputs]
    losses = [(1 + -yi * score).relu() for yi, score in zip(labels, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum(p * p for p in model.parameters())
    loss = data_loss + reg_loss
    for p in model.parameters():
        p.grad = 0
    loss.backward()
    learning_rate = 1.0 - 0.9 * step / total
    for p in model.parameters():
        p.data -= learning_rate * p.grad
    return loss.data


class Training:
    """micrograd's demo from the fixed seed on Value class V: the warm-up step at once
    (untimed), then step() times one more."""

    def __init__(self, V, total: int):
        rng = random.Random(SEED)
        self.V, self.total = V, total
        self.points, self.labels = make_moons(POINTS, 0.1, rng)
        self.model = MLP(V, SIZES, rng)
        self.losses = [train_step(V, self.model, self.points, self.labels, 0, total)]

    def step(self) -> float:
        """Seconds for the next step."""
        start = time.perf_counter()
        loss = train_step(self.V, self.model, self.points, self.labels, len(self.losses), self.total)
        seconds = time.perf_counter() - start
        self.losses.append(loss)
        return seconds

    def parameters(self) -> list[float]:
        return [p.data for p in self.model.parameters()]


def lockstep(steps: int, engines) -> list[tuple[list[float], Training]]:
    """One run of each engine, step by step in turn; (seconds of each step, training) each."""
    runs = [([], Training(V, steps + 1)) for V in engines]
    for k in range(steps):
        for times, training in runs[:: 1 if k % 2 == 0 else -1]:
            times.append(training.step())
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive, default=10, help="timed steps per run")
    parser.add_argument("--repeats", type=positive, default=5, help="runs per engine, each from the seed")
    parser.add_argument("--engine", choices=("both", "value", "reference"), default="both",
                        help="run one engine only (no ratio, no comparison): for profilers")
    args = parser.parse_args()
    print(f"# cymicrogpt {mg.__version__} | Python {platform.python_version()} | {platform.machine()}")
    print(f"micrograd demo MLP {'-'.join(map(str, SIZES))}, {POINTS} points, {args.repeats} runs of "
          f"{args.steps} timed steps, median step")
    if args.engine != "both":
        V, name = (mg.Value, "cymicrogpt.Value") if args.engine == "value" else (RefValue, "reference Value")
        times = [t for _ in range(args.repeats) for t in lockstep(args.steps, [V])[0][0]]
        print(f"{name:<17}: {statistics.median(times) * 1e3:8.2f} ms/step   (alone)")
        return
    ref_times, fast_times, trainings = [], [], []
    for _ in range(args.repeats):
        (ref, ref_training), (fast, fast_training) = lockstep(args.steps, [RefValue, mg.Value])
        ref_times += ref
        fast_times += fast
        trainings += [ref_training, fast_training]
    ref_s, fast_s = statistics.median(ref_times), statistics.median(fast_times)
    same = all(t.losses == trainings[0].losses and t.parameters() == trainings[0].parameters()
               for t in trainings)
    print(f"reference Value  : {ref_s * 1e3:8.2f} ms/step   "
          f"(quartiles {quartiles(ref_times)}, {len(ref_times)} steps)")
    print(f"cymicrogpt.Value : {fast_s * 1e3:8.2f} ms/step   "
          f"(quartiles {quartiles(fast_times)}, {len(fast_times)} steps)")
    print(f"speed-up         : {ref_s / fast_s:8.1f}x   (identical losses and parameters: {same})")
    if not same:
        raise SystemExit("the engines disagree")


def quartiles(times: list[float]) -> str:
    if len(times) < 2:  # one timed step: no spread to show
        return "n/a"
    q1, _, q3 = statistics.quantiles(times, n=4)
    return f"{q1 * 1e3:.2f}-{q3 * 1e3:.2f}"


def positive(text: str) -> int:
    """argparse type: an integer >= 1 (a median needs a step to time)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    main()
