"""``Run.state_dict()`` and ``Run.load_state_dict()`` (issue 21, item 1).

The names, shapes and values are checked against microgpt's own ``state_dict``, built here
by microgpt.py's code (its ``matrix`` lambda and dict, drawn from ``random.seed(s)`` after its
shuffle), not from params.py's layout.  Loading is checked to set exactly the weights given
and nothing else (a run that loads its own weights back continues bit for bit), and to
refuse every bad dict with one ValueError naming the tensor, before any weight changes.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from cymicrogpt.config import GPTConfig
from cymicrogpt.training import start_run

BACKENDS = ["python", "cython"]
CONFIG = GPTConfig(n_layer=2, n_embd=8, block_size=8, n_head=2)


def microgpt_state_dict(docs: list[str], config: GPTConfig, seed: int) -> dict[str, list[list[float]]]:
    """microgpt.py's initial state_dict, by its own code (Values replaced by their floats)."""
    random.seed(seed)
    docs = list(docs)
    random.shuffle(docs)
    vocab_size = len(set("".join(docs))) + 1
    n_embd, block_size = config.n_embd, config.block_size
    matrix = lambda nout, nin, std=0.08: [[random.gauss(0, std) for _ in range(nin)] for _ in range(nout)]
    state_dict = {"wte": matrix(vocab_size, n_embd), "wpe": matrix(block_size, n_embd),
                  "lm_head": matrix(vocab_size, n_embd)}
    for i in range(config.n_layer):
        state_dict[f"layer{i}.attn_wq"] = matrix(n_embd, n_embd)
        state_dict[f"layer{i}.attn_wk"] = matrix(n_embd, n_embd)
        state_dict[f"layer{i}.attn_wv"] = matrix(n_embd, n_embd)
        state_dict[f"layer{i}.attn_wo"] = matrix(n_embd, n_embd)
        state_dict[f"layer{i}.mlp_fc1"] = matrix(4 * n_embd, n_embd)
        state_dict[f"layer{i}.mlp_fc2"] = matrix(n_embd, 4 * n_embd)
    return state_dict


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_is_microgpts(backend: str, tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=5, backend=backend, seed=7)
    got = run.state_dict()
    expected = microgpt_state_dict(tiny_docs, CONFIG, seed=7)
    assert list(got) == list(expected)  # microgpt's names, in its order
    for name, matrix in expected.items():
        assert got[name].dtype == np.float64 and got[name].flags.c_contiguous
        assert got[name].tolist() == matrix, name  # float ==, shape included


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_follows_training_and_is_a_copy(backend: str, tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=6, backend=backend, seed=3)
    run.train(until=3)
    tensors = run.state_dict()
    assert np.concatenate([t.reshape(-1) for t in tensors.values()]).tolist() == run.engine.weights()
    for tensor in tensors.values():
        tensor[...] = 1e9  # writes into the copies only
    assert run.state_dict()["wte"][0, 0] != 1e9
    twin = start_run(tiny_docs, config=CONFIG, steps=6, backend=backend, seed=3)
    run.train()
    twin.train()
    assert run.losses == twin.losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_loading_its_own_weights_back_continues_bit_for_bit(backend: str, tiny_docs: list[str]) -> None:
    """Weights from elsewhere in between, then the run's own back: the rest of the run is
    the uninterrupted one (moments, step, losses and random stream were not touched)."""
    uninterrupted = start_run(tiny_docs, config=CONFIG, steps=8, backend=backend, seed=5)
    uninterrupted.train()
    run = start_run(tiny_docs, config=CONFIG, steps=8, backend=backend, seed=5)
    run.train(until=4)
    own = run.state_dict()
    other = start_run(tiny_docs, config=CONFIG, steps=8, backend=backend, seed=6).state_dict()
    run.load_state_dict(other)
    assert run.engine.weights() == np.concatenate([t.reshape(-1) for t in other.values()]).tolist()
    run.load_state_dict(own)
    run.train()
    assert run.losses == uninterrupted.losses
    assert run.sample(3) == uninterrupted.sample(3)


