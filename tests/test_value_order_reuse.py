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
from pathlib import Path


from cymicrogpt import Value, _value
from cymicrogpt.reference import Value as RefValue

SCRIPTS = Path(__file__).resolve().parent / "scripts"


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


def test_backward_taking_room_for_its_copy_starts_no_collection():
    """The second backward of a graph takes room for its copy of the layout (SearchedGraph.
    reserve) with the GC paused, so no gc callback or finalizer can run a backward inside
    it.  (Before, one could, and left the copy marked as saved with an unfilled order: a
    segfault.)  Before Python 3.12 an allocation could start a collection, and this counts
    them at threshold 1: none.  Since 3.12 a collection starts only between bytecodes,
    never inside a C call, so the count is 0 either way and this checks exactness only."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "backward_collections.py")], capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "0 True\n")
