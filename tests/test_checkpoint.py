"""Checkpoints: exact round trips, bit-identical resumes, and clear errors for bad files."""
from __future__ import annotations

import dataclasses
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

import cymicrogpt.checkpoint as checkpoint
from cymicrogpt.checkpoint import CheckpointError, state_arrays
from cymicrogpt.config import GPTConfig
from cymicrogpt.data import load_docs
from cymicrogpt.engines import BACKENDS
from cymicrogpt.run_state import RNG_STATE_LEN, check_rng_state
from cymicrogpt.training import Run, start_run, train
from command import assert_one_error_line, run_command

STEPS = 12


def tiny_run(docs, config, backend="cython", until=5, **kwargs) -> Run:
    run = start_run(docs, config=config, steps=STEPS, backend=backend, seed=7, **kwargs)
    run.train(until=until)
    return run


def moments(run: Run):
    m, v = run.optimizer.moments()
    return list(map(float, m)), list(map(float, v))


def assert_same_run(a: Run, b: Run) -> None:
    assert a.config == b.config
    assert a.tokenizer.chars == b.tokenizer.chars
    assert a.docs == b.docs
    assert a.engine.weights() == b.engine.weights()
    assert moments(a) == moments(b)
    assert (a.step, a.num_steps, a.lr, a.seed) == (b.step, b.num_steps, b.lr, b.seed)
    assert a.losses == b.losses
    assert a.rng.getstate() == b.rng.getstate()


# --- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip(tmp_path: Path, tiny_docs, tiny_config, backend: str) -> None:
    run = tiny_run(tiny_docs, tiny_config, backend)
    run.save(tmp_path / "run.npz")
    loaded = Run.load(tmp_path / "run.npz")
    assert loaded.backend == backend
    assert_same_run(run, loaded)
    assert all(type(x) is float for x in loaded.losses + loaded.engine.weights())


def test_backend_can_be_chosen_on_load(tmp_path: Path, tiny_docs, tiny_config) -> None:
    run = tiny_run(tiny_docs, tiny_config, "python")
    run.save(tmp_path / "run.npz")
    loaded = Run.load(tmp_path / "run.npz", backend="cython")
    assert loaded.backend == "cython"
    assert_same_run(run, loaded)


@pytest.mark.parametrize("gauss_next", [None, 0.123456789])
def test_random_state_is_restored_exactly(tmp_path: Path, tiny_docs, tiny_config, gauss_next) -> None:
    run = tiny_run(tiny_docs, tiny_config)
    version, words, _ = run.rng.getstate()
    run.rng.setstate((version, words, gauss_next))
    run.save(tmp_path / "run.npz")
    rng = Run.load(tmp_path / "run.npz").rng
    assert rng.getstate() == (version, words, gauss_next)
    assert [rng.gauss(0, 1) for _ in range(3)] == [run.rng.gauss(0, 1) for _ in range(3)]


def test_unusual_text_and_seed_round_trip(tmp_path: Path, tiny_config) -> None:
    docs = ["zoë", "a\x00b", "😀x", "ab\x00", "née"]  # NULs, trailing NULs, non-BMP
    run = start_run(docs, config=tiny_config, steps=3, seed=2**100, lr=0.02)
    run.save(tmp_path / "run.npz")
    loaded = Run.load(tmp_path / "run.npz")
    assert_same_run(run, loaded)
    assert loaded.seed == 2**100


def test_saves_to_the_exact_path(tmp_path: Path, tiny_docs, tiny_config) -> None:
    run = tiny_run(tiny_docs, tiny_config)
    run.save(str(tmp_path / "run.ckpt"))  # NumPy would append .npz to a path
    assert os.listdir(tmp_path) == ["run.ckpt"]
    assert Run.load(tmp_path / "run.ckpt").step == 5


def test_run_save_method(tmp_path: Path, tiny_docs, tiny_config) -> None:
    run = tiny_run(tiny_docs, tiny_config)
    run.save(tmp_path / "run.npz")
    assert_same_run(run, Run.load(tmp_path / "run.npz"))


