"""cymicrogpt.Value against the reference Value on micrograd's demo: an MLP trained with SGD.

The workload is micrograd's demo.ipynb, written with microgpt's Value: a 2-16-16-1 ReLU MLP
(micrograd's Neuron: `sum(w_i * x_i, b)`, ReLU on the hidden layers), 100 two-dimensional
points of two interleaved half moons (generated here from a fixed seed: no sklearn), the
SVM max-margin loss `mean(relu(1 - y_i * score_i))` plus L2 regularisation
`1e-4 * sum(p * p)`, and SGD with micrograd's learning-rate decay.  The model is built once;
every step is a fresh forward (inputs wrapped as Values, as the demo does), zero_grad,
backward and update.

Both engines run the same steps from the same weights, in this process, their runs
interleaved; each time is the median of --repeats runs, each after one untimed warm-up step.  The script
checks that both engines produce identical losses and parameters (float ==) and prints the
ratio.

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


def run(V, steps: int):
    """Train from the fixed seed; returns (seconds per step after a warm-up, losses, params)."""
    rng = random.Random(SEED)
    points, labels = make_moons(POINTS, 0.1, rng)
    model = MLP(V, SIZES, rng)
    losses = [train_step(V, model, points, labels, 0, steps + 1)]  # warm-up, untimed
    start = time.perf_counter()
    for step in range(1, steps + 1):
        losses.append(train_step(V, model, points, labels, step, steps + 1))
    seconds = (time.perf_counter() - start) / steps
    return seconds, losses, [p.data for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per engine (median)")
    parser.add_argument("--engine", choices=("both", "value", "reference"), default="both",
                        help="run one engine only (no ratio, no comparison): for profilers")
    args = parser.parse_args()
    print(f"# cymicrogpt {mg.__version__} | Python {platform.python_version()} | {platform.machine()}")
    print(f"micrograd demo MLP {'-'.join(map(str, SIZES))}, {POINTS} points, {args.steps} steps, "
          f"median of {args.repeats}")
    if args.engine != "both":
        V, name = (mg.Value, "cymicrogpt.Value") if args.engine == "value" else (RefValue, "reference Value")
        seconds = statistics.median(run(V, args.steps)[0] for _ in range(args.repeats))
        print(f"{name:<17}: {seconds * 1e3:8.2f} ms/step   (alone)")
        return
    ref_runs, fast_runs = [], []
    for _ in range(args.repeats):  # interleaved: a change in the machine's load hits both
        ref_runs.append(run(RefValue, args.steps))
        fast_runs.append(run(mg.Value, args.steps))
    ref_s = statistics.median(r[0] for r in ref_runs)
    fast_s = statistics.median(r[0] for r in fast_runs)
    same = all(r[1:] == ref_runs[0][1:] for r in ref_runs + fast_runs)
    print(f"reference Value  : {ref_s * 1e3:8.2f} ms/step")
    print(f"cymicrogpt.Value : {fast_s * 1e3:8.2f} ms/step")
    print(f"speed-up         : {ref_s / fast_s:8.1f}x   (identical losses and parameters: {same})")
    if not same:
        raise SystemExit("the engines disagree")


if __name__ == "__main__":
    main()
