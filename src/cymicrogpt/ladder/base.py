"""The interface every ladder implementation follows, and the error of one whose optional
dependency (e.g. torch) is missing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..config import GPTConfig
from ..params import MatrixSlot, num_params
from ..schedule import AdamScalars, adam_scalars

if TYPE_CHECKING:  # annotations only: `cymicrogpt bench` starts without importing NumPy
    import numpy as np


class NotInstalled(RuntimeError):
    """An optional dependency of an implementation (e.g. torch) is missing."""


class Trainer:
    """One implementation of microgpt's training step.

    config, layout: the model's shape and the state-dict layout of the flat weights.
    weights: initial weights, flat, in state-dict order (the same list for everyone).
    lr, num_steps: Adam's base learning rate and the run length (linear decay to 0);
    Adam's other constants are config.py's, as for the training backends.

    The rungs of their own (NumPy, torch) write only `_forward_backward` and `_adam`;
    the step that joins them is `step` below.  The exact rungs, the training backends (graph.py), take the step of
    `train` itself instead.
    """

    name = "?"
    steps_done = 0  # training steps taken (the exact rungs count in their Training)

    def __init__(self, config: GPTConfig, layout: list[MatrixSlot], weights: Sequence[float],
                 lr: float, num_steps: int) -> None:
        if len(weights) != num_params(layout):
            raise ValueError(f"expected {num_params(layout)} weights, got {len(weights)}")
        self.config = config
        self.layout = layout
        self.vocab_size = layout[0].rows  # wte: one row per token
        self.lr = lr
        self.num_steps = num_steps

    def check_tokens(self, tokens: Sequence[int]) -> list[int]:
        """A tokenised document as a list; at least BOS ... BOS, every id in the vocabulary."""
        tokens = list(tokens)
        if len(tokens) < 2:
            raise ValueError(f"a document needs at least 2 tokens (BOS ... BOS), got {len(tokens)}")
        if min(tokens) < 0 or max(tokens) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {tokens}")
        return tokens

    def loss_and_grads(self, tokens: Sequence[int]) -> tuple[float, np.ndarray]:
        """Mean cross-entropy of one tokenised document (BOS ... BOS, truncated to
        block_size positions) and its gradient, flat in state-dict order.  No update."""
        raise NotImplementedError

    def step(self, tokens: Sequence[int]) -> float:
        """One training step (forward, backward, Adam); returns the loss."""
        loss = self._forward_backward(self.check_tokens(tokens))
        self._adam(adam_scalars(self.lr, self.steps_done, self.num_steps))  # steps_done: this step's 0-based index
        self.steps_done += 1
        return loss

    def _forward_backward(self, tokens: list[int]) -> float:
        """The loss of a checked tokenised document, its gradient left for `_adam`."""
        raise NotImplementedError

    def _adam(self, scalars: AdamScalars) -> None:
        """microgpt's Adam update with the last gradient and the step's scalars (schedule.py)."""
        raise NotImplementedError

    def weights(self) -> np.ndarray:
        """Current weights, flat, state-dict order (float64)."""
        raise NotImplementedError