# --- resuming is bit-identical -------------------------------------------------------------
@pytest.mark.parametrize("saved_on", BACKENDS)
@pytest.mark.parametrize("resumed_on", BACKENDS)
@pytest.mark.parametrize("k", [0, 5, STEPS])
def test_resume_is_bit_identical(tmp_path: Path, tiny_docs, tiny_config, saved_on, resumed_on, k) -> None:
    full = train(tiny_docs, config=tiny_config, steps=STEPS, backend=saved_on, seed=7)
    run = tiny_run(tiny_docs, tiny_config, saved_on, until=k)
    run.save(tmp_path / "run.npz")
    resumed = Run.load(tmp_path / "run.npz", backend=resumed_on)
    resumed.train()
    assert resumed.losses == full.losses  # steps k+1..N float-== the uninterrupted run's
    assert resumed.engine.weights() == full.engine.weights()
    assert resumed.sample(8) == full.sample(8)


def test_resume_twice(tmp_path: Path, tiny_docs, tiny_config) -> None:
    full = train(tiny_docs, config=tiny_config, steps=STEPS, seed=7)
    run = tiny_run(tiny_docs, tiny_config, until=3)
    for until in (6, 9):
        run.save(tmp_path / "run.npz")
        run = Run.load(tmp_path / "run.npz")
        run.train(until=until)
    run.save(tmp_path / "run.npz")
    run = Run.load(tmp_path / "run.npz")
    run.train()
    assert run.losses == full.losses


def test_resume_on_names(tmp_path: Path, names_path: Path) -> None:
    docs = load_docs(names_path)
    full = train(docs, steps=20, backend="cython")
    run = start_run(docs, steps=20, backend="cython")
    run.train(until=8)
    run.save(tmp_path / "names.npz")
    resumed = Run.load(tmp_path / "names.npz")
    assert len(resumed.docs) == 32033
    resumed.train()
    assert resumed.losses == full.losses
    assert resumed.sample(10) == full.sample(10)


# --- atomic writes -------------------------------------------------------------------------
def test_failed_write_keeps_old_checkpoint_and_no_temp_file(tmp_path: Path, tiny_docs, tiny_config,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = tiny_run(tiny_docs, tiny_config)
    run.save(tmp_path / "run.npz")
    before = (tmp_path / "run.npz").read_bytes()
    run.train(until=8)

    def disk_full(file, **arrays):
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        run.save(tmp_path / "run.npz")
    assert os.listdir(tmp_path) == ["run.npz"]
    assert (tmp_path / "run.npz").read_bytes() == before


def test_overwrite_leaves_only_the_checkpoint(tmp_path: Path, tiny_docs, tiny_config) -> None:
    run = tiny_run(tiny_docs, tiny_config)
    for _ in range(3):
        run.save(tmp_path / "run.npz")
    assert os.listdir(tmp_path) == ["run.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "run.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_missing_directory_is_an_os_error(tmp_path: Path, tiny_docs, tiny_config) -> None:
    with pytest.raises(FileNotFoundError):
        tiny_run(tiny_docs, tiny_config).save(tmp_path / "no" / "run.npz")


# --- bad files -----------------------------------------------------------------------------
@pytest.fixture
def arrays(tiny_docs, tiny_config) -> dict:
    return state_arrays(tiny_run(tiny_docs, tiny_config).state())


def write(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def assert_rejected(path: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        Run.load(path)
    message = str(info.value)
    assert message.count(str(path)) == 1, message  # named, once
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    assert_rejected(tmp_path / "nope.npz", "not found")


def test_directory(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "directory")


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, arrays, cut: float) -> None:
    data = write(tmp_path / "full.npz", **arrays).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * cut)])
    assert_rejected(path)


def test_corrupt_member(tmp_path: Path, arrays) -> None:
    data = bytearray(write(tmp_path / "full.npz", **arrays).read_bytes())
    data[200:240] = b"\xff" * 40  # inside the first member: a bad CRC or header
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(data))
    assert_rejected(path)


