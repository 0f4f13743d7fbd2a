"""The compiled engine behind backend "cython": graph ops in C, parameters in NumPy.

`GraphOps` (csrc/cymicrogpt/_ops.pyx) builds the graph; this class holds one and adds
what training needs around it: the parameter and gradient arrays and the optimizer.
The arena sizes itself by need as graphs are built (it grows until the longest
document has been seen, then stays put), so building an engine never runs the model.

A training step runs the model (model.py) in Python once per shape, the first time a
document of its length comes: that run is traced (the ops record themselves as a
StepProgram, _ops.pyx), and every later step of that length is the program replayed in C
with its own tokens.  The model reads a step's tokens only to pick embedding rows and
targets, and the trace hands them over as `TokenSlot`s, which can do nothing but index:
a model that computed with a token would fail the trace, never replay a wrong program.

The graph's x ** -1, -2, -0.5 and -1.5 (softmax, rmsnorm) skip libm pow where
csrc/cymicrogpt/pow_shortcut.h proves pow's result, under the Adam kernel's rule
(engines.adam.POW_SHORTCUT; CYMICROGPT_PLAIN_POW=1 turns it off), its exact products FMAs
where the fused loops would run their AVX2 build (builds.avx2_fma_in_use), else Dekker's: the
same bits either way.  Its softmax's exps skip libm exp where the fused loops' do
(engines.fused.EXP_SHORTCUT, CYMICROGPT_PLAIN_EXP=1 turns it off, and their AVX2 build's
condition): csrc/cymicrogpt/exp_shortcut.h proves them, the same bits.
"""
from __future__ import annotations

import operator
from functools import partial
from typing import Callable, Sequence, Union

import numpy as np

from .._ops import GraphOps, StepProgram
from ..config import GPTConfig
from ..model import forward_backward
from .adam import POW_SHORTCUT, VectorAdam
from .builds import avx2_fma_in_use
from ..params import MatrixSlot


class TokenSlot:
    """tokens[slot] in a traced step: an index (``__index__``) and nothing else.  Comparing
    or computing with it raises, so no trace can take a decision made on a token's value
    (which a replay with other tokens would not take again) for a fixed one."""

    __slots__ = ("token", "slot")

    def __init__(self, token: int, slot: int) -> None:
        self.token, self.slot = token, slot

    def __index__(self) -> int:
        return self.token

    def __eq__(self, other):
        raise TypeError("a token of a traced step can only index (row, nll)")

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self):
        raise TypeError("a token of a traced step can only index (row, nll)")


class _TracedEngine:
    """The engine as the model sees it while a step is traced: the ops themselves, with
    row and nll telling the ops which token they were given."""

    def __init__(self, ops: GraphOps) -> None:
        self._ops = ops
        self.matrix, self.add, self.linear, self.relu = ops.matrix, ops.add, ops.linear, ops.relu
        self.rmsnorm, self.attention, self.mean = ops.rmsnorm, ops.attention, ops.mean
        self.begin_sequence, self.backward = ops.begin_sequence, ops.backward

    def row(self, name: str, index):
        return self._ops.traced_row(name, index, index.slot if type(index) is TokenSlot else -1)

    def nll(self, logits, target):
        return self._ops.traced_nll(logits, target, target.slot if type(target) is TokenSlot else -1)


class GraphEngine:
    def __init__(self, layout: list[MatrixSlot], weights: Sequence[float]) -> None:
        # the fused loops' exp rule, read here: engines/fused.py imports this module
        from .fused import EXP_SHORTCUT
        fast = avx2_fma_in_use()
        self.ops = ops = GraphOps(layout, weights, pow_shortcut=POW_SHORTCUT, pow_fma=fast,
                                  exp_shortcut=EXP_SHORTCUT and fast)
        self.num_params = len(weights)
        # The model's operations are the compiled ones themselves, bound here rather than
        # wrapped: a wrapper would add a Python call to each of ~100 op calls a step.
        self.matrix, self.row = ops.matrix, ops.row
        self.add, self.linear, self.relu, self.rmsnorm = ops.add, ops.linear, ops.relu, ops.rmsnorm
        self.attention, self.nll, self.mean = ops.attention, ops.nll, ops.mean
        self.begin_sequence, self.backward, self.probs = ops.begin_sequence, ops.backward, ops.probs
        # (config, number of tokens) -> the step's program, or False: not replayable
        self.programs: dict[tuple[GPTConfig, int], Union[StepProgram, bool]] = {}
        self._traced = _TracedEngine(ops)

    def forward_backward(self, config: GPTConfig, tokens: Sequence[int]) -> float:
        """model.forward_backward: the model traced on the first document of each length,
        that trace replayed in C on the next ones (see the module's docstring)."""
        key = (config, len(tokens))
        program = self.programs.get(key)
        if program:
            loss = self.ops.replay(program, tokens if type(tokens) is list else list(tokens))
            if loss is not None:
                return loss
        elif program is None:
            return self._trace(key, config, tokens)
        return forward_backward(self, config, tokens)  # what the replay cannot do, the model raises on

    def training_pass(self, config: GPTConfig) -> Callable[[Sequence[int]], float]:
        return partial(self.forward_backward, config)

    def _trace(self, key: tuple[GPTConfig, int], config: GPTConfig, tokens: Sequence[int]) -> float:
        try:
            ints = [operator.index(token) for token in tokens]
        except TypeError:
            return forward_backward(self, config, tokens)  # raises as the model does
        self.ops.start_trace(ints)
        try:
            loss = forward_backward(self._traced, config, [TokenSlot(token, i) for i, token in enumerate(ints)])
        finally:
            program = self.ops.end_trace()
        self.programs[key] = program if program is not None else False
        return loss

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
        return VectorAdam(self.ops.arena, self.num_params, lr)  # the weights: the arena's first nodes

    # --- the arena, for tests and benchmarks ---------------------------------------------
    @property
    def num_nodes(self) -> int:
        return self.ops.num_nodes

    @property
    def capacity(self) -> tuple[int, int]:
        return self.ops.capacity
