"""Divergence never loses a run (issue 8, items 1 and 2).

A step whose loss cannot be computed or is not finite, whose gradients are not finite, or
whose Adam update overflows raises ``DivergenceError`` before it changes anything; the
run stays at its last good state, which saves, loads, samples and resumes.  Every backend
ends the same way at the same step (the reference is the oracle); the CLI reports it in
one line, saves the last good state and exits 1.
"""
from __future__ import annotations

import math
import random

import pytest

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig
from cymicrogpt.engines import BACKENDS
from cymicrogpt.params import state_dict_layout
from cymicrogpt.reference import ReferenceAdam, Value
from cymicrogpt.training import Run, start_run
from command import TINY, assert_one_error_line, run_command, samples_of

CONFIG = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)


def snapshot(run: Run) -> dict:
    m, v = run.optimizer.moments()
    return {"weights": run.engine.weights(), "m": list(map(float, m)), "v": list(map(float, v)),
            "rng": run.rng.getstate(), "step": run.step, "losses": list(run.losses)}


def train_until_divergence(run: Run) -> tuple[mg.DivergenceError, dict]:
    """Step until DivergenceError; returns it and the run's state just before the failed step."""
    while True:
        before = snapshot(run)
        try:
            run.train(until=run.step + 1)
        except mg.DivergenceError as exc:
            return exc, before
        assert run.step < run.num_steps, "the run did not diverge"


def outcome(backend: str, docs, lr: float, steps: int = 20, poison=None) -> tuple:
    """(losses, step of the DivergenceError or None, what kind of failure)."""
    run = start_run(list(docs), config=CONFIG, steps=steps, backend=backend, lr=lr, seed=42)
    if poison is not None:  # (matrix name, value): its first weight gets the value
        matrix, value = poison
        weights = run.engine.weights()
        weights[next(s.offset for s in state_dict_layout(CONFIG, run.tokenizer.vocab_size) if s.name == matrix)] = value
        run.engine.set_weights(weights)
    try:
        run.train()
    except mg.DivergenceError as exc:
        return run.losses, exc.step, exc.reason.split(" (")[0]  # "its loss is nan", "its loss cannot be computed"
    return run.losses, None, None


def test_divergence_error_is_an_exported_value_error() -> None:
    assert issubclass(mg.DivergenceError, ValueError)
    assert "DivergenceError" in mg.__all__


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_leaves_the_last_good_state(tmp_path, tiny_docs, backend: str) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=200, backend=backend, lr=1.0, seed=42)
    exc, before = train_until_divergence(run)
    assert exc.step == run.step == before["step"] > 0  # 0-based index of the failed step = steps done
    assert (exc.num_steps, exc.lr) == (200, 1.0)
    assert f"step {exc.step + 1} / 200" in str(exc) and exc.reason in str(exc)
    assert snapshot(run) == before
    assert run.engine.gradients() == [0.0] * len(before["weights"])
    # The same step fails again, the same way: nothing of the failed attempt was kept.
    with pytest.raises(mg.DivergenceError) as again:
        run.train()
    assert (again.value.step, again.value.reason) == (exc.step, exc.reason)
    assert snapshot(run) == before

    run.save(tmp_path / "good.npz")
    loaded = Run.load(tmp_path / "good.npz")
    assert snapshot(loaded) == before
    assert len(loaded.sample(3)) == 3
    with pytest.raises(mg.DivergenceError) as resumed:
        loaded.train()
    assert (resumed.value.step, resumed.value.reason) == (exc.step, exc.reason)


@pytest.mark.parametrize("lr", [1.0, 10.0, 1e10, 1e100])
def test_backends_diverge_alike_on_log_of_zero(tiny_docs, lr: float) -> None:
    """microgpt's own failure, math.log(0.0): the same step on both engines."""
    reference = outcome("python", tiny_docs, lr, steps=200)
    assert reference[1] is not None and reference[2] == "its loss cannot be computed"
    assert outcome("cython", tiny_docs, lr, steps=200) == reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lr", [1e155, 1e200, 1e308])
def test_nan_losses_diverge_alike(tiny_docs, backend: str, lr: float) -> None:
    """Huge learning rates give NaN weights' NaN losses (math.log(nan) is nan, no error)."""
    reference = outcome("python", tiny_docs, lr)
    assert reference[2] == "its loss is nan"
    assert outcome(backend, tiny_docs, lr) == reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("matrix", ["wte", "wpe", "layer0.mlp_fc2"])  # row 0: 'a', position 0; the last layer
def test_poisoned_weights_diverge_alike(tiny_docs, backend: str, value: float, matrix: str) -> None:
    reference = outcome("python", tiny_docs, 0.01, steps=12, poison=(matrix, value))
    assert outcome(backend, tiny_docs, 0.01, steps=12, poison=(matrix, value)) == reference


