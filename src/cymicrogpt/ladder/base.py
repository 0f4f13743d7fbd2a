"""The interface every ladder implementation follows."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import GPTConfig
from ..params import MatrixSlot


class Trainer:
    """One implementation of microgpt's training step.

    config, layout: the model's shape and the state-dict layout of the flat weights.
    weights: initial weights, flat, in state-dict order (the same list for everyone).
    lr, num_steps: Adam's base learning rate and the run length (linear decay to 0).
    """

    name = "?"
    beta1, beta2, eps = 0.85, 0.99, 1e-8  # microgpt's Adam

    def __init__(self, config: GPTConfig, layout: list[MatrixSlot], weights: Sequence[float],
                 lr: float, num_steps: int) -> None:
        self.config = config
        self.layout = layout
        self.lr = lr
        self.num_steps = num_steps
        self.steps_done = 0

    def loss_and_grads(self, tokens: Sequence[int]) -> tuple[float, np.ndarray]:
        """Mean cross-entropy of one tokenised document (BOS ... BOS, truncated to
        block_size positions) and its gradient, flat in state-dict order.  No update."""
        raise NotImplementedError

    def step(self, tokens: Sequence[int]) -> float:
        """One training step (forward, backward, Adam); returns the loss."""
        raise NotImplementedError

    def weights(self) -> np.ndarray:
        """Current weights, flat, state-dict order (float64)."""
        raise NotImplementedError
