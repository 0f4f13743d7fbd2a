"""Adam over the flat parameter array, vectorised with NumPy, bit-identical to microgpt's loop.

Each line below is microgpt's per-parameter expression applied to whole arrays, with the
same operation order.  NumPy's `*`, `+`, `/` are exact IEEE operations, so they round as
Python floats do; every `**` goes through libm pow (`pow_array`), as Python's does.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ._libm import pow_array


class VectorAdam:
    beta1, beta2, eps = 0.85, 0.99, 1e-8

    def __init__(self, arrays: Callable[[], tuple[np.ndarray, np.ndarray]], size: int, lr: float) -> None:
        self.arrays = arrays  # returns (params, grads): live views of the engine's storage
        self.lr = lr
        self.m = np.zeros(size)  # first moment buffer
        self.v = np.zeros(size)  # second moment buffer
        self._m_hat = np.empty(size)  # scratch
        self._v_hat = np.empty(size)  # scratch

    def step(self, step: int, num_steps: int) -> None:
        params, grads = self.arrays()
        beta1, beta2 = self.beta1, self.beta2
        m, v, m_hat, v_hat = self.m, self.v, self._m_hat, self._v_hat
        lr_t = self.lr * (1 - step / num_steps)
        # m = beta1 * m + (1 - beta1) * g
        np.multiply(m, beta1, out=m)
        np.multiply(grads, 1 - beta1, out=m_hat)
        np.add(m, m_hat, out=m)
        # v = beta2 * v + (1 - beta2) * g**2
        pow_array(grads, 2.0, v_hat)
        np.multiply(v_hat, 1 - beta2, out=v_hat)
        np.multiply(v, beta2, out=v)
        np.add(v, v_hat, out=v)
        # m_hat = m / (1 - beta1**(step+1)); v_hat = v / (1 - beta2**(step+1))
        np.divide(m, 1 - beta1 ** (step + 1), out=m_hat)
        np.divide(v, 1 - beta2 ** (step + 1), out=v_hat)
        # p -= lr_t * m_hat / (v_hat**0.5 + eps)
        pow_array(v_hat, 0.5, v_hat)
        np.add(v_hat, self.eps, out=v_hat)
        np.multiply(m_hat, lr_t, out=m_hat)
        np.divide(m_hat, v_hat, out=m_hat)
        np.subtract(params, m_hat, out=params)
        grads[:] = 0.0

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        return self.m.copy(), self.v.copy()

    def set_moments(self, m, v) -> None:
        self.m[:] = m
        self.v[:] = v
