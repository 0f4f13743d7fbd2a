"""The arena's growth: it runs no Python, keeps the GC's switch, and leaves old views readable.

Growing takes new memory with the cyclic GC paused, so no finalizer, gc callback or other
thread can run inside it (before, a growth interrupted by such Python could overflow its
new arrays).  The in-process tests check that directly where the interpreter allows it;
tests/scripts/arena_reentrancy.py runs Python that builds nodes between the ops, at every
collection or thread switch, and checks every value and gradient (one process each, so a
memory fault fails its test instead of ending the run).
"""
import gc
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cymicrogpt import Value
from cymicrogpt._ops import GraphOps
from cymicrogpt.config import GPTConfig
from cymicrogpt.params import init_weights, state_dict_layout
from scripts.gc_count import collections_during

SCRIPT = Path(__file__).resolve().parent / "scripts" / "arena_reentrancy.py"
LAYOUT = state_dict_layout(GPTConfig(), 27)


def engine():
    ops = GraphOps(LAYOUT, init_weights(random.Random(0), LAYOUT))
    ops.begin_sequence(True)
    return ops


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="since Python 3.12 the GC starts only between "
                    "bytecodes, never inside a C call: there is no window to check")
def test_growth_starts_no_collection():
    """With the GC collecting at every GC-tracked allocation, 3000 linear ops that grow the
    arena from 4k to 134k nodes start no collection inside a growth: the growths' own
    allocations count towards the next collection, which starts at most once, at the
    first allocation after them with the GC back on (on 3.11 none comes before the test
    restores the threshold; on 3.10, the frame object of the next Python call).  (Before,
    every growth started several: 37 in this test on 3.11.)"""
    ops = engine()
    row, mat = ops.row("wte", 0), ops.matrix("lm_head")
    before = ops.capacity[0]

    def build():
        for _ in range(3000):
            ops.linear(row, mat)

    assert collections_during(build) <= 1
    assert ops.capacity[0] >= 32 * before


@pytest.mark.parametrize("enabled", [True, False])
def test_growth_leaves_the_gc_switch_as_it_was(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        ops = engine()
        row, mat = ops.row("wte", 0), ops.matrix("lm_head")
        for _ in range(3000):
            ops.linear(row, mat)
        kept = [Value(float(i)) for i in range(100_000)]  # Value's arena grows too
        assert gc.isenabled() is enabled
        assert kept[-1].data == 99_999.0
    finally:
        (gc.enable if was else gc.disable)()


def test_a_view_taken_before_growth_keeps_its_memory():
    """node_values() is a view of the arena's memory; a growth moves the arena to new memory
    and leaves the old view reading the old memory (kept alive by the view), unchanged."""
    ops = engine()
    n_weights = ops.num_nodes  # a reset graph: the weights only
    old = ops.node_values()
    weights = old[:n_weights].copy()
    row, mat = ops.row("wte", 0), ops.matrix("lm_head")
    for _ in range(3000):
        ops.linear(row, mat)
    new = ops.node_values()
    assert len(new) > len(old)
    assert np.array_equal(old[:n_weights], weights)
    assert np.array_equal(new[:n_weights], weights)


@pytest.mark.parametrize("scenario", ["value_threads", "value_finalizer", "value_gc_callback", "engine_threads",
                                      "engine_gc_callback"])
def test_values_stay_exact_while_python_builds_nodes_between_ops(scenario):
    proc = subprocess.run([sys.executable, str(SCRIPT), scenario], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    )
