"""microgpt as a PyTorch module: the same model over whole sequences and batches, to take a
run's weights where PyTorch trains (GPUs, several processes) and for the ladder's torch rung.

The architecture is model.py's, which defines it: token + position embeddings, an rmsnorm
(``x * (mean(x**2) + RMSNORM_EPS) ** -0.5``, no gain), then per block rmsnorm -> causal
multi-head attention (scores ``q.k / sqrt(head_dim)``) -> attn_wo -> residual, and
rmsnorm -> mlp_fc1 -> ReLU -> mlp_fc2 -> residual; then lm_head.  No biases, no final norm.

microgpt feeds one token at a time with a key/value cache.  Here all positions of a batch
of documents go through each layer at once, and a causal mask lets position t attend to
positions 0..t only: what the cache holds at t, so the maths is microgpt's.  Only the order
of the floating-point sums differs, so in float64 (the default) results agree with the
scalar engines to ~1e-16 relative, not bit for bit.

Batches: documents are tokenised as in training ([BOS, characters..., BOS], at most
block_size positions), padded on the right with BOS and their padded targets set to
``IGNORE``.  Right padding needs no mask beyond the causal one: a real position never
attends to a later one.  A document's loss is microgpt's, the mean over its positions;
a batch's is the mean of its documents' (a batch of one is microgpt's step).

The parameters carry microgpt's names and state-dict order (``wte``, ``wpe``, ``lm_head``,
then ``layer0.attn_wq`` ... ``layer0.mlp_fc2``, ...), so ``module.state_dict()`` has the
names of ``Run.state_dict()``.

This module imports torch; ``import cymicrogpt`` never imports this module.  Without torch
it raises an ImportError whose one line says how to install the CPU build.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

CPU_ONLY = "pip install torch --index-url https://download.pytorch.org/whl/cpu"  # PyTorch's CPU-only install

try:
    import torch
except (ImportError, OSError) as exc:  # OSError: a torch whose shared libraries fail to load
    raise ImportError(f"torch is not installed or does not import ({exc}); "
                      f"`{CPU_ONLY}` installs the CPU build") from None

import numpy as np
from torch import nn
from torch.nn import functional as F

from .checks import check_count, check_docs
from .config import LAYER_MATRICES, RMSNORM_EPS, GPTConfig
from .params import layer_prefix, state_dict_layout
from .state_dict import from_state_dict as checked_weights
from .tokenizer import Tokenizer

DEFAULT_DTYPE = torch.float64  # microgpt computes in Python floats: doubles
IGNORE = -100  # the target of a padded position: cross_entropy's default ignore_index
DEFAULT_EVAL_BATCH = 256  # documents per forward pass in `evaluate`: bounds its memory
Device = Union[str, torch.device, None]


def rmsnorm(x: torch.Tensor) -> torch.Tensor:
    """microgpt's rmsnorm over the last axis (no learned gain)."""
    return x * (torch.mean(x * x, dim=-1, keepdim=True) + RMSNORM_EPS) ** -0.5


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)  # (B, H, T, D) -> (B, T, C)


