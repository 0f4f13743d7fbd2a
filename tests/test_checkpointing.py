"""Where `train` saves, and what a failed save costs (issue 17, items 2 and 3).

`train --resume run.npz` without `--save` keeps the resumed steps in run.npz: at the end, at
every `--save-every`, and when a signal stops it.  A periodic save that fails (a disk full
for a moment) prints one warning and training goes on; the next save tries again; only a
failed final save fails the command, leaving the last checkpoint written intact.

A disk that is full for a while is played by RLIMIT_FSIZE, the largest file a process may
write (with SIGXFSZ ignored, a write past it fails with EFBIG): set low when the command
starts, raised from outside (prlimit) while it trains.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, run_command, start_command
from test_save_targets import unwritable_directory

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and resource limits")


def saved_run(path: Path, docs, config, steps: int, until: int) -> Run:
    run = start_run(docs, config=config, steps=steps)
    run.train(until=until)
    run.save(path)
    return run


# --- a resumed run is saved to its checkpoint -------------------------------------------------
def test_resume_without_save_saves_to_the_checkpoint_it_continues(tmp_path: Path, tiny_docs, tiny_config) -> None:
    ckpt = tmp_path / "run.npz"
    saved_run(ckpt, tiny_docs, tiny_config, steps=12, until=4)
    done = run_command("train", "--resume", ckpt, "--save-every", 3)
    assert (done.returncode, done.stderr) == (0, "")
    uninterrupted = start_run(tiny_docs, config=tiny_config, steps=12)
    uninterrupted.train()
    assert Run.load(ckpt).losses == uninterrupted.losses


def test_a_signal_saves_a_resumed_run_to_its_checkpoint(tmp_path: Path, tiny_docs, tiny_config) -> None:
    ckpt = tmp_path / "run.npz"
    saved_run(ckpt, tiny_docs, tiny_config, steps=10**7, until=2)
    process = start_command("train", "--resume", ckpt)
    for line in process.stdout:
        if line.startswith("resuming"):
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    line = assert_one_error_line_of(err, "interrupted by SIGTERM", f"saved to {ckpt}")
    resumed = Run.load(ckpt)
    assert resumed.step > 2 and f"at step {resumed.step} / {10**7}" in line


def test_save_elsewhere_leaves_the_resumed_checkpoint_alone(tmp_path: Path, tiny_docs, tiny_config) -> None:
    ckpt, other = tmp_path / "run.npz", tmp_path / "other.npz"
    saved_run(ckpt, tiny_docs, tiny_config, steps=9, until=3)
    before = ckpt.read_bytes()
    assert run_command("train", "--resume", ckpt, "--save", other).returncode == 0
    assert ckpt.read_bytes() == before and Run.load(other).step == 9


def test_a_resumed_checkpoint_that_cannot_be_written_is_refused_before_training(tmp_path: Path, tiny_docs,
                                                                                tiny_config) -> None:
    folder = tmp_path / "published"
    folder.mkdir()
    saved_run(folder / "run.npz", tiny_docs, tiny_config, steps=9, until=3)
    with unwritable_directory(folder):
        done = run_command("train", "--resume", folder / "run.npz")
        assert (done.returncode, done.stdout) == (2, "")
        assert_one_error_line(done.stderr, f"--resume {folder / 'run.npz'}", "not writable", "pass --save")
        elsewhere = run_command("train", "--resume", folder / "run.npz", "--save", tmp_path / "mine.npz")
        assert elsewhere.returncode == 0, elsewhere.stderr
    assert Run.load(folder / "run.npz").step == 3 and Run.load(tmp_path / "mine.npz").step == 9


# --- a failed periodic save costs only that checkpoint --------------------------------------------
def limit_file_size(limit: int):
    """preexec_fn: files written larger than `limit` bytes fail with EFBIG (not SIGXFSZ)."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return apply


@pytest.mark.skipif(not hasattr(__import__("resource"), "prlimit"), reason="needs resource.prlimit (Linux)")
def test_a_briefly_full_disk_costs_only_the_saves_it_refused(tmp_path: Path, tiny_data_file: Path) -> None:
    import resource

    ckpt = tmp_path / "run.npz"
    process = start_command("train", "--data", tiny_data_file, *TINY, "--steps", 400, "--save", ckpt,
                            "--save-every", 20, preexec_fn=limit_file_size(1000))  # every checkpoint is larger
    first_warning = process.stderr.readline()
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    warnings = [first_warning] + err.splitlines()
    assert first_warning.startswith(f"cymicrogpt: warning: cannot write checkpoint {ckpt} at step 20 / 400 (")
    assert "training goes on" in first_warning
    assert all(line.startswith("cymicrogpt: warning: cannot write checkpoint") for line in warnings if line.strip())
    assert "sample 20:" in out  # trained to the end and sampled
    assert Run.load(ckpt).step == 400 and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_failed_final_save_fails_and_keeps_the_last_checkpoint(tmp_path: Path, tiny_docs, tiny_config) -> None:
    ckpt = tmp_path / "run.npz"
    saved_run(ckpt, tiny_docs, tiny_config, steps=60, until=10)
    before = ckpt.read_bytes()
    done = run_command("train", "--resume", ckpt, "--save-every", 10, preexec_fn=limit_file_size(1000))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 5  # the saves at steps 20, 30, 40 and 50, then the final one
    assert all(line.startswith("cymicrogpt: warning: cannot write checkpoint") for line in lines[:4])
    assert_one_error_line(lines[4], f"cannot write checkpoint {ckpt}", "File too large", "left as it was")
    assert ckpt.read_bytes() == before  # intact: replaced atomically or not at all
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]


def assert_one_error_line_of(err: str, *fragments: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cymicrogpt: "), err
    assert all(fragment in lines[0] for fragment in fragments), err
    return lines[0]
