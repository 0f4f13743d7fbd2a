"""Odd input is refused early, or handled as a user means it (issue 8, items 7 and 8):
a byte-order mark, a str given as documents, unusable temperatures, any real number type,
huge seeds, an unreadable cached dataset, and messages that say exactly what is wrong."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import cymicrogpt as mg
from cymicrogpt.checkpoint import CheckpointError, state_arrays
from cymicrogpt.config import GPTConfig
from cymicrogpt.data import DataError, load_docs
from cymicrogpt.sampling import SamplingError
from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, run_command, samples_of

BOM = "\ufeff".encode("utf-8")
CONFIG = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)


# --- byte-order mark -------------------------------------------------------------------------
def test_leading_bom_is_not_a_character(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(BOM + "ia\nzoë\n".encode("utf-8"))
    assert load_docs(path) == ["ia", "zoë"]
    path.write_bytes(b"ia\n" + BOM + b"zo\n")  # only a leading one is a mark: utf-8-sig's rule
    assert load_docs(path) == ["ia", "\ufeffzo"]


def test_bom_never_reaches_the_vocabulary(tmp_path: Path, tiny_data_file: Path) -> None:
    with_bom = tmp_path / "with_bom.txt"
    with_bom.write_bytes(BOM + tiny_data_file.read_bytes())
    plain = run_command("train", "--data", tiny_data_file, "--steps", 4, *TINY, "--samples", 5)
    marked = run_command("train", "--data", with_bom, "--steps", 4, *TINY, "--samples", 5)
    assert marked.returncode == 0 and "\ufeff" not in marked.stdout
    assert marked.stdout.splitlines()[:3] == plain.stdout.splitlines()[:3]  # docs, vocabulary, weights
    assert samples_of(marked.stdout) == samples_of(plain.stdout)


def test_undecodable_byte_offset_counts_the_bom(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(BOM + b"ab\n\xff\n")
    with pytest.raises(DataError, match=r"0xff at line 2 \(byte offset 6\)"):
        load_docs(path)


# --- documents -------------------------------------------------------------------------------
@pytest.mark.parametrize("docs", ["hello world", b"hello world", bytearray(b"ab")])
def test_a_single_string_is_not_a_collection_of_documents(docs) -> None:
    with pytest.raises(TypeError, match="not a single"):
        mg.train(docs, steps=1)


# --- temperature -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained() -> dict:
    """A briefly trained run per backend, and the samples each gives at temperature 0.5."""
    runs = {b: start_run(["emma", "olivia", "ava", "isabella", "sophia"], config=CONFIG, steps=40, backend=b, seed=3)
            for b in ("python", "cython")}
    for run in runs.values():
        run.train()
    return runs


@pytest.mark.parametrize("temperature", [0.5, np.float64(0.5), np.float32(0.5), Fraction(1, 2), np.longdouble(0.5)])
def test_any_real_number_type_is_a_temperature(trained, temperature) -> None:
    for run in trained.values():
        state = run.rng.getstate()
        expected = run.sample(4, 0.5)
        run.rng.setstate(state)
        assert run.sample(4, temperature) == expected


@pytest.mark.parametrize("temperature, error, fragment", [
    (True, TypeError, "real number"), (1 + 0j, TypeError, "real number"), ("0.5", TypeError, "real number"),
    (None, TypeError, "real number"), (0, ValueError, "positive"), (-1.0, ValueError, "positive"),
    (math.nan, ValueError, "finite"), (math.inf, ValueError, "finite"), (10**400, ValueError, "too large for a float"),
    (5e-324, ValueError, "1 / temperature overflows"), (1e-309, ValueError, "1 / temperature overflows"),
    (Fraction(1, 10**400), ValueError, "positive"),
])
def test_unusable_temperatures_are_refused_at_once(trained, temperature, error, fragment) -> None:
    for run in trained.values():
        state = run.rng.getstate()
        with pytest.raises(error, match=fragment):
            run.sample(3, temperature)
        assert run.rng.getstate() == state  # refused before any sampling


def test_temperature_too_low_for_the_model_says_so(trained) -> None:
    """6e-309 has a finite inverse, but this model's logits times 1.7e308 overflow."""
    messages = set()
    for run in trained.values():
        with pytest.raises(SamplingError, match="too low for this model") as info:
            run.sample(3, 6e-309)
        messages.add(str(info.value))
    assert len(messages) == 1  # both engines, the same words


