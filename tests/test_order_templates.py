"""Replayed depth-first orders (_arena.OrderTemplate) give exactly the searched gradients.

An engine replays the order of a graph shape it has seen; a fresh engine has seen
nothing, so it searches.  Every graph below is built on both, and the losses and weight
gradients must be float-== (the full search itself is held to the reference by
test_parity.py).  The graphs cover what the replay rewrites (nll's target), what it must
ignore (which embedding row a node reads) and shapes it must tell apart or refuse: same
node counts, different structure, and nll on logits that are not a linear layer's output.
"""
import itertools
import random

import pytest

from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.model import sequence_loss
from cymicrogpt.params import init_weights, state_dict_layout

CONFIG = GPTConfig(n_layer=2, n_embd=16, block_size=8, n_head=4)
VOCAB = 27
LAYOUT = state_dict_layout(CONFIG, VOCAB)
WEIGHTS = init_weights(random.Random(3), LAYOUT)


def loss_and_grads(ops: GraphOps, build) -> tuple[float, list[float]]:
    """Build a graph with build(ops) -> loss, backward, return (loss, weight gradients)."""
    ops.begin_sequence(True)
    loss = ops.backward(build(ops))
    grads = ops.node_grads()[: len(WEIGHTS)]
    result = grads.tolist()
    grads[:] = 0.0
    return loss, result


def assert_replay_exact(builds) -> GraphOps:
    """Each build on one long-lived engine == on a fresh engine (which must search)."""
    kept = GraphOps(LAYOUT, WEIGHTS)
    for build in builds:
        assert loss_and_grads(kept, build) == loss_and_grads(GraphOps(LAYOUT, WEIGHTS), build)
    return kept


def document(tokens):
    return lambda ops: sequence_loss(ops, CONFIG, tokens)


def test_documents_of_one_length_replay_with_every_target_and_token():
    rng = random.Random(7)
    docs = [[rng.randrange(VOCAB) for _ in range(6)] for _ in range(12)]
    docs += [[0] * 6, [VOCAB - 1] * 6, [0, VOCAB - 1] * 3]  # first and last targets
    ops = assert_replay_exact(document(d) for d in docs)
    assert ops.order_templates == 1  # one length: one shape, kept ...
    assert ops.order_replays == len(docs) - 1  # ... and replayed for every later document


def test_documents_of_mixed_lengths_keep_one_template_per_length():
    rng = random.Random(8)
    lengths = [3, 9, 5, 3, 9, 2, 5, 9]  # longer than block_size + 1 is truncated to it
    ops = assert_replay_exact(document([rng.randrange(VOCAB) for _ in range(n)]) for n in lengths)
    assert ops.order_templates == 4  # lengths 2, 3, 5 and 9 (9 tokens: 8 positions)
    assert ops.order_replays == len(lengths) - 4


def nll_of(source: str):
    """Two graphs of the same sizes whose residual-like add reads a non-leaf ("hidden")
    or a weight row ("leaf"): the search walks different subtrees under the logits."""

    def build(ops, target):
        x = ops.rmsnorm(ops.row("wte", 1))
        inp = x if source == "hidden" else ops.row("wte", 2)
        logits = ops.linear(ops.relu(ops.add(inp, ops.row("wpe", 0))), ops.matrix("lm_head"))
        return ops.mean([ops.nll(logits, target)])

    return build


@pytest.mark.parametrize("order", [("hidden", "leaf"), ("leaf", "hidden")])
def test_same_sizes_different_structure_are_searched_again(order):
    builds = []
    for source in order:
        for target in (0, 4, VOCAB - 1):
            builds.append(lambda ops, s=source, t=target: nll_of(s)(ops, t))
    ops = assert_replay_exact(builds)
    # Each shape's first graph is searched, the next two replayed: the second shape's op
    # log differs (its add reads a weight row, not a hidden vector), so it finds not
    # the first shape's template (same sizes) but its own.
    assert ops.order_templates == 2 and ops.order_replays == 4


def test_graphs_off_the_pattern_are_searched_every_time():
    """Two nlls on the same logits (the second finds them visited) and an nll on
    logits that are no linear layer's output: not the replay's pattern, no template."""

    def build(targets):
        def run(ops):
            logits = ops.linear(ops.rmsnorm(ops.row("wte", 3)), ops.matrix("lm_head"))
            return ops.mean([ops.nll(logits, targets[0]), ops.nll(logits, targets[1]),
                             ops.nll(ops.relu(logits), targets[0])])

        return run

    ops = assert_replay_exact([build((1, 2)), build((2, 1)), build((5, 5)), build((0, VOCAB - 1))])
    assert ops.order_templates == 0 and ops.order_replays == 0


