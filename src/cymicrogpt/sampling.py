"""Sampling names from a trained model: temperature, ``random.choices``, stop at BOS."""
from __future__ import annotations

import random

from .config import GPTConfig
from .model import KVCache, gpt
from .tokenizer import Tokenizer


def sample_one(engine, config: GPTConfig, tokenizer: Tokenizer, rng: random.Random, temperature: float) -> str:
    """One document, token by token, until BOS or block_size tokens."""
    engine.begin_sequence(False)  # inference: values only, no graph
    cache = KVCache(config.n_layer)
    token_id = tokenizer.bos
    out = []
    for pos_id in range(config.block_size):
        logits = gpt(engine, config, token_id, pos_id, cache)
        weights = engine.probs(logits, temperature)
        # microgpt's exact call: the same floats through the same call consume the same
        # random numbers and pick the same token.
        token_id = rng.choices(range(tokenizer.vocab_size), weights=weights)[0]
        if token_id == tokenizer.bos:
            break
        out.append(token_id)
    return tokenizer.decode(out)


def check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)
