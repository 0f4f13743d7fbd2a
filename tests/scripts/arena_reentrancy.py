"""Arena growth among threads, finalizers and gc callbacks that build nodes in the same arena.

Run by tests/test_arena.py, one scenario per process (a memory fault then fails its test
instead of ending the test run): `python arena_reentrancy.py SCENARIO`, prints "ok".
Growing an arena runs no Python (the GC is paused while it allocates), so none of this
Python can run inside a growth any more; what each scenario checks is that every value
and gradient still comes out exactly right while it runs between the ops, at every
collection the interpreter starts (threshold 1) or at every thread switch it allows.
"""
import gc
import random
import sys
import threading

from cymicrogpt import Value
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.model import sequence_loss
from cymicrogpt.params import init_weights, state_dict_layout
from cymicrogpt.reference import Value as RefValue

CONFIG = GPTConfig(n_layer=2, n_embd=16, block_size=12, n_head=4)
LAYOUT = state_dict_layout(CONFIG, 27)
WEIGHTS = init_weights(random.Random(5), LAYOUT)
DOCS = [[random.Random(d).randrange(27) for _ in range(13)] for d in range(30)]


def chain(V, seed, length, each=lambda: None):
    """A long chain of Values, all kept alive (the arena must grow); its value and some
    grads.  each() runs at every link."""
    rng = random.Random(seed)
    xs = [V(rng.uniform(-1, 1)) for _ in range(length)]
    acc = xs[0]
    for x in xs[1:]:
        each()
        acc = (acc * 0.5 + x).relu() - x * 0.25
    acc.backward()
    return acc.data, [x.grad for x in xs[::97]]


def twice_sum(V, k):
    """(k, sum of 2*i for i < k), built as 2k Value nodes."""
    return k, sum(V(float(i)) * 2 for i in range(k)).data


def threads(work, count):
    """work(i) on `count` threads at once, switching as often as the interpreter allows."""
    results, errors = [None] * count, []

    def run(i):
        try:
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        started = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for t in started:
            t.start()
        for t in started:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    return results


class Grower:
    """Cyclic garbage whose finalizer builds nodes: freed only by the cyclic GC."""

    def __init__(self, build, made):
        self.me, self.build, self.made = self, build, made

    def __del__(self):
        self.made.append(self.build())


def collecting_at_every_allocation(run, callback=None):
    """run() with the GC at threshold 1 (and `callback` in gc.callbacks); both restored."""
    thresholds = gc.get_threshold()
    if callback is not None:
        gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        return run()
    finally:
        gc.set_threshold(*thresholds)
        if callback is not None:
            gc.callbacks.remove(callback)
        gc.collect()


def train_pass(ops):
    """Loss and weight gradients of every doc, on a fresh graph each."""
    out = []
    for tokens in DOCS:
        ops.begin_sequence(True)
        loss = ops.backward(sequence_loss(ops, CONFIG, tokens))
        out.append((loss, ops.node_grads()[: len(WEIGHTS)].tolist()))
        ops.node_grads()[: len(WEIGHTS)] = 0.0
    return out


def row_products(ops, count):
    """Nodes built on the weights only (valid across begin_sequence): 27 per product."""
    return [ops.linear(ops.row("wte", i % 27), ops.matrix("lm_head")) for i in range(count)]


def values_of(ops, vecs):
    data = ops.node_values()
    return [data[v.start : v.start + v.size].tolist() for v in vecs]


def value_threads():
    expected = [chain(RefValue, seed, 20000) for seed in range(4)]
    assert threads(lambda i: chain(Value, i, 20000), 4) == expected


def value_finalizer():
    made = []
    results = collecting_at_every_allocation(
        lambda: [chain(Value, seed, 5000, lambda: Grower(lambda: twice_sum(Value, 300), made)) for seed in range(3)])
    assert results == [chain(RefValue, seed, 5000) for seed in range(3)]
    assert made and all(total == k * (k - 1) for k, total in made)


def value_gc_callback():
    made = []

    def build(phase, info):
        if phase == "start":
            made.append(twice_sum(Value, 300))

    results = collecting_at_every_allocation(lambda: [chain(Value, seed, 5000) for seed in range(3)], build)
    assert results == [chain(RefValue, seed, 5000) for seed in range(3)]
    assert made and all(total == k * (k - 1) for k, total in made)


def engine_threads():
    ops = GraphOps(LAYOUT, WEIGHTS)
    vecs = threads(lambda i: row_products(ops, 3000), 4)
    clean = GraphOps(LAYOUT, WEIGHTS)
    expected = values_of(clean, row_products(clean, 3000))
    assert all(values_of(ops, v) == expected for v in vecs)


def engine_gc_callback():
    expected = train_pass(GraphOps(LAYOUT, WEIGHTS))
    clean = GraphOps(LAYOUT, WEIGHTS)
    row_values = values_of(clean, row_products(clean, 27))  # product i depends on i % 27 only
    ops = GraphOps(LAYOUT, WEIGHTS)
    made = []  # (products built in a callback, were their values right when built?)

    def build_and_check(phase, info):
        # Checked at once: the next begin_sequence() frees these nodes for reuse.
        if phase == "start":
            vecs = row_products(ops, 40)
            made.append(values_of(ops, vecs) == [row_values[i % 27] for i in range(len(vecs))])

    assert collecting_at_every_allocation(lambda: train_pass(ops), build_and_check) == expected
    assert made and all(made)


SCENARIOS = {f.__name__: f for f in (value_threads, value_finalizer, value_gc_callback, engine_threads,
                                     engine_gc_callback)}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
    print("ok")
