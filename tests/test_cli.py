"""The command line: microgpt's output, saving and resuming, Ctrl-C, and one-line errors."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cymicrogpt.cli as cli
from cymicrogpt.data import DataError
from cymicrogpt.progress import Progress, format_duration
from cymicrogpt.training import Run, Training
from command import TINY, assert_one_error_line, run_command, samples_of



def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- microgpt's run ------------------------------------------------------------------------
def test_default_run_prints_microgpt_output(capsys, names_path: Path, monkeypatch, golden) -> None:
    monkeypatch.setattr(cli, "default_dataset", lambda: names_path)
    golden = golden("seed_default_30steps.json")
    code, out, err = run_cli(capsys, "train", "--steps", 30, "--samples", 10)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == ["num docs: 32033", "vocab size: 27", "num params: 4192"]
    assert lines[-11] == "--- inference (new, hallucinated names) ---"
    assert lines[-10:] == [f"sample {i + 1:2d}: {name}" for i, name in enumerate(golden["samples"])]
    assert f"step   30 /   30 | loss {golden['losses'][-1]:.4f}" in out


def test_train_save_then_sample(capsys, tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    code, out, err = run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 20, *TINY,
                             "--save", ckpt, "--samples", 6, "--temperature", 0.8)
    assert (code, err) == (0, "")
    assert out.startswith("num docs: 10\nvocab size: ")
    trained = samples_of(out)
    assert len(trained) == 6
    run = Run.load(ckpt)
    assert (run.step, run.num_steps, len(run.losses)) == (20, 20, 20)
    # The checkpoint is saved before sampling: `sample` continues the same random stream.
    code, out, err = run_cli(capsys, "sample", "--checkpoint", ckpt, "--num", 6, "--temperature", 0.8)
    assert (code, err) == (0, "")
    assert samples_of(out) == trained
    assert out.splitlines()[0] == f"sample  1: {trained[0]}"


def test_sample_with_seed_is_repeatable(capsys, tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    assert run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 5, *TINY, "--save", ckpt)[0] == 0
    first = run_cli(capsys, "sample", "--checkpoint", ckpt, "--seed", 3, "--num", 5)
    second = run_cli(capsys, "sample", "--checkpoint", ckpt, "--seed", 3, "--backend", "python", "--num", 5)
    assert first == second
    assert len(samples_of(first[1])) == 5


def test_samples_zero(capsys, tiny_data_file: Path) -> None:
    code, out, _ = run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 3, *TINY, "--samples", 0)
    assert code == 0 and samples_of(out) == []


def test_save_every(capsys, tmp_path: Path, tiny_data_file: Path, monkeypatch) -> None:
    saved_at = []

    def recording_save(run, path) -> None:
        saved_at.append(run.step)
        real_save(run, path)

    real_save = Run.save
    monkeypatch.setattr(Run, "save", recording_save)
    (tmp_path / "ckpt").mkdir()
    ckpt = tmp_path / "ckpt" / "run.npz"
    code, _, err = run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 10, *TINY,
                           "--save", ckpt, "--save-every", 3)
    assert (code, err) == (0, "")
    assert saved_at == [3, 6, 9, 10]
    assert Run.load(ckpt).step == 10
    assert os.listdir(tmp_path / "ckpt") == ["run.npz"]


# --- interrupt and resume ------------------------------------------------------------------
def interrupt_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI's training receive a real SIGINT (Ctrl-C) right after `step`."""

    class InterruptingProgress(cli.Progress):
        def update(self, current: int, loss: float) -> None:
            super().update(current, loss)
            if current == step:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(cli, "Progress", InterruptingProgress)


