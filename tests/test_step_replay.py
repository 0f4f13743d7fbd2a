"""Replayed training steps (_ops.StepProgram) give exactly what the model gives.

The compiled engine runs the model (model.py) on the first document of each length,
traced, and replays that trace in C for the next ones.  Every step below is taken on such
an engine and on a fresh engine running the model itself (model.forward_backward), from
the same weights: losses and weight gradients must be float-== (the model on the
compiled engine is held to the reference by test_parity.py).  Also: what a replay cannot
do (a token it cannot pick, a non-int token) is left to the model, which raises as
before, and a trace that is not one training step gives no program.
"""
import math
import operator
import random

import numpy as np
import pytest

from cymicrogpt import _kernels
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.engines import make_engine
from cymicrogpt.engines.compiled import TokenSlot
from cymicrogpt.model import forward_backward, sequence_loss
from cymicrogpt.params import MatrixSlot, init_weights, state_dict_layout

VOCAB = 27
CONFIGS = [
    GPTConfig(),  # microgpt's
    GPTConfig(n_layer=2, n_embd=8, block_size=4, n_head=2),  # documents longer than the block: truncated
    GPTConfig(n_layer=1, n_embd=4, block_size=12, n_head=1),
]


def engine_for(config: GPTConfig, seed: int = 3):
    layout = state_dict_layout(config, VOCAB)
    return make_engine("cython", layout, init_weights(random.Random(seed), layout))


def step(engine, run_step) -> tuple[float, list[float]]:
    """One pass, its loss and weight gradients (then zeroed)."""
    loss = run_step()
    grads = engine.gradients()
    engine.zero_grad()
    return loss, grads


def random_documents(count: int, seed: int) -> list[list[int]]:
    """Tokenised documents (BOS = VOCAB - 1 at both ends) of a few lengths, many repeated."""
    rng = random.Random(seed)
    bos = VOCAB - 1
    return [[bos] + [rng.randrange(bos) for _ in range(rng.randrange(1, 9))] + [bos] for _ in range(count)]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_replayed_steps_equal_the_model(config):
    replaying, plain = engine_for(config), engine_for(config)
    docs = random_documents(60, seed=len(str(config)))
    for tokens in docs:
        assert step(replaying, lambda: replaying.forward_backward(config, tokens)) == \
            step(plain, lambda: forward_backward(plain, config, tokens))
    lengths = {len(tokens) for tokens in docs}
    assert replaying.ops.step_replays_done == len(docs) - len(lengths)  # every length traced once, then replayed
    assert len(replaying.programs) == len(lengths)


def test_a_token_the_program_cannot_pick_is_left_to_the_model():
    config = CONFIGS[1]
    engine = engine_for(config)
    tokens = [26, 1, 2, 26]
    engine.forward_backward(config, tokens)  # traced
    engine.zero_grad()
    with pytest.raises(IndexError, match="row 27 out of range for wte"):
        engine.forward_backward(config, [27, 1, 2, 26])
    with pytest.raises(IndexError, match="target 27 out of range"):
        engine.forward_backward(config, [26, 1, 27, 26])
    with pytest.raises(OverflowError):
        engine.forward_backward(config, [2**80, 1, 2, 26])
    assert engine.ops.step_replays_done == 0
    assert not np.any(engine.grad_array)  # nothing passed backward by a replay that gave up
    # and the engine goes on replaying
    plain = engine_for(config)
    assert step(engine, lambda: engine.forward_backward(config, tokens)) == \
        step(plain, lambda: forward_backward(plain, config, tokens))
    assert engine.ops.step_replays_done == 1


def test_tokens_that_are_not_a_list_of_ints_give_the_same_step():
    config = CONFIGS[0]
    engine, plain = engine_for(config), engine_for(config)
    tokens = [26, 4, 0, 12, 26]
    expected = step(plain, lambda: forward_backward(plain, config, tokens))
    for same in (tokens, tuple(tokens), [np.int64(t) for t in tokens], np.array(tokens), tokens):
        assert step(engine, lambda: engine.forward_backward(config, same)) == expected


def test_a_trace_that_is_not_one_training_step_gives_no_program():
    config = CONFIGS[2]
    engine = engine_for(config)
    ops = engine.ops
    tokens = [26, 3, 26]

    def traced_pass(after=None):
        ops.start_trace(tokens)
        ops.begin_sequence(True)
        ops.backward(sequence_loss(engine, config, tokens))
        if after is not None:
            after()
        return ops.end_trace()

    assert traced_pass() is not None  # the control: one pass is a program
    assert traced_pass(lambda: ops.add(ops.row("wpe", 0), ops.row("wpe", 1))) is None  # an op after backward
    assert traced_pass(lambda: ops.begin_sequence(True)) is None  # a second sequence
    ops.start_trace(tokens)
    ops.begin_sequence(False)  # no graph: sampling, not training
    ops.probs(ops.row("wte", 3), 1.0)
    assert ops.end_trace() is None
    ops.start_trace(tokens)
    assert ops.end_trace() is None  # nothing ran
    # another step replayed between the traced step's backward and end_trace (another
    # thread on this engine): its graph is not the traced one
    other = engine_for(config)
    longer = [26, 3, 4, 5, 26]
    other.forward_backward(config, longer)
    assert traced_pass(lambda: ops.replay(other.programs[(config, len(longer))], longer)) is None


