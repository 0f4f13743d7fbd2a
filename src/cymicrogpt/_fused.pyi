"""Type stub for the graph-free fused model (csrc/cymicrogpt/_fused.pyx)."""
from typing import Sequence

import numpy as np

class FusedGPT:
    n_layer: int
    n_embd: int
    n_head: int
    head_dim: int
    vocab: int
    block: int
    weights: np.ndarray
    grads: np.ndarray
    def __init__(self, n_layer: int, n_embd: int, n_head: int, vocab: int, block: int,
                 offsets: Sequence[int], weights: np.ndarray) -> None: ...
    def loss_and_grads(self, tokens: np.ndarray) -> float: ...
    def adam_step(self, m: np.ndarray, v: np.ndarray, lr_t: float, beta1: float, beta2: float,
                  eps: float, step: int) -> None: ...
