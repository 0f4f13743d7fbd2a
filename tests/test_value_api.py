"""cymicrogpt.Value as microgpt's readers use it: the generic constructor, local gradients
fixed at creation, copies and pickles, NumPy scalars and other real numbers, and the
public helpers.  Every check compares with cymicrogpt.reference.Value using ==."""
import copy
import math
import pickle
import random
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import cymicrogpt
from cymicrogpt import Value
from cymicrogpt.reference import Value as RefValue


def tanh(V, x):
    """microgpt's way to write a new op: the value and its local gradient, in one node."""
    t = math.tanh(x.data)
    return V(t, (x,), (1 - t**2,))


def fused(V, xs, ws):
    """A custom n-ary node: sum(w_i * x_i) with local gradients w_i (children any order)."""
    return V(sum(w * x.data for w, x in zip(ws, xs)), tuple(xs), tuple(ws))


def generic_graph(V):
    """Generic nodes of 0, 1, 2 and 5 children (one listed twice, so its gradient gets two
    contributions in the DFS's order) mixed with ordinary ops; the leaves and the output."""
    rng = random.Random(3)
    leaves = [V(rng.uniform(-2, 2)) for _ in range(4)]
    a, b, c, d = leaves
    h = tanh(V, a * b + c)
    k = fused(V, [h, d, a, h, c * d], [0.3, -1.7, 2.0, 0.1, 1e-3])
    empty = V(0.25, (), ())
    pair = V(k.data * empty.data, (k, empty), (empty.data, k.data))
    out = (pair + tanh(V, k) * h).relu() + fused(V, [pair], [3])
    return leaves + [h, k, empty, pair], out


def test_generic_constructor_matches_reference():
    ref_nodes, ref_out = generic_graph(RefValue)
    nodes, out = generic_graph(Value)
    ref_out.backward()
    out.backward()
    assert out.data == ref_out.data
    assert [v.data for v in nodes] == [v.data for v in ref_nodes]
    assert [v.grad for v in nodes] == [v.grad for v in ref_nodes]


def test_backward_follows_child_order_of_generic_nodes():
    """The DFS visits a generic node's children in tuple order: two orders of the same
    children give the reference's (differing) last bits for each."""
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        results = []
        for V in (RefValue, Value):
            x = V(0.1)
            paths = [x * 0.3, x * 0.7 + 0.2, (x * 1.1).relu()]
            top = V(1.0, tuple(paths[i] for i in order), tuple([1.0 / 3, 0.1, 0.7][i] for i in order))
            (top * x).backward()
            results.append((x.grad, [p.grad for p in paths]))
        assert results[0] == results[1], order


@pytest.mark.parametrize(
    "args, error",
    [
        ((1.0, (1.0,), (1.0,)), TypeError),  # a child that is not a Value
        ((1.0, (RefValue(1.0),), (1.0,)), TypeError),  # the reference's Value
        ((1.0, (), (1.0,)), ValueError),  # more local gradients than children
        ((1.0, (None,), ()), ValueError),  # more children than local gradients
        ((1.0, (Value.__new__(Value),), (1.0,)), ValueError),  # an uninitialised child
        ((1.0, (Value(1.0),), ("1",)), TypeError),  # a local gradient that is not a number
        ((1.0, (Value(1.0),), (1j,)), TypeError),
        (("1.0",), TypeError),
        ((None,), TypeError),
        ((1 + 2j,), TypeError),
    ],
)
def test_bad_constructor_arguments_raise(args, error):
    with pytest.raises(error):
        Value(*args)


def test_local_gradients_are_fixed_when_a_node_is_built():
    for V in (RefValue, Value):
        a, b = V(3.0), V(2.0)
        c = a * b
        a.data = 10.0
        c.backward()
        assert (a.grad, b.grad) == (2.0, 3.0), V
    a, b = Value(1.5), Value(-0.5)
    c = (a * b).exp() + tanh(Value, a)
    a.data, b.data = 7.0, 7.0
    c.backward()
    ra, rb = RefValue(1.5), RefValue(-0.5)
    rc = (ra * rb).exp() + tanh(RefValue, ra)
    rc.backward()
    assert (a.grad, b.grad, c.data) == (ra.grad, rb.grad, rc.data)


def finite_difference_idiom(V):
    """Nudge each weight, evaluate, restore; then backward the original loss."""
    rng = random.Random(11)
    w = [V(rng.uniform(-1, 1)) for _ in range(6)]
    xs = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(4)]

    def loss_of():
        total = 0
        for x in xs:
            h = [(w[i] * x[0] + w[i + 1] * x[1] + w[4] * x[2]).relu() for i in range(3)]
            total = total + (h[0] * h[1] - h[2] * w[5]) ** 2
        return total / len(xs)

    loss = loss_of()
    numeric = []
    for p in w:
        saved = p.data
        p.data = saved + 1e-6
        plus = loss_of().data
        p.data = saved - 1e-6
        minus = loss_of().data
        p.data = saved
        numeric.append((plus - minus) / 2e-6)
    loss.backward()
    return loss.data, numeric, [p.grad for p in w]


