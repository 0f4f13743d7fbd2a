"""Training runs in concurrent threads are independent: each equals its single-threaded run.

Every run owns its engine (a GraphOps with its own arena), its optimizer and its random
stream; the threads interleave between ops (the compiled ops hold the GIL, so no thread
can reallocate an arena under another's loop). Each threaded run must still be float-==
to the same run trained alone: losses, final weights, Adam moments and samples.

`cymicrogpt.Value` shares one module-global arena across threads; it is safe under the GIL
(tests/test_value.py) but not locked, which is why the free-threaded 3.14t wheels stay
skipped (pyproject.toml, [tool.cibuildwheel]).
"""
import threading

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig

DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "zoe", "liam", "noah", "eli",
        "charlotte", "amelia", "harper", "evelyn", "abigail", "emily", "ella", "luna"]
STEPS = 25

# (config, seed): different shapes, so the threads' graphs differ in size and timing, and
# one repeated seed, so two threads run the very same computation side by side.
JOBS = [
    (GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2), 1),
    (GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2), 1),
    (GPTConfig(n_layer=2, n_embd=12, block_size=6, n_head=3), 2),
    (GPTConfig(n_layer=1, n_embd=16, block_size=10, n_head=4), 3),
    (GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2), 4),
    (GPTConfig(n_layer=3, n_embd=8, block_size=5, n_head=1), 5),
]


def outcome(config, seed):
    run = mg.train(DOCS, config=config, steps=STEPS, backend="cython", seed=seed)
    return {
        "losses": list(run.losses),
        "weights": run.engine.weights(),
        "moments": [a.tolist() for a in run.optimizer.moments()],
        "samples": run.sample(6, temperature=0.8),
    }


def test_concurrent_runs_equal_single_threaded_runs(frequent_switches):
    expected = [outcome(config, seed) for config, seed in JOBS]
    assert expected[0] == expected[1]  # same config and seed: same run
    for _ in range(2):
        results = [None] * len(JOBS)
        errors = []
        start = threading.Barrier(len(JOBS))

        def work(i, config, seed):
            try:
                start.wait()
                results[i] = outcome(config, seed)
            except BaseException as exc:  # noqa: BLE001 - reported below, in the main thread
                errors.append((i, exc))

        threads = [threading.Thread(target=work, args=(i, config, seed)) for i, (config, seed) in enumerate(JOBS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i, (got, want) in enumerate(zip(results, expected)):
            assert got["losses"] == want["losses"], f"job {i}: losses differ from the single-threaded run"
            assert got["weights"] == want["weights"], f"job {i}: weights differ"
            assert got["moments"] == want["moments"], f"job {i}: Adam moments differ"
            assert got["samples"] == want["samples"], f"job {i}: samples differ"