@pytest.mark.parametrize("backend", ["cython", "python"])
def test_interrupt_then_resume_equals_uninterrupted(capsys, tmp_path: Path, tiny_data_file: Path,
                                                    monkeypatch, backend: str) -> None:
    common = ["--data", tiny_data_file, "--steps", 16, *TINY, "--backend", backend, "--samples", 5]
    code, full_out, _ = run_cli(capsys, "train", *common, "--save", tmp_path / "full.npz")
    assert code == 0

    part = tmp_path / "part.npz"
    with monkeypatch.context() as patch:
        interrupt_at(6, patch)
        code, out, err = run_cli(capsys, "train", *common, "--save", part)
    assert code == 130
    assert "interrupted by SIGINT at step 6 / 16" in err and f"saved to {part}" in err
    assert "Traceback" not in err and samples_of(out) == []
    assert Run.load(part).step == 6

    other = "python" if backend == "cython" else "cython"  # engines are bit-identical
    code, out, err = run_cli(capsys, "train", "--resume", part, "--backend", other, "--save", tmp_path / "end.npz",
                             "--samples", 5)
    assert (code, err) == (0, "")
    assert f"resuming {part} at step 6 / 16" in out
    assert Run.load(tmp_path / "end.npz").losses == Run.load(tmp_path / "full.npz").losses
    assert samples_of(out) == samples_of(full_out)


def test_interrupt_without_save(capsys, tiny_data_file: Path, monkeypatch) -> None:
    interrupt_at(2, monkeypatch)
    code, _, err = run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 10, *TINY)
    assert code == 130
    assert "nothing saved" in err and "--save" in err


def test_a_signal_between_due_steps_stops_at_the_next_one(capsys, tmp_path: Path, tiny_data_file: Path,
                                                          monkeypatch) -> None:
    # The CLI trains from one due step to the next (pacing.py): a signal that arrives in
    # between is seen at the next one (a progress line every 20 steps here, or sooner by
    # the clock), and that run resumes to the uninterrupted one's very losses.
    common = ["--data", tiny_data_file, "--steps", 400, *TINY, "--backend", "fused", "--samples", 2]
    assert run_cli(capsys, "train", *common, "--save", tmp_path / "full.npz")[0] == 0
    train_step = Training.train_step

    def interrupted_after_123(self, tokens):
        loss = train_step(self, tokens)
        if self.step == 123:
            signal.raise_signal(signal.SIGINT)
        return loss

    part = tmp_path / "part.npz"
    with monkeypatch.context() as patch:
        patch.setattr(Training, "train_step", interrupted_after_123)
        code, _, err = run_cli(capsys, "train", *common, "--save", part)
    stopped = Run.load(part).step
    assert code == 130 and f"interrupted by SIGINT at step {stopped} / 400" in err
    assert 123 <= stopped <= 140
    assert run_cli(capsys, "train", "--resume", part, "--save", tmp_path / "end.npz")[0] == 0
    assert Run.load(tmp_path / "end.npz").losses == Run.load(tmp_path / "full.npz").losses


def test_resume_accepts_matching_options(capsys, tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    args = ["--data", tiny_data_file, "--steps", 4, *TINY, "--lr", 0.01, "--seed", 42]
    assert run_cli(capsys, "train", *args, "--save", ckpt)[0] == 0
    code, out, err = run_cli(capsys, "train", *args, "--resume", ckpt, "--samples", 2)
    assert (code, err) == (0, "")
    assert len(samples_of(out)) == 2


@pytest.mark.parametrize(
    "option, value",
    [("--steps", "99"), ("--n-layer", "2"), ("--n-embd", "16"), ("--block-size", "4"), ("--n-head", "4"),
     ("--lr", "0.5"), ("--seed", "1")],
)
def test_resume_rejects_conflicting_options(capsys, tmp_path: Path, tiny_data_file: Path, option, value) -> None:
    ckpt = tmp_path / "run.npz"
    assert run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 4, *TINY, "--save", ckpt)[0] == 0
    code, out, err = run_cli(capsys, "train", "--resume", ckpt, option, value)
    assert (code, out) == (2, "")
    assert_one_error_line(err, option, "conflicts with the checkpoint")


def test_resume_rejects_other_data(capsys, tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    assert run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 4, *TINY, "--save", ckpt)[0] == 0
    other = tmp_path / "other.txt"
    other.write_text("xavier\nyolanda\n")
    code, _, err = run_cli(capsys, "train", "--resume", ckpt, "--data", other)
    assert code == 2
    assert_one_error_line(err, "--data", "other documents")


