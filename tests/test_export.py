"""safetensors export and import (issue 21, item 2): ``Run.export``, ``Run.load_safetensors``,
``cymicrogpt export CHECKPOINT OUT``.

The files are checked byte by byte against the format (8-byte length, JSON header, data),
against the official ``safetensors`` package when it is installed (it reads ours, we read
its), and every kind of bad file is refused in one line naming the file and the tensor or
metadata key, before any weight changes.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cymicrogpt import SafetensorsError, __version__
from cymicrogpt.config import GPTConfig
from cymicrogpt.safetensors import file_bytes, read, run_metadata
from cymicrogpt.training import Run, start_run
from command import assert_one_error_line, run_command

CONFIG = GPTConfig(n_layer=2, n_embd=8, block_size=8, n_head=2)
TENSOR_CASES, STRUCTURE_CASES = 10, 22  # the lengths of tensor_cases() and structure_cases()


@pytest.fixture
def trained(tiny_docs: list[str]) -> Run:
    run = start_run(tiny_docs, config=CONFIG, steps=5, backend="cython", seed=11)
    run.train(until=3)
    return run


def other_run(tiny_docs: list[str], backend: str = "cython") -> Run:
    """Same shape and vocabulary as `trained`, other weights."""
    return start_run(tiny_docs, config=CONFIG, steps=5, backend=backend, seed=12)


def weights_of(tensors: dict) -> list[float]:
    return np.concatenate([np.asarray(t).reshape(-1) for t in tensors.values()]).tolist()


# --- the file --------------------------------------------------------------------------------
def test_export_writes_the_format(tmp_path: Path, trained: Run) -> None:
    path = tmp_path / "run.safetensors"
    trained.export(path)
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    assert (8 + length) % 8 == 0 and raw[8 : 8 + length].rstrip(b" ").endswith(b"}")  # padded, aligned data
    metadata = header.pop("__metadata__")
    assert metadata == {"n_layer": "2", "n_embd": "8", "n_head": "2", "block_size": "8",
                        "chars": trained.tokenizer.chars, "bos_id": str(len(trained.tokenizer.chars)), "step": "3",
                        "cymicrogpt_version": __version__}
    tensors = trained.state_dict()
    assert list(header) == list(tensors)  # state-dict order
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.size * 8
        assert header[name] == {"dtype": "F64", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        start = 8 + length + offset
        assert np.frombuffer(raw[start : start + size], dtype="<f8").tolist() == tensor.reshape(-1).tolist()
        offset += size
    assert len(raw) == 8 + length + offset


@pytest.mark.parametrize("backend", ["python", "cython"])
def test_export_and_load_round_trip(tmp_path: Path, trained: Run, tiny_docs: list[str], backend: str) -> None:
    path = tmp_path / "run.safetensors"
    trained.export(path)
    tensors, metadata = read(path)
    assert list(tensors) == list(trained.state_dict()) and metadata["step"] == "3"
    run = other_run(tiny_docs, backend)
    run.load_safetensors(path)
    assert run.engine.weights() == trained.engine.weights()
    assert (run.step, run.losses) == (0, [])  # only the weights came from the file


def test_an_odd_vocabulary_survives(tmp_path: Path) -> None:
    docs = ["a\"b\\c", "zoë 日本", "x\ty", "\u2028q"]  # JSON escapes, non-ASCII, a JSON-special line separator
    run = start_run(docs, config=GPTConfig(n_embd=4, n_head=1, block_size=4), steps=2, backend="cython")
    path = tmp_path / "odd.safetensors"
    run.export(path)
    assert read(path)[1]["chars"] == run.tokenizer.chars
    run.load_safetensors(path)


# --- the official package ----------------------------------------------------------------------
def test_the_official_package_reads_ours_and_we_read_its(tmp_path: Path, trained: Run, tiny_docs: list[str]) -> None:
    official = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    ours = tmp_path / "ours.safetensors"
    trained.export(ours)
    loaded = official.load_file(str(ours))
    tensors = trained.state_dict()
    assert sorted(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == np.float64 and loaded[name].tolist() == tensor.tolist()
    with safe_open(str(ours), framework="np") as fh:
        assert fh.metadata() == run_metadata(trained.config, trained.tokenizer, trained.step)

    theirs = tmp_path / "theirs.safetensors"  # sorted by name, its own padding
    official.save_file(tensors, str(theirs), metadata=run_metadata(trained.config, trained.tokenizer, 99))
    run = other_run(tiny_docs)
    run.load_safetensors(theirs)
    assert run.engine.weights() == trained.engine.weights()


# --- bad files ---------------------------------------------------------------------------------
def raw_header(text: bytes, data: bytes = b"") -> bytes:
    return len(text).to_bytes(8, "little") + text + data


def raw_file(header: dict, data: bytes = b"") -> bytes:
    return raw_header(json.dumps(header).encode(), data)


def assert_refused(run: Run, path: Path, *fragments: str) -> None:
    before = run.engine.weights()
    with pytest.raises(SafetensorsError) as caught:
        run.load_safetensors(path)
    message = str(caught.value)
    assert message.startswith(f"safetensors file {path}: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert run.engine.weights() == before


def write_file(tmp_path: Path, tensors: dict, metadata: dict) -> Path:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"".join(file_bytes(tensors, metadata)))
    return path


def tensor_cases(trained: Run) -> list[tuple[str, dict, dict, tuple[str, ...]]]:
    """(case, tensors, metadata, fragments of the error): files well-formed as safetensors."""
    tensors, metadata = trained.state_dict(), run_metadata(trained.config, trained.tokenizer, trained.step)
    nan = dict(tensors, **{"layer1.attn_wv": tensors["layer1.attn_wv"].copy()})
    nan["layer1.attn_wv"][3, 4] = math.nan
    inf = dict(tensors, wpe=tensors["wpe"].copy())
    inf["wpe"][0, 0] = math.inf
    missing = {name: t for name, t in tensors.items() if name != "layer0.mlp_fc1"}
    return [
        ("missing", missing, metadata, ("missing tensor 'layer0.mlp_fc1'",)),
        ("extra", dict(tensors, bias=np.zeros(3)), metadata, ("unexpected tensor 'bias'",)),
        ("misshapen", dict(tensors, lm_head=tensors["lm_head"][:-1]), metadata, ("tensor 'lm_head' has shape",)),
        ("nan", nan, metadata, ("tensor 'layer1.attn_wv' holds nan at (3, 4)",)),
        ("inf", inf, metadata, ("tensor 'wpe' holds inf at (0, 0)",)),
        ("other n_layer", tensors, dict(metadata, n_layer="3"), ("metadata 'n_layer' is '3', the run's is '2'",)),
        ("other block_size", tensors, dict(metadata, block_size="08"), ("metadata 'block_size' is '08'",)),
        ("other vocabulary", tensors, dict(metadata, chars=metadata["chars"][::-1]), ("metadata 'chars' is",)),
        ("other BOS", tensors, dict(metadata, bos_id="0"), ("metadata 'bos_id' is '0'",)),
        ("no metadata", tensors, {}, ("its metadata has no 'n_layer'",)),
    ]


@pytest.mark.parametrize("case", range(TENSOR_CASES))
def test_bad_tensors_and_metadata_are_refused(tmp_path: Path, trained: Run, tiny_docs: list[str], case: int) -> None:
    _, tensors, metadata, fragments = tensor_cases(trained)[case]
    assert_refused(other_run(tiny_docs), write_file(tmp_path, tensors, metadata), *fragments)


def test_step_and_version_may_differ(tmp_path: Path, trained: Run, tiny_docs: list[str]) -> None:
    metadata = dict(run_metadata(trained.config, trained.tokenizer, 123), cymicrogpt_version="9.9", extra="x")
    run = other_run(tiny_docs)
    run.load_safetensors(write_file(tmp_path, trained.state_dict(), metadata))
    assert run.engine.weights() == trained.engine.weights()


def structure_cases(trained: Run) -> list[tuple[bytes, tuple[str, ...]]]:
    """(file bytes, fragments of the error): files that are not usable safetensors."""
    pieces = file_bytes(trained.state_dict(), run_metadata(trained.config, trained.tokenizer, trained.step))
    good = b"".join(pieces)
    entry = {"dtype": "F64", "shape": [1, 2], "data_offsets": [0, 16]}
    two = {"a": entry, "b": dict(entry, data_offsets=[16, 32])}
    return [
        (b"", ("holds 0 bytes",)),
        (good[:5], ("holds 5 bytes",)),
        ((2**64 - 1).to_bytes(8, "little") + b"{}", ("header length is 18446744073709551615",)),
        (good[:-1], ("the tensors claim", "more bytes than the file's data holds")),
        (good + b"\0" * 8, ("8 bytes of data after the last tensor",)),
        (raw_header(b"[]"), ("not a JSON object",)),
        (raw_header(b' {"__metadata__": {}}'), ("not a JSON object",)),
        (raw_header(b"{x}"), ("not JSON text",)),
        (raw_header(b"\xff\xfe"), ("not JSON text",)),
        (raw_header(b"[" * 100_000 + b"]" * 100_000), ("nests too deeply",)),
        (raw_header(b'{"a": 1, "a": 2}     '), ("names 'a' twice",)),
        (raw_header(b'{"a": {"dtype": "F64", "shape": [NaN], "data_offsets": [0, 8]}}'), ("holds NaN",)),
        (raw_file({"__metadata__": {"k": 1}}), ("__metadata__ is not a map of strings",)),
        (raw_file({"a": dict(entry, dtype="F32", data_offsets=[0, 8])}, b"\0" * 8), ("tensor 'a' has dtype F32",)),
        (raw_file({"a": dict(entry, shape=[-1, 2])}, b"\0" * 16), ("tensor 'a' has shape [-1, 2]",)),
        (raw_file({"a": dict(entry, shape=[True, 2])}, b"\0" * 16), ("tensor 'a' has shape",)),
        (raw_file({"a": dict(entry, data_offsets=[0])}, b"\0" * 16), ("tensor 'a' has data_offsets [0]",)),
        (raw_file({"a": dict(entry, data_offsets=[0, 8])}, b"\0" * 8), ("in F64 takes 16",)),
        (raw_file({"a": {"dtype": "F64", "shape": [1]}}), ('not described by exactly "dtype"',)),
        (raw_file({"a": entry, "b": dict(entry, data_offsets=[8, 24])}, b"\0" * 24), ("tensor 'b' starts at byte 8",
                                                                                        "overlaps")),
        (raw_file({"a": entry, "b": dict(entry, data_offsets=[24, 40])}, b"\0" * 40), ("leaves a gap at byte 16",)),
        (raw_file(two, b"\0" * 32), ("its metadata has no 'n_layer'",)),  # well-formed: the run refuses it
    ]


@pytest.mark.parametrize("case", range(STRUCTURE_CASES))
def test_broken_files_are_refused(tmp_path: Path, trained: Run, tiny_docs: list[str], case: int) -> None:
    raw, fragments = structure_cases(trained)[case]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(raw)
    assert_refused(other_run(tiny_docs), path, *fragments)


def test_every_case_is_run(trained: Run) -> None:
    assert (len(tensor_cases(trained)), len(structure_cases(trained))) == (TENSOR_CASES, STRUCTURE_CASES)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
def test_special_files_are_not_read(tmp_path: Path, trained: Run) -> None:
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(SafetensorsError, match="is a FIFO"):
        trained.load_safetensors(fifo)
    with pytest.raises(SafetensorsError, match="is a directory"):
        trained.load_safetensors(tmp_path)
    with pytest.raises(SafetensorsError, match="not found"):
        trained.load_safetensors(tmp_path / "missing.safetensors")


# --- the command ---------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path: Path, trained: Run) -> Path:
    path = tmp_path / "run.npz"
    trained.save(path)
    return path


def test_export_command(tmp_path: Path, checkpoint: Path, trained: Run) -> None:
    out = tmp_path / "run.safetensors"
    done = run_command("export", checkpoint, out)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"wrote {out}: the {trained.num_params} weights (float64) of step 3 / 5\n"
    tensors, metadata = read(out)
    assert weights_of(tensors) == trained.engine.weights() and metadata["step"] == "3"
    assert sorted(os.listdir(tmp_path)) == ["run.npz", "run.safetensors"]  # no temporary file left


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
@pytest.mark.parametrize("target", ["checkpoint", "checkpoint link", "fifo", "directory", "no directory"])
def test_bad_export_targets_exit_2_before_reading_the_checkpoint(tmp_path: Path, target: str) -> None:
    checkpoint = tmp_path / "run.npz"
    checkpoint.write_bytes(b"not a checkpoint")  # reading it would fail with exit 1
    out = {"checkpoint": checkpoint, "checkpoint link": tmp_path / "link.npz", "fifo": tmp_path / "fifo",
           "directory": tmp_path / "dir", "no directory": tmp_path / "none" / "x.safetensors"}[target]
    if target == "checkpoint link":
        out.symlink_to(checkpoint)
    elif target == "fifo":
        os.mkfifo(out)
    elif target == "directory":
        out.mkdir()
    done = run_command("export", checkpoint, out)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, f"export target {out}:")
    assert checkpoint.read_bytes() == b"not a checkpoint"


def test_unusable_checkpoint_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    done = run_command("export", tmp_path / "missing.npz", out)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, "checkpoint file not found")
    assert not out.exists()
