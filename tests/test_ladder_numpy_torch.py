"""The numpy and torch ladder rungs against the scalar-graph engines.

Their sums run in another order than microgpt's, so they are compared with tolerances:
on step 1, |loss - loss_ref| <= 1e-12 and max|g - g_ref| <= 1e-10 * max|g_ref| against the
pure-Python reference; over 20 training steps, every loss within 1e-9 of the compiled
scalar graph's (which is bit-identical to the reference, and fast).
"""
from __future__ import annotations

import functools
import random
import sys

import numpy as np
import pytest

from cymicrogpt.config import GPTConfig
from cymicrogpt.ladder import trainer_class
from cymicrogpt.ladder.base import NotInstalled
from cymicrogpt.params import init_weights, state_dict_layout
from cymicrogpt.tokenizer import Tokenizer

NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "zoe", "liam", "noah",
         "eli", "christopher", "maximiliano", "yu", "jo"]
TOKENIZER = Tokenizer.from_docs(NAMES)
LR = 0.01


def numpy_impl():
    return trainer_class("numpy")


def torch_impl():
    pytest.importorskip("torch", reason="torch is not installed (it is optional; CPU build: "
                        "`pip install torch --index-url https://download.pytorch.org/whl/cpu`)")
    return trainer_class("torch")


IMPLS = [pytest.param(numpy_impl, id="numpy"), pytest.param(torch_impl, id="torch")]


def make_weights(config, seed, zero_fc1_rows=()):
    layout = state_dict_layout(config, TOKENIZER.vocab_size)
    weights = init_weights(random.Random(seed), layout)
    for slot in layout:  # zeroed fc1 rows: hidden units exactly 0, where relu'(0) = 0 matters
        if slot.name.endswith("mlp_fc1"):
            for r in zero_fc1_rows:
                weights[slot.offset + r * slot.cols : slot.offset + (r + 1) * slot.cols] = [0.0] * slot.cols
    return layout, weights


@functools.lru_cache(maxsize=None)
def reference_step1(config, seed, doc, zero_fc1_rows=()):
    """The pure-Python reference's loss and gradients (shared by numpy and torch)."""
    layout, weights = make_weights(config, seed, zero_fc1_rows)
    ref = trainer_class("python")(config, layout, weights, LR, 10)
    loss_ref, g_ref = ref.loss_and_grads(TOKENIZER.encode(doc))
    g_ref.setflags(write=False)
    return loss_ref, g_ref


def assert_close_to_reference(impl, config, seed, doc, zero_fc1_rows=()):
    layout, weights = make_weights(config, seed, zero_fc1_rows)
    tokens = TOKENIZER.encode(doc)
    loss_ref, g_ref = reference_step1(config, seed, doc, zero_fc1_rows)
    trainer = impl(config, layout, weights, LR, 10)
    loss, g = trainer.loss_and_grads(tokens)
    assert isinstance(loss, float)
    assert g.shape == g_ref.shape and g.dtype == np.float64
    assert abs(loss - loss_ref) <= 1e-12
    scale = np.max(np.abs(g_ref))
    assert scale > 0
    err = np.max(np.abs(g - g_ref))
    assert err <= 1e-10 * scale, f"max |g - g_ref| = {err:.3g}, max |g_ref| = {scale:.3g}"
    # gradients that are exactly zero in the reference (unused rows of wte, wpe) are zero here
    assert np.all(g[g_ref == 0] == 0)
    return trainer, weights, g_ref


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize(
    "config, seed, doc",
    [
        (GPTConfig(), 42, "isabella"),
        (GPTConfig(n_layer=2, n_embd=32, block_size=8, n_head=8), 1, "maximiliano"),  # truncated
        (GPTConfig(n_layer=3, n_embd=12, block_size=5, n_head=3), 7, "sophia"),  # truncated
        (GPTConfig(n_layer=1, n_embd=8, block_size=24, n_head=1), 123, "christopher"),
        (GPTConfig(), 5, ""),  # [BOS, BOS]: one position
        (GPTConfig(n_layer=2, n_embd=8, block_size=1, n_head=2), 9, "emma"),  # one position
    ],
    ids=["default", "2x32-h8-b8-long", "3x12-h3-b5", "1x8-h1-b24", "1-position-doc", "block-1"],
)
def test_step1_loss_and_gradients_match_reference(make_impl, config, seed, doc):
    assert_close_to_reference(make_impl(), config, seed, doc)