# --- bad arguments: exit 2, one line -------------------------------------------------------
@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "required"),
        (["fly"], "invalid choice"),
        (["train", "--bogus"], "--bogus"),
        (["train", "--steps", "0"], "--steps"),
        (["train", "--steps", "-3"], "--steps"),
        (["train", "--steps", "ten"], "--steps"),
        (["train", "--steps", "1.5"], "--steps"),
        (["train", "--temperature", "0"], "--temperature"),
        (["train", "--temperature", "-1"], "--temperature"),
        (["train", "--temperature", "nan"], "--temperature"),
        (["train", "--temperature", "inf"], "--temperature"),
        (["train", "--backend", "fortran"], "--backend"),
        (["train", "--n-embd", "16", "--n-head", "3"], "divisible"),
        (["train", "--n-layer", "0"], "--n-layer"),
        (["train", "--n-embd", "-8"], "--n-embd"),
        (["train", "--block-size", "0"], "--block-size"),
        (["train", "--n-head", "0"], "--n-head"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr", "-0.01"], "--lr"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--seed", "x"], "--seed"),
        (["train", "--samples", "-1"], "--samples"),
        (["train", "--save-every", "0", "--save", "x.npz"], "--save-every"),
        (["train", "--save-every", "5"], "--save"),
        (["train", "--save", "/nonexistent/dir/run.npz"], "does not exist"),
        (["train", "--save", "."], "directory"),
        (["sample"], "--checkpoint"),
        (["sample", "--checkpoint", "x.npz", "--num", "0"], "--num"),
        (["sample", "--checkpoint", "x.npz", "--temperature", "0"], "--temperature"),
    ],
)
def test_bad_argument(capsys, args: list[str], fragment: str) -> None:
    code, out, err = run_cli(capsys, *args)
    assert (code, out) == (2, "")
    assert_one_error_line(err, fragment)


def test_help(capsys) -> None:
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and "--save-every" in out


# --- data and checkpoint errors: exit 1, one line -------------------------------------------
def test_missing_data_file(capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "none.txt")
    assert (code, out) == (1, "")
    assert_one_error_line(err, "not found", "none.txt")


def test_default_dataset_unusable(capsys, monkeypatch) -> None:
    def damaged() -> Path:
        raise DataError("the packaged dataset is damaged (a stand-in for this test)")

    monkeypatch.setattr(cli, "default_dataset", damaged)
    code, _, err = run_cli(capsys, "train", "--steps", 5)
    assert code == 1
    assert_one_error_line(err, "damaged")


def test_empty_data_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n")
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "empty.txt")
    assert code == 1
    assert_one_error_line(err, "no documents")


@pytest.mark.parametrize("command", ["sample --checkpoint", "train --resume"])
def test_bad_checkpoint(capsys, tmp_path: Path, command: str) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, *command.split(), tmp_path / "bad.npz")
    assert code == 1
    assert_one_error_line(err, "bad.npz")
    code, _, err = run_cli(capsys, *command.split(), tmp_path / "missing.npz")
    assert code == 1
    assert_one_error_line(err, "not found", "missing.npz")


def test_failed_write(capsys, tmp_path: Path, tiny_data_file: Path, monkeypatch) -> None:
    def disk_full(run, path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Run, "save", disk_full)
    code, _, err = run_cli(capsys, "train", "--data", tiny_data_file, "--steps", 2, *TINY,
                           "--save", tmp_path / "run.npz")
    assert code == 1
    assert_one_error_line(err, "cannot write checkpoint", "No space left on device")


# --- as a program --------------------------------------------------------------------------
def test_program_errors_have_no_traceback(tmp_path: Path) -> None:
    bad_arg = run_command("train", "--steps", "0")
    assert bad_arg.returncode == 2 and bad_arg.stdout == ""
    assert bad_arg.stderr.splitlines() == ["cymicrogpt: error: argument --steps: must be a positive integer, got '0'"]
    missing = run_command("train", "--data", tmp_path / "none.txt")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert len(missing.stderr.splitlines()) == 1


