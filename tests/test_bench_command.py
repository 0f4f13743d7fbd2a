"""`cymicrogpt bench` keeps what it measured and leaves nothing behind (issue 17, items 1 and 5).

Its products (ladder.md, ladder.png) are save targets, checked by the same rules as
`train --save` before anything is measured, and written atomically through symlinks.  A
SIGINT, SIGTERM or SIGHUP stops the measuring: the workers, microgpt.py and their scratch
folders end with the command, the rows measured so far are written (the table says it is
partial), and the exit code is 128 + N with one line on stderr.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from command import TINY, assert_one_error_line, run_command, start_command
from test_save_targets import special_file, unwritable_directory

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and special files")

QUICK = ["--steps", "3", "--ref-steps", "2", "--impl", "cython", "--repeats", "1", *TINY]


def bench(data: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return run_command("bench", "--data", data, "--out", out, *QUICK, *extra, timeout=60)


def assert_refused_before_measuring(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert (done.returncode, done.stdout) == (2, "")  # no worker's "cython:" line: nothing was measured
    assert_one_error_line(done.stderr, *fragments)


# --- the products are save targets ----------------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_the_data_file_is_never_a_product(tmp_path: Path, tiny_data_file: Path, spelling: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    data = out / "ladder.md"
    shutil.copy(tiny_data_file, data)
    before = data.read_bytes()
    given = {"same": data, "dotted": tmp_path / "out" / ".." / "out" / "ladder.md"}.get(spelling)
    if spelling == "symlink":
        given = tmp_path / "names-link.txt"
        given.symlink_to(data)
    elif spelling == "hardlink":
        given = tmp_path / "names-hard.txt"
        os.link(data, given)
    assert_refused_before_measuring(bench(given, out), "--out", "ladder.md", "is the data file", "overwrite")
    assert data.read_bytes() == before


def test_the_microgpt_script_is_never_a_product(tmp_path: Path, tiny_data_file: Path) -> None:
    script = tmp_path / "ladder.md"
    script.write_text("print('not microgpt')\n")
    done = bench(tiny_data_file, tmp_path, "--microgpt", script)
    assert_refused_before_measuring(done, "ladder.md", "is the microgpt.py script")
    assert script.read_text() == "print('not microgpt')\n"


@pytest.mark.parametrize("kind, fragment", [("fifo", "a FIFO"), ("socket", "a socket"), ("device", "a character device"),
                                            ("directory", "a directory")])
@pytest.mark.parametrize("product", ["ladder.md", "ladder.png"])
def test_a_special_file_named_as_a_product_is_refused(tmp_path: Path, tiny_data_file: Path, kind: str, fragment: str,
                                                      product: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with special_file(kind, out / product) as still_special:
        done = bench(tiny_data_file, out)  # a FIFO used to block forever, once all was measured
        assert_refused_before_measuring(done, str(out / product), fragment)
        assert still_special()


def test_an_unwritable_out_folder_is_refused(tmp_path: Path, tiny_data_file: Path) -> None:
    with unwritable_directory(tmp_path / "locked") as locked:
        assert_refused_before_measuring(bench(tiny_data_file, locked), "--out", str(locked))
        assert os.listdir(locked) == []


def test_an_out_folder_that_cannot_be_made_is_refused(tmp_path: Path, tiny_data_file: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert_refused_before_measuring(bench(tiny_data_file, tmp_path / "file" / "sub"), "--out")


def test_products_are_written_through_symlinks(tmp_path: Path, tiny_data_file: Path) -> None:
    out, real = tmp_path / "out", tmp_path / "kept" / "table.md"
    out.mkdir()
    real.parent.mkdir()
    (out / "ladder.md").symlink_to(real)
    done = bench(tiny_data_file, out)
    assert done.returncode == 0, done.stderr
    assert (out / "ladder.md").is_symlink() and real.read_text().startswith("# Efficiency ladder")
    assert not [name for name in os.listdir(out) + os.listdir(real.parent) if name.endswith(".tmp")]


# --- a stop signal ends everything the command started ----------------------------------------
SLOW_MICROGPT = """\
import time
for step in range(1000):
    time.sleep(0.05)
    print(f"step {step + 1:4d} / 1000 | loss 3.0", flush=True)
"""


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (from /proc: each process's parent)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def wait_for_line(stream, fragment: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for line in stream:
        if fragment in line:
            return
        assert time.monotonic() < deadline, f"no {fragment!r} line in {timeout} s"
    pytest.fail(f"the output ended without a {fragment!r} line")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("stage", ["worker", "microgpt.py"])
def test_a_stop_signal_ends_every_process_and_writes_the_partial_table(tmp_path: Path, tiny_data_file: Path,
                                                                      signum: int, stage: str) -> None:
    scratch, out = tmp_path / "tmp", tmp_path / "out"
    scratch.mkdir()
    script = tmp_path / "microgpt.py"
    script.write_text(SLOW_MICROGPT)
    # A terminal's Ctrl-C or hang-up reaches its whole foreground group: so does this one.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)}
    # worker: the reference trains first, 20,000 steps (minutes); microgpt.py: cython's 200
    # steps take well under a second, then the stand-in script prints a step every 50 ms (10 s)
    first, steps = ("python", 20000) if stage == "worker" else ("cython", 200)
    process = start_command("bench", "--data", tiny_data_file, "--out", out, "--steps", steps, "--ref-steps", steps,
                            "--impl", f"{first},numpy", "--microgpt", script, "--json", tmp_path / "result.json",
                            "--repeats", 1, *TINY,
                            env=env, start_new_session=True)
    try:
        wait_for_line(process.stdout, "python:" if stage == "worker" else "microgpt.py: checking")
        time.sleep(1.0)  # well into it
        started = descendants(process.pid)
        assert started, "no worker or script process was found"
        os.killpg(process.pid, signum)
        out_text, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 128 + signum, err
    assert_one_error_line_of(err, f"interrupted by {signal.Signals(signum).name}", "partial")
    deadline = time.monotonic() + 10  # multiprocessing's resource tracker exits once we have
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(started), f"left running: {alive(started)}"
    assert os.listdir(scratch) == []  # no scratch folder (microgpt.py's) left behind
    table = (out / "ladder.md").read_text()
    name = signal.Signals(signum).name
    assert f"**Partial:** stopped by {name}" in table
    stopped_row = "| python |" if stage == "worker" else "| microgpt.py |"
    assert [line for line in table.splitlines() if line.startswith(stopped_row) and f"stopped ({name})" in line]
    assert ("| numpy |" in table) == (stage != "worker")  # measured before microgpt.py; never begun after python
    result = json.loads((tmp_path / "result.json").read_text())  # the JSON is written too, marked partial
    assert result["stopped_by"] == name and result["results"][-1]["status"] == f"stopped ({name})"


def assert_one_error_line_of(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cymicrogpt: "), err
    assert all(fragment in lines[0] for fragment in fragments), err


def test_a_model_too_large_for_the_datas_vocabulary_is_refused_before_measuring(tmp_path: Path,
                                                                                tiny_data_file: Path) -> None:
    # 2 * V * 1 + block * 1 + 12 weights: within the limit for the smallest vocabulary (V = 2),
    # past it for the tiny corpus's
    done = run_command("bench", "--data", tiny_data_file, "--out", tmp_path, "--n-layer", 1, "--n-embd", 1,
                       "--n-head", 1, "--block-size", 2**31 - 1 - 16, timeout=60)
    assert_refused_before_measuring(done, "bad model shape", "2147483647")
