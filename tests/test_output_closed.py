"""A closed or broken stdout never loses a run (issue 8, item 4), nor a benchmark.

``cymicrogpt train ... --save x.npz | head -3``: the run keeps training without output,
is saved, and ends with status 0.  Without --save there is nothing to keep: it stops at
once with 141 (a process that SIGPIPE ends reports that).  No message either way: the
reader chose to leave.  An output that fails otherwise (a full disk) gets one line.
``cymicrogpt bench`` behaves as ``train --save`` does: its product is ladder.md.  A stderr
closed from the start drops the error lines (issue 17, item 10), never into stdout.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cymicrogpt.training import Run
from command import TINY, command, environment, run_command, samples_of

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or sys.platform == "win32", reason="needs bash")


def pipeline(shell_command: str, timeout: float = 300) -> tuple[int, str, str]:
    """Run `shell_command` in bash, where `$CMD` is the installed command; returns the
    first command's exit status (PIPESTATUS), the pipeline's stdout and stderr."""
    done = subprocess.run(["bash", "-c", shell_command + '; echo "status=${PIPESTATUS[0]}" >&2'],
                          capture_output=True, text=True, timeout=timeout, env=environment(CMD=command()))
    *err, status = done.stderr.splitlines()
    return int(status.removeprefix("status=")), done.stdout, "\n".join(err)


def test_head_keeps_training_and_saves(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "x.npz"
    # The python backend is slow enough (tens of ms a step) that head has long left when
    # the progress lines and the samples are written.
    args = ["train", "--data", str(tiny_data_file), "--steps", "24", *TINY, "--backend", "python"]
    status, out, err = pipeline(f'"$CMD" {shlex.join(args)} --save "{ckpt}" | head -3')
    assert (status, err) == (0, "")
    assert [line.split(":")[0] for line in out.splitlines()] == ["num docs", "vocab size", "num params"]
    full = run_command(*args, "--save", tmp_path / "full.npz")
    assert full.returncode == 0
    assert Run.load(ckpt).losses == Run.load(tmp_path / "full.npz").losses  # all 24 steps


def test_head_without_save_stops_at_once(tiny_data_file: Path) -> None:
    start = time.monotonic()
    status, out, err = pipeline(f'"$CMD" train --data "{tiny_data_file}" --steps 1000000000 {" ".join(TINY)} '
                                '--backend python | head -3')
    assert (status, err) == (141, "")
    assert len(out.splitlines()) == 3
    assert time.monotonic() - start < 120  # not a billion steps


def test_sample_into_head(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "x.npz"
    assert run_command("train", "--data", tiny_data_file, "--steps", 5, *TINY, "--save", ckpt).returncode == 0
    status, out, err = pipeline(f'"$CMD" sample --checkpoint "{ckpt}" --num 100000 | head -2')
    assert (status, err) == (141, "")
    assert len(samples_of(out)) == 2


def test_stdout_closed_from_the_start(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "x.npz"
    status, _, err = pipeline(f'"$CMD" train --data "{tiny_data_file}" --steps 7 {" ".join(TINY)} '
                              f'--save "{ckpt}" >&-')
    assert (status, err) == (0, "")
    assert Run.load(ckpt).step == 7


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_full_output_device_is_one_line_and_the_run_is_saved(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "x.npz"
    status, _, err = pipeline(f'"$CMD" train --data "{tiny_data_file}" --steps 9 {" ".join(TINY)} '
                              f'--save "{ckpt}" > /dev/full')
    assert status == 1
    assert err == f"cymicrogpt: error: cannot write to standard output (No space left on device); {ckpt} was written"
    assert Run.load(ckpt).step == 9


# --- bench: its workers print progress to the same stdout ---------------------------------------
BENCH = ["bench", "--steps", "3", "--ref-steps", "2", "--impl", "cython", "--repeats", "1", *TINY]


def ladder_status(ladder_md: Path, impl: str) -> str:
    """The status cell of `impl`'s row in ladder.md."""
    row = next(line for line in ladder_md.read_text().splitlines() if line.startswith(f"| {impl} |"))
    return row.strip("| ").split(" | ")[-1]


@pytest.mark.parametrize("redirect", ["| head -0", ">&-"])
def test_bench_without_a_reader_still_measures_and_writes_its_table(tmp_path: Path, tiny_data_file: Path,
                                                                    redirect: str) -> None:
    # Before, each worker's first write raised (BrokenPipeError; EBADF on a pipe of the
    # parent's that had taken descriptor 1): a traceback per row and every row "failed".
    out = tmp_path / "ladder"
    status, stdout, err = pipeline(f'"$CMD" {shlex.join(BENCH)} --data "{tiny_data_file}" --out "{out}" {redirect}')
    assert (status, stdout, err) == (0, "", "")
    assert ladder_status(out / "ladder.md", "cython") == "ok"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_bench_into_a_full_device_is_one_line_and_the_table_is_written(tmp_path: Path, tiny_data_file: Path) -> None:
    out = tmp_path / "ladder"
    status, _, err = pipeline(f'"$CMD" {shlex.join(BENCH)} --data "{tiny_data_file}" --out "{out}" > /dev/full')
    assert status == 1
    assert err == (f"cymicrogpt: error: cannot write to standard output (No space left on device); "
                   f"{out / 'ladder.md'} was written")
    assert ladder_status(out / "ladder.md", "cython") == "ok"


def test_a_closed_stdout_keeps_its_descriptor_from_files_and_children() -> None:
    """With descriptor 1 closed, the next pipe or file would take it, and child processes
    would inherit it as their stdout; a Console holds it with /dev/null."""
    probe = ("import os, sys; from cymicrogpt.output import Console; Console(); r, w = os.pipe(); "
             "sys.stderr.write(f'{r} {w}')")
    done = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "{probe}" >&-'], capture_output=True, text=True,
                          timeout=60, env=environment())
    assert done.returncode == 0, done.stderr
    assert "1" not in done.stderr.split()


# --- stderr closed from the start (`2>&-`) ----------------------------------------------------
def test_stderr_closed_from_the_start_keeps_error_lines_out_of_stdout(tmp_path: Path) -> None:
    """Python sets sys.stderr to None, and print(file=None) writes to stdout: the error line
    went into the output a script was reading."""
    status, out, err = pipeline(f'"$CMD" train --data "{tmp_path / "missing.txt"}" 2>&-')
    assert (status, out, err) == (1, "", "")


def test_a_closed_stderr_keeps_its_descriptor_from_files_and_children() -> None:
    """With descriptor 2 closed, the next pipe or file would take it: child processes would
    inherit it as their stderr, and what C code writes to stderr would go into it.  The
    entry point holds it with /dev/null before it imports anything that opens files."""
    probe = "import os; from cymicrogpt import launch; r, w = os.pipe(); print(r, w)"
    done = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "{probe}" 2>&-'], capture_output=True, text=True,
                          timeout=60, env=environment())
    assert done.returncode == 0, done.stderr
    assert "2" not in done.stdout.split()