@pytest.mark.parametrize("value", [1e300, -1e300, 1e154])
@pytest.mark.parametrize("matrix", ["wte", "lm_head"])
def test_huge_finite_weights_end_alike(tiny_docs, value: float, matrix: str) -> None:
    reference = outcome("python", tiny_docs, 0.01, steps=6, poison=(matrix, value))
    assert outcome("cython", tiny_docs, 0.01, steps=6, poison=(matrix, value)) == reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_weights_give_a_nan_loss_not_an_error(tiny_docs, backend: str) -> None:
    """Only the Run decides to stop: the engines themselves compute NaN, as microgpt does."""
    run = start_run(tiny_docs, config=CONFIG, steps=5, backend=backend, seed=1)
    run.engine.set_weights([math.nan] * len(run.engine.weights()))
    assert math.isnan(run.forward_backward())


def test_nonfinite_gradients_stop_before_the_update(tiny_docs) -> None:
    """A finite loss with a NaN gradient would write NaN into the weights: stop first."""
    runs = {b: start_run(tiny_docs, config=CONFIG, steps=8, backend=b, lr=1e200, seed=3) for b in BACKENDS}
    for backend, run in runs.items():
        exc, before = train_until_divergence(run)
        assert exc.reason.endswith("but some gradients are not finite"), (backend, exc.reason)
        assert all(math.isfinite(w) for w in run.engine.weights())  # the saved state samples
        assert snapshot(run) == before
    assert runs["python"].losses == runs["cython"].losses


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_optimizers_refuse_every_nonfinite_gradient(tiny_docs, backend: str, bad: float) -> None:
    """optimizer.step on a step's gradients with one of them (first, middle, last) made nan
    or infinite refuses it (FloatingPointError, naming it) and changes nothing; the
    largest finite doubles are finite (their squares overflow: OverflowError, also
    atomic), the smallest pass.  Training stops on the refusal (the test above)."""
    run = start_run(list(tiny_docs), config=CONFIG, steps=2, backend=backend, seed=5)
    run.forward_backward()
    grads = run.engine.gradients()
    before = snapshot(run)
    for index in (0, len(grads) // 2, len(grads) - 1):
        for value, error in ((bad, FloatingPointError), (1.7976931348623157e308, OverflowError),
                             (-5e-324, None)):
            changed = list(grads)
            changed[index] = value
            set_gradients(run, changed)
            if error is None:
                run.optimizer.step(0, 2)  # the smallest subnormal is finite: an ordinary step
                run.engine.set_weights(before["weights"])
                run.optimizer.set_moments(before["m"], before["v"])
                continue
            with pytest.raises(error) as raised:
                run.optimizer.step(0, 2)
            if error is FloatingPointError:
                assert f"the gradient of parameter {index} is {value!r}" in str(raised.value)
            assert snapshot(run) == before, (index, value)
            assert list(map(repr, run.engine.gradients())) == list(map(repr, changed)), (index, value)  # nan: by repr


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nonfinite_gradient_is_refused_before_an_overflowing_one(tiny_docs, backend: str) -> None:
    """Both at once: the non-finite gradient is what the step reports, as when training
    checked the gradients before Adam (the AVX2 build's quick test fails on either)."""
    run = start_run(list(tiny_docs), config=CONFIG, steps=2, backend=backend, seed=5)
    loss = run.forward_backward()
    grads = run.engine.gradients()
    grads[1], grads[-2] = 1e155, math.nan
    set_gradients(run, grads)
    with pytest.raises(mg.DivergenceError, match="but some gradients are not finite"):
        run.finish_step(loss)


def set_gradients(run, grads: list[float]) -> None:
    """Overwrite the weights' gradients in `run`'s engine (engines have no setter)."""
    if run.backend == "python":
        for p, g in zip(run.engine.params, grads):
            p.grad = g
    else:
        run.engine.grad_array[:] = grads


class _FailingAdam:
    """An optimizer whose update overflows at step `at` (and otherwise is the real one)."""

    def __init__(self, real, at: int) -> None:
        self.real, self.at = real, at

    def step(self, step: int, num_steps: int) -> None:
        if step == self.at:
            raise OverflowError("(34, 'Numerical result out of range')")
        self.real.step(step, num_steps)

    def moments(self):
        return self.real.moments()

    def set_moments(self, m, v) -> None:
        self.real.set_moments(m, v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_overflowing_update_is_divergence(tiny_docs, backend: str) -> None:
    run = start_run(tiny_docs, config=CONFIG, steps=10, backend=backend, seed=5)
    run.optimizer = _FailingAdam(run.optimizer, at=3)
    exc, before = train_until_divergence(run)
    assert exc.step == 3 and exc.reason.startswith("its Adam update overflows")
    assert snapshot(run) == before
    assert run.engine.gradients() == [0.0] * len(before["weights"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_huge_gradient_overflows_adam_atomically(tiny_docs, backend: str) -> None:
    """Python's g**2 raises OverflowError for |g| > ~1.34e154: microgpt's Adam fails there.
    The step is then divergence and changes nothing, on both engines."""
    run = start_run(tiny_docs, config=CONFIG, steps=10, backend=backend, seed=5)
    run.train(until=2)
    before = snapshot(run)
    loss = run.forward_backward()
    grads = run.engine.gradients()
    grads[len(grads) // 2] = 1e155  # a finite gradient whose square overflows
    set_gradients(run, grads)
    with pytest.raises(mg.DivergenceError, match="Adam update overflows"):
        run.finish_step(loss)
    assert snapshot(run) == before
    assert run.engine.gradients() == [0.0] * len(grads)


# --- ReferenceAdam: microgpt's loop, made atomic ----------------------------------------------
def microgpt_adam(params: list[Value], m: list[float], v: list[float], lr: float, step: int, num_steps: int) -> None:
    """microgpt.py's Adam loop, verbatim in substance: the oracle for ReferenceAdam."""
    beta1, beta2, eps_adam = 0.85, 0.99, 1e-8
    lr_t = lr * (1 - step / num_steps)
    for i, p in enumerate(params):
        m[i] = beta1 * m[i] + (1 - beta1) * p.grad
        v[i] = beta2 * v[i] + (1 - beta2) * p.grad**2
        m_hat = m[i] / (1 - beta1 ** (step + 1))
        v_hat = v[i] / (1 - beta2 ** (step + 1))
        p.data -= lr_t * m_hat / (v_hat**0.5 + eps_adam)
        p.grad = 0


def test_reference_adam_equals_microgpts_loop() -> None:
    rng = random.Random(0)
    ours, theirs = [Value(rng.gauss(0, 1)) for _ in range(300)], None
    theirs = [Value(p.data) for p in ours]
    adam, m, v = ReferenceAdam(ours, 0.01), [0.0] * 300, [0.0] * 300
    for step in range(20):
        for a, b in zip(ours, theirs):
            a.grad = b.grad = rng.choice([0, rng.gauss(0, 1), rng.gauss(0, 1e-3), rng.gauss(0, 1e3)])
        adam.step(step, 20)
        microgpt_adam(theirs, m, v, 0.01, step, 20)
        assert [p.data for p in ours] == [p.data for p in theirs]
        assert adam.moments() == (m, v)
        assert all(p.grad == 0 for p in ours)


def test_reference_adam_step_that_raises_changes_nothing() -> None:
    params = [Value(float(i)) for i in range(10)]
    adam = ReferenceAdam(params, 0.01)
    for p in params:
        p.grad = 0.5
    adam.step(0, 10)
    for i, p in enumerate(params):
        p.grad = 1e155 if i == 7 else 0.25  # parameters 0..6 would be updated before 7 fails
    state = ([p.data for p in params], [p.grad for p in params], adam.moments())
    with pytest.raises(OverflowError):
        adam.step(1, 10)
    assert ([p.data for p in params], [p.grad for p in params], adam.moments()) == state


# --- the command line --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_divergence_saves_the_last_good_state(tmp_path, tiny_data_file, backend: str) -> None:
    ckpt = tmp_path / "run.npz"
    args = ["--data", tiny_data_file, "--steps", 200, *TINY, "--lr", 1.0, "--backend", backend]
    done = run_command("train", *args, "--save", ckpt)
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr, "diverged at step", "try a lower --lr", f"saved to {ckpt}")
    assert "Traceback" not in done.stderr and samples_of(done.stdout) == []
    run = Run.load(ckpt)
    assert f"diverged at step {run.step + 1} / 200" in line
    assert f"the last good state (step {run.step} / 200)" in line
    assert len(run.losses) == run.step > 0 and all(math.isfinite(x) for x in run.losses)

    sampled = run_command("sample", "--checkpoint", ckpt, "--num", 4)
    assert (sampled.returncode, sampled.stderr, len(samples_of(sampled.stdout))) == (0, "", 4)
    resumed = run_command("train", "--resume", ckpt, "--save", ckpt)  # diverges again, at the same step
    assert resumed.returncode == 1
    assert_one_error_line(resumed.stderr, f"diverged at step {run.step + 1} / 200")
    assert Run.load(ckpt).losses == run.losses


def test_cli_divergence_without_save(tiny_data_file) -> None:
    done = run_command("train", "--data", tiny_data_file, "--steps", 50, *TINY, "--lr", 10)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "diverged at step 2 / 50", "--lr", "nothing saved", "--save")


def test_cli_divergence_on_names_at_lr_0_2(tmp_path, names_path) -> None:
    """The issue's own command: microgpt.py dies there with math.log(0.0)."""
    ckpt = tmp_path / "ck.npz"
    done = run_command("train", "--data", names_path, "--lr", 0.2, "--save", ckpt)
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr, "diverged at step", "math domain error", "--lr")
    run = Run.load(ckpt)
    assert f"diverged at step {run.step + 1} / 1000" in line and run.step > 10
    assert len(run.sample(5)) == 5
