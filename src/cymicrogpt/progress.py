"""A one-line training progress display for a terminal: step, loss, speed and time left.

On a terminal the line is redrawn in place with ``\\r`` (at most ~10 times a second).
Anywhere else (a pipe, a log file) it prints a full line about every 5% of the run and
at the last step, so logs stay short.  No dependencies.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Optional, TextIO

from .pacing import next_multiple

REDRAW_INTERVAL_S = 0.1  # terminal: the fastest the line is redrawn
LOG_LINES = 20  # not a terminal: about this many lines per run


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 2h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Call ``update(step, loss)`` after each step (steps counted from 1), or only at the
    steps where it may draw (see ``next_due``), and ``close()`` at the end."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, start: int = 0,
                 is_tty: Optional[bool] = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self.stream = sys.stdout if stream is None else stream
        self.start = start  # steps already done before this display began (a resumed run)
        self.is_tty = _isatty(self.stream) if is_tty is None else is_tty
        self.clock = clock
        self.started_at = clock()
        self.every = max(1, math.ceil(total / LOG_LINES))  # not a terminal: print every `every` steps
        self._last_draw = -float("inf")
        self._width = 0  # length of the line on screen, to blank out a longer previous one
        self._open = False  # a '\r' line is on screen without its newline

    def line(self, step: int, loss: float) -> str:
        elapsed = self.clock() - self.started_at
        done = step - self.start
        text = f"step {step:4d} / {self.total:4d} | loss {loss:.4f}"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            text += f" | {rate:.1f} steps/s | ETA {format_duration((self.total - step) / rate)}"
        return text

    def next_due(self, step: int) -> int:
        """The next step after `step` at which ``update`` prints whatever the clock says:
        the next line of a log, or the last step.  A terminal's other lines are up to the
        clock: update() must also be called at the steps a ``pacing.ClockPacer`` gives."""
        return self.total if self.is_tty else min(self.total, next_multiple(step, self.every))

    def update(self, step: int, loss: float) -> None:
        # Called after every step or at the steps next_due and a ClockPacer give: between
        # the lines it writes, it does nothing costlier than a comparison (a log) or a clock
        # reading (a terminal), and it flushes only what it wrote.
        last = step >= self.total
        if self.is_tty:
            now = self.clock()
            if not last and now - self._last_draw < REDRAW_INTERVAL_S:
                return
            self._last_draw = now
            text = self.line(step, loss)
            self.stream.write("\r" + text.ljust(self._width))
            self._width, self._open = len(text), True
        elif last or step % self.every == 0:
            self.stream.write(self.line(step, loss) + "\n")
        else:
            return
        self.stream.flush()

    def close(self) -> None:
        """End the terminal line, so that what is printed next starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
