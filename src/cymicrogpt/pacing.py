"""When a training loop looks up from its steps: at the steps where something is due.

A fused training step takes ~25 us, and the CLI's work between steps (a progress line,
a look at whether stdout's reader left, a periodic save, a held-out loss) is due at a
few steps only: some at known steps (every K steps, the
last one), the rest once some time has passed, which only a clock can say.  Looking
after every step (a callback, a clock reading) cost ~4% of a step; ``ClockPacer`` reads
the clock about every ``interval`` seconds instead, however long a step takes, and
``next_multiple`` names the known steps, so that the CLI trains from one due step to
the next (``Run.train(until=...)``) with no Python between the steps.  A stop signal does not
wait for the next due step: its handler ends the stretch under way at the next step
boundary (``Run.stop_soon``), since the stride, measured on the steps before it, can
span seconds of steps that became much slower (long documents after short ones).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

CLOCK_INTERVAL_S = 0.01  # a tenth of the progress line's redraw interval, and less of the pipe's


def next_multiple(step: int, every: int) -> int:
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


class ClockPacer:
    """How many steps to let pass before the clock is read again, so that it is read about
    every `interval` seconds: the step rate measured between two readings gives the
    number, at most doubled from one reading to the next (a first step slowed by a page
    fault or a loaded machine must not stretch it), cut at once when steps slow down."""

    # perf_counter: monotonic() ticks every ~16 ms on Windows, longer than the interval
    def __init__(self, interval: float = CLOCK_INTERVAL_S, clock: Callable[[], float] = time.perf_counter) -> None:
        self.interval = interval
        self.clock = clock
        self.stride = 1
        self._last: Optional[tuple[int, float]] = None  # (step, time) of the last reading

    def next_step(self, step: int) -> int:
        """Read the clock at `step`; the step at which to read it next."""
        now = self.clock()
        if self._last is not None and step > self._last[0]:
            seconds_per_step = (now - self._last[1]) / (step - self._last[0])
            steps_in_interval = self.interval / seconds_per_step if seconds_per_step > 0 else float("inf")
            self.stride = max(1, int(min(2 * self.stride, steps_in_interval)))
        self._last = (step, now)
        return step + self.stride
