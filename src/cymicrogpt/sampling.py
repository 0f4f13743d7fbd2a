"""Sampling names from a trained model: temperature, ``random.choices``, stop at BOS."""
from __future__ import annotations

import math
import random

from .checks import check_real
from .config import GPTConfig
from .engines.interface import Engine
from .model import KVCache, gpt
from .tokenizer import Tokenizer


class SamplingError(ValueError):
    """The model gives no usable probabilities (non-finite weights, or logits that
    overflow when divided by the temperature)."""


def sample_one(engine: Engine, config: GPTConfig, tokenizer: Tokenizer, rng: random.Random, temperature: float) -> str:
    """One document, token by token, until BOS or block_size tokens."""
    engine.begin_sequence(False)  # inference: values only, no graph
    cache = KVCache(config.n_layer)
    token_id = tokenizer.bos
    out = []
    for pos_id in range(config.block_size):
        logits = gpt(engine, config, token_id, pos_id, cache)
        weights = engine.probs(logits, temperature)
        if not all(map(math.isfinite, weights)):
            raise _unusable(engine, temperature)
        # microgpt's exact call: the same floats through the same call consume the same
        # random numbers and pick the same token.
        token_id = rng.choices(range(tokenizer.vocab_size), weights=weights)[0]
        if token_id == tokenizer.bos:
            break
        out.append(token_id)
    return tokenizer.decode(out)


def _unusable(engine, temperature: float) -> SamplingError:
    # random.choices would fail with "Total of weights must be finite": say why instead.
    if not all(map(math.isfinite, engine.weights())):
        return SamplingError("the model's weights are not all finite (a diverged run?): it cannot be sampled")
    return SamplingError(f"temperature {temperature!r} is too low for this model: its logits divided by "
                         "the temperature overflow; use a higher temperature")


def check_temperature(temperature) -> float:
    """A usable temperature as a float: finite, > 0, and with a finite 1 / temperature.

    Both engines divide the logits by the temperature as microgpt does, ``l * t**-1``;
    Python's ``t**-1`` raises OverflowError for t below ~5.6e-309, so such a t is refused
    here, once, rather than midway through sampling.  Whether the scaled logits themselves
    stay finite depends on the model: ``sample`` raises SamplingError when they do not.
    """
    value = check_real("temperature", temperature)
    if not value > 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    try:
        value**-1
    except OverflowError:
        raise ValueError(f"temperature {temperature!r} is too small: 1 / temperature overflows") from None
    return value