def test_finite_difference_idiom_matches_reference():
    got, want = finite_difference_idiom(Value), finite_difference_idiom(RefValue)
    assert got == want
    assert got[1] == pytest.approx(got[2], rel=1e-5, abs=1e-8)  # and it is a gradient check


def built_graph(V):
    a, b = V(0.7), V(-1.3)
    loss = (a * b + b**2).relu() / a + tanh(V, b)
    loss.backward()
    return a, b, loss


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))],
)
def test_copies_keep_data_and_grad(duplicate):
    """A copy is a leaf with the original's .data and .grad (the graph is not kept)."""
    got, want = built_graph(Value), built_graph(RefValue)
    for fast, ref in zip(got, want):
        dup, ref_dup = duplicate(fast), duplicate(ref)
        assert type(dup) is Value and dup is not fast
        assert (dup.data, dup.grad) == (ref_dup.data, ref_dup.grad) == (fast.data, fast.grad)
    copied = duplicate(got[2])
    copied.backward()  # a leaf: only itself gets a gradient
    assert copied.grad == 1.0 and got[0].grad == want[0].grad  # the original is untouched


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_round_trips(protocol):
    """(The reference's __slots__ class pickles with protocols >= 2 only.)"""
    v = Value(-0.1) * Value(3.0)
    v.grad = float("nan")
    back = pickle.loads(pickle.dumps([v, v], protocol=protocol))
    assert back[0] is back[1] and back[0].data == v.data and math.isnan(back[0].grad)


def test_deepcopy_of_a_model_keeps_sharing_and_values():
    w = [Value(0.5), Value(-2.0)]
    w[0].grad = 3.0
    model = {"layer": w, "tied": w[0]}
    clone = copy.deepcopy(model)
    assert clone["tied"] is clone["layer"][0]
    assert [(p.data, p.grad) for p in clone["layer"]] == [(0.5, 3.0), (-2.0, 0.0)]
    clone["tied"].data = 9.0
    assert w[0].data == 0.5  # independent nodes


REALS = [np.float32(1.5), np.float32(0.1), np.float64(0.1), np.float16(0.3), np.int64(3), np.int8(-7),
         np.bool_(True), True, Fraction(1, 3), Decimal("0.1"), 2**70, -0.0, float("inf")]


@pytest.mark.parametrize("x", REALS, ids=repr)
def test_any_real_number_builds_a_leaf_with_microgpts_value(x):
    ref = RefValue(x)
    assert Value(x).data == float(ref.data) == float(x)
    assert type(Value(x).data) is float


@pytest.mark.parametrize("x", REALS[:7], ids=repr)
def test_numpy_scalars_as_local_gradients_and_operands(x):
    """A NumPy scalar local gradient or operand of + and * is its float value (the reference
    would compute some ops in float32: a documented difference).  A NumPy exponent is used
    as given, as microgpt does: tests/test_value_numbers.py."""
    a, fa = Value(0.75), Value(0.75)
    out = Value(2.0, (a,), (x,)) * x + x * a
    same = Value(2.0, (fa,), (float(x),)) * float(x) + float(x) * fa
    out.backward()
    same.backward()
    assert (out.data, a.grad) == (same.data, fa.grad)
    ref = RefValue(2.0, (RefValue(0.75),), (float(x),))
    assert ref.data == Value(2.0, (a,), (x,)).data


def test_collect_and_graph_size_are_public():
    assert cymicrogpt.collect is cymicrogpt._value.collect
    assert cymicrogpt.graph_size is cymicrogpt._value.graph_size
    keep = Value(1.0) * 2
    assert cymicrogpt.collect() == cymicrogpt.graph_size() >= 2
    assert keep.data == 2.0
    assert {"collect", "graph_size"} <= set(cymicrogpt.__all__)


class CollectingNumber:
    """A local gradient whose __float__ grows the arena past a collection and collects:
    the children it was given must still be the children the node gets."""

    def __float__(self):
        junk = [Value(float(i)) * Value(2.0) for i in range(70000)]
        del junk
        cymicrogpt.collect()
        return 0.5


def test_constructor_survives_collections_while_converting_local_gradients():
    results = []
    for V, half in ((Value, CollectingNumber()), (RefValue, 0.5)):
        a, b = V(3.0), V(4.0)
        top = V(1.0, (a, b, a), (half, 2.0, half)) * a
        top.backward()
        results.append((top.data, a.grad, b.grad))
    assert results[0] == results[1]
