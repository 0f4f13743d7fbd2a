"""The model's shape: one small dataclass, validated on construction."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 1  # depth: number of transformer blocks
    n_embd: int = 16  # width: embedding dimension of the residual stream
    block_size: int = 16  # longest context the model attends over (positions 0..block_size-1)
    n_head: int = 4  # attention heads; each sees n_embd // n_head dimensions

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "block_size", "n_head"):
            value = getattr(self, name)
            # bool is an int subclass; GPTConfig(n_layer=True) is a bug, not a 1-layer model.
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head