@pytest.mark.parametrize("make_impl", IMPLS)
def test_relu_derivative_at_zero_is_zero(make_impl):
    """fc1 rows of zeros make hidden units exactly 0; microgpt's relu' there is 0, not 1."""
    config = GPTConfig(n_layer=2, n_embd=8, block_size=8, n_head=2)
    _, _, g_ref = assert_close_to_reference(make_impl(), config, 3, "olivia", zero_fc1_rows=(0, 5))
    layout = state_dict_layout(config, TOKENIZER.vocab_size)
    fc1 = next(s for s in layout if s.name == "layer0.mlp_fc1")
    assert np.all(g_ref[fc1.offset : fc1.offset + fc1.cols] == 0)  # the reference agrees


@pytest.mark.parametrize("make_impl", IMPLS)
def test_loss_and_grads_does_not_update(make_impl):
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    layout, weights = make_weights(config, 0)
    trainer = make_impl()(config, layout, weights, LR, 5)
    tokens = TOKENIZER.encode("ava")
    first = trainer.loss_and_grads(tokens)
    assert np.array_equal(trainer.weights(), np.array(weights))
    second = trainer.loss_and_grads(tokens)
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
    # the returned gradient is a copy: a later call does not change it
    first[1][:] = 0.0
    assert np.array_equal(trainer.loss_and_grads(tokens)[1], second[1])
    # step returns the loss before its update, and then moves the weights
    assert trainer.step(tokens) == first[0]
    assert trainer.steps_done == 1
    assert not np.array_equal(trainer.weights(), np.array(weights))
    assert trainer.loss_and_grads(tokens)[0] < first[0]


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize(
    "config, seed",
    [(GPTConfig(), 42), (GPTConfig(n_layer=2, n_embd=32, block_size=8, n_head=8), 1)],
    ids=["default", "2x32-h8-b8"],
)
def test_training_20_steps_tracks_compiled_reference(make_impl, config, seed):
    steps = 20
    layout, weights = make_weights(config, seed)
    docs = [TOKENIZER.encode(NAMES[i % len(NAMES)]) for i in range(steps)]
    ref = trainer_class("cython")(config, layout, weights, LR, steps)
    trainer = make_impl()(config, layout, weights, LR, steps)
    losses_ref = [ref.step(t) for t in docs]
    losses = [trainer.step(t) for t in docs]
    diffs = np.abs(np.array(losses) - np.array(losses_ref))
    assert diffs.max() <= 1e-9, f"losses drift from the reference: {diffs.max():.3g}"
    w_ref = ref.weights()
    assert np.max(np.abs(trainer.weights() - w_ref)) <= 1e-9 * np.max(np.abs(w_ref))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("make_impl", IMPLS)
def test_bad_input(make_impl):
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    layout, weights = make_weights(config, 0)
    impl = make_impl()
    trainer = impl(config, layout, weights, LR, 5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        trainer.loss_and_grads([TOKENIZER.bos])
    with pytest.raises(ValueError, match="token ids"):
        trainer.loss_and_grads([TOKENIZER.bos, TOKENIZER.vocab_size, TOKENIZER.bos])
    with pytest.raises(ValueError, match="token ids"):
        trainer.loss_and_grads([TOKENIZER.bos, -1, TOKENIZER.bos])
    with pytest.raises(ValueError, match="weights"):
        impl(config, layout, weights[:-1], LR, 5)


def test_torch_missing_is_not_installed(monkeypatch):
    """Without torch, trainer_class('torch') raises NotInstalled (never a bare ImportError)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "cymicrogpt.ladder.torch_impl", raising=False)
    monkeypatch.delitem(sys.modules, "cymicrogpt.torch_model", raising=False)  # the rung's model
    with pytest.raises(NotInstalled, match="torch is not installed"):
        trainer_class("torch")