def test_weights_move_between_backends(tiny_docs: list[str]) -> None:
    compiled = start_run(tiny_docs, config=CONFIG, steps=4, backend="cython", seed=1)
    compiled.train()
    reference = start_run(tiny_docs, config=CONFIG, steps=4, backend="python", seed=9)
    reference.load_state_dict(compiled.state_dict())
    assert reference.engine.weights() == compiled.engine.weights()
    assert all(type(w) is float for w in reference.engine.weights())  # the reference computes with floats
    reference.rng.setstate(compiled.rng.getstate())
    assert reference.sample(5) == compiled.sample(5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_real_arrays_are_taken_as_float64(backend: str, tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=2, backend=backend, seed=0)
    tensors = run.state_dict()
    as_float32 = {name: t.astype(np.float32) for name, t in tensors.items()}
    run.load_state_dict(as_float32)
    assert run.state_dict()["wpe"].tolist() == tensors["wpe"].astype(np.float32).astype(np.float64).tolist()
    mixed = {name: t.tolist() for name, t in tensors.items()}  # nested lists
    mixed["wte"] = np.ones(tensors["wte"].shape, dtype=np.int16)
    run.load_state_dict(mixed)
    after = run.state_dict()
    assert after["wte"].tolist() == np.ones(tensors["wte"].shape).tolist()
    assert after["lm_head"].tolist() == tensors["lm_head"].tolist()


def _bad(tensors: dict, name: str, value) -> dict:
    changed = dict(tensors)
    changed[name] = value
    return changed


def _refusals(tensors: dict) -> list[tuple[dict, str]]:
    """(a bad dict, what its error must say), one per way a dict can be wrong."""
    last = "layer1.mlp_fc2"  # the last tensor: refused only after every other one was read
    shape = tensors[last].shape
    missing = {name: t for name, t in tensors.items() if name != last}
    nan = tensors[last].copy()
    nan[2, 5] = math.nan
    inf = tensors[last].copy()
    inf[0, 1] = -math.inf
    wider = [np.longdouble] if np.finfo(np.longdouble).bits > 64 else []  # float64 itself on some platforms
    return [(_bad(tensors, last, tensors[last].astype(dtype)), f"tensor '{last}' has dtype") for dtype in wider] + [
        (missing, f"missing tensor '{last}'"),
        ({**tensors, "layer2.attn_wq": tensors["layer1.attn_wq"]}, "unexpected tensor 'layer2.attn_wq'"),
        ({**tensors, 7: tensors["wte"]}, "unexpected tensor 7"),
        (_bad(tensors, last, tensors[last].T), f"tensor '{last}' has shape {shape[::-1]}, expected {shape}"),
        (_bad(tensors, last, tensors[last].reshape(-1)), f"tensor '{last}' has shape ({tensors[last].size},)"),
        (_bad(tensors, last, nan), f"tensor '{last}' holds nan at (2, 5); weights must be finite"),
        (_bad(tensors, last, inf), f"tensor '{last}' holds -inf at (0, 1)"),
        (_bad(tensors, last, tensors[last].astype(np.complex128)), f"tensor '{last}' has dtype complex128"),
        (_bad(tensors, last, tensors[last] > 0), f"tensor '{last}' has dtype bool"),
        (_bad(tensors, last, tensors[last].astype(str)), f"tensor '{last}' has dtype <U"),
        (_bad(tensors, last, tensors[last].astype(object)), f"tensor '{last}' has dtype object"),
        (_bad(tensors, last, [[1.0, 2.0], [3.0]]), f"tensor '{last}' is not an array of numbers"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_state_dicts_are_refused_naming_the_tensor(backend: str, tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=2, backend=backend, seed=0)
    before = run.engine.weights()
    tensors = {name: t + 1.0 for name, t in run.state_dict().items()}  # different weights: a load would show
    for bad, message in _refusals(tensors):
        with pytest.raises(ValueError) as caught:
            run.load_state_dict(bad)
        assert message in str(caught.value), (message, str(caught.value))
        assert "\n" not in str(caught.value)
        assert run.engine.weights() == before  # nothing was set


def test_not_a_mapping_is_a_type_error(tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=2, backend="cython", seed=0)
    with pytest.raises(TypeError, match="mapping of tensor names to arrays, got list"):
        run.load_state_dict(list(run.state_dict().values()))
