"""The ``cymicrogpt`` command's entry point: a Ctrl-C during start-up (importing NumPy and
the compiled engine takes a noticeable moment) ends the program with one line, never a
traceback.  Everything else is cli.py's."""
from __future__ import annotations

import signal
from typing import Optional, Sequence

from .output import print_error


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print_error("cymicrogpt: interrupted (SIGINT)")
        return 128 + int(signal.SIGINT)
    return cli_main(argv)
