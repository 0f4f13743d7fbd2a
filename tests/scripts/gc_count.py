"""Counting the collections the cyclic GC starts while some work runs: for the tests of
growth and backward that promise none starts inside them (tests/test_arena.py, and
backward_collections.py beside this file, run in a process of its own)."""
import gc


def collections_during(work) -> int:
    """How many collections the cyclic GC starts while work() runs, at threshold 1 (the
    most eager setting: one new tracked object is enough); the thresholds are restored."""
    started = []

    def count(phase, info):
        if phase == "start":
            started.append(info)

    thresholds = gc.get_threshold()
    gc.callbacks.append(count)
    gc.set_threshold(1)
    try:
        work()
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(count)
    return len(started)