def test_a_documents_linear_layers_pass_backward_as_groups():
    """The template of a model's graph passes each layer's rows as linear groups
    (_arena.pyx): fc1's rows with their relu, fc2's and wo's with the residual add over
    them, lm_head's with each logit's shifted and exp nodes (an nll's run, reordered per
    target), and q's and k's rows a head at a time (at every position but the first: the
    search meets the first position's q and k rows in another order).  Replayed, the
    gradients are the searched ones (which pass node by node) bit for bit."""
    rng = random.Random(9)
    ops = assert_replay_exact(document([rng.randrange(VOCAB) for _ in range(5)]) for _ in range(4))
    (groups,) = ops.linear_groups()
    positions = 4
    expected = {(4 * CONFIG.n_embd, 2): 2 * positions,  # fc1 + relu, each layer
                (CONFIG.n_embd, 2): 4 * positions,  # fc2 and wo + the residual add, each layer
                (VOCAB, 3): positions,  # lm_head's run
                (CONFIG.n_embd // CONFIG.n_head, 1): 2 * CONFIG.n_head * CONFIG.n_layer * (positions - 1)}  # q, k
    assert {kind: groups.count(kind) for kind in expected} == expected
    assert len(groups) == sum(expected.values())


def residual_over_linear(source: str):
    """h + linear(rmsnorm(h)) style graphs: the add over each row of a square layer reads
    either the layer's own input, a weight row, or (as the model's residual) a vector
    built before the layer.  Only the
    last may join the row in a group: an add into the input's gradient, or into a weight's,
    taken before the other rows would change the order of those gradients' additions."""

    def build(ops, target):
        h = ops.add(ops.row("wte", 1), ops.row("wpe", 0))
        x = ops.rmsnorm(h)
        other = {"input": x, "weight": ops.row("wpe", 1), "before": h}[source]  # "before": the model's residual
        y = ops.add(other, ops.linear(x, ops.matrix("layer0.attn_wq")))
        return ops.mean([ops.nll(ops.linear(ops.rmsnorm(y), ops.matrix("lm_head")), target)])

    return build


@pytest.mark.parametrize("source", ["input", "weight", "before"])
def test_a_residual_joins_a_group_only_when_it_touches_nothing_the_rows_do(source):
    ops = assert_replay_exact([lambda ops, t=t: residual_over_linear(source)(ops, t) for t in (0, 5, VOCAB - 1, 5)])
    (groups,) = ops.linear_groups()
    assert ((CONFIG.n_embd, 2) in groups) == (source == "before")
    assert (VOCAB, 3) in groups  # the nll's run


def test_a_documents_chains_pass_a_level_at_a_time():
    """Every group with a chain over its rows passes it a level at a time
    (_arena.find_elementwise_chains): fc1's relu, the residual add over wo's and fc2's rows,
    and each nll's shifted and exp nodes.  Replayed, the gradients are the searched ones
    bit for bit."""
    rng = random.Random(9)
    ops = assert_replay_exact(document([rng.randrange(VOCAB) for _ in range(5)]) for _ in range(4))
    (groups,), (elementwise,) = ops.linear_groups(), ops.elementwise_groups()
    assert sorted(elementwise) == sorted(kind for kind in groups if kind[1] > 1)
    assert len(elementwise) == (2 + 4) * 4 + 4  # fc1, fc2, wo of 2 layers and lm_head, at 4 positions

    """fc1's, fc2's, wo's and lm_head's groups add their weight gradients after the pass, a
    layer's from every position in one sweep (_arena.defer_weight_gradients), grouped by
    layer; q's and k's do not: the first position passes their rows node by node, so those
    weights get gradients outside the groups.  Replayed, the gradients are the searched
    ones (which pass node by node) bit for bit."""
    rng = random.Random(9)
    ops = assert_replay_exact(document([rng.randrange(VOCAB) for _ in range(5)]) for _ in range(4))
    (deferred,) = ops.deferred_groups()
    positions = 4
    expected = {(4 * CONFIG.n_embd, 2): 2 * positions, (CONFIG.n_embd, 2): 4 * positions, (VOCAB, 3): positions}
    assert {kind: deferred.count(kind) for kind in expected} == expected
    assert len(deferred) == sum(expected.values())
    # each layer's groups one after another (a layer's sweep): runs of a kind, whole layers each
    runs = [len(list(run)) for _, run in itertools.groupby(deferred)]
    assert all(length % positions == 0 for length in runs) and len(runs) > 1


@pytest.mark.parametrize("read_outside", [False, True])
def test_weights_read_outside_the_groups_get_their_gradients_in_the_pass(read_outside):
    """A layer whose weights a node outside its groups also reads (here an add of a row of the
    layer's own matrix, in a second loss) keeps its weight gradients in the pass, in order with
    that node's: only the other layers' wait for its end."""
    def build(ops, target):
        h = ops.add(ops.row("wte", 1), ops.row("wpe", 0))
        y = ops.add(h, ops.linear(ops.rmsnorm(h), ops.matrix("layer0.attn_wq")))  # wq's rows + residual: a group
        z = ops.add(h, ops.row("layer0.attn_wq" if read_outside else "wte", 1))
        return ops.mean([ops.nll(ops.linear(ops.rmsnorm(x), ops.matrix("lm_head")), target) for x in (y, z)])

    ops = assert_replay_exact([lambda ops, t=t: build(ops, t) for t in (0, 5, VOCAB - 1, 5)])
    (groups,), (deferred,) = ops.linear_groups(), ops.deferred_groups()
    assert sorted(groups) == [(CONFIG.n_embd, 2), (VOCAB, 3), (VOCAB, 3)]
    assert sorted(deferred) == ([(VOCAB, 3)] * 2 if read_outside else [(CONFIG.n_embd, 2)] + [(VOCAB, 3)] * 2)
