"""Type stub for microgpt's compiled Adam step and its pow kernels (csrc/cymicrogpt/_adam.pyx)."""
from collections.abc import Callable

import numpy as np

from cymicrogpt._arena import Arena

SHORTCUT_MARGIN: float
SHORTCUT_SQUARE_RANGE: tuple[float, float]
SHORTCUT_ROOT_RANGE: tuple[float, float]
SHORTCUT_ALLOWANCES: tuple[float, float]

def adam_step(params: np.ndarray, grads: np.ndarray, m: np.ndarray, v: np.ndarray,
              squares: np.ndarray, *, beta1: float, beta2: float, eps: float,
              one_minus_beta1: float, one_minus_beta2: float, bias_correction1: float,
              bias_correction2: float, lr_t: float, shortcut: bool, refuse_non_finite: bool = False) -> None: ...
def cpu_has_avx2_fma() -> bool: ...
def power_array(base: np.ndarray, exponent: float, out: np.ndarray, *, shortcut: bool) -> int: ...

class AdamState:
    def __init__(self, m: np.ndarray, v: np.ndarray, lr: float, *, beta1: float, beta2: float, eps: float,
                 shortcut: bool, schedule: Callable[[float, int, int], tuple[float, float, float]],
                 arena: Arena | None = None, private_moments: bool = False,
                 refuse_non_finite: bool = False) -> None: ...
    def moments_changed(self) -> None: ...
    def scalars(self, step_index: int, num_steps: int) -> tuple[float, float, float]: ...
    def step(self, step_index: int, num_steps: int) -> None: ...
    def step_on(self, params: np.ndarray, grads: np.ndarray, step_index: int, num_steps: int) -> None: ...
