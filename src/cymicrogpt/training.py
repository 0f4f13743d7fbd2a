"""Training microgpt: one document per step, mean cross-entropy, Adam with linear decay.

``train()`` is the public entry point; it returns a ``Run`` that holds everything a run
is (weights, optimizer moments, the random stream, the losses so far) and can continue
training, sample names and save itself.  The training step itself is written once, in
``Training.train_step``, which ``Run`` extends with its data.

A run that diverges (a step whose loss cannot be computed or is not finite, a gradient
that is not finite, an Adam update that overflows) raises ``DivergenceError`` before that
step changes anything, so the ``Run`` stays at its last good state and can still be saved.
"""
from __future__ import annotations

import math
import random
from math import isfinite
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

from .checks import check_count, check_docs, check_lr, check_seed
from .config import (DEFAULT_LR, DEFAULT_NUM_SAMPLES, DEFAULT_SEED, DEFAULT_STEPS, DEFAULT_TEMPERATURE,
                     GPTConfig, check_model_size)
from .engines import DEFAULT_BACKEND, check_backend, make_engine
from .engines.interface import Engine, Optimizer
from .model import sequence_loss_value
from .params import MatrixSlot, init_weights, state_dict_layout
from .run_state import RunState
from .sampling import check_temperature, sample_one
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # the reference engine trains without NumPy, and without torch: no import at run time
    import numpy as np

    from .torch_model import MicroGPT


class DivergenceError(ValueError):
    """Training cannot continue: step `step` (0-based; also the number of steps completed)
    has no finite loss, gradient or update.  The ``Run`` is left as it was before that step."""

    def __init__(self, step: int, num_steps: int, lr: float, reason: str) -> None:
        self.step = step
        self.num_steps = num_steps
        self.lr = lr
        self.reason = reason
        # Shown 1-based, as the progress line counts steps.
        super().__init__(f"training diverged at step {step + 1} / {num_steps} (learning rate {lr!r}): {reason}")


class Training:
    """A model in training: engine, optimizer, the run's length and learning rate, and the
    steps completed with their losses.  ``train_step`` is microgpt's training step, the only
    place it is written: ``Run`` trains with it, and so do the ladder's exact rungs
    (ladder/graph.py)."""

    def __init__(self, *, config: GPTConfig, engine: Engine, optimizer: Optimizer, num_steps: int, lr: float,
                 step: int = 0, losses: Optional[list[float]] = None) -> None:
        self.config = config
        self.engine = engine
        self.optimizer = optimizer
        self.num_steps = num_steps  # total steps: the learning-rate decay depends on it
        self.lr = lr
        self.step = step  # steps completed, which is also the 0-based index of the next step
        self.losses: list[float] = [] if losses is None else losses
        self._training_pass: Optional[Callable[[list[int]], float]] = None  # engine.training_pass(config)

    def train_step(self, tokens: list[int]) -> float:
        """One training step on a tokenised document: forward and backward on a fresh graph,
        then Adam; returns the loss.

        Raises ``DivergenceError`` at a step that has no finite loss, gradient or update,
        leaving everything as it was before that step (weights, moments, step, losses;
        gradients zeroed).

        The forward and backward: microgpt itself stops with math.log(0.0)'s ValueError; the
        engines raise what Python's float arithmetic raises (ValueError, OverflowError,
        ZeroDivisionError) and otherwise return NaN or infinite values: all of it is
        divergence here, raised before the optimizer sees the step."""
        training_pass = self._training_pass
        if training_pass is None:  # bound on the first step: the engine and config are the run's for good
            training_pass = self._training_pass = self.engine.training_pass(self.config)
        try:
            loss = training_pass(tokens)
        except (ValueError, OverflowError, ZeroDivisionError) as exc:
            raise self._diverged(f"its loss cannot be computed ({exc})") from exc
        if not isfinite(loss):
            raise self._diverged(f"its loss is {loss!r}")
        self.finish_step(loss)
        return loss

    def finish_step(self, loss_value: float) -> None:
        """Apply Adam with the gradients the step's backward left, and record the loss.

        A NaN or infinite gradient (which would turn weights into NaN even when the loss is
        finite: the optimizers refuse it, FloatingPointError, reading the gradients they read
        anyway) and an update that overflows (Python's float ``**`` raises OverflowError for
        a gradient above ~1.3e154) raise DivergenceError; the optimizers change nothing then."""
        try:
            self.optimizer.step(self.step, self.num_steps)  # self.step: this step's 0-based index
        except FloatingPointError as exc:
            raise self._diverged(f"its loss is {loss_value!r} but some gradients are not finite") from exc
        except OverflowError as exc:
            raise self._diverged(f"its Adam update overflows ({exc})") from exc
        self.losses.append(loss_value)
        self.step += 1

    def _diverged(self, reason: str) -> DivergenceError:
        self.engine.zero_grad()  # the failed step's gradients must not reach a later step
        return DivergenceError(self.step, self.num_steps, self.lr, reason)