def test_a_token_told_by_a_wrong_slot_ends_the_trace():
    """row/nll told tokens[slot] for an index that is not that token: no program."""
    config = CONFIGS[2]
    engine = engine_for(config)
    ops = engine.ops
    ops.start_trace([26, 3, 26])
    ops.begin_sequence(True)
    x = ops.traced_row("wte", 4, 1)  # tokens[1] is 3, not 4
    ops.backward(ops.traced_nll(ops.linear(x, ops.matrix("lm_head")), 3, 1))
    assert ops.end_trace() is None


def test_a_traced_token_can_only_index():
    token = TokenSlot(5, 0)
    assert operator.index(token) == 5 and [10, 11, 12, 13, 14, 15][token] == 15
    for misuse in (lambda: token == 5, lambda: bool(token), lambda: token + 1, lambda: {token}):
        with pytest.raises(TypeError):
            misuse()


def test_documents_truncated_alike_share_one_program():
    """Every document longer than the block records the same program: one object for
    all their lengths (the budget is spent once), and the steps stay the model's."""
    config = CONFIGS[1]  # block_size 4: documents of 6 tokens and more (all of these) are truncated alike
    engine, plain = engine_for(config), engine_for(config)
    rng = random.Random(11)
    docs = [[26] + [rng.randrange(26) for _ in range(length)] + [26] for length in range(4, 30)] * 2
    for tokens in docs:
        assert step(engine, lambda: engine.forward_backward(config, tokens)) == \
            step(plain, lambda: forward_backward(plain, config, tokens))
    truncated = [program for (_, length), program in engine.programs.items() if length > config.block_size + 1]
    assert len(truncated) == 26 and all(program is truncated[0] for program in truncated)
    assert engine.ops.step_replays_done == len(docs) - 26  # every length traced once


@pytest.mark.parametrize("avx2", [False, True], ids=["baseline", "avx2"])
def test_replayed_linear_layers_sum_the_models_bits(avx2):
    """A replayed linear layer sums each row from the matrix transposed (_kernels.sum_rows,
    lanes across rows) where the model's sums each row (dot_rows): the same doubles, in both
    builds of the kernels, for shapes that leave every remainder of their loops, and values
    whose products are -0.0 (a sum from 0.0 is +0.0 there), subnormal, huge or nan.  The
    same matrix read twice, and two matrices, keep a transpose each."""
    was = _kernels.uses_avx2()
    try:
        _kernels.use_avx2(avx2)
        rng = np.random.default_rng(7)
        specials = [-0.0, 0.0, 5e-324, -1e-310, 1e300, math.nan]
        for rows, cols in [(1, 1), (3, 1), (2, 3), (3, 5), (4, 4), (5, 7), (7, 9), (8, 16), (9, 3), (12, 17), (27, 16),
                           (33, 2), (64, 16), (16, 64)]:
            w = rng.standard_normal((rows, cols))
            w.flat[rng.choice(w.size, min(w.size, 4), replace=False)] = rng.choice(specials, min(w.size, 4))
            x = np.concatenate([[-0.0], rng.standard_normal(cols - 1)]) if cols > 1 else np.array([-0.0])
            second = rng.standard_normal((cols, cols))
            layout = [MatrixSlot("w", rows, cols, 0), MatrixSlot("x", 1, cols, w.size),
                      MatrixSlot("s", cols, cols, w.size + cols)]
            ops = GraphOps(layout, np.concatenate([w.ravel(), x, second.ravel()]))
            ops.start_trace([0])
            ops.begin_sequence(True)
            hidden = ops.linear(ops.row("x", 0), ops.matrix("s"))
            outputs = [ops.linear(ops.row("x", 0), ops.matrix("w")), ops.linear(hidden, ops.matrix("w"))]
            values = ops.node_values()
            largest = [int(np.argmax(np.nan_to_num(values[out.start:out.start + rows], nan=-np.inf)))
                       for out in outputs]  # nll's target: a probability above 0.0 (or nan)
            ops.backward(ops.mean([ops.nll(out, target) for out, target in zip(outputs, largest)]))
            program = ops.end_trace()
            assert program is not None
            built = ops.node_values().copy()
            ops.replay(program, [0])
            assert ops.step_replays_done == 1
            assert np.array_equal(built.view(np.uint64)[:ops.num_nodes], ops.node_values().view(np.uint64)[:ops.num_nodes])
    finally:
        _kernels.use_avx2(was)
