"""Standard output and error that may go away under a running command.

``cymicrogpt train ... | head -3`` closes the pipe after three lines; a terminal that
closes takes stdout and stderr with it.  Neither may stop a run: ``Console`` drops what
it can no longer show and remembers why (``lost``), so the command can decide what to do
(keep training and save, or stop), and the interpreter's final flush does not fail again.

Nor may an output that cannot encode a character (a legacy Windows code page,
``PYTHONIOENCODING=ascii``, a lone surrogate in a checkpoint's vocabulary) lose what is
written to it: what it cannot encode is written as escapes (``zo\\xeb``), on stdout and
stderr alike.  And a stdout or stderr closed from the start (``>&-``, ``2>&-``) is held
on /dev/null (`hold_closed_descriptors`), so that nothing meant for it lands in whatever
file or pipe would otherwise take its descriptor.
"""
from __future__ import annotations

import errno
import os
import select
import stat
import sys
import time
from typing import Optional, TextIO

POLL_INTERVAL_S = 0.25  # how often notice_closed_pipe() really looks


class Console:
    """A write-only text stream over stdout (by default) that never raises."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.lost: Optional[OSError] = None  # why writing failed, once it has
        if self.stream is None:  # started with stdout closed (`>&-`)
            self.lost = OSError(errno.EBADF, "standard output is closed")
            _hold_closed_descriptor(1)
        self._pipe_fd = _pipe_fd(self.stream)  # stdout is a pipe: watch for its reader leaving
        self._last_poll = -float("inf")

    @property
    def reader_left(self) -> bool:
        """True when nobody reads the output: the pipe's reader left (`| head`), or stdout
        was closed from the start (`>&-`)."""
        return isinstance(self.lost, BrokenPipeError) or (self.lost is not None and self.lost.errno == errno.EBADF)

    def notice_closed_pipe(self) -> None:
        """Find out, without writing, that a pipe's reader has left (poll() reports POLLERR
        on the writing end on Linux, POLLHUP elsewhere); at most every POLL_INTERVAL_S.
        Writes find out too, but a run prints only every 5% of its steps."""
        if self._pipe_fd is None or self.lost is not None:
            return
        now = time.monotonic()
        if now - self._last_poll < POLL_INTERVAL_S:
            return
        self._last_poll = now
        poller = select.poll()
        poller.register(self._pipe_fd, 0)  # POLLERR and POLLHUP are always reported
        if any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            self._lose(BrokenPipeError(errno.EPIPE, "the reader of standard output has left"))

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                _write_escaping(self.stream, text)
            except (OSError, ValueError) as exc:  # ValueError: the stream object was closed
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self._lose(exc)

    def isatty(self) -> bool:
        try:
            return self.lost is None and self.stream.isatty()
        except (AttributeError, OSError, ValueError):
            return False

    def print(self, *lines: str) -> None:
        """Each line, then a flush (so a closed pipe is noticed at once)."""
        for line in lines:
            self.write(line + "\n")
        self.flush()

    def _lose(self, exc: Exception) -> None:
        self.lost = exc if isinstance(exc, OSError) else OSError(errno.EBADF, "standard output is closed")
        _point_at_devnull(self.stream)


def _pipe_fd(stream: Optional[TextIO]) -> Optional[int]:
    try:
        fd = stream.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) and hasattr(select, "poll") else None
    except (AttributeError, OSError, ValueError):  # no descriptor (a StringIO, None)
        return None


def _write_escaping(stream: TextIO, text: str) -> None:
    """stream.write(text); what the stream's encoding cannot represent is written as a
    backslash escape instead.  (A UnicodeEncodeError is a ValueError, which from a stream
    otherwise means "closed": uncaught here, it passed for a closed output.)"""
    try:
        stream.write(text)
    except UnicodeEncodeError:  # TextIOWrapper encodes the whole text first: nothing was written
        encoding = stream.encoding
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def hold_closed_descriptors() -> None:
    """Hold standard output and error on /dev/null if they are closed: for the entry
    point, before anything else opens a file (see _hold_closed_descriptor)."""
    for fd in (1, 2):
        _hold_closed_descriptor(fd)


def _hold_closed_descriptor(fd: int) -> None:
    # A closed descriptor 1 or 2 is the lowest free number: the next file or pipe opened
    # would get it, every child process would inherit that file or pipe as its stdout or
    # stderr (`cymicrogpt bench`'s workers got a multiprocessing pipe of the parent's), and
    # what C code writes to stderr would go into it.  /dev/null holds it instead.
    try:
        os.fstat(fd)
        return  # open after all (or sys.stdout set to None by other means): leave it
    except OSError:
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
    except OSError:
        pass


def _point_at_devnull(stream: TextIO) -> None:
    # What is still buffered in `stream` is flushed when the interpreter exits; with the
    # descriptor on /dev/null that flush succeeds instead of printing "Exception ignored".
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def print_error(line: str) -> None:
    """One line on stderr; dropped silently if stderr itself is gone (a closed terminal,
    or closed from the start: `2>&-`)."""
    stream = sys.stderr
    if stream is None:  # closed from the start; print(file=None) would write it to stdout
        return
    try:
        _write_escaping(stream, line + "\n")
        stream.flush()
    except (OSError, ValueError):
        _point_at_devnull(stream)
