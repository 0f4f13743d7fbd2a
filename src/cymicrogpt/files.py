"""Files the user names: read only regular files, up to a size cap; write atomically,
through symlinks, and never over anything but a regular file or a file being read.

Reading: a FIFO would block forever, ``/dev/zero`` never ends and a directory holds no
text, so only regular files are read, and no more than a stated number of bytes.

Writing: a file is replaced atomically (a temporary file in the same directory, fsync,
``os.replace``), so a crash never leaves half a file under the target's name.  The target
is resolved first: a symlink stays a symlink and the file it points to is what gets
replaced.  An existing target that is not a regular file (a device such as /dev/null, a
FIFO, a socket, a directory) is refused, never replaced; so is an input of the same
command (the data file), however spelled.  Every output of every command goes through
`check_output` before any work and `write_atomically` after it.

No temporary file outlives a killed save for long.  A temporary file's name holds its
writer's process id, and every save to a target (and every check of one) first deletes
the temporary files that dead processes left for it (SIGKILL, a power cut), never a live
writer's: two processes saving to one target at once each rename a complete file of their
own.  (Linux's unnamed files, O_TMPFILE named by linkat through /proc just before the
rename, would leave nothing at all; on the machines this project is tested on that linkat
fails with EXDEV, so the one mechanism that works everywhere is used everywhere.)
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Optional, Union

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
    except BaseException:
        os.close(fd)
        raise
    # Outside the try: once open() has made the file object, that object owns fd.  An
    # interrupt raised as open() returns drops the object, which closes fd; closing it here
    # too would close a number that another thread may already have been given again.
    return open(fd, "rb")


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
    remove_stale_temporaries(real)
    fd, named = _create_temporary(real, path)
    os.close(fd)
    os.unlink(named)
    return real


def check_output(path: PathLike, inputs: Mapping[str, Optional[PathLike]]) -> Path:
    """check_writable(path), also refusing a target that is one of the command's `inputs`
    ({"the data file": path, ...}; None values are skipped), however spelled: ``./``,
    ``..``, a symlink or a hard link to it.  Replacing an input would destroy what the
    command reads.  Returns the resolved target; OSError naming `path` otherwise."""
    real = check_writable(path)
    for what, source in inputs.items():
        if source is not None and _same_file(real, source):
            spelled = "" if os.fspath(source) == os.fspath(path) else f" {os.fspath(source)}"
            raise FileExistsError(errno.EEXIST, f"is {what}{spelled}; writing there would overwrite it",
                                  os.fspath(path))
    return real


def _same_file(a: PathLike, b: PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def write_atomically(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temporary file, then make it `path`'s target, atomically.

    A new file gets the usual mode (0o666 less the umask); a replaced one keeps its mode."""
    real = resolve_target(path)
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    remove_stale_temporaries(real)
    fd, named = _create_temporary(real, path)
    try:
        try:
            with open(fd, "wb", closefd=False) as fh:  # fd stays ours: closed once, below
                write(fh)
                fh.flush()
            os.fsync(fd)
            _set_mode(fd, named, mode)  # the temporary file is 0600
        finally:
            os.close(fd)  # before the rename: Windows renames no open file
        os.replace(named, real)
    except BaseException:
        try:
            os.unlink(named)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(real.parent)


# --- temporary files -----------------------------------------------------------------------
def _temporary_name(real: Path) -> Path:
    """A fresh temporary name beside `real`: .NAME.PID.RANDOM.tmp (hidden, the writer's pid)."""
    return real.with_name(f".{real.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _temporary_pattern(real: Path) -> re.Pattern:
    """What _temporary_name(real) makes, with the pid as group 1."""
    return re.compile(rf"\.{re.escape(real.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")


def _create_temporary(real: Path, given: PathLike) -> tuple[int, Path]:
    """A new temporary file beside `real`, open for writing: (fd, its name).  OSError names
    `given`, the path the user gave, never the temporary file."""
    while True:
        named = _temporary_name(real)
        try:
            return os.open(named, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600), named
        except FileExistsError:  # 2**32 names per process: try another
            continue
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot create a file in {real.parent}: {exc.strerror}",
                            os.fspath(given)) from None


def _set_mode(fd: int, named: Path, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # Windows (before Python 3.13): by name
        os.chmod(named, mode)


def remove_stale_temporaries(real: Path) -> None:
    """Delete the temporary files of saves to `real` whose process is gone (killed before it
    could clean up).  A live process's file is never touched, whoever it belongs to.  (On
    Windows, where no process is asked, nothing is deleted.)"""
    try:
        names = os.listdir(real.parent)
    except OSError:
        return
    ours = _temporary_pattern(real)
    for name in names:
        match = ours.fullmatch(name)
        if match and not _process_exists(int(match[1])):
            try:
                os.unlink(real.parent / name)
            except OSError:  # gone already (another save cleaned it), or not ours to delete
                pass


def _process_exists(pid: int) -> bool:
    if pid == os.getpid() or sys.platform == "win32":  # Windows' os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, and belongs to someone else
        return True
    return True


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
