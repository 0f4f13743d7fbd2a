"""cymicrogpt.Value objects' lifetime: recycled objects, subclasses, deallocation mid-exception.

Value keeps dead objects for reuse (its own freelist) and has its own tp_dealloc, which
forgets the object's node handle: these tests attack both with what Python can do to an
object while it dies or comes back.
"""
import gc
import sys

import pytest

from cymicrogpt import Value, _value
from cymicrogpt.reference import Value as RefValue


def neuron(V, w, x):
    return sum((wi * xi for wi, xi in zip(w, x)), V(0.25)).relu() * 0.5 + -1


def test_recycled_values_hold_one_reference_and_exact_results():
    """Op results taken from the freelist (after 200k dropped Values) are owned exactly
    once, as a fresh leaf is, and compute what the reference computes."""
    w = [Value(0.1 * i - 0.3) for i in range(8)]
    ref_w = [RefValue(0.1 * i - 0.3) for i in range(8)]
    for _ in range(2):
        for _ in range(10_000):  # ~200k Values built and dropped: the freelist fills
            neuron(Value, w, [Value(0.5)] * 8)
        out = neuron(Value, w, [Value(0.5)] * 8)
        leaf = Value(1.0)
        assert sys.getrefcount(out) == sys.getrefcount(leaf)  # both: one local name
    out.backward()
    ref_out = neuron(RefValue, ref_w, [RefValue(0.5)] * 8)
    ref_out.backward()
    assert out.data == ref_out.data
    assert [p.grad for p in w] == [rp.grad for rp in ref_w]


class Tagged(Value):
    """A subclass with a __dict__: its instances are freed, never kept for reuse."""


class Immortal(Value):
    """A subclass whose finalizer resurrects its instance."""

    saved = []

    def __del__(self):
        Immortal.saved.append(self)


def test_subclass_instances_keep_their_nodes_while_alive():
    w = [Tagged(0.5 * i) for i in range(4)]
    for v in w:
        v.tag = "weight"
    for _ in range(5_000):  # enough nodes for several collections
        loss = sum(wi * wi for wi in w)
    assert type(loss) is Value
    assert [v.data for v in w] == [0.0, 0.5, 1.0, 1.5]
    assert all(v.tag == "weight" for v in w)
    del loss
    gc.collect()
    kept = _value.collect()
    del w, v
    gc.collect()
    assert _value.collect() <= kept - 4  # the four subclass leaves released their nodes


def test_a_resurrected_value_keeps_its_node():
    """A finalizer that keeps its Value alive: the node must survive collections."""
    Immortal.saved.clear()
    v = Immortal(3.0)
    y = v * 2.0
    del v  # __del__ runs and resurrects it
    assert len(Immortal.saved) == 1
    for _ in range(5_000):  # collections compact the arena: the resurrected node moves
        sum(Value(1.0) * Value(2.0) for _ in range(30))
    _value.collect()
    back = Immortal.saved.pop()
    assert back.data == 3.0
    y.backward()
    assert back.grad == 2.0
    del back, y
    gc.collect()


def test_values_dropped_while_an_exception_propagates():
    """Values freed during unwinding leave the exception as it was."""

    def terms():
        for i in range(1000):
            yield Value(float(i)) * Value(2.0)
        raise KeyError("the data ran out")

    for _ in range(3):
        with pytest.raises(KeyError, match="the data ran out"):
            sum(terms())
    assert (Value(2.0) * Value(3.0)).data == 6.0


def test_recycling_leaves_the_types_reference_count_as_it_was():
    """A recycled object takes a reference to its type again (revive): where Value is
    a heap type (Cython builds types from specs on free-threaded builds), a kept dead object
    must have given its own back, or every recycle would leak one."""
    a = Value(1.5)
    for _ in range(30_000):  # fills the freelist
        a * a + a
    before = sys.getrefcount(Value)
    for _ in range(30_000):
        a * a + a
    assert sys.getrefcount(Value) == before


def test_a_dropped_graph_gives_its_nodes_back_at_once():
    """The nodes above the last live Value are dropped when that Value dies (no collection):
    a step's graph, dropped at the step's end, leaves the arena as it found it, and the
    next step, built in the same nodes, computes what the reference computes."""
    w, ref_w = [Value(0.5 - 0.1 * i) for i in range(6)], [RefValue(0.5 - 0.1 * i) for i in range(6)]

    def step(V, w):
        loss = sum((neuron(V, w, [V(0.5 * i) for i in range(6)]) for _ in range(3)), V(0.0))
        loss.backward()
        return loss.data

    before = _value.graph_size()
    for _ in range(3):
        assert step(Value, w) == step(RefValue, ref_w)
        assert _value.graph_size() == before
    assert [p.grad for p in w] == [rp.grad for rp in ref_w]


def test_a_kept_value_keeps_the_nodes_below_it():
    """Only nodes above every live Value go: a GRAD_LIST node kept below a dropped one
    keeps its own children and local gradients (edges) too."""
    x, ref_x = Value(1.5), RefValue(1.5)
    mid = Value(2.0, (x, x * x), (3.0, -0.5))  # microgpt's generic node: listed children
    ref_mid = RefValue(2.0, (ref_x, ref_x * ref_x), (3.0, -0.5))
    kept = _value.graph_size()
    top = Value(7.0, (mid, x * mid, x), (0.25, 4.0, 2.0))  # more nodes and edges above mid
    del top  # its nodes (and edges) go, mid's stay
    assert _value.graph_size() == kept
    out = Value(1.0, (mid, x * mid), (5.0, 1.5))  # built where `top` was
    ref_out = RefValue(1.0, (ref_mid, ref_x * ref_mid), (5.0, 1.5))
    out.backward()
    ref_out.backward()
    assert (x.grad, mid.grad) == (ref_x.grad, ref_mid.grad)



def test_init_run_again_from_inside_init_binds_one_node():
    """Value.__init__ checked that the object had no node, then ran Python (a local
    gradient's __float__; taking room, which may run the GC's finalizers) before binding
    it: initialising the same object from there left it bound to two nodes.  The first
    node's handle then outlived the object (a dangling pointer, which collections write
    through) and pinned that node forever.  Now the outer call raises."""
    x = Value(3.0)
    kept = _value.collect()
    v = Value.__new__(Value)

    class InitsV:
        def __float__(self):
            v.__init__(2.0)
            return 0.5

    with pytest.raises(RuntimeError, match="called twice"):
        v.__init__(5.0, (x,), (InitsV(),))
    assert v.data == 2.0
    assert _value.collect() == kept + 1
    del v
    assert _value.collect() == kept
