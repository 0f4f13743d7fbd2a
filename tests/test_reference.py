"""The pure-Python reference reproduces microgpt.py exactly.

The golden files in tests/fixtures/ were produced by running the seed's microgpt.py
unchanged (seed 42, names.txt, default config) with tests/fixtures/record.py, once with each
of glibc's builds of exp, log and pow (the FMA runs equal ../shared/golden/'s files); their
"about" field says so, and the `golden` fixture picks the one this machine's libm
reproduces.  Losses are compared with float ==.
"""
import math
import random
import sys

import pytest

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig
from cymicrogpt.model import sequence_loss
from cymicrogpt.params import init_weights, state_dict_layout
from cymicrogpt.reference import ReferenceEngine, Value


def test_seed_fidelity_30_steps(names_path, golden):
    gold = golden("seed_default_30steps.json")
    run = mg.train(mg.load_docs(names_path), steps=gold["num_steps"], backend="python", seed=42)
    assert run.losses == gold["losses"]
    assert run.sample(len(gold["samples"]), temperature=0.5) == gold["samples"]


@pytest.mark.slow
def test_seed_fidelity_1000_steps(names_path, golden):
    gold = golden("seed_default_1000steps.json")
    run = mg.train(mg.load_docs(names_path), steps=gold["num_steps"], backend="python", seed=42)
    assert run.losses == gold["losses"]
    assert run.sample(len(gold["samples"]), temperature=0.5) == gold["samples"]


def recursive_backward(root):
    """microgpt's own backward, recursion and all: the order the iterative one must match."""
    topo, visited = [], set()

    def build_topo(v):
        if v not in visited:
            visited.add(v)
            for child in v._children:
                build_topo(child)
            topo.append(v)

    build_topo(root)
    root.grad = 1
    for v in reversed(topo):
        for child, local_grad in zip(v._children, v._local_grads):
            child.grad += local_grad * v.grad


def small_model_loss(seed):
    config = GPTConfig(n_layer=2, n_embd=8, block_size=6, n_head=2)
    layout = state_dict_layout(config, 7)
    engine = ReferenceEngine(layout, init_weights(random.Random(seed), layout))
    tokens = [6, 0, 3, 1, 5, 2, 4, 6]
    return engine, sequence_loss(engine, config, tokens)


def test_iterative_backward_matches_recursive_order():
    engine_a, loss_a = small_model_loss(3)
    engine_b, loss_b = small_model_loss(3)
    loss_a.backward()
    recursive_backward(loss_b)
    assert engine_a.gradients() == engine_b.gradients()
    assert any(g != 0 for g in engine_a.gradients())


def test_deep_model_has_no_recursion_limit():
    config = GPTConfig(n_layer=4, n_embd=8, block_size=64, n_head=2)
    layout = state_dict_layout(config, 5)
    engine = ReferenceEngine(layout, init_weights(random.Random(0), layout))
    tokens = [4] + [i % 4 for i in range(64)] + [4]
    limit = sys.getrecursionlimit()
    loss = sequence_loss(engine, config, tokens)
    loss.backward()  # a recursive DFS would need depth far beyond the limit here
    assert sys.getrecursionlimit() == limit
    assert all(math.isfinite(g) for g in engine.gradients())


def expression(a, b):
    return (a * b + b**2 - a / b + (1 - a) + 2 / a).exp().log() + a.relu() - (-b).relu() * 3 + (a - 4).relu()


def test_value_gradients_match_finite_differences():
    a, b = Value(2.0), Value(-3.0)
    out = expression(a, b)
    out.backward()
    h = 1e-6
    for name, grad in (("a", a.grad), ("b", b.grad)):
        def f(delta):
            args = {"a": Value(2.0), "b": Value(-3.0)}
            args[name] = Value(args[name].data + delta)
            return expression(args["a"], args["b"]).data
        assert grad == pytest.approx((f(h) - f(-h)) / (2 * h), rel=1e-6)
    assert Value(-1.0).relu().data == 0


def test_value_errors_are_python_errors():
    with pytest.raises(ValueError):
        Value(0.0).log()
    with pytest.raises(ZeroDivisionError):
        Value(0.0) ** -1
    with pytest.raises(OverflowError):
        Value(1000.0).exp()


def test_config_validation_names_the_field():
    for field in ("n_layer", "n_embd", "block_size", "n_head"):
        with pytest.raises(ValueError, match=field):
            GPTConfig(**{field: 0})
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=1.5)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(steps=-3), dict(lr=0), dict(backend="gpu"), dict(seed="x")])
def test_train_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        mg.train(["ab", "cd"], **bad)


def test_train_rejects_no_documents():
    with pytest.raises(ValueError, match="no documents"):
        mg.train([], steps=1)


def test_reference_needs_neither_numpy_nor_the_extension():
    """The oracle must run where nothing was compiled and NumPy is missing."""
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['numpy'] = None\n"  # any `import numpy` now raises ImportError
        "for m in ('_arena', '_ops', '_value', '_adam', '_fused'): sys.modules['cymicrogpt.' + m] = None\n"
        "import cymicrogpt as mg\n"
        "from cymicrogpt.reference import Value\n"
        "run = mg.train(['ab', 'ba', 'abba'], config=mg.GPTConfig(n_embd=8, n_head=2, block_size=6),"
        " steps=3, backend='python')\n"
        "print(len(run.losses), run.sample(2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 ")
