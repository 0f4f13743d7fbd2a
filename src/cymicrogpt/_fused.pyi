"""Type stub for the fused training pass: graph-free loops in microgpt's order (csrc/cymicrogpt/_fused.pyx)."""
from typing import Sequence

import numpy as np

from ._arena import Arena

EXP_SHORTCUT_BUILT: bool
EXP_TABLE_BITS: int
EXP_SHORTCUT_CONSTANTS: dict[str, float]

def exp_shortcut_table() -> list[float]: ...
def max_array(x: np.ndarray) -> float: ...
def exp_array(x: np.ndarray, out: np.ndarray, *, shortcut: bool) -> int: ...

class FusedGPT:
    n_layer: int
    n_embd: int
    n_head: int
    head_dim: int
    vocab: int
    block: int
    hidden: int
    n_weights: int
    capacity: int
    rmsnorm_eps: float
    pow_shortcut: bool
    exp_shortcut: bool
    def __init__(self, arena: Arena, n_weights: int, n_layer: int, n_embd: int, n_head: int, vocab: int,
                 block: int, hidden: int, offsets: Sequence[int], layer_offsets: Sequence[Sequence[int]],
                 rmsnorm_eps: float, *, pow_shortcut: bool = False, exp_shortcut: bool = False) -> None: ...
    def forward_backward(self, tokens: Sequence[int]) -> float: ...

POW_SHORTCUT_MARGIN: float
POW_SHORTCUT_TAIL_ALLOWANCE: float
POW_SHORTCUT_RANGES: dict[float, tuple[float, float]]

def power_array(base: np.ndarray, exponent: float, out: np.ndarray, *, shortcut: bool) -> int: ...
