"""The ``cymicrogpt`` command's entry point: a Ctrl-C at any moment of start-up, or one
that is not turned into a request to stop training (see interrupts.py), ends the program
with one line, never a traceback.  Everything else is cli.py's.

This is the first module of ours that the command runs (the console script imports it,
as does ``python -m cymicrogpt``; the package's __init__ imports nothing), and its first
lines import nothing the interpreter has not loaded already: from them on, a Ctrl-C is
only remembered, then reported by ``main``.  It covers this module's own imports and the
console script's lines, which run before ``main``.  A Ctrl-C sent before those lines run
gets Python's default behaviour: the process dies silently (the interpreter has no
handler yet) or prints a KeyboardInterrupt traceback (in the interpreter's start-up, or
the console script's ``import re``).  We cannot run earlier than that.

``main`` keeps only remembering a Ctrl-C during cli.py's heavy imports (NumPy among them;
see interrupts.py for why), then lets one raise KeyboardInterrupt (remembered in case
Python ignores it) until the command's real work begins.  When it ends, SIGINT has
Python's default handler again and sys.unraisablehook is as it was: a caller that goes
on, or calls main again, does not inherit ours.  Nothing here exits at once
(``os._exit``): tests call ``main`` in their own process.

Only the entry points import this module (importing it takes SIGINT over).
"""
import _signal  # signal's C core, loaded with the interpreter: `import signal` takes 0.5 ms

_SIGINT_IGNORED = _signal.getsignal(_signal.SIGINT) == _signal.SIG_IGN  # a background job: keep it so
_first_signal = None  # a Ctrl-C that arrived before main took over


def _remember_first(signum, frame) -> None:
    global _first_signal
    _first_signal = signum


if not _SIGINT_IGNORED:
    _signal.signal(_signal.SIGINT, _remember_first)

# Only now, with a Ctrl-C remembered, everything else.
from typing import Optional, Sequence  # noqa: E402

from .interrupts import (Interrupted, catch_start_up_interrupts, end_start_up,  # noqa: E402
                         hold_start_up_interrupts, signal_name)
from .output import hold_closed_descriptors, print_error  # noqa: E402

hold_closed_descriptors()  # `>&-`, `2>&-`: before the heavy imports open any file


def _interrupted(signum: int) -> int:
    print_error(f"cymicrogpt: interrupted ({signal_name(signum)})")
    return 128 + signum


def main(argv: Optional[Sequence[str]] = None) -> int:
    global _first_signal
    try:
        if not _SIGINT_IGNORED:
            hold_start_up_interrupts()
            # Read once interrupts.py remembers them: none slips between the two handlers.
            first, _first_signal = _first_signal, None
            if first is not None:
                raise Interrupted(first)
        from .cli import main as cli_main  # the heavy imports

        if not _SIGINT_IGNORED:
            catch_start_up_interrupts()  # raises Interrupted if one came during the imports
        return cli_main(argv)
    except KeyboardInterrupt as exc:  # interrupts.Interrupted carries the signal's number
        return _interrupted(getattr(exc, "signum", _signal.SIGINT))
    finally:
        if not _SIGINT_IGNORED:
            _end_start_up_uninterrupted()


def _end_start_up_uninterrupted() -> None:
    """end_start_up(), carried through to its end.  A Ctrl-C that arrives while it gives
    SIGINT back meets our start-up handler (or already Python's), which raises in here:
    a traceback, and SIGINT left as it was.  The command is over, so that Ctrl-C is
    dropped and the hand-back done again (it is idempotent)."""
    while True:
        try:
            end_start_up()
            return
        except KeyboardInterrupt:
            continue
