"""The `fused` trainer: compiled forward/backward loops with no graph (csrc/.../_fused.pyx)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .._fused import FusedGPT
from .base import Trainer


class FusedTrainer(Trainer):
    name = "fused"

    def __init__(self, config, layout, weights, lr, num_steps) -> None:
        super().__init__(config, layout, weights, lr, num_steps)
        offsets = [slot.offset for slot in layout]  # wte, wpe, lm_head, then 6 per layer
        self.model = FusedGPT(config.n_layer, config.n_embd, config.n_head, self.vocab_size, config.block_size,
                              offsets, np.asarray(weights, dtype=np.float64))
        self.m = np.zeros(len(weights))  # Adam moments
        self.v = np.zeros(len(weights))

    def _tokens(self, tokens: Sequence[int]) -> np.ndarray:
        return np.asarray(self.check_tokens(tokens), dtype=np.intp)

    def loss_and_grads(self, tokens):
        loss = self.model.loss_and_grads(self._tokens(tokens))
        grads = self.model.grads.copy()
        self.model.grads[:] = 0.0
        return loss, grads

    def step(self, tokens):
        loss = self.model.loss_and_grads(self._tokens(tokens))
        lr_t = self.lr * (1 - self.steps_done / self.num_steps)
        self.model.adam_step(self.m, self.v, lr_t, self.beta1, self.beta2, self.eps, self.steps_done)
        self.steps_done += 1
        return loss

    def weights(self):
        return self.model.weights.copy()