class Block(nn.Module):
    """One transformer block: attention then MLP, each behind an rmsnorm and a residual.
    Its parameters are named as in config.LAYER_MATRICES (rows = output features)."""

    def __init__(self, config: GPTConfig, **factory) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        for part, rows, cols in LAYER_MATRICES:
            self.register_parameter(part, nn.Parameter(torch.empty(rows * config.n_embd, cols * config.n_embd,
                                                                   **factory)))

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) residual stream; future: (T, T) True where a key lies after the query."""
        # 1) multi-head causal self-attention
        xn = rmsnorm(x)
        q = split_heads(xn @ self.attn_wq.T, self.n_head)  # (B, H, T, D)
        k = split_heads(xn @ self.attn_wk.T, self.n_head)  # (B, H, T, D)
        v = split_heads(xn @ self.attn_wv.T, self.n_head)  # (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) / self.head_dim**0.5  # (B, H, T, T); microgpt's / sqrt(D)
        att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (B, H, T, T)
        x = merge_heads(att @ v) @ self.attn_wo.T + x  # (B, T, C)
        # 2) MLP
        hidden = rmsnorm(x) @ self.mlp_fc1.T  # (B, T, F)
        return torch.relu(hidden) @ self.mlp_fc2.T + x  # (B, T, C); relu'(0) = 0, as microgpt's


class GPT(nn.Module):
    """microgpt over token ids: ``model(inputs)`` maps (B, T) ids to (B, T, vocab) logits.

    Built with uninitialised weights: set them with ``load_state_dict`` (or use
    ``MicroGPT.from_state_dict``, which also carries the vocabulary)."""

    def __init__(self, config: GPTConfig, vocab_size: int, *, dtype: Optional[torch.dtype] = None,
                 device: Device = None) -> None:
        super().__init__()
        check_count("vocab_size", vocab_size)
        self.config = config
        self.vocab_size = vocab_size
        factory = {"dtype": DEFAULT_DTYPE if dtype is None else dtype, "device": device}
        e = config.n_embd
        self.wte = nn.Parameter(torch.empty(vocab_size, e, **factory))  # (V, C)
        self.wpe = nn.Parameter(torch.empty(config.block_size, e, **factory))  # (block_size, C)
        self.lm_head = nn.Parameter(torch.empty(vocab_size, e, **factory))  # (V, C)
        for li in range(config.n_layer):
            self.add_module(layer_prefix(li), Block(config, **factory))
        self.blocks = [self.get_submodule(layer_prefix(li)) for li in range(config.n_layer)]  # in order

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T), T <= block_size; position t sees tokens 0..t."""
        t = inputs.shape[-1]
        if not 0 < t <= self.config.block_size:
            raise ValueError(f"a sequence has 1 to block_size = {self.config.block_size} positions, got {t}")
        future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=inputs.device), diagonal=1)  # (T, T)
        x = rmsnorm(self.wte[inputs] + self.wpe[:t])  # (B, T, C); the norm before the blocks, as model.py
        for block in self.blocks:
            x = block(x, future)
        return x @ self.lm_head.T  # (B, T, V)

    def token_batch(self, token_lists: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (B, T) of tokenised documents [BOS, ..., BOS], each truncated to
        block_size positions as in training and padded on the right: input `pad_id`,
        target IGNORE."""
        if not token_lists:
            raise ValueError("no documents")
        lengths = [min(self.config.block_size, len(tokens) - 1) for tokens in token_lists]
        if min(lengths) < 1:
            raise ValueError("a tokenised document needs at least 2 tokens (BOS ... BOS)")
        width = max(lengths)
        inputs = [list(tokens[:n]) + [pad_id] * (width - n) for tokens, n in zip(token_lists, lengths)]
        targets = [list(tokens[1 : n + 1]) + [IGNORE] * (width - n) for tokens, n in zip(token_lists, lengths)]
        device = self.wte.device
        return (torch.tensor(inputs, dtype=torch.long, device=device),
                torch.tensor(targets, dtype=torch.long, device=device))

    def numpy_state_dict(self) -> dict[str, np.ndarray]:
        """The weights as ``{name: float64 ndarray}`` copies, microgpt's names and order: what
        ``Run.load_state_dict`` takes."""
        return {name: value.detach().to("cpu", torch.float64).numpy().copy()
                for name, value in self.state_dict().items()}


def document_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) each document's mean next-token cross-entropy over its real (not IGNORE) positions."""
    per_position = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")  # (B, T)
    return per_position.sum(dim=1) / (targets != IGNORE).sum(dim=1)


class MicroGPT(GPT):
    """A ``GPT`` that carries its vocabulary: it takes and scores documents as text."""

    def __init__(self, config: GPTConfig, tokenizer: Tokenizer, *, dtype: Optional[torch.dtype] = None,
                 device: Device = None) -> None:
        super().__init__(config, tokenizer.vocab_size, dtype=dtype, device=device)
        self.tokenizer = tokenizer

    @classmethod
    def from_state_dict(cls, config: GPTConfig, tokenizer: Tokenizer, state_dict: Mapping[str, Any], *,
                        dtype: Optional[torch.dtype] = None, device: Device = None) -> "MicroGPT":
        """The model with weights copied from `state_dict` (``{name: array}`` with microgpt's
        names and shapes, as ``Run.state_dict()`` gives); ValueError naming the first tensor
        that is missing, extra, misshapen or not finite (the check of ``Run.load_state_dict``)."""
        module = cls(config, tokenizer, dtype=dtype, device=device)
        layout = state_dict_layout(config, tokenizer.vocab_size)
        flat = torch.tensor(checked_weights(layout, state_dict), dtype=torch.float64)  # (P,) layout order
        with torch.no_grad():
            for slot, parameter in zip(layout, module.parameters()):  # parameters() is the layout's order
                parameter.copy_(flat[slot.offset : slot.offset + slot.size].view(slot.rows, slot.cols))
        return module

    def batch(self, docs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (B, T) of documents, tokenised and truncated as in training,
        padded on the right (see the module docstring).  ValueError naming the first
        document with a character outside the vocabulary."""
        return self.token_batch(self.tokenizer.encode_all(docs), self.tokenizer.bos)

    def loss(self, docs: Sequence[str]) -> torch.Tensor:
        """The mean of the documents' losses (each microgpt's loss of that document), 0-d."""
        inputs, targets = self.batch(docs)
        return document_losses(self(inputs), targets).mean()

    @torch.no_grad()
    def evaluate(self, docs: Sequence[str], batch_size: int = DEFAULT_EVAL_BATCH) -> float:
        """``Run.evaluate``'s figure, to ~1e-16 relative in float64: the plain mean over
        `docs` of each document's loss (microgpt's training loss on it), added with
        math.fsum; `batch_size` documents per forward pass.  ValueError as there (no
        documents, an empty one, a character outside the vocabulary), before any work.
        (Where a probability underflows to 0, Run.evaluate's loss is inf; log_softmax
        here gives its finite logarithm.)"""
        token_lists = self.tokenizer.encode_all(check_docs(docs, purpose="evaluate"))
        check_count("batch_size", batch_size)
        losses: list[float] = []
        for start in range(0, len(token_lists), batch_size):
            inputs, targets = self.token_batch(token_lists[start : start + batch_size], self.tokenizer.bos)
            losses += document_losses(self(inputs), targets).tolist()
        return math.fsum(losses) / len(losses)
