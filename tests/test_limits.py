"""Unbounded or impossible sizes are refused up front (issue 8, item 6).

Counts are checked against what a run and its checkpoint (int64 fields) can hold before
anything is read or trained; data files must be regular files of at most
``MAX_DATA_BYTES``; a checkpoint's members are checked (zip entry, then ``.npy`` header)
before any data is read, and members the format does not define are never read at all.
"""
from __future__ import annotations

import io
import os
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cymicrogpt.data as data
from cymicrogpt.checkpoint import CheckpointError, state_arrays
from cymicrogpt.checks import COUNT_MAX
from cymicrogpt.data import DataError, load_docs
from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, run_command

BIG = str(10**20)  # the issue's --steps


# --- counts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["train", "--steps", BIG], ["train", "--samples", BIG], ["train", "--save-every", BIG, "--save", "x.npz"],
    ["train", "--n-layer", BIG], ["train", "--n-embd", BIG], ["train", "--block-size", BIG], ["train", "--n-head", BIG],
    ["sample", "--checkpoint", "x.npz", "--num", BIG], ["bench", "--steps", BIG], ["bench", "--ref-steps", BIG],
])
def test_count_beyond_int64_is_refused_up_front(args: list[str]) -> None:
    done = run_command(*args)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, args[-1 if args[-1] != "x.npz" else -3], f"at most {COUNT_MAX}")


def test_largest_step_count_is_saved_and_loaded(tmp_path: Path, tiny_docs, tiny_config) -> None:
    run = start_run(tiny_docs, config=tiny_config, steps=COUNT_MAX)
    run.train(until=2)
    run.save(tmp_path / "run.npz")
    assert Run.load(tmp_path / "run.npz").num_steps == COUNT_MAX
    with pytest.raises(ValueError, match="at most"):
        start_run(tiny_docs, config=tiny_config, steps=COUNT_MAX + 1)


def test_model_too_large_is_refused_before_building_it(tiny_data_file: Path) -> None:
    done = run_command("train", "--data", tiny_data_file, "--n-embd", 10**9, "--n-head", 1, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, "weights", "at most")


def test_seed_up_to_python_int_limit_round_trips(tmp_path: Path, tiny_data_file: Path) -> None:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if not limit:
        pytest.skip("this Python converts integers of any length")
    seed = "9" * limit
    ckpt = tmp_path / "run.npz"
    done = run_command("train", "--data", tiny_data_file, "--steps", 2, *TINY, "--seed", seed, "--save", ckpt)
    assert (done.returncode, done.stderr) == (0, "")
    assert str(Run.load(ckpt).seed) == seed
    too_long = run_command("train", "--data", tiny_data_file, "--seed", seed + "9")
    assert too_long.returncode == 2
    assert_one_error_line(too_long.stderr, "--seed", f"{limit + 1} digits", str(limit))
    with pytest.raises(ValueError, match=f"more than {limit} digits"):
        start_run(["ab"], steps=1, seed=int(seed) * 10 + 9)


# --- data files ------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_data_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "pipe", "dev-zero": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes: reading it would block forever
    if not path.exists():
        pytest.skip(f"{path} does not exist here")
    done = run_command("train", "--data", path, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, str(path), "not a regular file")


def test_data_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with open(path, "wb") as fh:  # sparse: no disk space, no time
        fh.truncate(data.MAX_DATA_BYTES + 1)
    done = run_command("train", "--data", path)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, str(path), f"larger than {data.MAX_DATA_BYTES:,} bytes")
    with pytest.raises(DataError, match="larger than"):
        load_docs(path)


def test_data_at_the_cap_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MAX_DATA_BYTES", 12)
    path = tmp_path / "small.txt"
    path.write_bytes(b"emma\nolivia\n")  # exactly 12 bytes
    assert load_docs(path) == ["emma", "olivia"]
    path.write_bytes(b"emma\nolivia\nx")
    with pytest.raises(DataError, match="larger than 12 bytes"):
        load_docs(path)


# --- forged checkpoints ---------------------------------------------------------------------
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def forge(path: Path, arrays: dict, replace: dict | None = None, extra: dict | None = None) -> Path:
    """A checkpoint of `arrays`, members stored as np.savez stores them, except `replace`
    (name -> (bytes, compress_type)) and the `extra` members (same form)."""
    replace, extra = replace or {}, extra or {}
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            content, compression = replace.get(name, (npy_bytes(array), zipfile.ZIP_STORED))
            archive.writestr(zipfile.ZipInfo(name + ".npy"), content, compress_type=compression, compresslevel=1)
        for name, (content, compression) in extra.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            with archive.open(info, "w", force_zip64=True) as member:
                if isinstance(content, int):  # that many zero bytes, deflated as they are written
                    for _ in range(content // 2**20):
                        member.write(bytes(2**20))
                else:
                    member.write(content)
    return path


@pytest.fixture
def arrays(tiny_docs, tiny_config) -> dict:
    run = start_run(tiny_docs, config=tiny_config, steps=6)
    run.train(until=3)
    return state_arrays(run.state())


def load_peak(path: Path):
    """Run.load(path)'s result (or exception) and the peak memory it allocated."""
    tracemalloc.start()
    try:
        try:
            result = Run.load(path)
        except CheckpointError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_extra_members_are_never_read(tmp_path: Path, arrays) -> None:
    """The issue's case: a small file whose extra compressed member inflates hugely."""
    bomb = 256 * 2**20
    path = forge(tmp_path / "bomb.npz", arrays, extra={"zeros.npy": (bomb, zipfile.ZIP_DEFLATED)})
    assert path.stat().st_size < bomb // 100
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("zeros.npy").file_size == bomb  # a real bomb, if anyone read it
    run, peak = load_peak(path)
    assert not isinstance(run, Exception) and run.step == 3
    assert peak < bomb // 8


def test_compressed_defined_member_is_refused_before_inflating(tmp_path: Path, arrays) -> None:
    huge = np.zeros(32 * 2**20)  # 256 MiB of float64 zeros, deflated to ~1 MiB
    forged = forge(tmp_path / "forged.npz", arrays,
                   replace={"losses": (npy_bytes(huge), zipfile.ZIP_DEFLATED)})
    assert forged.stat().st_size < huge.nbytes // 100
    del huge
    error, peak = load_peak(forged)
    assert isinstance(error, CheckpointError) and "'losses' is a compressed zip member" in str(error)
    assert peak < 32 * 2**20


def test_header_claiming_a_huge_array_is_refused_before_reading(tmp_path: Path, arrays) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    forged = forge(tmp_path / "forged.npz", arrays, replace={"weights": (header.getvalue() + bytes(64),
                                                                         zipfile.ZIP_STORED)})
    error, peak = load_peak(forged)
    assert isinstance(error, CheckpointError)
    assert f"'weights' has {2**40} values, expected {len(arrays['weights'])}" in str(error)
    assert peak < 16 * 2**20


def test_member_longer_than_its_header_says_is_refused(tmp_path: Path, arrays) -> None:
    forged = forge(tmp_path / "forged.npz", arrays,
                   replace={"adam_v": (npy_bytes(arrays["adam_v"]) + bytes(80), zipfile.ZIP_STORED)})
    with pytest.raises(CheckpointError, match="'adam_v' holds .* bytes of data, its header says"):
        Run.load(forged)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
def test_checkpoint_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "ck.npz")
    for args in (["sample", "--checkpoint"], ["train", "--resume"]):
        done = run_command(*args, tmp_path / "ck.npz", timeout=60)
        assert done.returncode == 1
        assert_one_error_line(done.stderr, "a FIFO", "not a regular file")
