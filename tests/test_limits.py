"""Unbounded or impossible sizes are refused up front (issue 8, item 6; issue 17, items 6 and 11).

Counts are checked against what a run and its checkpoint (int64 fields) can hold before
anything is read or trained, and a model's weight count is computed from its numbers
before any layout is built; data files must be regular files of at most
``MAX_DATA_BYTES``; a checkpoint's members are checked (zip entry, then ``.npy`` header)
before any data is read, and members the format does not define are never read at all.
"""
from __future__ import annotations

import io
import itertools
import os
import struct
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cymicrogpt.data as data
from cymicrogpt.checkpoint import CheckpointError, state_arrays
from cymicrogpt.checks import COUNT_MAX
from cymicrogpt.config import MIN_VOCAB_SIZE, PARAMS_MAX, GPTConfig
from cymicrogpt.data import DataError, load_docs
from cymicrogpt.params import num_params, state_dict_layout
from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, environment, run_command

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


# --- model sizes: the weight count from the numbers, never from a layout built first ----------
def test_weight_count_from_the_numbers_matches_the_layout() -> None:
    for n_layer, n_head, head_dim, block_size, vocab_size in itertools.product(
            (1, 2, 5), (1, 2, 3), (1, 2, 4), (1, 7, 16), (MIN_VOCAB_SIZE, 3, 27, 1000)):
        config = GPTConfig(n_layer=n_layer, n_embd=n_head * head_dim, block_size=block_size, n_head=n_head)
        assert config.num_params(vocab_size) == num_params(state_dict_layout(config, vocab_size)), config


# The widest context that fits with the smallest vocabulary, 1 layer 1 wide: wte and lm_head
# take 2 * MIN_VOCAB_SIZE weights, the layer 12, wpe the rest.
WIDEST_CONTEXT = PARAMS_MAX - 2 * MIN_VOCAB_SIZE - 12


def test_config_refuses_a_model_too_large_for_any_vocabulary() -> None:
    config = GPTConfig(n_layer=1, n_embd=1, block_size=WIDEST_CONTEXT, n_head=1)
    assert config.num_params(MIN_VOCAB_SIZE) == PARAMS_MAX
    with pytest.raises(ValueError, match=f"{PARAMS_MAX + 1} weights even with the smallest vocabulary"):
        GPTConfig(n_layer=1, n_embd=1, block_size=WIDEST_CONTEXT + 1, n_head=1)


MEMORY_CAP = 2**30  # bytes of address space: far more than refusing needs, far less than building


