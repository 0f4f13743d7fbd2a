"""Where every weight lives: the state-dict layout and its random initialisation.

Both engines store the same flat list of weights in microgpt's state-dict order
(wte, wpe, lm_head, then per layer wq, wk, wv, wo, fc1, fc2; each matrix row by row),
so one seed gives both engines bit-identical starting weights.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from .config import INIT_STD, LAYER_MATRICES, GPTConfig


@dataclass(frozen=True)
class MatrixSlot:
    name: str
    rows: int  # output features (nout)
    cols: int  # input features (nin)
    offset: int  # index of element [0, 0] in the flat weight list

    @property
    def size(self) -> int:
        return self.rows * self.cols


def layer_prefix(layer: int) -> str:
    """The name of transformer block `layer` (0-based); its matrices are named "<prefix>.<part>"."""
    return f"layer{layer}"


@functools.cache  # the model asks for every layer's names at every position: one string each
def layer_name(layer: int, part: str) -> str:
    return f"{layer_prefix(layer)}.{part}"


def state_dict_layout(config: GPTConfig, vocab_size: int) -> list[MatrixSlot]:
    """Every weight matrix, in microgpt's state-dict (and therefore RNG) order."""
    e = config.n_embd
    shapes = [("wte", vocab_size, e), ("wpe", config.block_size, e), ("lm_head", vocab_size, e)]
    for li in range(config.n_layer):
        shapes += [(layer_name(li, part), rows * e, cols * e) for part, rows, cols in LAYER_MATRICES]
    layout, offset = [], 0
    for name, rows, cols in shapes:
        layout.append(MatrixSlot(name, rows, cols, offset))
        offset += rows * cols
    return layout


def num_params(layout: list[MatrixSlot]) -> int:
    return sum(slot.size for slot in layout)


def init_weights(rng: random.Random, layout: list[MatrixSlot]) -> list[float]:
    """One gauss(0, INIT_STD) draw per weight, in layout order: microgpt's RNG consumption."""
    return [rng.gauss(0, INIT_STD) for _ in range(num_params(layout))]