@pytest.mark.parametrize("content", [b"", b"garbage, not a zip file at all" * 10, bytes(range(256)) * 4])
def test_garbage_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(content)
    assert_rejected(path)


def test_foreign_npz(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path / "other.npz", x=np.arange(3)), "not a cymicrogpt checkpoint")


def test_wrong_format_tag(tmp_path: Path, arrays) -> None:
    arrays["format"] = np.array("someone-else")
    assert_rejected(write(tmp_path / "other.npz", **arrays), "format tag")


def test_compressed_checkpoint_is_refused_as_compressed(tmp_path: Path, arrays) -> None:
    """Not as "its format tag is not a string": the tag is the first member read."""
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **arrays)
    assert_rejected(path, "field 'format' is a compressed zip member",
                    "compressed members (np.savez_compressed) are not supported")


def test_bare_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "array.npy"
    np.save(path, np.arange(3))
    assert_rejected(path, "not a cymicrogpt checkpoint")


def test_pickled_member_is_never_unpickled(tmp_path: Path, arrays) -> None:
    arrays["weights"] = np.array([object()], dtype=object)
    with open(tmp_path / "pickled.npz", "wb") as fh:
        np.savez(fh, allow_pickle=True, **arrays)
    assert_rejected(tmp_path / "pickled.npz", "pickle")


def test_unknown_version(tmp_path: Path, arrays) -> None:
    arrays["version"] = np.array(99)
    assert_rejected(write(tmp_path / "v99.npz", **arrays), "version 99")


@pytest.mark.parametrize("field", ["config", "chars", "weights", "adam_m", "adam_v", "step", "rng_state",
                                   "rng_gauss_next", "losses", "docs_codes", "seed", "backend"])
def test_missing_field(tmp_path: Path, arrays, field: str) -> None:
    del arrays[field]
    assert_rejected(write(tmp_path / "partial.npz", **arrays), f"missing field {field!r}")


@pytest.mark.parametrize("field", ["weights", "adam_m", "adam_v"])
def test_mismatched_lengths(tmp_path: Path, arrays, field: str) -> None:
    expected = len(arrays[field])
    arrays[field] = arrays[field][:-1]
    assert_rejected(write(tmp_path / "short.npz", **arrays), field, str(expected))


def test_weights_for_another_config(tmp_path: Path, arrays) -> None:
    arrays["config"] = np.array([2, 8, 8, 2])  # two layers: more weights than stored
    assert_rejected(write(tmp_path / "cfg.npz", **arrays), "weights")


def test_float32_weights(tmp_path: Path, arrays) -> None:
    arrays["weights"] = arrays["weights"].astype(np.float32)
    assert_rejected(write(tmp_path / "f32.npz", **arrays), "float64")


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("step", 13, "outside"),
        ("step", -1, "outside"),
        ("num_steps", 0, "num_steps"),
        ("lr", -0.5, "lr"),
        ("lr", float("nan"), "lr"),
        ("config", [1, 8, 8, 0], "n_head"),
        ("config", [1, 8, 8, 3], "divisible"),
        ("config", [0, 8, 8, 2], "n_layer"),
        ("config", [1, 8, 8], "config"),
        ("seed", "forty-two", "seed"),
        ("backend", "fortran", "fortran"),
        ("docs_lengths", [1, 2], "document lengths"),
        ("chars", [97, 97], "vocabulary"),
        ("chars", [98], "outside the vocabulary"),
        ("rng_version", 2, "random"),
        ("rng_state", [5] * 624, "rng_state"),
        ("rng_gauss_next", [0.1, 0.2], "rng_gauss_next"),
    ],
)
def test_bad_values(tmp_path: Path, arrays, field: str, value, fragment: str) -> None:
    arrays[field] = np.array(value)
    assert_rejected(write(tmp_path / "bad.npz", **arrays), fragment)


