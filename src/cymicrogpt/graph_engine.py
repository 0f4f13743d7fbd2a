"""The compiled engine behind backend "cython": graph ops in C, parameters in NumPy.

`GraphOps` (csrc/cymicrogpt/_ops.pyx) builds the graph; this class adds what the
training loop needs around it: the parameter and gradient arrays, the optimizer, and
room reserved up front so the arena never grows after construction.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._ops import GraphOps
from .adam import VectorAdam
from .config import GPTConfig
from .model import KVCache, gpt, sequence_loss
from .params import MatrixSlot


class GraphEngine(GraphOps):
    name = "cython"

    def __init__(self, layout: list[MatrixSlot], weights: Sequence[float], config: GPTConfig) -> None:
        super().__init__(layout, weights)
        self.num_params = len(weights)
        self._reserve_largest_sequences(config)

    def _reserve_largest_sequences(self, config: GPTConfig) -> None:
        """Build and drop the largest graph a training step builds (a block_size-long
        document) and the largest sampling pass (block_size tokens, softmax at each), so
        the arena reaches its final size before the first step and never grows after."""
        self.begin_sequence(True)
        sequence_loss(self, config, [0] * (config.block_size + 1))
        self.begin_sequence(False)
        cache = KVCache(config.n_layer)
        for pos_id in range(config.block_size):
            self.probs(gpt(self, config, 0, pos_id, cache), 1.0)
        self.begin_sequence(True)

    # --- parameters ----------------------------------------------------------------------
    @property
    def params(self) -> np.ndarray:
        """The weights, zero-copy: a view of the arena's first `num_params` node values.

        Fetch it again after the arena grows (it does not once training has started)."""
        return self.node_values()[: self.num_params]

    @property
    def grads(self) -> np.ndarray:
        return self.node_grads()[: self.num_params]

    def weights(self) -> list[float]:
        return self.params.tolist()

    def set_weights(self, weights) -> None:
        self.params[:] = weights

    def gradients(self) -> list[float]:
        return self.grads.tolist()

    def zero_grad(self) -> None:
        self.grads[:] = 0.0

    def make_optimizer(self, lr: float) -> VectorAdam:
        return VectorAdam(lambda: (self.params, self.grads), self.num_params, lr)
