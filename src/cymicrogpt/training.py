"""Training microgpt: one document per step, mean cross-entropy, Adam with linear decay.

``train()`` is the public entry point; it returns a ``Run`` that holds everything a run
is (weights, optimizer moments, the random stream, the losses so far) and can continue
training, sample names and save itself.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Iterable, Optional

from .backends import DEFAULT_BACKEND, check_backend, make_engine
from .config import GPTConfig
from .model import forward_backward
from .params import init_weights, num_params, state_dict_layout
from .sampling import check_temperature, sample_one
from .tokenizer import Tokenizer

DEFAULT_LR = 0.01


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr < math.inf):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    return float(lr)


def check_docs(docs) -> list[str]:
    docs = list(docs)
    if not docs:
        raise ValueError("no documents to train on")
    for i, doc in enumerate(docs):
        if not isinstance(doc, str) or not doc:
            raise ValueError(f"document {i} must be a non-empty string, got {doc!r}")
    return docs


class Run:
    """A training run: model state, optimizer state, random stream and loss history."""

    def __init__(self, *, config: GPTConfig, tokenizer: Tokenizer, docs: list[str], engine, optimizer,
                 rng: random.Random, num_steps: int, lr: float, seed: int, backend: str,
                 step: int = 0, losses: Optional[list[float]] = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.docs = docs  # in training order (already shuffled)
        self.engine = engine
        self.optimizer = optimizer
        self.rng = rng  # the one stream: shuffle, init, then sampling
        self.num_steps = num_steps  # total steps: the learning-rate decay depends on it
        self.lr = lr
        self.seed = seed
        self.backend = backend
        self.step = step  # steps completed
        self.losses: list[float] = [] if losses is None else losses

    @property
    def num_params(self) -> int:
        return num_params(state_dict_layout(self.config, self.tokenizer.vocab_size))

    def forward_backward(self) -> float:
        """Loss of the current step's document, with gradients left in the engine."""
        doc = self.docs[self.step % len(self.docs)]
        return forward_backward(self.engine, self.config, self.tokenizer.encode(doc))

    def train(self, until: Optional[int] = None, on_step: Optional[Callable[["Run"], None]] = None) -> None:
        """Train up to step `until` (default: the end), calling `on_step` after each step.

        A KeyboardInterrupt inside a step can leave that step half applied (Adam updates
        the weights in place); to stop cleanly, stop between steps (from `on_step`, as the
        CLI does) before saving.
        """
        until = self.num_steps if until is None else min(until, self.num_steps)
        while self.step < until:
            self.finish_step(self.forward_backward())
            if on_step is not None:
                on_step(self)

    def finish_step(self, loss_value: float) -> None:
        """Apply Adam with the gradients forward_backward() left, and record the loss."""
        self.optimizer.step(self.step, self.num_steps)
        self.losses.append(loss_value)
        self.step += 1

    def sample(self, num: int = 20, temperature: float = 0.5) -> list[str]:
        """`num` new documents; continues the run's random stream as microgpt does."""
        check_positive_int("num", num)
        temperature = check_temperature(temperature)
        return [sample_one(self.engine, self.config, self.tokenizer, self.rng, temperature) for _ in range(num)]

    def save(self, path) -> None:
        from .checkpoint import save_checkpoint

        save_checkpoint(self, path)


def initialise(docs: list[str], config: GPTConfig, seed: int):
    """microgpt's start, in its RNG order: shuffle `docs` in place, build the tokenizer,
    then draw every initial weight.  Returns (rng, tokenizer, layout, weights); the rng
    goes on to serve sampling."""
    rng = random.Random(seed)
    rng.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    layout = state_dict_layout(config, tokenizer.vocab_size)
    return rng, tokenizer, layout, init_weights(rng, layout)


def start_run(docs: Iterable[str], config: GPTConfig = GPTConfig(), steps: int = 1000,
              backend: str = DEFAULT_BACKEND, seed: int = 42, lr: float = DEFAULT_LR) -> Run:
    """Shuffle, tokenise and initialise, in microgpt's RNG order; no training yet."""
    docs = check_docs(docs)
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    check_positive_int("steps", steps)
    check_backend(backend)
    lr = check_lr(lr)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rng, tokenizer, layout, weights = initialise(docs, config, seed)
    engine = make_engine(backend, layout, weights, config)
    return Run(config=config, tokenizer=tokenizer, docs=docs, engine=engine,
               optimizer=engine.make_optimizer(lr), rng=rng, num_steps=steps, lr=lr, seed=seed,
               backend=backend)


def train(docs: Iterable[str], config: GPTConfig = GPTConfig(), steps: int = 1000,
          backend: str = DEFAULT_BACKEND, seed: int = 42, lr: float = DEFAULT_LR,
          on_step: Optional[Callable[[Run], None]] = None) -> Run:
    """Train microgpt on `docs` for `steps` steps and return the finished ``Run``."""
    run = start_run(docs, config=config, steps=steps, backend=backend, seed=seed, lr=lr)
    run.train(on_step=on_step)
    return run
