"""cymicrogpt.Value's backward reuses the last search's order only for the very same graph.

A training loop builds the same graph, in the same nodes, at every step; backward then
compares the graph's layout with the one it searched last (see SearchedGraph in
_value.pyx) instead of searching it again.  These tests build graphs that share
everything the cheap checks look at (root, node count, edge count) and differ in one
child, one kind or one operand's order, in turn and in the same place, and compare every
gradient with the reference's (float ==).
"""
from __future__ import annotations

import random
import subprocess
import sys

import pytest

from cymicrogpt import Value, _value
from cymicrogpt.reference import Value as RefValue


def variant(V, w, which: int):
    """Variants 0-1 (3 nodes, 4 edges), 2-4 (4 nodes, 6 edges) and 5-6 (3 nodes, 6 edges,
    the same kinds, a, b and n: only the edges differ) have the same sizes, so
    each is built in the same nodes as one before it.  Node i is the i-th one built; the
    search's orders differ, and reusing one variant's order for another gives wrong
    gradients (a node passes its gradient on before it has received all of it)."""
    x, y, z = w
    if which == 0:  # order 1 0 2
        zx = z * x
        return x * y + zx
    if which == 1:  # order 0 1 2
        return (x * y) * z + x
    if which == 2:  # order 1 2 0 3
        xx = x * x
        return (x * y + z) * xx
    if which == 3:  # order 0 1 2 3
        return (x * y + z) * (x * x)
    if which == 4:  # order 0 1 2 3, other children
        return (y * z + x) * (x * y)
    xy = x * y  # 5-6: three products (3 nodes, 6 edges): only their edges differ
    if which == 5:  # order 1 0 2
        return (z * x) * xy
    return x * (xy * z)  # order 0 1 2


def test_graphs_of_equal_sizes_in_the_same_place_get_their_own_order():
    w, ref_w = [Value(v) for v in (0.7, -1.3, 0.4)], [RefValue(v) for v in (0.7, -1.3, 0.4)]
    rng = random.Random(0)
    before = _value.orders_reused()
    for which in [0, 0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 5, 6] + [rng.randrange(7) for _ in range(300)]:
        size = _value.graph_size()
        loss, ref_loss = variant(Value, w, which), variant(RefValue, ref_w, which)
        loss.backward()
        ref_loss.backward()
        assert loss.data == ref_loss.data
        assert [p.grad for p in w] == [p.grad for p in ref_w]
        del loss
        assert _value.graph_size() == size  # the next graph is built in the same nodes
    assert _value.orders_reused() > before  # repeats did reuse an order


def test_a_deep_shared_graph_reused_step_after_step_stays_exact():
    """A reused order over a graph with sharing (every activation feeds the next layer),
    ten steps of SGD: parameters == the reference's at every step."""
    rng = random.Random(3)
    init = [rng.uniform(-1, 1) for _ in range(3 * 4 * 4)]
    w, ref_w = [Value(v) for v in init], [RefValue(v) for v in init]

    def step(V, w):
        h = [V(0.5), V(-0.25), V(1.0), V(2.0)]
        for layer in range(3):
            rows = [w[16 * layer + 4 * r: 16 * layer + 4 * r + 4] for r in range(4)]
            h = [sum((wi * hi for wi, hi in zip(row, h)), V(0.0)).relu() for row in rows]
        loss = sum(hi * hi for hi in h)
        for p in w:
            p.grad = 0
        loss.backward()
        for p in w:
            p.data -= 0.01 * p.grad
        return loss.data

    before = _value.orders_reused()
    for _ in range(10):
        assert step(Value, w) == step(RefValue, ref_w)
        assert [p.data for p in w] == [p.data for p in ref_w]
    assert _value.orders_reused() >= before + 8  # a copy after the second search, reused after


# A gc callback that runs the same loss's backward at the k-th collection (k = argv[1]) of
# another backward of it: with gc.set_threshold(1), k walks the nested backward through
# the outer one's taking of room for its copy of the layout (SearchedGraph.reserve: NumPy
# arrays seen through memoryviews, which are GC-tracked).  A fresh process each time: the
# collections an allocation starts depend on everything the process did before.
NESTED_BACKWARD = """if True:
    import gc, sys
    from cymicrogpt import Value
    from cymicrogpt.reference import Value as RefValue

    def build(V):
        x = V(1.5)
        return x, [x * 2.0 if i % 2 else x + 1.0 for i in range(50)][-1]  # no edges

    k = int(sys.argv[1])
    (x, loss), (ref_x, ref_loss) = build(Value), build(RefValue)
    loss.backward()  # the first search notes the sizes: the next backward takes a copy
    ref_loss.backward()
    collections = []

    def again(phase, info):
        if phase == "start" and len(collections) < k:
            collections.append(phase)
            if len(collections) == k:
                loss.backward()
    gc.callbacks.append(again)
    gc.set_threshold(1)
    loss.backward()
    gc.set_threshold(700)
    gc.callbacks.remove(again)
    for _ in range(1 + (len(collections) == k)):  # the nested backward too, if it ran
        ref_loss.backward()
    assert x.grad == ref_x.grad, (x.grad, ref_x.grad)
    print(len(collections) == k)
"""


@pytest.mark.parametrize("k", [1, 2])  # (a backward here takes two collections)
def test_a_backward_run_by_the_gc_while_backward_copies_the_layout_stays_exact(k):
    """A backward run from inside another one (a gc callback, while the outer one takes
    room for its copy of the layout) once left the copy marked as saved with the outer
    one's fresh, unfilled order: the outer one then followed that garbage order (a
    segfault at k = 2).  In a subprocess: a crash must not end the suite."""
    proc = subprocess.run([sys.executable, "-c", NESTED_BACKWARD, str(k)], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    if sys.version_info < (3, 12):
        # Before 3.12 the cyclic GC (and its callbacks) ran inside any allocation, so inside
        # SearchedGraph.reserve, as the defect needs; since 3.12 it runs only between
        # bytecodes, and a nested backward may land outside that window (the CI's 3.12
        # run saw it at k = 1, not at k = 2): there, this checks exactness only.
        assert proc.stdout == "True\n"  # the nested backward did run inside the outer one
    else:
        assert proc.stdout in ("True\n", "False\n")
