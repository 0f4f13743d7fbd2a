"""pacing.py: the steps at which the CLI's training loop looks at its clock."""
from __future__ import annotations

import pytest

from cymicrogpt.pacing import ClockPacer, next_multiple


class StepClock:
    """A clock that a test advances by whole steps of `seconds_per_step` each."""

    def __init__(self, seconds_per_step: float) -> None:
        self.seconds_per_step = seconds_per_step
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def run(self, steps: int) -> None:
        self.now += steps * self.seconds_per_step


@pytest.mark.parametrize("step, every, expected", [(0, 3, 3), (2, 3, 3), (3, 3, 6), (5, 1, 6), (999, 1000, 1000)])
def test_next_multiple(step: int, every: int, expected: int) -> None:
    assert next_multiple(step, every) == expected


def readings(pacer: ClockPacer, clock: StepClock, first: int, count: int) -> list[int]:
    """The steps of the next `count` readings, steps running at the clock's pace."""
    steps, step = [], first
    for _ in range(count):
        following = pacer.next_step(step)
        clock.run(following - step)
        steps.append(following)
        step = following
    return steps


def test_the_stride_follows_the_steps() -> None:
    clock = StepClock(25e-6)  # a fused step: 400 in 10 ms
    pacer = ClockPacer(interval=0.01, clock=clock)
    steps = readings(pacer, clock, 7, 14)
    strides = [b - a for a, b in zip([7, *steps], steps)]
    assert strides[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 399]  # doubled, then what the interval holds
    assert all(stride in (399, 400) for stride in strides[9:])  # (float rounding)
    clock.seconds_per_step = 0.2  # from the last reading on: the reference engine, or a machine that got busy
    slow = readings(pacer, clock, steps[-1], 4)
    assert slow[0] - steps[-1] in (399, 400)  # (decided before the steps slowed down)
    assert [b - a for a, b in zip(slow, slow[1:])] == [1, 1, 1]  # cut at once


def test_a_coarse_clock_keeps_the_stride_near_the_interval() -> None:
    # a clock that ticks in 16 ms steps (time.monotonic on Windows) reads 0 s over most
    # strides: those double it, the next tick cuts it back; it stays within ~2 ticks
    fine = StepClock(25e-6)
    pacer = ClockPacer(interval=0.01, clock=lambda: fine.now // 0.016 * 0.016)
    steps = readings(pacer, fine, 0, 200)
    strides = [b - a for a, b in zip(steps, steps[1:])]
    assert max(strides[20:]) * 25e-6 <= 2 * 0.016 + 0.01


def test_a_clock_that_does_not_move_doubles_the_stride() -> None:
    clock = StepClock(0.0)
    pacer = ClockPacer(interval=0.01, clock=clock)
    steps = readings(pacer, clock, 0, 5)
    assert steps == [1, 3, 7, 15, 31]
