"""Shared fixtures: the names dataset, the golden values, a tiny corpus and model, and a
thread switch-interval setting.  Ctrl-C is given back to the suite if it started with it
ignored (see below).

makemore's names.txt is never committed.  The tests look for it, in order:
  1. the file named by the environment variable CYMICROGPT_NAMES;
  2. the package's download cache (where `cymicrogpt train` keeps it, cymicrogpt.data);
  3. ../shared/data/names.txt beside the repository (the developers' machines).
Without it, the tests that need it are skipped, and the skip reason (pytest prints it:
pyproject.toml sets -rs) says how to get it.  A file that is found but is not that exact
names.txt fails them instead: their golden values hold only for it.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional

import pytest

from cymicrogpt.config import GPTConfig
from cymicrogpt.data import NAMES_SHA256, cached_dataset_path, sha256_of

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMES_PATH = REPO_ROOT.parent / "shared" / "data" / "names.txt"  # the developers' copy, beside the repository
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES_ENV = "CYMICROGPT_NAMES"

# A suite started in the background by a shell without job control (`pytest ... &` in a
# script) inherits SIGINT ignored, as do the commands the tests start; `cymicrogpt` then
# keeps it ignored, as a background job should, and every Ctrl-C test would see nothing
# happen.  Those tests are about Ctrl-C: give it back to Python's default handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TINY_DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "zoe", "liam", "noah", "eli"]


class UnusableNames(Exception):
    """A names.txt was named or found, but it is missing or not the expected file."""


def find_names(environ: Mapping[str, str], cached: Path, shared: Path,
               sha256: str = NAMES_SHA256) -> Optional[Path]:
    """makemore's names.txt, looked for in the module docstring's order; None if absent."""
    named = environ.get(NAMES_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise UnusableNames(f"{NAMES_ENV}={named} is not a file")
        return checked(path, f"{NAMES_ENV}={named}", sha256)
    if cached.is_file():
        try:
            if sha256_of(cached.read_bytes()) == sha256:
                return cached
        except OSError:
            pass  # an unreadable cache, like one with another hash, the package would replace
    if shared.is_file():
        return checked(shared, str(shared), sha256)
    return None


def checked(path: Path, origin: str, sha256: str) -> Path:
    try:
        got = sha256_of(path.read_bytes())
    except OSError as exc:
        raise UnusableNames(f"cannot read {origin}: {exc.strerror or exc}") from None
    if got != sha256:
        raise UnusableNames(f"{origin} is not makemore's names.txt (sha256 {got}, expected "
                            f"{sha256}); the golden values hold only for that file")
    return path


def how_to_get_names(cached: Path, shared: Path) -> str:
    return ("makemore's names.txt not found; to run these tests, download it once with "
            "`python -c \"from cymicrogpt.data import default_dataset; print(default_dataset())\"` "
            f"(it goes to {cached}), or set {NAMES_ENV}=/path/to/names.txt, or place it at {shared}")


@pytest.fixture(scope="session")
def names_path() -> Path:
    """makemore's names.txt (see the module docstring for where it is looked for)."""
    try:
        path, problem = find_names(os.environ, cached_dataset_path(), NAMES_PATH), ""
    except UnusableNames as exc:
        path, problem = None, str(exc)
    if problem:  # failed outside the except block: one line, no chained traceback
        pytest.fail(problem, pytrace=False)
    if path is None:
        pytest.skip(how_to_get_names(cached_dataset_path(), NAMES_PATH))
    return path


@pytest.fixture(scope="session")
def golden() -> Callable[[str], dict]:
    """Loads a golden file of tests/fixtures/: values from running the seed's microgpt.py
    unchanged (each file's "about" field says how)."""
    return lambda name: json.loads((FIXTURES / name).read_text())


@pytest.fixture
def frequent_switches():
    """Hand the GIL over as often as possible, to interleave threads finely."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def tiny_docs() -> list[str]:
    return list(TINY_DOCS)


@pytest.fixture
def tiny_config() -> GPTConfig:
    return GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)


@pytest.fixture
def tiny_data_file(tmp_path: Path, tiny_docs: list[str]) -> Path:
    """The tiny corpus as a text file, one document per line."""
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(tiny_docs) + "\n", encoding="utf-8")
    return path
