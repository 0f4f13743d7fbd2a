"""cymicrogpt.Value: a drop-in for the reference Value with bit-identical data and grads."""
import gc
import math
import random
import threading

import pytest
from hypothesis import given, settings, strategies as st

from cymicrogpt import Value
from cymicrogpt import _value
from cymicrogpt.reference import Value as RefValue

UNARY_OPS = {
    "neg": lambda a: -a,
    "exp": lambda a: a.exp(),
    "log": lambda a: a.log(),
    "relu": lambda a: a.relu(),
    "square": lambda a: a**2,
    "cube": lambda a: a**3,
    "inv": lambda a: a**-1,
    "sqrt": lambda a: a**0.5,
    "rsqrt": lambda a: a**-0.5,
}
BINARY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}
CONST_OPS = {
    "add_c": lambda a, c: a + c,
    "radd_c": lambda a, c: c + a,
    "sub_c": lambda a, c: a - c,
    "rsub_c": lambda a, c: c - a,
    "mul_c": lambda a, c: a * c,
    "rmul_c": lambda a, c: c * a,
    "div_c": lambda a, c: a / c,
    "rdiv_c": lambda a, c: c / a,
}

finite = st.floats(min_value=-5, max_value=5, allow_nan=False, allow_infinity=False)
constants = st.one_of(st.integers(-3, 3), finite)
step = st.one_of(
    st.tuples(st.just("u"), st.sampled_from(sorted(UNARY_OPS)), st.integers(0, 99)),
    st.tuples(st.just("b"), st.sampled_from(sorted(BINARY_OPS)), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("c"), st.sampled_from(sorted(CONST_OPS)), st.integers(0, 99), constants),
    # microgpt's generic node: Value(data, children, local_grads), children may repeat
    st.tuples(st.just("g"), finite, st.lists(st.tuples(st.integers(0, 99), constants), max_size=5)),
)


def apply(kind, name, pool, *args):
    if kind == "g":  # name: the node's data
        V = type(pool[0])
        return V(name, tuple(pool[i % len(pool)] for i, _ in args[0]), tuple(g for _, g in args[0]))
    if kind == "u":
        return UNARY_OPS[name](pool[args[0] % len(pool)])
    if kind == "b":
        return BINARY_OPS[name](pool[args[0] % len(pool)], pool[args[1] % len(pool)])
    return CONST_OPS[name](pool[args[0] % len(pool)], args[1])


def run_both(leaves, program):
    """Build `program` on both engines; ops the reference rejects must fail the same way."""
    ref_pool = [RefValue(x) for x in leaves]
    fast_pool = [Value(x) for x in leaves]
    for kind, name, *args in program:
        try:
            ref = apply(kind, name, ref_pool, *args)
        except (ArithmeticError, ValueError) as exc:
            with pytest.raises(type(exc)):
                apply(kind, name, fast_pool, *args)
            continue
        if isinstance(ref.data, complex) or not math.isfinite(ref.data):
            continue  # the reference left the reals; nothing to compare
        fast = apply(kind, name, fast_pool, *args)
        assert fast.data == ref.data, (name, args)
        ref_pool.append(ref)
        fast_pool.append(fast)
    return ref_pool, fast_pool


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, min_size=1, max_size=4), st.lists(step, min_size=1, max_size=25))
def test_random_expressions_match_reference(leaves, program):
    ref_pool, fast_pool = run_both(leaves, program)
    assert_same_backward(ref_pool, fast_pool)


@settings(max_examples=150, deadline=None)
@given(st.lists(finite, min_size=1, max_size=4), st.lists(step, min_size=1, max_size=25), finite)
def test_changing_data_after_the_forward_changes_no_gradient(leaves, program, new_data):
    """Local gradients are fixed when a node is built (microgpt): overwrite every node's
    .data between the forward and the backward, on both engines alike."""
    ref_pool, fast_pool = run_both(leaves, program)
    for ref, fast in zip(ref_pool, fast_pool):
        ref.data = fast.data = new_data
    assert_same_backward(ref_pool, fast_pool)


def assert_same_backward(ref_pool, fast_pool):
    ref_pool[-1].backward()
    fast_pool[-1].backward()
    for ref, fast in zip(ref_pool, fast_pool):
        assert fast.data == ref.data
        assert fast.grad == ref.grad or (math.isnan(fast.grad) and math.isnan(ref.grad))


def test_micrograd_style_training_matches_reference():
    """A small MLP trained with SGD for 30 steps: identical parameters on both engines."""
    def train(V):
        rng = random.Random(0)
        w1 = [[V(rng.uniform(-1, 1)) for _ in range(3)] for _ in range(4)]
        w2 = [V(rng.uniform(-1, 1)) for _ in range(4)]
        params = [p for row in w1 for p in row] + w2
        xs = [[rng.uniform(-2, 2) for _ in range(3)] for _ in range(8)]
        ys = [1.0 if sum(x) > 0 else -1.0 for x in xs]
        for _ in range(30):
            loss = 0
            for x, y in zip(xs, ys):
                h = [sum((wi * xi for wi, xi in zip(row, x)), V(0.0)).relu() for row in w1]
                out = sum(wi * hi for wi, hi in zip(w2, h))
                loss = loss + (out - y) ** 2
            loss = loss / len(xs)
            loss.backward()
            for p in params:
                p.data -= 0.05 * p.grad
                p.grad = 0
        return [p.data for p in params], loss.data

    assert train(Value) == train(RefValue)


