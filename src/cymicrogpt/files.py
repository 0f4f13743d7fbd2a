"""Files the user names: read only regular files, up to a size cap; write atomically,
through symlinks, and never over anything but a regular file.

Reading: a FIFO would block forever, ``/dev/zero`` never ends and a directory holds no
text, so only regular files are read, and no more than a stated number of bytes.

Writing: a file is replaced atomically (a temporary file in the same directory, fsync,
``os.replace``), so a crash never leaves half a file under the target's name.  The target
is resolved first: a symlink stays a symlink and the file it points to is what gets
replaced.  An existing target that is not a regular file (a device such as /dev/null, a
FIFO, a socket, a directory) is refused, never replaced.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]

_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def describe(mode: int) -> str:
    """What a non-regular file is, for messages: "a directory", "a FIFO (named pipe)"..."""
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "not a regular file")


def open_regular(path: PathLike, what: str, error: type[Exception]) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; else `error` saying why,
    in one line (`what` names the file's role: "data", "checkpoint")."""
    if os.fspath(path) in ("", b""):
        raise error(f"the {what} path is empty")
    try:
        mode = os.stat(path).st_mode  # first, so a socket (which cannot be opened) is named as such
        if not stat.S_ISREG(mode):
            raise error(f"{what} path {path} is {describe(mode)}, not a regular file")
        # O_NONBLOCK: should a FIFO replace the file after the stat, opening it does not
        # wait for a writer; fstat below then refuses it.  It changes nothing for files.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{what} path {path} is {describe(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: PathLike, what: str, error: type[Exception], limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them, else `error`."""
    with open_regular(path, what, error) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size <= limit:
                data = fh.read(limit + 1)  # +1: notice a file that grew since the fstat
        except OSError as exc:
            raise error(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if size > limit or len(data) > limit:
        raise error(f"{what} file {path} is larger than {limit:,} bytes, the most cymicrogpt reads")
    return data


# --- writing -----------------------------------------------------------------------------
def resolve_target(path: PathLike) -> Path:
    """Where a write to `path` lands: symlinks resolved.  OSError (naming `path`) when the
    target exists and is not a regular file, or its directory does not exist."""
    text = os.fspath(path)
    if text in ("", b""):
        raise FileNotFoundError(errno.ENOENT, "empty path", text)
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None  # a new file (or a dangling symlink's target): fine if its directory exists
    except OSError as exc:  # a symlink loop, a path through a file, ...
        raise type(exc)(exc.errno, exc.strerror, text) from None
    if mode is not None and not stat.S_ISREG(mode):
        raise FileExistsError(errno.EEXIST, f"exists and is {describe(mode)}, not a regular file; "
                              "cymicrogpt replaces only regular files", text)
    if not real.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"directory {real.parent} does not exist", text)
    return real


def check_writable(path: PathLike) -> Path:
    """resolve_target(path), after proving that a file can be created beside the target
    (os.access and a real probe file: read-only mounts and ACLs are caught too)."""
    real = resolve_target(path)
    directory = real.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"directory {directory} is not writable", os.fspath(path))
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f".{real.name}.", suffix=".probe")
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot create a file in {directory}: {exc.strerror}", os.fspath(path)) from None
    os.close(fd)
    os.unlink(probe)
    return real


def write_atomically(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temporary file, then make it `path`'s target, atomically.

    A new file gets the usual mode (0o666 less the umask); a replaced one keeps its mode."""
    real = resolve_target(path)
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as exc:  # name the target, not the temporary file
        raise type(exc)(exc.errno, exc.strerror, os.fspath(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(real.parent)


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back (not thread-safe,
    # but a file is written by the thread that trains).
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
