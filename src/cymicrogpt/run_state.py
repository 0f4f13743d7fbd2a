"""``RunState``: everything a training run is, as plain values.

The record between training.py (``Run.state()``, ``Run.from_state()``) and checkpoint.py
(which writes and reads it); it imports neither, nor NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import GPTConfig


@dataclass
class RunState:
    """Everything a training run is, as plain values (what a checkpoint stores)."""

    config: GPTConfig
    chars: str  # the tokenizer's characters, in token-id order
    docs: list[str]  # in training order (already shuffled)
    weights: list[float]  # flat, state-dict order
    adam_m: list[float]  # Adam's first moments, same order
    adam_v: list[float]  # Adam's second moments
    step: int  # steps completed
    num_steps: int  # the run's length (the learning-rate decay depends on it)
    lr: float
    seed: int
    backend: str  # the engine it was trained on
    losses: list[float]  # one per completed step
    rng_state: tuple  # random.Random.getstate() of the run's one random stream
