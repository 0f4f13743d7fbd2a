"""The `fused` trainer: the whole step in hand-written Cython loops, no graph (csrc/cymicrogpt/_fused.pyx)."""
from __future__ import annotations

import numpy as np

from .._fused import FusedGPT
from ..config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, LAYER_MATRIX_NAMES, RMSNORM_EPS
from ..params import layer_name
from .base import Trainer


class FusedTrainer(Trainer):
    name = "fused"

    def __init__(self, config, layout, weights, lr, num_steps) -> None:
        super().__init__(config, layout, weights, lr, num_steps)
        slots = {slot.name: slot for slot in layout}
        offsets = [slots[name].offset for name in ("wte", "wpe", "lm_head")]  # slots WTE, WPE, LM_HEAD
        layer_offsets = [[slots[layer_name(li, part)].offset for part in LAYER_MATRIX_NAMES]  # slots WQ ... FC2
                         for li in range(config.n_layer)]
        hidden = slots[layer_name(0, "mlp_fc1")].rows  # the MLP's width
        self.model = FusedGPT(config.n_layer, config.n_embd, config.n_head, self.vocab_size, config.block_size,
                              hidden, offsets, layer_offsets, np.asarray(weights, dtype=np.float64), RMSNORM_EPS)
        self.m = np.zeros(len(weights))  # Adam moments
        self.v = np.zeros(len(weights))

    def _forward_backward(self, tokens: list[int]) -> float:
        return self.model.loss_and_grads(np.asarray(tokens, dtype=np.intp))

    def loss_and_grads(self, tokens):
        loss = self._forward_backward(self.check_tokens(tokens))
        grads = self.model.grads.copy()
        self.model.grads[:] = 0.0
        return loss, grads

    def _adam(self, scalars) -> None:
        self.model.adam_step(self.m, self.v, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, *scalars)  # zeroes the gradients

    def weights(self):
        return self.model.weights.copy()
