"""Signals that ask a run to stop: Ctrl-C (SIGINT), SIGTERM (kill, timeout, systemd, job
schedulers) and SIGHUP (a closed terminal or ssh session) are all handled alike.

The first one only sets a flag that the training loop reads between two steps: a step
stopped halfway (say, in the middle of the Adam update) would leave a run that cannot be
saved consistently.  The CLI then saves the run and exits with 128 + the signal's number,
the status a shell reports for a process that a signal ended.  A signal the process
was started with ignored (``nohup`` ignores SIGHUP) stays ignored.  A second signal means
"now": it raises ``Interrupted`` wherever the program is (nothing more is saved; an
atomic save under way is abandoned and leaves the previous checkpoint intact).
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator, Optional

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A second stop signal: stop at once.  `signum` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """Which stop signal arrived first, if any (None: keep going)."""

    signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn the first stop signal into a request; see the module docstring."""
    request = StopRequest()

    def handler(signum, frame) -> None:
        if request.requested:
            raise Interrupted(signum)
        request.signum = signum

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            # An ignored signal stays ignored: `nohup` ignores SIGHUP, a shell ignores
            # SIGINT for a background job; the user chose that the run survives it.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
