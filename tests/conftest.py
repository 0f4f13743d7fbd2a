"""Shared fixtures: the names dataset, the golden values, a tiny corpus and model, and a
thread switch-interval setting.  Ctrl-C is given back to the suite if it started with it
ignored (see below).

The names-based tests use makemore's names.txt as shipped in the installed package
(cymicrogpt.data.default_dataset()), so they run wherever cymicrogpt is installed, with no
network and nothing beside the checkout; the environment variable CYMICROGPT_NAMES names
another copy to use instead.  Either must be that exact names.txt, else those tests fail:
their golden values hold only for it.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping

import pytest

from cymicrogpt.config import GPTConfig
from cymicrogpt.data import NAMES_SHA256, DataError, default_dataset, sha256_of

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NAMES_ENV = "CYMICROGPT_NAMES"

# A suite started in the background by a shell without job control (`pytest ... &` in a
# script) inherits SIGINT ignored, as do the commands the tests start; `cymicrogpt` then
# keeps it ignored, as a background job should, and every Ctrl-C test would see nothing
# happen.  Those tests are about Ctrl-C: give it back to Python's default handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Likewise SIGHUP for a suite started under `nohup`: the commands would inherit it ignored
# and keep it so (as they should), and the hang-up tests would see no stop.
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

def benchmark_script(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (the check scripts' input constructors, for the tests)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def avx2_build(name: str) -> ModuleType:
    """cymicrogpt.<name>, an AVX2 build (with FMA), where it is built and this CPU runs it, else skip."""
    from cymicrogpt import _adam

    if not _adam.cpu_has_avx2_fma():
        pytest.skip("this CPU (or OS) does not run AVX2 and FMA code")
    try:
        return importlib.import_module(f"cymicrogpt.{name}")
    except ImportError:
        pytest.skip("the AVX2 build is not here (not x86-64, or a debug build)")


TINY_DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "zoe", "liam", "noah", "eli"]


class UnusableNames(Exception):
    """The names.txt to use is missing, unreadable or not the expected file."""


def find_names(environ: Mapping[str, str], packaged: Callable[[], Path] = default_dataset,
               sha256: str = NAMES_SHA256) -> Path:
    """makemore's names.txt: the file $CYMICROGPT_NAMES names if set, else packaged()."""
    named = environ.get(NAMES_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise UnusableNames(f"{NAMES_ENV}={named} is not a file")
        return checked(path, f"{NAMES_ENV}={named}", sha256)
    try:
        return packaged()  # default_dataset() checks the sha256 itself
    except DataError as exc:
        raise UnusableNames(str(exc)) from None


def checked(path: Path, origin: str, sha256: str) -> Path:
    try:
        got = sha256_of(path.read_bytes())
    except OSError as exc:
        raise UnusableNames(f"cannot read {origin}: {exc.strerror or exc}") from None
    if got != sha256:
        raise UnusableNames(f"{origin} is not makemore's names.txt (sha256 {got}, expected "
                            f"{sha256}); the golden values hold only for that file")
    return path


@pytest.fixture(scope="session")
def names_path() -> Path:
    """makemore's names.txt (see the module docstring for which copy)."""
    try:
        path, problem = find_names(os.environ), ""
    except UnusableNames as exc:
        path, problem = None, str(exc)
    if problem:  # failed outside the except block: one line, no chained traceback
        pytest.fail(problem, pytrace=False)
    return path


def libm_reproduces(fingerprint: list) -> bool:
    """Whether this process's libm gives the recorded [function, arguments, result] triples
    of a golden file's libm_fingerprint (tests/fixtures/record.py), float ==."""
    return all(getattr(math, name)(*args) == result for name, args, result in fingerprint)


def golden_for_this_libm(name: str) -> dict:
    """The golden file `name` of tests/fixtures/ or a twin of it recorded under another
    build of libm (STEM.*.json beside STEM.json: microgpt's losses depend on libm's last
    bits, and glibc picks its FMA or its plain build of exp, log and pow by CPU): the one
    whose fingerprint this libm reproduces.  If none does, the test is skipped: microgpt.py's
    own results on this machine are not among those recorded."""
    path = FIXTURES / name
    candidates = [path, *sorted(FIXTURES.glob(f"{path.stem}.*.json"))]
    records = [json.loads(candidate.read_text()) for candidate in candidates]
    for record in records:
        if libm_reproduces(record["libm_fingerprint"]):
            return record
    pytest.skip(f"{name}: recorded with {len(records)} builds of libm, and this machine's exp, log or pow "
                "rounds differently from each, so microgpt.py's own losses differ here")


@pytest.fixture(scope="session")
def golden() -> Callable[[str], dict]:
    """Loads a golden file of tests/fixtures/: values from running the seed's microgpt.py
    unchanged (each file's "about" field says how), recorded with this machine's libm."""
    return golden_for_this_libm


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
