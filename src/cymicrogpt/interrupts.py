"""Signals that ask a run to stop: Ctrl-C (SIGINT), SIGTERM (kill, timeout, systemd, job
schedulers) and SIGHUP (a closed terminal or ssh session) are all handled alike.

The first one only sets a flag that the training loop reads between two steps (the
CLI's ends its stretch of steps at the next step boundary: StopRequest.on_request): a step
stopped halfway (say, in the middle of the Adam update) would leave a run that cannot be
saved consistently.  The CLI then saves the run and exits with 128 + the signal's number,
the status a shell reports for a process that a signal ended.  A signal the process
was started with ignored (``nohup`` ignores SIGHUP) stays ignored.  A second signal means
"now": it raises ``Interrupted`` wherever the program is (nothing more is saved; an
atomic save under way is abandoned and leaves the previous checkpoint intact).

Before that, while the command starts up, a Ctrl-C is first only remembered, during the
heavy imports (`hold_start_up_interrupts`): a KeyboardInterrupt raised inside an import
leaves it half done, and NumPy reports one inside its own as a 51-line "your installation
is broken" ImportError.  Once they are done, a remembered Ctrl-C stops the command, and
any later one raises KeyboardInterrupt (`catch_start_up_interrupts`; launch.py reports
either in one line).  Python ignores an exception raised inside a finalizer or a
weakref callback: it prints "Exception ignored in ..." with a traceback and goes on, so
a Ctrl-C whose handler happens to run there (importlib's module-lock weakrefs, at
start-up) would be lost, and the run would train on.  So the start-up handler also
remembers the signal, such ignored interrupts print nothing, and `stop_on_signals`
stops the command before its first step if one arrived (`sample`, which has no steps,
asks `stop_if_interrupted_at_start_up` before it samples).  The entry point forgets
it when the command ends (`end_start_up`).
"""
from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, Iterator, Optional

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """Stop at once: a second stop signal, or a start-up Ctrl-C that Python ignored.
    `signum` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_start_up_signal: Optional[int] = None  # a start-up Ctrl-C, remembered in case Python ignored it
_python_unraisablehook = sys.unraisablehook  # the hook ours replaced, while it is installed


def hold_start_up_interrupts() -> None:
    """From now until `catch_start_up_interrupts`, a Ctrl-C is only remembered: for the
    heavy imports, which must not be cut short (see the module docstring)."""
    signal.signal(signal.SIGINT, _remember)


def catch_start_up_interrupts() -> None:
    """From now until `end_start_up`, a Ctrl-C raises KeyboardInterrupt and is remembered.
    Raises Interrupted at once if one was remembered before (`hold_start_up_interrupts`)."""
    global _python_unraisablehook
    signal.signal(signal.SIGINT, _start_up_handler)
    if sys.unraisablehook is not _quiet_unraisable:
        _python_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable
    stop_if_interrupted_at_start_up()  # asked once the handler is in: none slips between


def stop_if_interrupted_at_start_up() -> None:
    """Raise Interrupted if a start-up Ctrl-C arrived (Python may have ignored it): for a
    command about to start its real work (`stop_on_signals` calls it)."""
    if _start_up_signal is not None:
        raise Interrupted(_start_up_signal)


def end_start_up() -> None:
    """The command is over: forget its start-up Ctrl-C, and give SIGINT and
    sys.unraisablehook back (a program that calls the entry point again, or goes on
    after it, must not inherit either)."""
    global _start_up_signal
    _start_up_signal = None
    if signal.getsignal(signal.SIGINT) in (_remember, _start_up_handler):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.unraisablehook is _quiet_unraisable:
        sys.unraisablehook = _python_unraisablehook


def _remember(signum, frame) -> None:
    global _start_up_signal
    _start_up_signal = signum


def _start_up_handler(signum, frame) -> None:
    _remember(signum, frame)
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable) -> None:
    """sys.unraisablehook: a remembered Ctrl-C that Python ignored prints nothing."""
    if _start_up_signal is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        return
    _python_unraisablehook(unraisable)


class StopRequest:
    """Which stop signal arrived first, if any (None: keep going)."""

    signum: Optional[int] = None
    # Called by the handler once signum is set: a training loop that reads the request only
    # at some steps (the CLI's, see pacing.py) ends its current stretch of steps with it.
    on_request: Optional[Callable[[], None]] = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn the first stop signal into a request; see the module docstring.  Raises
    Interrupted at once if a start-up Ctrl-C was ignored by Python (see above)."""
    request = StopRequest()

    def handler(signum, frame) -> None:
        if request.requested:
            raise Interrupted(signum)
        request.signum = signum
        if request.on_request is not None:
            request.on_request()

    previous = {}
    try:
        try:
            for signum in STOP_SIGNALS:
                # An ignored signal stays ignored: `nohup` ignores SIGHUP, a shell ignores
                # SIGINT for a background job; the user chose that the run survives it.
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: signals are not ours to handle
            pass
        # Asked once the handlers are in: a start-up Ctrl-C up to here is seen, any later
        # one is handler's.  (A KeyboardInterrupt out of the loop above restores them too.)
        stop_if_interrupted_at_start_up()
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
