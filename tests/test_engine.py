"""The compiled engine's contract beyond training parity: extreme weights, foreign handles,
construction from any weights.

Extreme weights (inf, NaN, 1e300) must take both engines down the same path: the same
exception type at the same document, or equal losses and gradients, NaN in the same
places.  Handles (Vec, Mat) belong to the engine that built them; any other refuses them.
"""
import math
import random
import struct

import pytest

from cymicrogpt.engines import make_engine
from cymicrogpt.config import GPTConfig
from cymicrogpt.model import KVCache, forward_backward, gpt
from cymicrogpt.params import MatrixSlot, state_dict_layout
from cymicrogpt.sampling import sample_one
from cymicrogpt.training import start_run

CONFIG = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)


def tiny_run(tiny_docs):
    return start_run(list(tiny_docs), config=CONFIG, steps=1, backend="python", seed=3)


def both_engines(run, weights):
    """(reference, compiled) engines holding `weights`."""
    layout = state_dict_layout(run.config, run.tokenizer.vocab_size)
    return [make_engine(name, layout, weights) for name in ("python", "cython")]


def same_float(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def outcome(engine, tokens):
    """('raises', type) or ('loss', loss, gradients) of one forward/backward pass."""
    engine.zero_grad()
    try:
        loss = forward_backward(engine, CONFIG, tokens)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return ("raises", type(exc))
    return ("loss", loss, engine.gradients())


def assert_same_outcome(ref, fast, label):
    assert ref[0] == fast[0], f"{label}: python {ref}, cython {fast[:2]}"
    if ref[0] == "raises":
        assert ref[1] is fast[1], f"{label}: python raises {ref[1]}, cython {fast[1]}"
        return
    assert same_float(ref[1], fast[1]), f"{label}: loss {ref[1]} vs {fast[1]}"
    assert len(ref[2]) == len(fast[2])
    bad = [i for i, (r, f) in enumerate(zip(ref[2], fast[2])) if not same_float(r, f)]
    assert not bad, f"{label}: {len(bad)} gradients differ, first at {bad[0]}: {ref[2][bad[0]]} vs {fast[2][bad[0]]}"


def slot(run, name):
    return next(s for s in state_dict_layout(run.config, run.tokenizer.vocab_size) if s.name == name)


def perturbations(run):
    """name -> function(weights) that sets some weights to extreme values, in place."""
    def fill(name, value, rows=None, cols=None):
        def apply(w):
            s = slot(run, name)
            for r in range(s.rows) if rows is None else rows:
                for c in range(s.cols) if cols is None else cols:
                    w[s.offset + r * s.cols + c] = value
        return apply

    bos = run.tokenizer.bos
    return {
        "one lm_head weight inf": fill("lm_head", math.inf, rows=[2], cols=[0]),
        "one lm_head weight -inf": fill("lm_head", -math.inf, rows=[2], cols=[0]),
        "lm_head row 0 NaN (the first logit: max() keeps it)": fill("lm_head", math.nan, rows=[0]),
        "lm_head row 3 NaN (a later logit: max() skips it)": fill("lm_head", math.nan, rows=[3]),
        "lm_head 1e300 (logits overflow)": fill("lm_head", 1e300),
        "lm_head row of the BOS target -1e4 (its probability underflows)": fill("lm_head", -1e4, rows=[bos]),
        "wte 1e300 (rmsnorm's sum of squares overflows)": fill("wte", 1e300),
        "wpe NaN": fill("wpe", math.nan, rows=[1]),
        "attn_wq 1e300 (attention logits overflow)": fill("layer0.attn_wq", 1e300),
        "attn_wk -1e300 in one column": fill("layer0.attn_wk", -1e300, cols=[1]),
        "mlp_fc1 NaN row (relu of NaN)": fill("layer0.mlp_fc1", math.nan, rows=[5]),
        "mlp_fc2 inf": fill("layer0.mlp_fc2", math.inf, rows=[0], cols=[0, 1]),
    }


def test_extreme_weights_take_both_engines_down_the_same_path(tiny_docs):
    run = tiny_run(tiny_docs)
    docs = [run.tokenizer.encode(d) for d in tiny_docs[:5]]
    base = run.engine.weights()
    kinds = set()
    for label, perturb in perturbations(run).items():
        weights = list(base)
        perturb(weights)
        ref, fast = both_engines(run, weights)
        for d, tokens in enumerate(docs):
            r, f = outcome(ref, tokens), outcome(fast, tokens)
            assert_same_outcome(r, f, f"{label}, document {d}")
            kinds.add(r[0] if r[0] == "raises" else ("nan" if math.isnan(r[1]) else "finite"))
    assert kinds == {"raises", "nan", "finite"}  # every path was taken somewhere


@pytest.mark.parametrize("temperature, error", [(5e-324, OverflowError), (0.0, ZeroDivisionError), (0, ZeroDivisionError)])
def test_probs_raise_as_the_reference_does(tiny_docs, temperature, error):
    run = tiny_run(tiny_docs)
    for engine in both_engines(run, run.engine.weights()):
        engine.begin_sequence(False)
        logits = gpt(engine, CONFIG, run.tokenizer.bos, 0, KVCache(CONFIG.n_layer))
        with pytest.raises(error):
            engine.probs(logits, temperature)


def test_engine_builds_from_weights_whose_first_token_probability_underflows(tiny_docs):
    """A checkpoint-like model where token 0 can never be predicted (its probability is
    0.0): building the engine runs no model, so it succeeds; training on a document that
    targets token 0 fails on both engines alike, and sampling agrees."""
    run = tiny_run(tiny_docs)
    weights = run.engine.weights()
    for name in ("wte", "layer0.attn_wo", "layer0.mlp_fc2"):  # zero: the last hidden state
        s = slot(run, name)  # is then rmsnorm(wpe[pos]) ...
        weights[s.offset : s.offset + s.size] = [0.0] * s.size
    wpe, lm_head = slot(run, "wpe"), slot(run, "lm_head")
    weights[wpe.offset : wpe.offset + wpe.size] = [1.0] * wpe.size  # ... = all ones
    weights[lm_head.offset : lm_head.offset + lm_head.cols] = [-200.0] * lm_head.cols  # logit 0 ~ -1600
    ref, fast = both_engines(run, weights)
    fast.begin_sequence(False)
    assert fast.probs(gpt(fast, CONFIG, 1, 0, KVCache(CONFIG.n_layer)), 1.0)[0] == 0.0
    targets_zero = [run.tokenizer.bos, 0, run.tokenizer.bos]
    for engine in (ref, fast):
        with pytest.raises(ValueError):
            forward_backward(engine, CONFIG, targets_zero)
    def samples(engine):
        rng = random.Random(9)
        return [sample_one(engine, CONFIG, run.tokenizer, rng, 0.7) for _ in range(5)]

    assert samples(fast) == samples(ref)


def test_handles_of_another_engine_are_refused(tiny_docs):
    run = tiny_run(tiny_docs)
    _, one = both_engines(run, run.engine.weights())
    _, other = both_engines(run, run.engine.weights())
    row, matrix = one.row("wte", 0), one.matrix("lm_head")
    one.begin_sequence(True)
    built = one.rmsnorm(one.add(row, one.row("wpe", 0)))
    for op, args in [
        ("rmsnorm", (built,)),
        ("relu", (row,)),
        ("linear", (built, other.matrix("lm_head"))),
        ("linear", (other.row("wte", 0), matrix)),
        ("add", (other.row("wte", 0), row)),
        ("backward", (one.nll(one.linear(built, matrix), 0),)),
    ]:
        with pytest.raises(ValueError, match="another engine|not a weight matrix of this engine"):
            getattr(other, op)(*args)
    assert one.linear(built, matrix).size == matrix.rows  # the owner still takes them


def test_handles_from_before_a_reset_are_refused(tiny_docs):
    run = tiny_run(tiny_docs)
    _, engine = both_engines(run, run.engine.weights())
    engine.begin_sequence(True)
    old = engine.add(engine.row("wte", 0), engine.row("wpe", 0))
    engine.begin_sequence(True)
    with pytest.raises(ValueError, match="reset"):
        engine.relu(old)
    assert engine.relu(engine.row("wte", 1)).size == CONFIG.n_embd  # weight rows stay valid


def test_the_compiled_rmsnorm_takes_its_epsilon_from_config() -> None:
    """One home per constant: GraphOps' default epsilon is config.RMSNORM_EPS, and one that
    could make rmsnorm divide by zero (or by nan) is refused before anything is built."""
    from cymicrogpt._ops import GraphOps
    from cymicrogpt.config import RMSNORM_EPS

    layout = state_dict_layout(CONFIG, 5)
    weights = [0.01] * sum(slot.size for slot in layout)
    assert GraphOps(layout, weights).rmsnorm_eps == RMSNORM_EPS
    assert GraphOps(layout, weights, rmsnorm_eps=1e-3).rmsnorm_eps == 1e-3
    for bad in (0.0, -1e-5, math.nan, math.inf):
        with pytest.raises(ValueError, match="rmsnorm_eps"):
            GraphOps(layout, weights, rmsnorm_eps=bad)


def test_relu_at_every_kind_of_value_is_microgpts():
    """relu's value and local gradient, max(0, x) and float(x > 0) (computed without a branch
    in the compiled engine), at nan, -inf, +-0, subnormals, huge and ordinary values: the
    values bit for bit, and the gradients through a linear layer into an nll (+inf and 1e300
    are left out of that graph, whose softmax they would make nan or 0.0)."""
    xs = [math.nan, -math.inf, -0.0, 0.0, -1.5, 2.5, 5e-324, -5e-324, 3.0]
    for inputs in (xs, xs + [math.inf, 1e300]):
        layout = [MatrixSlot("x", 1, len(inputs), 0), MatrixSlot("m", 2, len(inputs), len(inputs))]
        weights = inputs + [float(i + 1) for i in range(len(inputs))] + [0.0] * len(inputs)
        ref, compiled = (make_engine(name, layout, weights) for name in ("python", "cython"))
        compiled.begin_sequence(True)
        hidden = [ref.relu(ref.row("x", 0)), compiled.relu(compiled.row("x", 0))]
        values = compiled.ops.node_values()[hidden[1].start:hidden[1].start + len(inputs)]
        assert [struct.pack("<d", v.data) for v in hidden[0]] == [struct.pack("<d", v) for v in values.tolist()]
        if math.inf in inputs:
            continue
        losses = [engine.backward(engine.nll(engine.linear(h, engine.matrix("m")), 1))
                  for engine, h in zip((ref, compiled), hidden)]
        assert losses[0] == losses[1]
        assert all(map(same_float, ref.gradients(), compiled.gradients()))
