"""The compiled engine behind backend "cython": graph ops in C, parameters in NumPy.

`GraphOps` (csrc/cymicrogpt/_ops.pyx) builds the graph; this class holds one and adds
what training needs around it: the parameter and gradient arrays and the optimizer.
The arena sizes itself by need as graphs are built (it grows until the longest
document has been seen, then stays put), so building an engine never runs the model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .._ops import GraphOps
from .adam import VectorAdam
from ..params import MatrixSlot


class GraphEngine:
    def __init__(self, layout: list[MatrixSlot], weights: Sequence[float]) -> None:
        self.ops = ops = GraphOps(layout, weights)
        self.num_params = len(weights)
        # The model's operations are the compiled ones themselves, bound here rather than
        # wrapped: a wrapper would add a Python call to each of ~100 op calls a step.
        self.matrix, self.row = ops.matrix, ops.row
        self.add, self.linear, self.relu, self.rmsnorm = ops.add, ops.linear, ops.relu, ops.rmsnorm
        self.attention, self.nll, self.mean = ops.attention, ops.nll, ops.mean
        self.begin_sequence, self.backward, self.probs = ops.begin_sequence, ops.backward, ops.probs
        self.gradients_are_finite = ops.weight_grads_are_finite

    # --- parameters ----------------------------------------------------------------------
    # `weight_array`/`grad_array`, not `params`: the reference's `params` is a list of Values.
    @property
    def weight_array(self) -> np.ndarray:
        """The weights, zero-copy: a view of the arena's first `num_params` node values.

        Fetch it again after a graph is built: a growing arena moves to new arrays."""
        return self.ops.node_values()[: self.num_params]

    @property
    def grad_array(self) -> np.ndarray:
        """The weights' gradients, zero-copy (same caveat)."""
        return self.ops.node_grads()[: self.num_params]

    def weights(self) -> list[float]:
        return self.weight_array.tolist()

    def set_weights(self, weights) -> None:
        self.weight_array[:] = weights

    def gradients(self) -> list[float]:
        return self.grad_array.tolist()

    def zero_grad(self) -> None:
        self.grad_array[:] = 0.0


    def make_optimizer(self, lr: float) -> VectorAdam:
        return VectorAdam(lambda: (self.weight_array, self.grad_array), self.num_params, lr)

    # --- the arena, for tests and benchmarks ---------------------------------------------
    @property
    def num_nodes(self) -> int:
        return self.ops.num_nodes

    @property
    def capacity(self) -> tuple[int, int]:
        return self.ops.capacity
