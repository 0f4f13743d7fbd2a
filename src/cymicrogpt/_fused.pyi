"""Type stub for the `fused` rung: the graph-free training step (csrc/cymicrogpt/_fused.pyx)."""
from typing import Sequence

import numpy as np

class FusedGPT:
    n_layer: int
    n_embd: int
    n_head: int
    head_dim: int
    vocab: int
    block: int
    hidden: int
    rmsnorm_eps: float
    weights: np.ndarray
    grads: np.ndarray
    def __init__(self, n_layer: int, n_embd: int, n_head: int, vocab: int, block: int, hidden: int,
                 offsets: Sequence[int], layer_offsets: Sequence[Sequence[int]], weights: np.ndarray,
                 rmsnorm_eps: float) -> None: ...
    def loss_and_grads(self, tokens: np.ndarray) -> float: ...
    def adam_step(self, m: np.ndarray, v: np.ndarray, beta1: float, beta2: float, eps: float,
                  lr_t: float, c1: float, c2: float) -> None: ...
