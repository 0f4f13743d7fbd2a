"""An output that cannot encode a sample still shows it (issue 17, item 7).

Under a legacy Windows code page or ``PYTHONIOENCODING=ascii``, a sample holding "ë" could
not be written, and a lone surrogate (a checkpoint's vocabulary may hold one: the API
takes any str) cannot be written in any encoding.  The UnicodeEncodeError passed for a
closed stdout: every later sample was dropped silently, with exit code 141 (0 with
--save).  What cannot be encoded is now written as a backslash escape, on stdout and
stderr alike; 141 stays reserved for a reader that left.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cymicrogpt as mg
from command import TINY, environment, run_command, samples_of

NON_ASCII = ["zoë", "josé", "łukasz", "ëé", "ł"]  # every letter of the last two is non-ASCII


def unescaped(sample: str) -> str:
    return sample.encode("ascii").decode("unicode_escape")


def test_non_ascii_samples_on_an_ascii_stdout_are_escaped(tmp_path: Path) -> None:
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NON_ASCII) + "\n", encoding="utf-8")
    for save in ([], ["--save", str(tmp_path / "run.npz")]):
        done = run_command("train", "--data", data, "--steps", 5, *TINY, "--samples", 20, *save,
                           env=environment(PYTHONIOENCODING="ascii"))
        assert (done.returncode, done.stderr) == (0, ""), save
        samples = samples_of(done.stdout)
        assert len(samples) == 20
        assert any("\\x" in sample or "\\u" in sample for sample in samples)  # "ë" is "\xeb", "ł" is "\u0142"
        assert set("".join(map(unescaped, samples))) <= set("".join(NON_ASCII))


def test_a_lone_surrogate_in_the_vocabulary_is_escaped(tmp_path: Path) -> None:
    """No encoding can write "\\ud800" (UTF-8 included), whatever the locale."""
    ckpt = tmp_path / "run.npz"
    mg.train(["\ud800\ud800", "\ud800"], config=mg.GPTConfig(n_embd=8, block_size=8, n_head=2), steps=2).save(ckpt)
    done = run_command("sample", "--checkpoint", ckpt, "--num", 20)
    assert (done.returncode, done.stderr) == (0, "")
    samples = samples_of(done.stdout)
    assert len(samples) == 20
    assert "\\ud800" in samples and all(set(unescaped(sample)) <= {"\ud800"} for sample in samples)


def test_an_error_line_that_stderr_cannot_encode_is_escaped(tmp_path: Path) -> None:
    """Python's own stderr escapes what it cannot encode, but a sys.stderr replaced by a
    strict one made print_error drop the line (and point descriptor 2 at /dev/null)."""
    missing = tmp_path / "zoë.txt"
    code = f"""if True:
        import sys
        from cymicrogpt import launch
        sys.stderr = open(2, "w", encoding="ascii", errors="strict", closefd=False)
        sys.exit(launch.main(["train", "--data", {str(missing)!r}]))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=environment())
    escaped = str(missing).encode("ascii", "backslashreplace").decode("ascii")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"cymicrogpt: error: data file not found: {escaped}\n"
