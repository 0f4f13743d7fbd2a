"""The training backends (reference, compiled graph, fused) as ladder trainers: plain
training runs, each step the very step `train` takes (training.Training.train_step)."""
from __future__ import annotations

import numpy as np

from ..engines import make_engine
from ..training import Training
from .base import Trainer


def graph_trainer(backend: str) -> type:
    class GraphTrainer(Trainer):
        name = backend

        def __init__(self, config, layout, weights, lr, num_steps) -> None:
            super().__init__(config, layout, weights, lr, num_steps)
            engine = make_engine(backend, layout, weights)
            self.training = Training(config=config, engine=engine, optimizer=engine.make_optimizer(lr),
                                     num_steps=num_steps, lr=lr)

        @property
        def steps_done(self) -> int:
            return self.training.step

        def loss_and_grads(self, tokens):
            engine = self.training.engine
            loss = engine.forward_backward(self.config, self.check_tokens(tokens))
            grads = np.array(engine.gradients())
            engine.zero_grad()
            return loss, grads

        def step(self, tokens):
            return self.training.train_step(self.check_tokens(tokens))

        def weights(self):
            return np.array(self.training.engine.weights())

    GraphTrainer.__name__ = GraphTrainer.__qualname__ = f"{backend.capitalize()}GraphTrainer"
    return GraphTrainer