class Run(Training):
    """A training run: a ``Training`` with its data, tokenizer, random stream and seed; it
    trains on its documents in order, samples, and saves itself."""

    def __init__(self, *, config: GPTConfig, tokenizer: Tokenizer, docs: list[str], engine: Engine, optimizer: Optimizer,
                 rng: random.Random, num_steps: int, lr: float, seed: int, backend: str,
                 step: int = 0, losses: Optional[list[float]] = None) -> None:
        super().__init__(config=config, engine=engine, optimizer=optimizer, num_steps=num_steps, lr=lr, step=step,
                         losses=losses)
        self.tokenizer = tokenizer
        self.docs = docs  # in training order (already shuffled)
        self.rng = rng  # the one stream: shuffle, init, then sampling
        self.seed = seed
        self.backend = backend
        self._stopping = False  # stop_soon() was called: the train() under way or the next ends

    @property
    def num_params(self) -> int:
        return self.config.num_params(self.tokenizer.vocab_size)

    def forward_backward(self) -> float:
        """Loss of the current step's document, with gradients left in the engine (no
        checks, no update: for tests and tools that look at one step's gradients)."""
        return self.engine.forward_backward(self.config, self._tokens())

    def _tokens(self) -> list[int]:
        return self.tokenizer.encode(self.docs[self.step % len(self.docs)])

    def train(self, until: Optional[int] = None, on_step: Optional[Callable[["Run"], None]] = None) -> None:
        """Train up to step `until` (default: the end), calling `on_step` after each step.

        Raises ``DivergenceError`` at a step that has no finite loss, gradient or update,
        leaving the run as it was before that step (weights, moments, random stream,
        step, losses; gradients zeroed), so that it can still be saved and sampled.

        A KeyboardInterrupt inside a step can leave that step half applied (Adam updates
        the weights in place); to stop cleanly, stop between steps (from `on_step`, or
        with ``stop_soon()``, as the CLI's signal handler does) before saving.
        """
        until = self.num_steps if until is None else min(until, self.num_steps)
        docs, encode, train_step = self.docs, self.tokenizer.encode, self.train_step  # looked up once, not per step
        try:
            while self.step < until and not self._stopping:  # an attribute: stop_soon() may set it during a step
                # self._tokens(), inline; encoded outside the step's checks: a bad document is not divergence
                train_step(encode(docs[self.step % len(docs)]))
                if on_step is not None:
                    on_step(self)
        finally:
            self._stopping = False  # consumed: a later train() trains again

    def stop_soon(self) -> None:
        """End the train() under way at its next step boundary, or, called between two
        train() calls, the next one before its first step (safe from a signal handler: the
        step under way completes; a flag, not a lowered limit, so that a call landing just
        before train() sets its limit is not overwritten)."""
        self._stopping = True

    def sample(self, num: int = DEFAULT_NUM_SAMPLES, temperature: float = DEFAULT_TEMPERATURE) -> list[str]:
        """`num` new documents; continues the run's random stream as microgpt does."""
        check_count("num", num)
        temperature = check_temperature(temperature)
        return [sample_one(self.engine, self.config, self.tokenizer, self.rng, temperature) for _ in range(num)]

    def evaluate(self, docs: Iterable[str]) -> float:
        """The model's mean next-token loss on `docs` (held-out documents, say), without
        training: weights, Adam moments, gradients, step, losses and random stream stay as
        they are, so a run evaluated mid-way continues bit for bit.

        Definition: each document is tokenised and truncated as in training ([BOS, its
        characters..., BOS], the first min(block_size, len(doc) + 1) positions); its loss is
        the mean over those positions of -log softmax(logits)[next token], float == the
        loss a training step on it reports (``model.sequence_loss_value``); the result is
        the plain mean of the documents' losses, each document counting once whatever its
        length: ``math.fsum(losses) / len(docs)``.  A position whose probability underflows
        to 0.0 makes the loss inf.

        ValueError for no documents, a document that is not a non-empty string, or one
        with a character outside the run's vocabulary (naming the first such document and
        character), before anything is computed."""
        token_lists = self.tokenizer.encode_all(check_docs(docs, purpose="evaluate"))
        losses = [sequence_loss_value(self.engine, self.config, tokens) for tokens in token_lists]
        return math.fsum(losses) / len(losses)

    # --- weights by name: microgpt's state_dict (see state_dict.py) ---------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights as microgpt names them: {name: float64 array (rows, cols)}, copies, in
        state-dict order: ``wte`` (vocab_size, n_embd), ``wpe`` (block_size, n_embd),
        ``lm_head`` (vocab_size, n_embd), then per layer i ``layer{i}.attn_wq``, ``.attn_wk``,
        ``.attn_wv``, ``.attn_wo`` (n_embd, n_embd), ``.mlp_fc1`` (4 n_embd, n_embd) and
        ``.mlp_fc2`` (n_embd, 4 n_embd); a matrix's rows are its output features, so a
        linear layer is ``w @ x``, as in PyTorch's ``nn.Linear.weight``."""
        from .state_dict import to_state_dict  # NumPy only here: the reference trains without it

        return to_state_dict(self._layout(), self.engine.weights())

    def load_state_dict(self, tensors: Mapping[str, Any]) -> None:
        """Set every weight from `tensors`, a mapping as ``state_dict()`` returns (any arrays
        of real numbers, converted to float64); the run's Adam moments, step, losses and random
        stream are kept as they are.  ValueError naming the first tensor that is missing,
        extra, misshapen, not real numbers or not finite, before any weight changes."""
        from .state_dict import from_state_dict  # NumPy only here: the reference trains without it

        self.engine.set_weights(from_state_dict(self._layout(), tensors))

    def export(self, path) -> None:
        """Write the weights to `path` as a safetensors file (atomically; see safetensors.py):
        ``state_dict()``'s tensors as F64, and metadata holding the model's shape, its
        vocabulary, the step and cymicrogpt's version.  OSError if it cannot be written."""
        from .safetensors import run_metadata, write  # NumPy only here: the reference trains without it

        write(path, self.state_dict(), run_metadata(self.config, self.tokenizer, self.step))

    def load_safetensors(self, path) -> None:
        """Set every weight from the safetensors file `path` (one ``export`` wrote, or PyTorch
        with the same tensors and metadata), as ``load_state_dict`` does.  SafetensorsError,
        one line naming the file and the tensor or metadata key, for a file that is not
        usable safetensors, whose metadata gives another shape or vocabulary than this run's,
        or whose tensors ``load_state_dict`` refuses; no weight changes then."""
        from .safetensors import SafetensorsError, check_metadata, read  # NumPy only here, as above

        tensors, metadata = read(path)
        check_metadata(path, metadata, self.config, self.tokenizer)
        try:
            self.load_state_dict(tensors)
        except ValueError as exc:
            raise SafetensorsError(f"safetensors file {path}: {exc}") from None

    def to_torch(self, dtype: Any = None, device: Any = None) -> MicroGPT:
        """This run's model as a ``torch.nn.Module`` (``torch_model.MicroGPT``): microgpt's
        architecture over whole sequences and batches of documents, in `dtype` (default
        float64) on `device` (default: the CPU); its parameters are copies of the run's
        weights, named as in ``state_dict()``, and the run's vocabulary comes with it:
        ``module.evaluate(docs)`` is ``evaluate(docs)`` to ~1e-16 relative (float64).
        ``module.numpy_state_dict()`` goes back through ``load_state_dict``.  ImportError,
        one line saying how to install PyTorch's CPU build, when torch is missing."""
        from .torch_model import MicroGPT  # torch only here: `import cymicrogpt` never imports it

        return MicroGPT.from_state_dict(self.config, self.tokenizer, self.state_dict(), dtype=dtype, device=device)

    def _layout(self) -> list[MatrixSlot]:
        return state_dict_layout(self.config, self.tokenizer.vocab_size)

    # --- checkpoints: the run as a plain RunState, which checkpoint.py reads and writes ---
    def state(self) -> RunState:
        """Everything this run is, as plain values."""
        m, v = self.optimizer.moments()
        return RunState(config=self.config, chars=self.tokenizer.chars, docs=list(self.docs),
                        weights=list(self.engine.weights()), adam_m=list(m), adam_v=list(v), step=self.step,
                        num_steps=self.num_steps, lr=self.lr, seed=self.seed, backend=self.backend,
                        losses=list(self.losses), rng_state=self.rng.getstate())

    @classmethod
    def from_state(cls, state: RunState, backend: Optional[str] = None) -> "Run":
        """The run `state` describes, on `backend` (default: the one it was trained on)."""
        backend = state.backend if backend is None else check_backend(backend)
        tokenizer = Tokenizer(state.chars)
        layout = state_dict_layout(state.config, tokenizer.vocab_size)
        engine = make_engine(backend, layout, state.weights)
        optimizer = engine.make_optimizer(state.lr)
        optimizer.set_moments(state.adam_m, state.adam_v)
        rng = random.Random()
        rng.setstate(state.rng_state)
        return cls(config=state.config, tokenizer=tokenizer, docs=list(state.docs), engine=engine,
                   optimizer=optimizer, rng=rng, num_steps=state.num_steps, lr=state.lr, seed=state.seed,
                   backend=backend, step=state.step, losses=list(state.losses))

    def save(self, path) -> None:
        """Write the run to the checkpoint `path` (atomically; see checkpoint.py)."""
        from .checkpoint import save_state  # NumPy only here: the reference trains without it

        save_state(self.state(), path)

    @classmethod
    def load(cls, path, backend: Optional[str] = None) -> "Run":
        """The run saved at `path` (CheckpointError if unusable), ready to train on or sample."""
        from .checkpoint import load_state  # NumPy only here: the reference trains without it

        if backend is not None:
            check_backend(backend)  # before reading the file
        return cls.from_state(load_state(path), backend)