# --- the random-generator state: one check, for states built by hand and read from files -----
def _wrong_version(v, w, g):
    return 2, w, g  # random.Random.setstate() takes version 2; no run of this Python makes one


def _word_above_32_bits(v, w, g):
    return v, (w[0] + 2**32,) + w[1:], g  # setstate() would keep its low 32 bits


def _negative_word(v, w, g):
    return v, w[:3] + (-1,) + w[4:], g


def _position_past_the_end(v, w, g):
    return v, w[:-1] + (625,), g


def _position_zero(v, w, g):
    return v, w[:-1] + (0,), g  # setstate() takes it; a draw leaves 1..624, so getstate() never returns 0


def _zero_words(v, w, g):
    return v, (0,) * 624 + w[-1:], g  # setstate() takes it; the generator then yields only zeros


def _zero_but_unused_bits(v, w, g):
    return v, (2**31 - 1,) + (0,) * 623 + w[-1:], g  # word 0's low 31 bits never reach a later draw


def _nan_gauss_next(v, w, g):
    return v, w, math.nan


def _infinite_gauss_next(v, w, g):
    return v, w, -math.inf


@pytest.mark.parametrize("spoil, fragment", [
    (_wrong_version, "unsupported version 2 (expected 3)"),
    (_word_above_32_bits, "word 0 is "),
    (_negative_word, "word 3 is -1, not an integer in 0..2**32-1"),
    (_position_past_the_end, "position (word 624) is 625, not an integer in 1..624"),
    (_position_zero, "position (word 624) is 0, not an integer in 1..624"),
    (_zero_words, "its words are all zero"),
    (_zero_but_unused_bits, "its words are all zero (but for the low 31 bits of word 0"),
    (_nan_gauss_next, "gauss_next is nan, not None or a finite float"),
    (_infinite_gauss_next, "gauss_next is -inf"),
])
def test_bad_random_state_is_refused_the_same_way_by_hand_and_from_a_file(tmp_path: Path, tiny_docs, tiny_config,
                                                                          spoil, fragment: str) -> None:
    state = tiny_run(tiny_docs, tiny_config).state()
    bad = spoil(*state.rng_state)
    with pytest.raises(ValueError, match=r"^bad random-generator state \(rng_state\): ") as by_hand:
        Run.from_state(dataclasses.replace(state, rng_state=bad))
    assert fragment in str(by_hand.value)
    arrays = state_arrays(state)
    arrays.update(rng_version=np.array(bad[0]), rng_state=np.array(bad[1], dtype=np.int64),
                  rng_gauss_next=np.array([] if bad[2] is None else [bad[2]], dtype=np.float64))
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError) as from_file:
        Run.load(path)
    assert str(from_file.value) == f"checkpoint {path}: {by_hand.value}"  # the same check, once


def test_every_state_getstate_returns_is_accepted() -> None:
    rng = random.Random(3)
    for _ in range(2 * 624 + 1):  # every position, twice (the first draw makes a new batch: 624 -> 1)
        check_rng_state(rng.getstate())
        rng.getrandbits(32)


@pytest.mark.parametrize("rng_state, fragment", [
    ((3, (0,) * 625), "must be (version, words, gauss_next)"),
    ("not a state", "must be (version, words, gauss_next)"),
    ((3.0, (0,) * 624 + (624,), None), "unsupported version 3.0"),
    ((3, [5] * 624 + [624], None), "a tuple of 625 integers"),
    ((3, (5,) * 624, None), "a tuple of 625 integers"),
    ((3, (5,) * 623 + (1.5, 624), None), "word 623 is 1.5"),
    ((3, (5,) * 624 + (True,), None), "position (word 624) is True"),
    ((3, (5,) * 624 + (10**5000,), None), "position (word 624) is a 16610-bit integer"),
    ((3, (5,) * 624 + (624,), "junk"), "gauss_next is 'junk'"),  # setstate() takes it; gauss() would return it
    ((3, (5,) * 624 + (624,), 1), "gauss_next is 1, not None or a finite float"),
])
def test_hand_built_random_state_must_be_what_getstate_returns(tiny_docs, tiny_config, rng_state,
                                                               fragment: str) -> None:
    state = tiny_run(tiny_docs, tiny_config).state()
    with pytest.raises(ValueError) as info:
        Run.from_state(dataclasses.replace(state, rng_state=rng_state))
    assert fragment in str(info.value)


