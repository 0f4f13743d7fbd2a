"""Memory follows the documents: the arena grows to the largest graph seen, then stays flat."""
import subprocess
import sys
from pathlib import Path

import pytest

import cymicrogpt as mg
from cymicrogpt.model import KVCache, forward_backward, gpt
from cymicrogpt.training import start_run

PEAK_RSS = Path(__file__).resolve().parent / "scripts" / "peak_rss.py"


def test_arena_grows_to_the_largest_graph_then_stays(names_path):
    run = start_run(mg.load_docs(names_path), steps=2000, backend="cython")
    engine, config = run.engine, run.config
    assert engine.capacity[0] < 2 * engine.num_params  # sized by need: no graph built yet
    # the largest graphs there are: a block_size-long document, a block_size-long sample
    forward_backward(engine, config, [0] * (config.block_size + 1))
    engine.zero_grad()
    engine.begin_sequence(False)
    cache = KVCache(config.n_layer)
    for pos_id in range(config.block_size):
        engine.probs(gpt(engine, config, 0, pos_id, cache), 1.0)
    capacity, params = engine.capacity, engine.weight_array
    run.train()
    run.sample(50)
    assert engine.capacity == capacity
    engine.begin_sequence(True)
    assert engine.num_nodes == engine.num_params  # a reset keeps only the parameters
    assert engine.weight_array.base is params.base  # which never moved: still the same array


def peak_rss_kib(names_path, steps, *block_size):
    """(ru_maxrss, VmHWM) in KiB of a fresh process that trains and samples (-1: none)."""
    out = subprocess.run([sys.executable, str(PEAK_RSS), str(names_path), str(steps), *map(str, block_size)],
                         capture_output=True, text=True, check=True)
    maxrss, hwm = out.stdout.split()
    return int(maxrss), int(hwm)


def test_peak_rss_of_3000_steps_matches_300_steps(names_path):
    pytest.importorskip("resource", reason="peak RSS is read with the Unix-only resource module")
    short, long = peak_rss_kib(names_path, 300)[0], peak_rss_kib(names_path, 3000)[0]
    assert long - short < 4 * 1024, f"300 steps: {short} KiB, 3000 steps: {long} KiB"


def test_peak_rss_follows_the_documents_not_block_size(names_path):
    """--block-size 1024 on names: the graphs stay as small as the names are.

    Read as VmHWM, the peak of this process's own memory: ru_maxrss would carry over the
    peak of the (large) pytest process that forked it, across the exec."""
    peak = peak_rss_kib(names_path, 300, 1024)[1]
    if peak < 0:
        pytest.skip("VmHWM is read from Linux's /proc/self/status")
    assert peak < 150 * 1024, f"peak RSS {peak} KiB"
