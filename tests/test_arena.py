"""The arena under re-entrancy: growth interleaved with threads, finalizers and gc callbacks.

Growing an arena takes new NumPy arrays, and an allocation may run Python: the cyclic
GC's finalizers and gc.callbacks, or a switch to another thread.  Each scenario makes
that Python build more nodes in the same arena while it grows, and every value and
gradient must still come out exactly right.  Each scenario runs in a child process, so
a memory fault fails its test instead of ending the test run.
"""
import subprocess
import sys

import pytest

SCENARIOS = r'''
import gc, random, sys, threading
from cymicrogpt import Value
from cymicrogpt._value import graph_size
from cymicrogpt.reference import Value as RefValue
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.model import sequence_loss
from cymicrogpt.params import init_weights, state_dict_layout

def chain(V, seed, length, each=lambda: None):
    """A long chain of Values, all kept alive (the arena must grow); its value and grads.
    each() runs at every link."""
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
    results, errors = [None] * count, []
    def run(i):
        try:
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible
    ts = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errors, errors
    return results

class Grower:
    """Cyclic garbage whose finalizer builds nodes: freed only by the cyclic GC, which
    may run at any allocation, the arena's own growth included."""
    def __init__(self, build, made):
        self.me, self.build, self.made = self, build, made
    def __del__(self):
        self.made.append(self.build())

def big_build(V):
    """More nodes than the Value arena holds, when it is growing: a growth cut in two by
    this (the old code) overflowed its new arrays."""
    n = graph_size()  # the Value arena's capacity doubles from 1024 (until a collection)
    if n < 1024 or n & (n - 1):  # not full: a small build
        return twice_sum(V, 300)
    return twice_sum(V, n // 2 + 300)

CONFIG = GPTConfig(n_layer=2, n_embd=16, block_size=12, n_head=4)
LAYOUT = state_dict_layout(CONFIG, 27)
WEIGHTS = init_weights(random.Random(5), LAYOUT)
DOCS = [[random.Random(d).randrange(27) for _ in range(13)] for d in range(30)]

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

def big_products(ops):
    """More nodes than the arena has room for, when it is nearly full (about to grow)."""
    nodes, capacity = ops.num_nodes, ops.capacity[0]
    return row_products(ops, capacity // 27 + 10 if nodes + 200 > capacity else 1)

def values_of(ops, vecs):
    data = ops.node_values()
    return [data[v.start : v.start + v.size].tolist() for v in vecs]

scenario = sys.argv[1]
if scenario == "value_threads":
    expected = [chain(RefValue, seed, 20000) for seed in range(4)]
    assert threads(lambda i: chain(Value, i, 20000), 4) == expected
elif scenario in ("value_finalizer", "value_gc_callback"):
    made = []
    if scenario == "value_gc_callback":
        gc.callbacks.append(lambda phase, info: made.append(big_build(Value)) if phase == "start" else None)
    gc.set_threshold(1)  # collect at (almost) every allocation
    garbage = (lambda: Grower(lambda: big_build(Value), made)) if scenario == "value_finalizer" else (lambda: None)
    results = [chain(Value, seed, 5000, garbage) for seed in range(3)]
    gc.set_threshold(700)
    gc.callbacks.clear()
    gc.collect()
    assert results == [chain(RefValue, seed, 5000) for seed in range(3)]
    assert all(total == k * (k - 1) for k, total in made)
    if sys.version_info < (3, 12):
        # Before 3.12 the cyclic GC (and with it these finalizers and callbacks) ran inside
        # any allocation, so it did interrupt arena growth here; since 3.12 it runs only
        # between bytecodes, which is why the CI's 3.12 and 3.13 runs see few such builds.
        assert len(made) > 10
        assert max(k for k, _ in made) > 1000  # some builds did land on a full arena
elif scenario == "engine_threads":
    ops = GraphOps(LAYOUT, WEIGHTS)
    vecs = threads(lambda i: row_products(ops, 3000), 4)
    clean = GraphOps(LAYOUT, WEIGHTS)
    expected = values_of(clean, row_products(clean, 3000))
    assert all(values_of(ops, v) == expected for v in vecs)
elif scenario == "engine_gc_callback":
    expected = train_pass(GraphOps(LAYOUT, WEIGHTS))
    clean = GraphOps(LAYOUT, WEIGHTS)
    row_values = values_of(clean, row_products(clean, 27))  # product i depends on i % 27 only
    ops = GraphOps(LAYOUT, WEIGHTS)
    made = []  # (products built in a callback, were their values right when built?)

    def build_and_check(phase, info):
        # Checked at once: the next begin_sequence() frees these nodes for reuse.
        if phase == "start":
            vecs = big_products(ops)
            made.append((len(vecs), values_of(ops, vecs) == [row_values[i % 27] for i in range(len(vecs))]))

    gc.callbacks.append(build_and_check)
    gc.set_threshold(1)
    got = train_pass(ops)
    gc.set_threshold(700)
    gc.callbacks.clear()
    assert got == expected
    assert max(n for n, _ in made) > 10  # some builds did land on a nearly full arena
    assert all(right for _, right in made)
else:
    raise SystemExit(f"unknown scenario {scenario}")
print("ok")
'''


@pytest.mark.parametrize(
    "scenario", ["value_threads", "value_finalizer", "value_gc_callback", "engine_threads", "engine_gc_callback"]
)
def test_arena_growth_survives_reentrant_python(scenario):
    proc = subprocess.run([sys.executable, "-c", SCENARIOS, scenario], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    )
