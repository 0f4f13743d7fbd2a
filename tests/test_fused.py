"""The fused backend's loops (csrc/cymicrogpt/_fused.pyx) on their own: the shapes they
refuse, and the cases of microgpt's backward order the parity tests meet rarely, each
against the reference engine with float ==.  The whole runs are in tests/test_parity.py."""
from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest

from cymicrogpt import _adam, _kernels
from cymicrogpt._fused import FusedGPT
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.engines import make_engine
from cymicrogpt.params import MatrixSlot, init_weights, state_dict_layout


def engines(config: GPTConfig, vocab: int, seed: int = 1):
    layout = state_dict_layout(config, vocab)
    weights = init_weights(random.Random(seed), layout)
    return make_engine("python", layout, weights), make_engine("fused", layout, weights)


@pytest.mark.parametrize("config, tokens", [
    (GPTConfig(n_layer=1, n_embd=4, block_size=8, n_head=4), [5, 1, 1, 1, 2, 1, 1, 5]),  # head_dim 1, repeats
    (GPTConfig(n_layer=2, n_embd=12, block_size=3, n_head=4), [5, 0, 1, 2, 3, 4, 5]),  # head_dim 3, truncated
    (GPTConfig(n_layer=1, n_embd=6, block_size=4, n_head=1), [5, 5]),  # one position, target = input
    (GPTConfig(n_layer=2, n_embd=8, block_size=8, n_head=2), [5, 4, 4, 4, 4, 4, 4, 4, 5]),  # one target throughout
    (GPTConfig(n_layer=1, n_embd=40, block_size=6, n_head=5), [5, 1, 2, 3, 4, 0, 5]),  # 4 heads side by side, then 1
    (GPTConfig(n_layer=1, n_embd=32, block_size=9, n_head=8), [5, 1, 2, 3, 4, 0, 1, 2, 3, 5]),  # 2 x 4 heads
])
def test_two_passes_add_up_as_the_references_do(config, tokens):
    """Gradients are added to what is there, in microgpt's order: two passes without
    zeroing give the reference's bits too."""
    ref, fused = engines(config, vocab=6)
    for _ in range(2):
        assert fused.forward_backward(config, tokens) == ref.forward_backward(config, tokens)
        assert fused.gradients() == ref.gradients()


@pytest.mark.parametrize("avx2", [False, True], ids=["baseline", "avx2"])
def test_both_builds_give_the_references_bits(avx2):
    """The loops in either build (cymicrogpt._fused, SSE2; cymicrogpt._fused_avx2, picked
    where _kernels runs its AVX2 build): lanes are independent sums, so the AVX2 build
    computes the baseline's (and the reference's) bits."""
    was = _kernels.uses_avx2()
    try:
        if _kernels.use_avx2(avx2) != avx2:
            pytest.skip("this CPU has no AVX2")
        config = GPTConfig(n_layer=2, n_embd=12, block_size=6, n_head=3)  # odd widths: the kernels' tails
        ref, fused = engines(config, vocab=7)
        for tokens in ([6, 0, 1, 2, 3, 4, 5, 6], [6, 3, 6]):
            assert fused.forward_backward(config, tokens) == ref.forward_backward(config, tokens)
            assert fused.gradients() == ref.gradients()
        avx2_built = importlib.util.find_spec("cymicrogpt._fused_avx2") is not None  # not in a debug build
        # the AVX2 build has FMA (pow_shortcut.h's exact products): it runs where the CPU has both
        expected = "cymicrogpt._fused_avx2" if avx2 and avx2_built and _adam.cpu_has_avx2_fma() else "cymicrogpt._fused"
        assert type(fused._loops).__module__ == expected
    finally:
        _kernels.use_avx2(was)


def test_one_engine_serves_two_configs_of_the_same_weights():
    """n_head is not in the layout: the loops follow the config each pass is given."""
    four, two = GPTConfig(n_embd=8, n_head=4), GPTConfig(n_embd=8, n_head=2)
    ref, fused = engines(four, vocab=6)
    for config in (four, two, four):
        assert fused.forward_backward(config, [5, 1, 2, 5]) == ref.forward_backward(config, [5, 1, 2, 5])
        assert fused.gradients() == ref.gradients()


