"""Memory stays flat: the arena is reset, not regrown, and RSS does not creep."""
import subprocess
import sys

import pytest

import cymicrogpt as mg
from cymicrogpt.training import start_run

RSS_SCRIPT = """
import resource, sys
import cymicrogpt as mg
run = mg.train(mg.load_docs(sys.argv[1]), steps=int(sys.argv[2]), backend="cython")
run.sample(20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def test_arena_does_not_grow_over_2000_steps(names_path):
    run = start_run(mg.load_docs(names_path), steps=2000, backend="cython")
    capacity = run.engine.capacity  # reserved for a block_size-long document at construction
    params = run.engine.params
    run.train(until=5)
    assert run.engine.capacity == capacity
    run.train()
    assert run.engine.capacity == capacity
    run.sample(50)  # sampling's value-only passes fit in the same room
    assert run.engine.capacity == capacity
    run.engine.begin_sequence(True)
    assert run.engine.num_nodes == run.engine.num_params  # a reset keeps only the parameters
    assert run.engine.params.base is params.base  # which never moved: still the same array


def peak_rss_kib(names_path, steps):
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(names_path), str(steps)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_peak_rss_of_3000_steps_matches_300_steps(names_path):
    pytest.importorskip("resource", reason="peak RSS is read with the Unix-only resource module")
    short, long = peak_rss_kib(names_path, 300), peak_rss_kib(names_path, 3000)
    assert long - short < 4 * 1024, f"300 steps: {short} KiB, 3000 steps: {long} KiB"
