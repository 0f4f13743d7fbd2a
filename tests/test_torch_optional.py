"""torch is optional: ``import cymicrogpt`` (and training, sampling, the CLI) never imports it,
and without it ``Run.to_torch()`` says in one line how to install the CPU build.

Each check runs in a fresh interpreter, whose sys.modules shows what was imported; "without
torch" is simulated with ``sys.modules["torch"] = None`` (``import torch`` then raises
ImportError, as when it is not installed), so these tests run whether torch is installed or not.
"""
from __future__ import annotations

import subprocess
import sys

CPU_ONLY = "pip install torch --index-url https://download.pytorch.org/whl/cpu"  # PyTorch's documented CPU install


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_cymicrogpt_never_imports_torch():
    done = python(
        "import sys\n"
        "import cymicrogpt\n"
        "run = cymicrogpt.train(['emma', 'olivia', 'ava'], steps=2)\n"
        "run.sample(2)\n"
        "import cymicrogpt.cli, cymicrogpt.ladder, cymicrogpt.ladder.bench, cymicrogpt.examples\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_to_torch_without_torch_says_how_to_install_it():
    done = python(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "import cymicrogpt\n"
        "run = cymicrogpt.train(['emma', 'olivia', 'ava'], steps=1)\n"
        "try:\n"
        "    run.to_torch()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    line, = done.stdout.splitlines()  # one line
    assert line.startswith("torch is not installed or does not import") and f"`{CPU_ONLY}`" in line


def test_the_example_without_torch_is_one_line():
    done = python(
        "import sys, runpy\n"
        "sys.modules['torch'] = None\n"
        "sys.argv = ['continue_in_torch', 'run.npz']\n"
        "runpy.run_module('cymicrogpt.examples.continue_in_torch', run_name='__main__')\n"
    )
    assert done.returncode == 1
    assert done.stdout == ""
    line, = done.stderr.splitlines()
    assert line.startswith("continue_in_torch: error: torch is not installed") and CPU_ONLY in line
