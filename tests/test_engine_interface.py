"""Both engines implement the written interface (engines/interface.py), and the model's training pass
and sampling ask nothing of an engine beyond it."""
from __future__ import annotations

import inspect
import random

import pytest

from cymicrogpt.engines import BACKENDS, make_engine
from cymicrogpt.engines.interface import Engine, Optimizer
from cymicrogpt.model import forward_backward
from cymicrogpt.params import init_weights, state_dict_layout
from cymicrogpt.sampling import sample_one
from cymicrogpt.tokenizer import Tokenizer


def interface_methods(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]


def parameter_names(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.name != "self"]


def fresh_engine(backend: str, tiny_config, tiny_docs):
    tokenizer = Tokenizer.from_docs(tiny_docs)
    layout = state_dict_layout(tiny_config, tokenizer.vocab_size)
    return make_engine(backend, layout, init_weights(random.Random(0), layout)), tokenizer


def test_the_interface_lists_what_the_model_needs():
    assert set(interface_methods(Engine)) >= {
        "row", "matrix", "add", "linear", "relu", "rmsnorm", "attention", "nll", "mean", "backward",
        "begin_sequence", "probs", "weights", "set_weights", "gradients", "zero_grad", "make_optimizer",
        "forward_backward"}
    assert set(interface_methods(Optimizer)) == {"step", "moments", "set_moments"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_and_optimizer_satisfy_the_protocols(backend, tiny_config, tiny_docs):
    engine, _ = fresh_engine(backend, tiny_config, tiny_docs)
    optimizer = engine.make_optimizer(0.01)
    assert isinstance(engine, Engine)
    assert isinstance(optimizer, Optimizer)
    for protocol, obj in ((Engine, engine), (Optimizer, optimizer)):
        for name in interface_methods(protocol):
            assert parameter_names(getattr(obj, name)) == parameter_names(getattr(protocol, name)), \
                f"{type(obj).__name__}.{name} takes other parameters than {protocol.__name__}.{name}"


def test_an_object_missing_a_method_is_not_an_engine():
    class NoProbs:
        pass

    for name in interface_methods(Engine):
        if name != "probs":
            setattr(NoProbs, name, lambda self, *args: None)
    assert not isinstance(NoProbs(), Engine)
    NoProbs.probs = lambda self, logits, temperature: []
    assert isinstance(NoProbs(), Engine)


class Recorder:
    """Passes every attribute through to an engine and records which were asked for."""

    def __init__(self, target) -> None:
        self._target = target
        self.used: set[str] = set()

    def __getattr__(self, name: str):
        self.used.add(name)
        return getattr(self._target, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_pass_and_sampling_use_only_the_interface(backend, tiny_config, tiny_docs):
    engine, tokenizer = fresh_engine(backend, tiny_config, tiny_docs)
    recorder = Recorder(engine)
    optimizer = recorder.make_optimizer(0.01)
    forward_backward(recorder, tiny_config, tokenizer.encode(tiny_docs[0]))
    optimizer.step(0, 2)
    sample_one(recorder, tiny_config, tokenizer, random.Random(1), 0.5)
    assert recorder.used <= set(interface_methods(Engine)), recorder.used - set(interface_methods(Engine))
    assert {"row", "linear", "attention", "nll", "mean", "backward", "begin_sequence", "probs"} <= recorder.used


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_moments_of_the_wrong_length_changes_nothing(backend, tiny_config, tiny_docs):
    """Both buffers are checked before either is written: a v of the wrong length used to
    leave the new m behind it (numpy engines), or was taken and failed, or was cut short,
    only at a later step (the reference engine)."""
    engine, _ = fresh_engine(backend, tiny_config, tiny_docs)
    optimizer = engine.make_optimizer(0.01)
    size = len(engine.weights())
    before = [list(buffer) for buffer in optimizer.moments()]
    for m, v in (([1.0] * size, [1.0] * (size - 1)), ([1.0] * size, [1.0] * (size + 1)),
                 ([1.0] * (size - 1), [1.0] * size)):
        with pytest.raises(ValueError, match=f"set_moments: .* {size} weights"):
            optimizer.set_moments(m, v)
        assert [list(buffer) for buffer in optimizer.moments()] == before
    optimizer.set_moments([0.5] * size, [0.25] * size)
    assert [list(buffer) for buffer in optimizer.moments()] == [[0.5] * size, [0.25] * size]