def test_losses_must_match_step(tmp_path: Path, arrays) -> None:
    arrays["losses"] = arrays["losses"][:-1]
    assert_rejected(write(tmp_path / "bad.npz", **arrays), "losses")


# --- values no training run produces --------------------------------------------------------
@pytest.mark.parametrize("field, index, value", [
    ("weights", 0, math.nan), ("weights", -1, math.inf), ("adam_m", 3, -math.inf), ("adam_m", 4, math.nan),
    ("adam_v", 5, math.nan), ("adam_v", 6, math.inf), ("losses", 2, math.nan), ("losses", 4, -math.inf),
    ("adam_v", 7, -1.0), ("adam_v", 8, -5e-324),  # v is a running mean of squares: never negative
])
def test_non_finite_or_negative_values_are_refused(tmp_path: Path, arrays, field: str, index: int, value) -> None:
    values = arrays[field].copy()
    values[index] = value
    arrays[field] = values
    assert_rejected(write(tmp_path / "bad.npz", **arrays), f"field {field!r} holds {value!r} at index "
                                                           f"{index % len(values)}")


def test_the_first_bad_index_is_named(tmp_path: Path, arrays) -> None:
    arrays["adam_v"] = arrays["adam_v"].copy()
    arrays["adam_v"][[9, 4, 30]] = [-2.0, -3.0, math.nan]  # NaN is not negative: 4 is the first negative
    assert_rejected(write(tmp_path / "bad.npz", **arrays), "'adam_v' holds nan at index 30")
    arrays["adam_v"][30] = 0.5
    assert_rejected(write(tmp_path / "bad.npz", **arrays), "'adam_v' holds -3.0 at index 4")


def test_negative_zero_second_moment_is_accepted(tmp_path: Path, tiny_docs, tiny_config) -> None:
    """-0.0 is not negative, and changes nothing: its root is 0, as +0.0's is."""
    run = tiny_run(tiny_docs, tiny_config, "python")
    arrays = state_arrays(run.state())
    zero = np.flatnonzero(arrays["adam_v"] == 0)
    assert len(zero) > 0  # weights no document of the first steps touched
    arrays["adam_v"] = arrays["adam_v"].copy()
    arrays["adam_v"][zero] = -0.0
    resumed = Run.load(write(tmp_path / "negzero.npz", **arrays))
    resumed.train()
    run.train()
    assert resumed.losses == run.losses and resumed.engine.weights() == run.engine.weights()


@pytest.mark.parametrize("command", [["train", "--resume"], ["train", "--backend", "python", "--resume"],
                                     ["sample", "--checkpoint"]])
def test_cli_refuses_a_negative_second_moment_in_one_line(tmp_path: Path, arrays, command: list[str]) -> None:
    # Before this was checked, resuming ended in a traceback on both engines (a complex weight
    # on the reference, the Adam kernel's ValueError on the compiled one).
    arrays["adam_v"] = arrays["adam_v"].copy()
    arrays["adam_v"][5] = -1.0
    path = write(tmp_path / "negv.npz", **arrays)
    done = run_command(*command, path)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, str(path), "'adam_v' holds -1.0 at index 5", "never negative")


def test_checkpoint_error_is_a_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)


def test_config_and_rng_types_used(tiny_config) -> None:
    # The format stores what these types hold; keep the test honest if they change.
    assert len(random.Random(1).getstate()[1]) == RNG_STATE_LEN
    assert tuple(f for f in GPTConfig.__dataclass_fields__) == checkpoint.CONFIG_FIELDS
