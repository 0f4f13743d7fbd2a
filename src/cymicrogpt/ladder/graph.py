"""The two scalar-graph engines (reference and compiled) as ladder trainers."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..engines import make_engine
from ..model import forward_backward
from .base import Trainer


def graph_trainer(backend: str) -> type:
    class GraphTrainer(Trainer):
        name = backend

        def __init__(self, config, layout, weights, lr, num_steps) -> None:
            super().__init__(config, layout, weights, lr, num_steps)
            self.engine = make_engine(backend, layout, weights)
            self.optimizer = self.engine.make_optimizer(lr)

        def _forward_backward(self, tokens: Sequence[int]) -> float:
            return forward_backward(self.engine, self.config, self.check_tokens(tokens))

        def loss_and_grads(self, tokens):
            loss = self._forward_backward(tokens)
            grads = np.array(self.engine.gradients())
            self.engine.zero_grad()
            return loss, grads

        def step(self, tokens):
            loss = self._forward_backward(tokens)
            self.optimizer.step(self.steps_done, self.num_steps)
            self.steps_done += 1
            return loss

        def weights(self):
            return np.array(self.engine.weights())

    GraphTrainer.__name__ = GraphTrainer.__qualname__ = f"{backend.capitalize()}GraphTrainer"
    return GraphTrainer
