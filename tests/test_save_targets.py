"""``--save`` never destroys what it points at (issue 8, items 5 and 8).

Checkpoints are written through symlinks, atomically, at the resolved path; an existing
target that is not a regular file, or that is the data file however spelled, is refused in
one line with exit 2 before any training, and so is a directory nobody can write to.
Every special file here is one the test creates (never /dev/null: the tests run as root).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, run_command

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")


def train(data: Path, save, *extra) -> subprocess.CompletedProcess:
    return run_command("train", "--data", data, "--steps", 6, *TINY, "--save", save, *extra)


def assert_refused_before_training(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert (done.returncode, done.stdout) == (2, "")  # no "num docs": nothing was even loaded
    assert_one_error_line(done.stderr, "--save", *fragments)


# --- through symlinks ----------------------------------------------------------------------
def test_symlink_is_written_through(tmp_path: Path, tiny_data_file: Path) -> None:
    real = tmp_path / "real.npz"
    assert train(tiny_data_file, real).returncode == 0
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    done = train(tiny_data_file, link, "--steps", 9)
    assert (done.returncode, done.stderr) == (0, "")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert Run.load(real).step == 9  # the file it points to is the new checkpoint
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "real.npz", "tiny.txt"]


def test_dangling_symlink_creates_its_target(tmp_path: Path, tiny_data_file: Path) -> None:
    (tmp_path / "runs").mkdir()
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "runs" / "new.npz")
    assert train(tiny_data_file, link).returncode == 0
    assert link.is_symlink() and Run.load(tmp_path / "runs" / "new.npz").step == 6


def test_chain_of_symlinks_relative(tmp_path: Path, tiny_data_file: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "inner.npz").symlink_to("../real.npz")  # relative to its own directory
    (tmp_path / "outer.npz").symlink_to("a/inner.npz")
    assert train(tiny_data_file, tmp_path / "outer.npz").returncode == 0
    assert Run.load(tmp_path / "real.npz").step == 6
    assert (tmp_path / "outer.npz").is_symlink() and (tmp_path / "a" / "inner.npz").is_symlink()


def test_replacing_keeps_the_file_mode(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    assert train(tiny_data_file, ckpt).returncode == 0
    ckpt.chmod(0o600)
    assert train(tiny_data_file, ckpt).returncode == 0
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o600


# --- special files are refused, and left alone -----------------------------------------------
@contextlib.contextmanager
def special_file(kind: str, path: Path):
    """Make a `kind` file at `path`; yields a function that says whether it is still one."""
    if kind == "fifo":
        os.mkfifo(path)
        yield lambda: stat.S_ISFIFO(os.lstat(path).st_mode)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
            yield lambda: stat.S_ISSOCK(os.lstat(path).st_mode)
    elif kind == "device":
        try:  # a character device node of our own, with /dev/null's numbers (harmless)
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (PermissionError, AttributeError):
            pytest.skip("cannot create a device node here")
        yield lambda: stat.S_ISCHR(os.lstat(path).st_mode)
    else:
        path.mkdir()
        yield lambda: path.is_dir() and not path.is_symlink()


@pytest.mark.parametrize("kind, fragment", [("fifo", "a FIFO"), ("socket", "a socket"), ("device", "a character device"),
                                            ("directory", "a directory")])
@pytest.mark.parametrize("via_symlink", [False, True])
def test_special_target_is_refused(tmp_path: Path, tiny_data_file: Path, kind: str, fragment: str,
                                   via_symlink: bool) -> None:
    target = tmp_path / "special"
    with special_file(kind, target) as still_special:
        given = target
        if via_symlink:
            given = tmp_path / "link.npz"
            given.symlink_to(target)
        assert_refused_before_training(train(tiny_data_file, given), str(given), fragment, "not a regular file")
        assert still_special()
        assert sorted(os.listdir(tmp_path)) == sorted(["special", "tiny.txt"] + (["link.npz"] if via_symlink else []))


def test_api_refuses_a_fifo_and_names_the_target(tmp_path: Path, tiny_docs, tiny_config) -> None:
    run = start_run(tiny_docs, config=tiny_config, steps=3)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FileExistsError, match="a FIFO") as info:
        run.save(tmp_path / "pipe")
    assert info.value.filename == str(tmp_path / "pipe")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


def test_api_missing_directory_names_the_target(tmp_path: Path, tiny_docs, tiny_config) -> None:
    target = tmp_path / "no" / "run.npz"
    with pytest.raises(FileNotFoundError) as info:
        start_run(tiny_docs, config=tiny_config, steps=3).save(target)
    assert info.value.filename == str(target)
    assert f"directory {tmp_path / 'no'} does not exist" in str(info.value) and ".tmp" not in str(info.value)


def test_symlink_loop_is_refused(tmp_path: Path, tiny_data_file: Path) -> None:
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    assert_refused_before_training(train(tiny_data_file, tmp_path / "a.npz"), "symbolic links")


# --- the data file -------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_save_onto_the_data_file_is_refused(tmp_path: Path, tiny_data_file: Path, spelling: str) -> None:
    data = tmp_path / "mynames.txt"
    shutil.copy(tiny_data_file, data)
    before = data.read_bytes()
    target = {"same": lambda: data,
              "dotted": lambda: tmp_path / "sub" / ".." / "mynames.txt",
              "symlink": lambda: _link(tmp_path / "names-link.txt", data),
              "hardlink": lambda: _hardlink(tmp_path / "names-hard.txt", data)}[spelling]
    if spelling == "dotted":
        (tmp_path / "sub").mkdir()
    done = train(data, target())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert_one_error_line(done.stderr, "--save", "is the data file", "overwrite")
    assert data.read_bytes() == before


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _hardlink(link: Path, target: Path) -> Path:
    os.link(target, link)
    return link


def test_save_onto_the_data_file_when_resuming(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    assert train(tiny_data_file, ckpt).returncode == 0
    before = tiny_data_file.read_bytes()
    done = run_command("train", "--resume", ckpt, "--data", tiny_data_file, "--save", tiny_data_file)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "is the data file")
    assert tiny_data_file.read_bytes() == before


def test_resume_may_save_over_its_own_checkpoint(tmp_path: Path, tiny_docs, tiny_config) -> None:
    ckpt = tmp_path / "run.npz"
    run = start_run(tiny_docs, config=tiny_config, steps=12)
    run.train(until=4)
    run.save(ckpt)
    done = run_command("train", "--resume", ckpt, "--save", ckpt)
    assert (done.returncode, done.stderr) == (0, "")
    assert Run.load(ckpt).step == 12


# --- a directory nobody can write to, found before training --------------------------------------
@contextlib.contextmanager
def unwritable_directory(path: Path):
    """`path` (made if missing) locked against writes for the block; skips where it cannot be."""
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    # root writes anywhere a mode allows nothing; an immutable directory stops root too
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: no directory here is unwritable")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_directory_is_found_before_training(tmp_path: Path, tiny_data_file: Path) -> None:
    with unwritable_directory(tmp_path / "locked") as locked:
        done = train(tiny_data_file, locked / "run.npz")
        assert_refused_before_training(done, str(locked))
        assert os.listdir(locked) == []