def initialise(docs: list[str], config: GPTConfig, seed: int):
    """microgpt's start, in its RNG order: shuffle `docs` in place, then draw every initial
    weight.  Returns (rng, tokenizer, layout, weights); the rng goes on to serve sampling.
    ValueError, before any of it, if the model has more weights than the engine can index."""
    # The tokenizer (sorted characters) is the same before and after the shuffle and draws
    # nothing from the rng: built first, it sizes the model before any work is done.
    tokenizer = Tokenizer.from_docs(docs)
    check_model_size(config, tokenizer.vocab_size)  # from the numbers: no layout, no weights yet
    rng = random.Random(seed)
    rng.shuffle(docs)
    layout = state_dict_layout(config, tokenizer.vocab_size)
    return rng, tokenizer, layout, init_weights(rng, layout)


def start_run(docs: Iterable[str], config: GPTConfig = GPTConfig(), steps: int = DEFAULT_STEPS,
              backend: str = DEFAULT_BACKEND, seed: int = DEFAULT_SEED, lr: float = DEFAULT_LR) -> Run:
    """Shuffle, tokenise and initialise, in microgpt's RNG order; no training yet."""
    docs = check_docs(docs)
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    check_count("steps", steps)
    check_backend(backend)
    lr = check_lr(lr)
    seed = check_seed(seed)
    rng, tokenizer, layout, weights = initialise(docs, config, seed)
    engine = make_engine(backend, layout, weights)
    return Run(config=config, tokenizer=tokenizer, docs=docs, engine=engine,
               optimizer=engine.make_optimizer(lr), rng=rng, num_steps=steps, lr=lr, seed=seed,
               backend=backend)


def train(docs: Iterable[str], config: GPTConfig = GPTConfig(), steps: int = DEFAULT_STEPS,
          backend: str = DEFAULT_BACKEND, seed: int = DEFAULT_SEED, lr: float = DEFAULT_LR,
          on_step: Optional[Callable[[Run], None]] = None) -> Run:
    """Train microgpt on `docs` for `steps` steps and return the finished ``Run``."""
    run = start_run(docs, config=config, steps=steps, backend=backend, seed=seed, lr=lr)
    run.train(on_step=on_step)
    return run