def _cap_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_capped(*args, **kwargs):
    """run_command with the child's address space capped at MEMORY_CAP (Linux): a command
    that builds what absurd numbers ask for fails fast instead of taking the machine's memory."""
    # One BLAS thread: each thread's reserved stack and buffers count against the cap too.
    env = environment(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return run_command(*args, env=env, timeout=60, preexec_fn=_cap_memory, **kwargs)


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS caps the address space on Linux")
# Each asks for billions of weights or more: building their layout alone took 6-22 s and up
# to 2.6 GB before running out of memory (train), drawing their weights more (bench).
ABSURD_SHAPES = [["--n-layer", 10**6], ["--n-layer", COUNT_MAX], ["--n-embd", 10**6, "--n-head", 1],
                 ["--n-embd", COUNT_MAX, "--n-head", 1], ["--block-size", 10**9], ["--block-size", COUNT_MAX]]


@linux_only
@pytest.mark.parametrize("command", ["train", "bench"])
@pytest.mark.parametrize("shape", ABSURD_SHAPES, ids=lambda shape: " ".join(map(str, shape)))
def test_absurd_model_shape_is_refused_from_its_numbers(tmp_path: Path, tiny_data_file: Path, command: str,
                                                        shape: list) -> None:
    done = run_capped(command, "--data", tiny_data_file, *shape, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert_one_error_line(done.stderr, "bad model shape", "weights even with the smallest vocabulary",
                          f"at most {PARAMS_MAX}")


@linux_only
def test_model_too_large_for_the_data_vocabulary_is_refused_before_any_weight(tiny_data_file: Path,
                                                                               tiny_docs) -> None:
    """A shape that fits the smallest vocabulary only: refused once the data is read, from
    its vocabulary and the numbers, before 2**31 weights are drawn."""
    vocab_size = len(set("".join(tiny_docs))) + 1  # its characters and BOS
    done = run_capped("train", "--data", tiny_data_file, "--n-layer", 1, "--n-embd", 1, "--n-head", 1,
                      "--block-size", WIDEST_CONTEXT)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert_one_error_line(done.stderr, f"would have {PARAMS_MAX + 2 * (vocab_size - MIN_VOCAB_SIZE)} weights",
                          f"at most {PARAMS_MAX}")


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


def npy_header(descr: str, length: int) -> bytes:
    """The .npy header of a 1-D array of `length` values of dtype `descr` (no data)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": (length,)})
    return header.getvalue()


def test_header_claiming_a_huge_array_is_refused_before_reading(tmp_path: Path, arrays) -> None:
    forged = forge(tmp_path / "forged.npz", arrays, replace={"weights": (npy_header("<f8", 2**40) + bytes(64),
                                                                         zipfile.ZIP_STORED)})
    error, peak = load_peak(forged)
    assert isinstance(error, CheckpointError)
    assert f"'weights' has {2**40} values, expected {len(arrays['weights'])}" in str(error)
    assert peak < 16 * 2**20


CLAIM = 15 * 2**28  # 3.75 GiB: the forged zip entry


def claim_size(path: Path, member: str, size: int) -> None:
    """Edit the zip at `path` so that `member`'s entry claims `size` bytes (compressed and
    not) in its local header and in the central directory, which is the one zipfile trusts."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(member).header_offset
    struct.pack_into("<II", data, local + 18, size, size)  # after signature, versions, flags, method, time, crc
    name = member.encode()
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name:  # the file name follows 46 bytes of fields
        central = data.index(b"PK\x01\x02", central + 1)
    struct.pack_into("<II", data, central + 20, size, size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["format", "docs_codes"])
def test_zip_entry_claiming_more_than_the_file_is_refused_before_reading(tmp_path: Path, arrays, member) -> None:
    """The issue's case: 'docs_codes' claims 3.75 GiB, its .npy header agrees, zipfile would
    allocate it all ("out of memory"); a claimed 'format' was reported as not a string."""
    header = npy_header("<u4", CLAIM // 4 - 32)
    assert len(header) == 128  # so header and data make exactly CLAIM bytes
    forged = forge(tmp_path / "forged.npz", arrays, replace={"docs_codes": (header + bytes(64), zipfile.ZIP_STORED)})
    claim_size(forged, member + ".npy", CLAIM)
    error, peak = load_peak(forged)
    assert isinstance(error, CheckpointError), error
    assert f"field {member!r}: its zip entry claims {CLAIM} bytes" in str(error)
    assert "the file is truncated or corrupt" in str(error)
    assert peak < 16 * 2**20


@pytest.mark.parametrize("n_embd, n_head", [(16, 4), (1, 1)])
def test_config_claiming_ten_million_layers_is_refused_from_its_numbers(tmp_path: Path, arrays, n_embd: int,
                                                                        n_head: int) -> None:
    """16 wide: too large for the engine whatever the vocabulary (refused with the config);
    1 wide: 1.2e8 weights, which fit the engine, against the few of the 'weights' member.
    Either way from the numbers: building the layout first took gigabytes."""
    arrays["config"] = np.array([10**7, n_embd, 8, n_head], dtype=np.int64)
    error, peak = load_peak(forge(tmp_path / "forged.npz", arrays))
    assert isinstance(error, CheckpointError), error
    if n_embd == 16:
        assert "bad config: the model would have" in str(error)
        assert f"weights even with the smallest vocabulary (BOS and one character); at most {PARAMS_MAX}" in str(error)
    else:
        claimed = 10**7 * 12 + 8 + 2 * (len(arrays["chars"]) + 1)  # layers, wpe, wte and lm_head (BOS too)
        assert f"field 'weights' has {len(arrays['weights'])} values, expected {claimed}" in str(error)
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
