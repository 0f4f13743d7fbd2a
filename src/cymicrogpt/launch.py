"""The ``cymicrogpt`` command's entry point: a Ctrl-C at any moment of start-up, or one
that is not turned into a request to stop training (see interrupts.py), ends the program
with one line, never a traceback.  Everything else is cli.py's.

Importing this module installs a SIGINT handler that exits at once (there is nothing to
save yet): it covers the console script's own lines, which run before ``main``.  ``main``
then gives SIGINT back to Python (KeyboardInterrupt, remembered in case Python ignores it:
see interrupts.py) inside its ``try``, before the heavy imports (NumPy, the compiled
engine).  Only the entry points import this module.
"""
from __future__ import annotations

import os
import signal
from typing import Optional, Sequence

from .interrupts import catch_start_up_interrupts, end_start_up, signal_name
from .output import print_error

_SIGINT_IGNORED = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a background job: keep it so


def _interrupted(signum: int) -> int:
    print_error(f"cymicrogpt: interrupted ({signal_name(signum)})")
    return 128 + signum


def _exit_at_once(signum, frame) -> None:
    os._exit(_interrupted(signum))


if not _SIGINT_IGNORED:
    signal.signal(signal.SIGINT, _exit_at_once)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        if not _SIGINT_IGNORED:
            catch_start_up_interrupts()
        from .cli import main as cli_main  # the heavy imports

        return cli_main(argv)
    except KeyboardInterrupt as exc:  # interrupts.Interrupted carries the signal's number
        return _interrupted(getattr(exc, "signum", int(signal.SIGINT)))
    finally:  # a caller that goes on (or calls main again) gets its Ctrl-C back as it was
        if not _SIGINT_IGNORED:
            end_start_up()
