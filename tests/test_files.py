"""files.py's promises that no command test reaches (issue 17, items 4 and 9): a save killed
with SIGKILL leaves a temporary file that the next save to that target removes, a live
writer's temporary file is never removed, two processes saving to one target at once leave
one complete file, and an interrupt as a file is opened closes its descriptor once.
"""
from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cymicrogpt import files
from cymicrogpt.data import DataError

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process ids")


def temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True, **kwargs)


# --- item 4: no temporary file outlives a killed save ----------------------------------------
@posix_only
def test_the_next_save_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    target = tmp_path / "run.npz"
    files.write_atomically(target, lambda fh: fh.write(b"first"))
    writer = python(f"""
        import sys, time
        from cymicrogpt.files import write_atomically
        def write(fh):
            fh.write(b"x" * 2**20)
            fh.flush()
            print("writing", flush=True)
            time.sleep(600)
        write_atomically({str(target)!r}, write)
        """, stdout=subprocess.PIPE)
    assert writer.stdout.readline() == "writing\n"
    writer.kill()  # SIGKILL: no cleanup runs
    writer.wait()
    left = temporaries(tmp_path)
    assert left == [name for name in left if name.startswith(f".run.npz.{writer.pid}.")] and len(left) == 1
    assert os.path.getsize(tmp_path / left[0]) == 2**20
    files.write_atomically(target, lambda fh: fh.write(b"second"))
    assert temporaries(tmp_path) == [] and target.read_bytes() == b"second"


@posix_only
def test_checking_a_target_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    dead = python("pass")
    dead.wait()
    stale = tmp_path / f".run.npz.{dead.pid}.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    files.check_output(tmp_path / "run.npz", {})  # what `train --save` does before training
    assert temporaries(tmp_path) == []


@posix_only
def test_a_live_writers_temporary_file_is_never_removed(tmp_path: Path) -> None:
    other_target = tmp_path / f".other.npz.{os.getpid()}.0123abcd.tmp"  # another target's: not this save's
    sleeper = python("import time; time.sleep(600)")
    try:
        live = tmp_path / f".run.npz.{sleeper.pid}.0123abcd.tmp"
        for path in (live, other_target):
            path.write_bytes(b"being written")
        files.write_atomically(tmp_path / "run.npz", lambda fh: fh.write(b"mine"))
        assert temporaries(tmp_path) == sorted([live.name, other_target.name])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_two_processes_saving_to_one_target_leave_one_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "run.npz"
    size = 256 * 1024
    code = f"""
        import sys
        from cymicrogpt.files import write_atomically
        payload = sys.argv[1].encode() * {size}
        for _ in range(40):
            write_atomically({str(target)!r}, lambda fh: (fh.write(payload[:{size} // 2]), fh.flush(),
                                                          fh.write(payload[{size} // 2:])))
        """
    writers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), letter]) for letter in "AB"]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    content = target.read_bytes()
    assert content in (b"A" * size, b"B" * size)
    assert temporaries(tmp_path) == []


# --- item 9: a descriptor is closed once -----------------------------------------------------------
def test_an_interrupt_as_the_file_object_is_made_closes_the_descriptor_once(tmp_path: Path, monkeypatch) -> None:
    """An interrupt that arrives as open() (or os.fdopen) returns drops the new file object,
    which closes the descriptor.  Meanwhile another thread may be given that number again;
    a second close would close that thread's file."""
    data = tmp_path / "data.txt"
    data.write_text("emma\n")
    real_open = io.open
    others = []

    def interrupted_open(file, *args, **kwargs):
        result = real_open(file, *args, **kwargs)
        if isinstance(file, int):  # our descriptor, being wrapped
            del result  # what an exception raised here does to the returned object: fd closed
            others.append(real_open(tmp_path / "other.txt", "w"))  # "another thread" gets that number
            assert others[0].fileno() == file
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(builtins, "open", interrupted_open)
    monkeypatch.setattr(io, "open", interrupted_open)  # os.fdopen's
    with pytest.raises(KeyboardInterrupt):
        files.open_regular(data, "data", DataError)
    monkeypatch.undo()
    try:
        os.fstat(others[0].fileno())  # still open: nobody closed it behind its owner's back
        others[0].write("still mine")
    finally:
        others[0].close()
    assert (tmp_path / "other.txt").read_text() == "still mine"
