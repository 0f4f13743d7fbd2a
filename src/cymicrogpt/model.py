"""The GPT itself, written once against the engine interface (``engines/interface.py``).

microgpt's architecture: GPT-2 with rmsnorm instead of layernorm, no biases and ReLU
instead of GeLU; one token at a time with a key/value cache.  The same code drives the
pure-Python reference engine and the compiled engine; only the engine under it changes.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

from .config import GPTConfig
from .engines.interface import Engine, Scalar, Vector
from .params import layer_name


class KVCache:
    """Per-layer lists of the key and value vectors of every position seen so far."""

    def __init__(self, n_layer: int) -> None:
        self.keys: list[list[Vector]] = [[] for _ in range(n_layer)]  # [layer][position]: (n_embd,)
        self.values: list[list[Vector]] = [[] for _ in range(n_layer)]


def gpt(engine: Engine, config: GPTConfig, token_id: int, pos_id: int, cache: KVCache) -> Vector:
    """Logits over the next token, given one token, its position and the cache."""
    x = engine.add(engine.row("wte", token_id), engine.row("wpe", pos_id))  # (n_embd,)
    x = engine.rmsnorm(x)  # not redundant: the residual path below skips the block norms
    for li in range(config.n_layer):
        # 1) multi-head attention block
        x_residual = x
        x = engine.rmsnorm(x)
        q = engine.linear(x, engine.matrix(layer_name(li, "attn_wq")))  # (n_embd,)
        k = engine.linear(x, engine.matrix(layer_name(li, "attn_wk")))  # (n_embd,)
        v = engine.linear(x, engine.matrix(layer_name(li, "attn_wv")))  # (n_embd,)
        cache.keys[li].append(k)
        cache.values[li].append(v)
        x = engine.attention(q, cache.keys[li], cache.values[li], config.n_head)  # (n_embd,)
        x = engine.linear(x, engine.matrix(layer_name(li, "attn_wo")))
        x = engine.add(x, x_residual)
        # 2) MLP block
        x_residual = x
        x = engine.rmsnorm(x)
        x = engine.linear(x, engine.matrix(layer_name(li, "mlp_fc1")))  # (4 * n_embd,)
        x = engine.relu(x)
        x = engine.linear(x, engine.matrix(layer_name(li, "mlp_fc2")))  # (n_embd,)
        x = engine.add(x, x_residual)
    return engine.linear(x, engine.matrix("lm_head"))  # (vocab_size,)


def next_token_logits(engine: Engine, config: GPTConfig, tokens: Sequence[int]) -> Iterator[tuple[Vector, int]]:
    """(logits, the token that follows) at each position of a tokenised document, truncated
    to block_size positions: what a document's loss is taken over."""
    if len(tokens) < 2:
        raise ValueError(f"a tokenised document needs at least 2 tokens (BOS ... BOS), got {len(tokens)}")
    cache = KVCache(config.n_layer)
    for pos_id in range(min(config.block_size, len(tokens) - 1)):
        yield gpt(engine, config, tokens[pos_id], pos_id, cache), tokens[pos_id + 1]


def sequence_loss(engine: Engine, config: GPTConfig, tokens: Sequence[int]) -> Scalar:
    """Mean next-token cross-entropy over a tokenised document, truncated to block_size."""
    return engine.mean([engine.nll(logits, target) for logits, target in next_token_logits(engine, config, tokens)])


def sequence_loss_value(engine: Engine, config: GPTConfig, tokens: Sequence[int]) -> float:
    """sequence_loss's value, float ==, computed without a graph (no backward possible, no
    gradient touched): each position's -log p(next token), p from the engine's softmax at
    temperature 1 (logits * 1.0**-1 are the logits: the very floats ``nll`` takes the log
    of), added from 0.0 left to right and times 1 / n, as ``mean`` does.  A probability of
    0.0 counts as an infinite loss (microgpt's math.log raises there; training calls it
    divergence)."""
    engine.begin_sequence(False)
    total, n = 0.0, 0
    for logits, target in next_token_logits(engine, config, tokens):
        p = engine.probs(logits, 1.0)[target]
        total += -math.log(p) if p > 0.0 else math.inf
        n += 1
    return (1 / n) * total


def forward_backward(engine: Engine, config: GPTConfig, tokens: Sequence[int]) -> float:
    """One training pass over a document on a fresh graph: its loss, with the gradients
    accumulated into the engine's parameters."""
    engine.begin_sequence(True)
    return engine.backward(sequence_loss(engine, config, tokens))
