"""The pure-Python reference engine: microgpt's scalar autograd, the parity oracle.

Everything here follows microgpt.py operation for operation, because every other engine
is tested against it with float ``==``:

* ``Value`` is microgpt's scalar node: the same ops, the same local gradients, the same
  constants wrapped as fresh ``Value`` leaves.  Only ``backward`` differs in form: it replays
  microgpt's recursive depth-first topological sort with an explicit stack, so deep graphs
  (4 layers, block 64) do not hit Python's recursion limit, and it visits nodes in exactly
  the same order (gradient accumulation order decides the last bits of every gradient).
* ``ReferenceEngine`` implements the vector operations of ``cymicrogpt.model`` with lists of
  ``Value`` exactly as microgpt spells them (``sum`` starting from 0, ``/`` as ``* x**-1``).
* ``ReferenceAdam`` is microgpt's per-parameter Adam loop.

This module imports neither NumPy nor the compiled extension.  Its public name is
``cymicrogpt.reference`` (a module that re-exports this one).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Sequence

from ..checks import check_moment_lengths
from ..config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, RMSNORM_EPS
from ..model import forward_backward
from ..schedule import adam_scalars


class Value:
    """A scalar in the computation graph: its value, its gradient and how it was made."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data  # value computed in the forward pass
        self.grad = 0  # d(loss)/d(self), filled in by backward()
        self._children = children  # the Values this one was computed from
        self._local_grads = local_grads  # d(self)/d(child) for each child

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, other):
        return Value(self.data**other, (self,), (other * self.data ** (other - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"

    def backward(self) -> None:
        """Chain rule over the graph, in the order microgpt's recursive version uses."""
        # Iterative post-order DFS.  Each stack entry is (node, iterator over its children);
        # a node is appended to `topo` once all its children have been, exactly as the
        # recursive build_topo(v) does.
        topo = []
        visited = {self}
        stack = [(self, iter(self._children))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in visited:
                    visited.add(child)
                    stack.append((child, iter(child._children)))
                    break
            else:
                stack.pop()
                topo.append(node)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


class ReferenceEngine:
    """The model's vector operations on lists of ``Value``, spelled as in microgpt."""

    def __init__(self, layout, weights: Sequence[float]) -> None:
        # state_dict: name -> matrix as a list of rows of Values (microgpt's structure)
        self.state_dict = {}
        flat = [Value(w) for w in weights]
        for slot in layout:
            rows = flat[slot.offset : slot.offset + slot.size]
            self.state_dict[slot.name] = [rows[r * slot.cols : (r + 1) * slot.cols] for r in range(slot.rows)]
        self.params = flat  # every weight in state-dict order

    # --- parameters -------------------------------------------------------------------
    def matrix(self, name: str):
        return self.state_dict[name]

    def row(self, name: str, index: int):
        return self.state_dict[name][index]

    def weights(self) -> list[float]:
        return [p.data for p in self.params]

    def set_weights(self, weights: Sequence[float]) -> None:
        for p, w in zip(self.params, weights):
            p.data = w

    def gradients(self) -> list[float]:
        return [float(p.grad) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = 0

    # --- graph ops (microgpt's functions) ---------------------------------------------
    def add(self, a, b):
        return [ai + bi for ai, bi in zip(a, b)]

    def linear(self, x, w):
        return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]

    def relu(self, x):
        return [xi.relu() for xi in x]

    def rmsnorm(self, x):
        ms = sum(xi * xi for xi in x) / len(x)
        scale = (ms + RMSNORM_EPS) ** -0.5
        return [xi * scale for xi in x]

    def softmax(self, logits):
        max_val = max(val.data for val in logits)
        exps = [(val - max_val).exp() for val in logits]
        total = sum(exps)
        return [e / total for e in exps]

    def attention(self, q, keys, values, n_head: int):
        head_dim = len(q) // n_head
        x_attn = []
        for h in range(n_head):
            hs = h * head_dim
            q_h = q[hs : hs + head_dim]
            k_h = [ki[hs : hs + head_dim] for ki in keys]
            v_h = [vi[hs : hs + head_dim] for vi in values]
            attn_logits = [
                sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim**0.5 for t in range(len(k_h))
            ]
            attn_weights = self.softmax(attn_logits)
            head_out = [sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim)]
            x_attn.extend(head_out)
        return x_attn

    def nll(self, logits, target: int):
        """-log softmax(logits)[target]: one position's cross-entropy loss."""
        probs = self.softmax(logits)
        return -probs[target].log()

    def mean(self, losses):
        n = len(losses)
        return (1 / n) * sum(losses)

    def backward(self, loss) -> float:
        loss.backward()
        return loss.data

    def forward_backward(self, config, tokens) -> float:
        return forward_backward(self, config, tokens)

    def training_pass(self, config):
        return partial(forward_backward, self, config)

    # --- inference ----------------------------------------------------------------------
    def begin_sequence(self, record: bool = True) -> None:
        """Nothing to do: Python frees the previous graph; Values always record one."""

    def probs(self, logits, temperature: float) -> list[float]:
        return [p.data for p in self.softmax([l / temperature for l in logits])]

    # --- optimizer --------------------------------------------------------------------
    def make_optimizer(self, lr: float) -> "ReferenceAdam":
        return ReferenceAdam(self.params, lr)


class ReferenceAdam:
    """microgpt's Adam: one Python loop over the parameters, linear learning-rate decay."""

    beta1, beta2, eps = ADAM_BETA1, ADAM_BETA2, ADAM_EPS

    def __init__(self, params: list[Value], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.m = [0.0] * len(params)  # first moment buffer
        self.v = [0.0] * len(params)  # second moment buffer

    def step(self, step_index: int, num_steps: int) -> None:
        """One update, all or nothing: microgpt's expressions, in its order, computed for
        every parameter first and committed after, so a step that raises (``g**2`` raises
        OverflowError for |g| above ~1.3e154) changes no weight, moment or gradient.
        A nan or infinite gradient is refused first (FloatingPointError), as the Optimizer
        interface asks: microgpt's loop would write nan into the weights."""
        for i, p in enumerate(self.params):
            if not math.isfinite(p.grad):
                raise FloatingPointError(f"Adam: the gradient of parameter {i} is {p.grad!r}; nothing was updated")
        beta1, beta2, eps_adam = self.beta1, self.beta2, self.eps
        m, v = self.m, self.v
        # lr_t and the bias corrections: microgpt's expressions, once per step (schedule.py)
        lr_t, bias_correction1, bias_correction2 = adam_scalars(self.lr, step_index, num_steps)
        new_m, new_v, new_data = [], [], []
        for i, p in enumerate(self.params):
            m_i = beta1 * m[i] + (1 - beta1) * p.grad
            v_i = beta2 * v[i] + (1 - beta2) * p.grad**2
            m_hat = m_i / bias_correction1
            v_hat = v_i / bias_correction2
            new_m.append(m_i)
            new_v.append(v_i)
            new_data.append(p.data - lr_t * m_hat / (v_hat**0.5 + eps_adam))  # microgpt's p.data -= ...
        self.m, self.v = new_m, new_v
        for p, data in zip(self.params, new_data):
            p.data = data
            p.grad = 0

    def moments(self) -> tuple[list[float], list[float]]:
        return list(self.m), list(self.v)

    def set_moments(self, m: Sequence[float], v: Sequence[float]) -> None:
        check_moment_lengths(m, v, len(self.params))
        self.m, self.v = [float(x) for x in m], [float(x) for x in v]