def test_program_train_and_sample(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    trained = run_command("train", "--data", tiny_data_file, "--steps", 10, *TINY, "--save", ckpt, "--samples", 3)
    assert (trained.returncode, trained.stderr) == (0, "")
    sampled = run_command("sample", "--checkpoint", ckpt, "--num", 3)
    assert (sampled.returncode, sampled.stderr) == (0, "")
    assert samples_of(sampled.stdout) == samples_of(trained.stdout)


def test_python_dash_m_is_the_same_command(tiny_data_file: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cymicrogpt", "train", "--data", str(tiny_data_file), "--steps", "3",
                           *TINY, "--samples", "2"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert samples_of(done.stdout) == samples_of(run_command("train", "--data", tiny_data_file, "--steps", 3, *TINY,
                                                             "--samples", 2).stdout)


# --- the progress line ---------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5  # every reading is half a second later
        return self.now


def test_progress_in_a_log_is_short() -> None:
    stream = io.StringIO()
    progress = Progress(1000, stream=stream, is_tty=False, clock=FakeClock())
    for step in range(1, 1001):
        progress.update(step, 2.5)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("step 1000 / 1000 | loss 2.5000 | ")
    assert "steps/s" in lines[0] and "ETA" in lines[0]


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.mark.parametrize("is_tty", [False, True])
def test_progress_flushes_only_what_it_wrote(is_tty: bool) -> None:
    # update() runs after every step (a few microseconds each on the compiled backends):
    # a flush per step, with nothing to flush, cost ~0.2 us of them
    stream = CountingStream()
    progress = Progress(1000, stream=stream, is_tty=is_tty, clock=lambda: 0.0)  # a terminal: no time passes
    for step in range(1, 1001):
        progress.update(step, 2.5)
    lines_written = stream.getvalue().count("\r" if is_tty else "\n")
    assert stream.flushes == lines_written == (2 if is_tty else 20)  # a terminal: the first and the last


@pytest.mark.parametrize("total, start", [(1000, 0), (37, 0), (30, 10), (5, 0), (1, 0)])
def test_a_log_updated_only_at_its_due_steps_prints_the_same_lines(total: int, start: int) -> None:
    # the CLI calls update() only where next_due (or its clock) says, not after every step
    every_step, due_steps = io.StringIO(), io.StringIO()
    progress = Progress(total, stream=every_step, start=start, is_tty=False, clock=lambda: 1.0)
    for step in range(start + 1, total + 1):
        progress.update(step, 2.5)
    progress, step = Progress(total, stream=due_steps, start=start, is_tty=False, clock=lambda: 1.0), start
    while step < total:
        step = progress.next_due(step)
        progress.update(step, 2.5)
    assert due_steps.getvalue() == every_step.getvalue() != ""


def test_progress_on_a_terminal_redraws_one_line() -> None:
    stream = io.StringIO()
    progress = Progress(30, stream=stream, start=10, is_tty=True, clock=FakeClock())
    for step in range(11, 31):
        progress.update(step, 1.25)
    progress.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 20  # the clock is slow enough to redraw every step
    assert text.rstrip().rsplit("\r", 1)[1].startswith("step   30 /   30 | loss 1.2500")


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (185, "3m05s"), (7620, "2h07m")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- download -------------------------------------------------------------------------------
def test_download_prints_the_verified_dataset_path(capsys, tmp_path: Path, monkeypatch) -> None:
    cached = tmp_path / "cache" / "names.txt"
    monkeypatch.setattr(cli, "default_dataset", lambda: cached)
    code, out, err = run_cli(capsys, "download")
    assert (code, out, err) == (0, f"{cached}\n", "")


def test_download_with_a_damaged_dataset_is_one_line(capsys, monkeypatch) -> None:
    def damaged():
        raise DataError("the packaged dataset is damaged (a stand-in for this test); reinstall cymicrogpt")

    monkeypatch.setattr(cli, "default_dataset", damaged)
    code, _, err = run_cli(capsys, "download")
    assert code == 1
    assert_one_error_line(err, "damaged")