def test_errors_mirror_the_reference():
    with pytest.raises(ValueError):
        Value(0.0).log()
    with pytest.raises(ValueError):
        Value(-1.0).log()
    with pytest.raises(ZeroDivisionError):
        Value(0.0) ** -1
    with pytest.raises(ZeroDivisionError):
        Value(1.0) / 0
    with pytest.raises(OverflowError):
        Value(1000.0).exp()
    with pytest.raises(ValueError, match="fractional"):
        Value(-2.0) ** 0.5
    with pytest.raises(TypeError):
        Value("1")
    with pytest.raises(TypeError):
        Value(1.0) + "a"
    with pytest.raises(TypeError):
        Value(2.0) ** Value(2.0)
    with pytest.raises(ValueError, match="never initialised"):
        Value.__new__(Value).data


def test_graph_memory_is_released():
    """A loop that rebinds `loss` each step keeps the arena bounded."""
    w = [Value(0.1 * i) for i in range(50)]
    sizes = []
    for step in range(1000):
        loss = sum(wi * wi for wi in w)  # 150 nodes per step, 150k over the loop
        loss.backward()
        sizes.append(_value.graph_size())
    assert max(sizes) <= 2 * _value.MIN_COLLECT_AT + 1000
    assert min(sizes[500:]) < max(sizes)  # collections did run inside the loop
    del loss
    gc.collect()
    kept = _value.collect()
    assert kept <= len(w) + 10  # the parameters (and little else) survive
    assert all(wi.data == pytest.approx(0.1 * i) for i, wi in enumerate(w))
    assert w[3].grad == pytest.approx(1000 * 2 * w[3].data)  # grads survived the compactions


def test_values_from_several_threads_stay_exact(frequent_switches):
    """The arena is shared by all threads; the GIL serialises every op on it, so threads
    building and differentiating graphs at once (collections included) stay exact."""

    def work(seed, out):
        rng = random.Random(seed)
        w = [Value(rng.uniform(-1, 1)) for _ in range(30)]
        for _ in range(300):
            loss = sum((wi * rng.uniform(-1, 1)).relu() + wi**2 for wi in w) / 7
            loss.backward()
        out[seed] = [(wi.data, wi.grad) for wi in w]

    expected, got = {}, {}
    for seed in range(4):
        work(seed, expected)
    threads = [threading.Thread(target=work, args=(seed, got)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


class Litter:
    """Cyclic garbage whose finalizer builds (and drops) Values: the cyclic GC runs it at
    any allocation of any thread, in the middle of another thread's op."""

    def __init__(self):
        self.me = self

    def __del__(self):
        (Value(0.5) * Value(2.0) + Value(1.0, (Value(3.0),), (0.25,))).backward()


def shared_weight_graph(V, seed, w):
    """A graph of every node kind built on the shared weights `w` and this thread's data."""
    rng = random.Random(seed)
    total = 0
    for _ in range(60):
        x = [V(rng.uniform(-1, 1)) for _ in w]
        h = sum(wi * xi for wi, xi in zip(w, x)).relu()
        t = V(h.data * 0.5, (h, x[0]), (0.5, -0.25))  # a generic node
        total = total + t * h + w[0] ** 2 / 3
    return total


def test_many_threads_building_one_graph_stay_exact(frequent_switches):
    """16 threads build graphs on shared weights at once (collections and finalizers that
    build Values interleaved, several times the collection threshold in nodes); each loss
    and, backward one after another, each gradient equals the reference's."""
    gc.set_threshold(50)
    try:
        results, errors = {}, []
        w = [Value(0.1 * (i - 3)) for i in range(8)]

        def work(seed):
            try:
                for _ in range(3):
                    Litter()
                    shared_weight_graph(Value, seed, w)  # dropped: collections have work
                results[seed] = shared_weight_graph(Value, seed, w)
            except BaseException as exc:  # noqa: BLE001 - reported below, in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.set_threshold(700)
    assert not errors, errors
    ref_w = [RefValue(0.1 * (i - 3)) for i in range(8)]
    for seed in range(16):
        ref = shared_weight_graph(RefValue, seed, ref_w)
        for p, rp in zip(w, ref_w):
            p.grad, rp.grad = 0.0, 0
        results[seed].backward()
        ref.backward()
        assert results[seed].data == ref.data
        assert [p.grad for p in w] == [rp.grad for rp in ref_w]