def test_a_zero_probability_raises_as_math_log_does_and_leaves_the_gradients():
    config = GPTConfig(n_layer=1, n_embd=4, block_size=4, n_head=1)
    ref, fused = engines(config, vocab=6)
    weights = fused.weights()
    lm_head = next(s for s in state_dict_layout(config, 6) if s.name == "lm_head")
    # logits of tokens 2 and 3: +-1e6 * sum(x); the larger one leaves token 1 exp(-1e6...) == 0.0
    weights[lm_head.offset + 2 * 4: lm_head.offset + 4 * 4] = [1e6] * 4 + [-1e6] * 4
    for engine in (ref, fused):
        engine.set_weights(weights)
        with pytest.raises(ValueError, match="math domain error"):
            engine.forward_backward(config, [5, 1, 5])
    assert fused.gradients() == [0.0] * len(weights)


def test_bad_tokens_are_refused_before_any_work():
    config = GPTConfig(n_layer=1, n_embd=4, block_size=4, n_head=1)
    _, fused = engines(config, vocab=6)
    with pytest.raises(IndexError, match="token 6 out of range"):
        fused.forward_backward(config, [5, 6, 5])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        fused.forward_backward(config, [5])
    assert fused.gradients() == [0.0] * len(fused.weights())


@pytest.mark.parametrize("change, message", [
    (dict(n_head=0), "must be positive"),  # was a SIGFPE: n_embd % 0 under cdivision
    (dict(block=-1), "must be positive"),
    (dict(n_head=3), "divisible"),
    (dict(offsets=[0, 0, 10**9]), "lies outside"),  # was a segfault in the forward loop
    (dict(layer_offsets=[[0, 0, 0, 0, 0, 200]]), "lies outside"),
    (dict(offsets=[0, 0]), "need wte, wpe, lm_head"),
    (dict(layer_offsets=[[0] * 6] * 2), "need wte, wpe, lm_head"),
    (dict(n_weights=65), "holds 64 fixed nodes"),  # more weights than the arena holds
])
def test_refuses_shapes_that_do_not_fit_its_weights(change, message):
    arena = GraphOps([MatrixSlot("all", 1, 64, 0)], np.zeros(64)).arena
    args = dict(arena=arena, n_weights=64, n_layer=1, n_embd=4, n_head=2, vocab=3, block=2, hidden=16,
                offsets=[0, 0, 0], layer_offsets=[[0] * 6], rmsnorm_eps=1e-5)
    FusedGPT(**args)  # fits: every matrix inside the 64 weights (they may overlap)
    with pytest.raises(ValueError, match=message):
        FusedGPT(**{**args, **change})


def fused_builds():
    """The builds of the loops this machine runs: the baseline, and AVX2 (with FMA) where available."""
    from cymicrogpt import _fused

    builds = [_fused]
    if _adam.cpu_has_avx2_fma() and importlib.util.find_spec("cymicrogpt._fused_avx2") is not None:
        from cymicrogpt import _fused_avx2

        builds.append(_fused_avx2)
    return builds


@pytest.mark.parametrize("module", fused_builds(), ids=lambda module: module.__name__.split("._")[-1])
def test_the_softmaxes_max_is_pythons_max(module):
    """max_of (the softmaxes' max; in vectors in the AVX2 build) keeps Python's max()'s bits
    where they depend on more than the value: the first of +0.0 and -0.0, a NaN first element
    kept, a later NaN passed over; lengths around the vectors' (4) and the tails."""
    rng = random.Random(7)
    specials = [0.0, -0.0, float("nan"), float("-inf"), float("inf"), 1.0, -1.0, 5e-324, -5e-324]
    for trial in range(20000):
        n = rng.randint(1, 40)
        if trial % 2:
            values = [rng.choice(specials) for _ in range(n)]
        else:
            values = [rng.choice(specials) if rng.random() < 0.2 else rng.uniform(-5.0, 5.0) for _ in range(n)]
        expected, got = max(values), module.max_array(np.array(values))
        assert np.array([got]).view(np.uint64) == np.array([expected]).view(np.uint64), values
    with pytest.raises(ValueError, match="empty"):
        module.max_array(np.zeros(0))