@pytest.mark.parametrize("backend", ["python", "cython"])
def test_non_finite_weights_cannot_be_sampled(backend) -> None:
    run = start_run(["ab", "ba"], config=CONFIG, steps=2, backend=backend)
    run.engine.set_weights([math.inf] * len(run.engine.weights()))
    with pytest.raises(SamplingError, match="weights are not all finite"):
        run.sample(1)


@pytest.mark.parametrize("value, fragment", [("5e-324", "1 / temperature overflows"), ("1e400", "finite"),
                                             ("nan", "finite"), ("0", "positive"), ("warm", "must be a number")])
def test_cli_temperature_is_checked_before_training(tiny_data_file: Path, value: str, fragment: str) -> None:
    for args in (["train", "--data", tiny_data_file], ["sample", "--checkpoint", "none.npz"]):
        done = run_command(*args, "--temperature", value)
        assert (done.returncode, done.stdout) == (2, "")
        assert_one_error_line(done.stderr, "--temperature", fragment)


def test_cli_temperature_too_low_for_the_trained_model(tmp_path: Path, tiny_data_file: Path) -> None:
    ckpt = tmp_path / "run.npz"
    done = run_command("train", "--data", tiny_data_file, "--steps", 200, *TINY, "--temperature", "6e-309",
                       "--save", ckpt)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "temperature 6e-309 is too low for this model", f"saved in {ckpt}")
    assert Run.load(ckpt).step == 200
    sampled = run_command("sample", "--checkpoint", ckpt, "--temperature", "6e-309")
    assert sampled.returncode == 1
    assert_one_error_line(sampled.stderr, "too low for this model")
    assert samples_of(run_command("sample", "--checkpoint", ckpt, "--num", 2).stdout)


# --- seeds -----------------------------------------------------------------------------------
def test_numpy_integer_seed_is_the_same_seed(tiny_docs) -> None:
    a = start_run(tiny_docs, config=CONFIG, steps=2, seed=np.int64(7))
    b = start_run(tiny_docs, config=CONFIG, steps=2, seed=7)
    assert a.seed == 7 and type(a.seed) is int and a.engine.weights() == b.engine.weights()


@pytest.mark.parametrize("seed", [True, 1.0, "7", None])
def test_non_integer_seeds_are_refused(tiny_docs, seed) -> None:
    with pytest.raises(ValueError, match="seed must be an integer"):
        start_run(tiny_docs, config=CONFIG, steps=2, seed=seed)


# --- messages (item 8) ------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["train", "--data"], ["train", "--save"], ["train", "--resume"],
                                    ["sample", "--checkpoint"], ["bench", "--data"], ["bench", "--out"]])
def test_empty_path_says_it_is_empty(option: list[str]) -> None:
    done = run_command(*option, "")
    assert done.returncode == 2
    assert_one_error_line(done.stderr, option[1], "is empty")


def test_empty_data_path_in_the_api() -> None:
    with pytest.raises(DataError, match="the data path is empty"):
        load_docs("")


@pytest.fixture
def arrays(tiny_docs) -> dict:
    run = start_run(tiny_docs, config=CONFIG, steps=4)
    run.train(until=2)
    return state_arrays(run.state())


def save_arrays(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


@pytest.mark.parametrize("field, value, message", [
    ("lr", np.array(1, dtype=np.int64), "field 'lr' has dtype int64, expected float64"),
    ("lr", np.array([0.01]), "field 'lr' has shape (1,), expected a scalar"),
    ("weights", "int64", "field 'weights' has dtype int64, expected float64"),
    ("weights", "2-D", "field 'weights' has shape"),
    ("step", np.array(2.0), "field 'step' has dtype float64, expected an integer dtype"),
    ("backend", np.array(7), "field 'backend' has dtype int64, expected a unicode string dtype"),
])
def test_checkpoint_field_messages_name_the_path_once_and_the_real_problem(tmp_path, arrays, field, value, message):
    if isinstance(value, str):
        value = arrays[field].astype(np.int64) if value == "int64" else arrays[field].reshape(2, -1)
    arrays[field] = value
    path = save_arrays(tmp_path / "bad.npz", arrays)
    with pytest.raises(CheckpointError) as info:
        Run.load(path)
    assert str(info.value).startswith(f"checkpoint {path}: {message}")
    assert str(info.value).count(str(path)) == 1


def test_a_text_file_is_not_a_checkpoint(tmp_path: Path, tiny_data_file: Path) -> None:
    done = run_command("sample", "--checkpoint", tiny_data_file)
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr, str(tiny_data_file), "not an .npz archive")
    assert "pickle" not in line
