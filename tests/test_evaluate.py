"""Held-out evaluation (issue 21, item 3): ``Run.evaluate``, ``cymicrogpt eval`` and
``cymicrogpt train --eval-data FILE --eval-every K``.

A document's loss is checked against the loss a training step on it reports (float ==, on
both engines, documents longer than the context included), so evaluation tokenises and
truncates exactly as training does; evaluating mid-run is checked to change nothing (the
run then continues bit for bit: losses, weights, moments, samples, gradients).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cymicrogpt.config import GPTConfig
from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, run_command

BACKENDS = ["python", "cython"]
CONFIG = GPTConfig(n_layer=1, n_embd=8, block_size=6, n_head=2)  # "isabella", "olivia"... exceed 6 positions
HELD_OUT = ["ella", "mila", "noa", "savannah"]  # the tiny corpus's characters only


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_documents_loss_is_its_training_loss(backend: str, tiny_docs: list[str]) -> None:
    """evaluate([the next document]) == the loss the next training step reports on it."""
    run = start_run(tiny_docs, config=CONFIG, steps=12, backend=backend, seed=4)
    while run.step < run.num_steps:
        expected = run.evaluate([run.docs[run.step % len(run.docs)]])
        run.train(until=run.step + 1)
        assert run.losses[-1] == expected, run.step
    assert any(len(doc) + 1 > CONFIG.block_size for doc in run.docs)  # truncation was exercised


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_mean_is_over_documents(backend: str, tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=3, backend=backend, seed=4)
    run.train()
    per_document = [run.evaluate([doc]) for doc in HELD_OUT]
    assert run.evaluate(HELD_OUT) == math.fsum(per_document) / len(HELD_OUT)
    assert run.evaluate(HELD_OUT * 3) == run.evaluate(HELD_OUT)  # each document counts once, whatever its length


def test_both_engines_agree(tiny_docs: list[str]) -> None:
    losses = []
    for backend in BACKENDS:
        run = start_run(tiny_docs, config=CONFIG, steps=5, backend=backend, seed=8)
        run.train()
        losses.append(run.evaluate(HELD_OUT))
    assert losses[0] == losses[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluating_mid_run_changes_nothing(backend: str, tiny_docs: list[str]) -> None:
    uninterrupted = start_run(tiny_docs, config=CONFIG, steps=10, backend=backend, seed=2)
    uninterrupted.train()
    run = start_run(tiny_docs, config=CONFIG, steps=10, backend=backend, seed=2)
    for until in (3, 4, 7):
        run.train(until=until)
        state = run.state()
        run.forward_backward()  # gradients left in the engine: evaluate must not touch them either
        gradients = run.engine.gradients()
        run.evaluate(HELD_OUT + tiny_docs)
        assert run.engine.gradients() == gradients
        run.engine.zero_grad()
        after = run.state()
        assert (after.weights, after.adam_m, after.adam_v, after.step, after.losses, after.rng_state) == \
               (state.weights, state.adam_m, state.adam_v, state.step, state.losses, state.rng_state)
    run.train()
    assert run.losses == uninterrupted.losses
    assert run.engine.weights() == uninterrupted.engine.weights()
    assert run.sample(5) == uninterrupted.sample(5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_probability_is_an_infinite_loss(backend: str, tiny_docs: list[str]) -> None:
    """Weights under which every token but 'a' has probability exp(-8000) == 0.0."""
    run = start_run(tiny_docs, config=CONFIG, steps=3, backend=backend, seed=0)
    tensors = {name: np.zeros_like(t) for name, t in run.state_dict().items()}
    tensors["wte"][:] = 1.0  # every residual stream is rmsnorm(ones) == ones: no layer adds anything
    tensors["lm_head"][run.tokenizer.chars.index("a")] = 1000.0
    run.load_state_dict(tensors)
    assert run.evaluate(["emma"]) == math.inf
    assert run.evaluate(["a"]) == math.inf  # "a" then BOS: BOS has probability 0.0 too


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_characters_are_named(backend: str, tiny_docs: list[str]) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=3, backend=backend, seed=0)
    with pytest.raises(ValueError, match=r"^document 2 \('zoë'\): character 'ë' is not in the vocabulary"):
        run.evaluate(["emma", "ava", "zoë", "ñu"])


@pytest.mark.parametrize(("docs", "error", "message"), [
    ([], ValueError, "no documents to evaluate"),
    (["emma", ""], ValueError, "document 1 must be a non-empty string"),
    (["emma", None], ValueError, "document 1 must be a non-empty string"),
    ("emma", TypeError, "not a single str"),
])
def test_bad_documents(tiny_docs: list[str], docs, error: type, message: str) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=3, backend="cython", seed=0)
    with pytest.raises(error, match=message):
        run.evaluate(docs)


# --- cymicrogpt eval -------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path: Path, tiny_data_file: Path) -> Path:
    path = tmp_path / "run.npz"
    done = run_command("train", "--data", tiny_data_file, "--steps", 7, *TINY, "--samples", 0, "--save", path)
    assert done.returncode == 0, done.stderr
    return path


def held_out_file(tmp_path: Path, docs: list[str], name: str = "held_out.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


def test_eval_command(tmp_path: Path, checkpoint: Path) -> None:
    data = held_out_file(tmp_path, HELD_OUT)
    done = run_command("eval", "--checkpoint", checkpoint, "--data", data)
    assert (done.returncode, done.stderr) == (0, "")
    run = Run.load(checkpoint)
    assert done.stdout == (f"eval loss {run.evaluate(HELD_OUT)!r} (mean over the 4 documents of {data}, "
                           "step 7 / 7)\n")
    done = run_command("eval", "--checkpoint", checkpoint, "--backend", "python")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (f"eval loss {run.evaluate(run.docs)!r} (mean over the {len(run.docs)} documents the "
                           "run trained on, step 7 / 7)\n")


def test_eval_command_refuses_bad_data(tmp_path: Path, checkpoint: Path) -> None:
    unknown = held_out_file(tmp_path, ["ella", "zoë"])
    done = run_command("eval", "--checkpoint", checkpoint, "--data", unknown)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, f"--data {unknown}: document 1 ('zoë'): character 'ë'")
    done = run_command("eval", "--checkpoint", checkpoint, "--data", tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, "is a directory")
    done = run_command("eval", "--checkpoint", tmp_path / "missing.npz")
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, "checkpoint file not found")


# --- cymicrogpt train --eval-data --------------------------------------------------------------
def eval_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "eval loss" in line]


def without_timing(line: str) -> str:
    return " | ".join(line.split(" | ")[:2])  # "step ... | loss ...", not the speed and ETA


def test_train_prints_held_out_losses_and_trains_the_same(tmp_path: Path, tiny_data_file: Path,
                                                          tiny_docs: list[str]) -> None:
    data = held_out_file(tmp_path, HELD_OUT)
    common = ("train", "--data", tiny_data_file, "--steps", 10, *TINY, "--samples", 3)
    plain = run_command(*common, "--save", tmp_path / "plain.npz")
    evaluated = run_command(*common, "--save", tmp_path / "evaluated.npz", "--eval-data", data, "--eval-every", 4)
    assert (plain.returncode, evaluated.returncode) == (0, 0), evaluated.stderr
    a, b = Run.load(tmp_path / "plain.npz"), Run.load(tmp_path / "evaluated.npz")
    assert a.losses == b.losses and a.engine.weights() == b.engine.weights()
    untimed = [without_timing(line) for line in evaluated.stdout.splitlines() if "eval loss" not in line]
    assert untimed == [without_timing(line) for line in plain.stdout.splitlines()]  # the same losses and samples
    run = start_run(tiny_docs, config=GPTConfig(n_embd=8, block_size=8, n_head=2), steps=10)
    expected = []
    for step in (4, 8, 10):
        run.train(until=step)
        expected.append(f"step {step:4d} /   10 | eval loss {run.evaluate(HELD_OUT):.4f}")
    assert eval_lines(evaluated.stdout) == expected


def test_eval_data_alone_evaluates_at_the_end(tmp_path: Path, checkpoint: Path, tiny_data_file: Path) -> None:
    data = held_out_file(tmp_path, HELD_OUT)
    done = run_command("train", "--data", tiny_data_file, "--steps", 5, *TINY, "--samples", 0, "--eval-data", data)
    assert done.returncode == 0, done.stderr
    assert [line.split(" | ")[0] for line in eval_lines(done.stdout)] == ["step    5 /    5"]
    resumed = run_command("train", "--resume", checkpoint, "--steps", 7, "--samples", 0, "--eval-data", data)
    assert resumed.returncode == 0 and eval_lines(resumed.stdout) == []  # already at its end: no step, no line


@pytest.mark.parametrize(("extra", "fragments"), [
    (("--eval-every", 3), ("--eval-every needs --eval-data",)),
    (("--eval-data", "HELD", "--eval-every", 0), ("--eval-every", "must be a positive integer")),
    (("--eval-data", "HELD", "--save", "HELD"), ("--save", "is the --eval-data file")),
])
def test_bad_eval_options_exit_2_before_training(tmp_path: Path, tiny_data_file: Path, extra: tuple,
                                                 fragments: tuple) -> None:
    held = held_out_file(tmp_path, HELD_OUT)
    extra = [held if value == "HELD" else value for value in extra]
    done = run_command("train", "--data", tiny_data_file, "--steps", 3, *TINY, *extra)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, *fragments)
    assert held.read_text(encoding="utf-8").split() == HELD_OUT


def test_unusable_eval_data_exits_1_before_training(tmp_path: Path, tiny_data_file: Path) -> None:
    unknown = held_out_file(tmp_path, ["ella", "zoë"])
    done = run_command("train", "--data", tiny_data_file, "--steps", 3, *TINY, "--eval-data", unknown)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, f"--eval-data {unknown}: document 1 ('zoë'): character 'ë'")
    done = run_command("train", "--data", tiny_data_file, "--steps", 3, *TINY, "--eval-data", tmp_path / "none.txt")
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, "data file not found")
