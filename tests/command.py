"""Running the installed ``cymicrogpt`` command in a subprocess, as a user does."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--n-embd", "8", "--block-size", "8", "--n-head", "2"]  # a tiny model: fast steps


def command() -> str:
    """The console script installed beside this interpreter (or on PATH)."""
    for name in ("cymicrogpt", "cymicrogpt.exe"):
        script = Path(sys.executable).with_name(name)
        if script.exists():
            return str(script)
    found = shutil.which("cymicrogpt")
    if found is None:
        pytest.skip("the cymicrogpt command is not installed (pip install . puts it beside python)")
    return found


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def run_command(*args, timeout: float = 120, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([command(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or environment(), **kwargs)


def start_command(*args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([command(), *map(str, args)], text=True, env=env or environment(), **kwargs)


def samples_of(out: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("sample ")]


def assert_one_error_line(err: str, *fragments: str) -> str:
    """`err` is exactly one `cymicrogpt: error: ...` line holding every fragment."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cymicrogpt: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
