"""ladder/programs.py's calibration, against a stand-in runner whose runs take a known time."""
from __future__ import annotations

import math

from cymicrogpt.ladder import programs


class ClockedRunner:
    """run(n) takes start_up + n * per_step seconds; records the step counts asked for."""

    def __init__(self, start_up: float, per_step: float) -> None:
        self.start_up, self.per_step, self.asked = start_up, per_step, []

    def run(self, steps: int):
        self.asked.append(steps)
        return self.start_up + steps * self.per_step, [], ""


def test_a_fast_program_runs_long_enough_for_the_difference_to_outlast_ten_start_ups():
    runner = ClockedRunner(start_up=0.3, per_step=1e-4)
    cold_checked_run = 1.0  # the first run, slow from a cold start: a misleading per-step estimate
    timed = programs._calibrate(runner, 20, cold_checked_run, min_time=2.0)
    target = programs.DOMINANCE * runner.start_up
    assert (timed - programs.FEW) * runner.per_step >= target * (1 - 1e-9)
    assert (timed - programs.FEW - 1) * runner.per_step < target
    assert runner.asked[0] == programs.FEW and max(runner.asked) < 10 * timed  # grew, but not far past N


def test_a_slow_program_is_timed_for_at_least_min_time():
    runner = ClockedRunner(start_up=0.05, per_step=0.3)
    timed = programs._calibrate(runner, 20, 0.05 + 20 * 0.3, min_time=2.0)
    assert timed == programs.FEW + math.ceil(2.0 / 0.3)
    assert runner.asked == [programs.FEW]  # the checked run was long enough: no more runs
