"""The NumPy rung of the ladder: whole-sequence matrices and a hand-written backward.

microgpt feeds one token at a time and keeps a key/value cache.  Here all n positions of a
document go through each layer at once as (n, C) matrices, and a causal mask in the
attention scores lets position t see only positions 0..t -- exactly what the cache allows,
so the maths is microgpt's.  Only the order of the floating-point sums differs (BLAS
blocks them its own way), so results agree with the reference to ~1e-16 relative, not bit
for bit.  float64 throughout; no autograd: `backward` is the chain rule written out.

Shapes in the comments: n positions, C = n_embd, H heads of D = head_dim each,
F = 4 * C (MLP width), V = vocab_size.
"""
from __future__ import annotations

import numpy as np

from ..config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, LAYER_MATRIX_NAMES, RMSNORM_EPS
from ..params import layer_name
from .base import Trainer


# --- building blocks (each forward with its backward) ---------------------------------------
def rmsnorm(x):
    """Rows of x scaled to unit root-mean-square; also returns the scales for backward."""
    scale = (np.mean(x * x, axis=1, keepdims=True) + RMSNORM_EPS) ** -0.5  # (n, 1)
    return x * scale, scale  # (n, C), (n, 1)


def rmsnorm_backward(x, scale, dy):
    """d(loss)/dx from d(loss)/dy, y = x * scale, scale = (mean(x**2) + eps)**-0.5."""
    # dy_j/dx_i = scale * [i == j] - scale**3 * x_i * x_j / C
    return scale * dy - scale**3 * x * np.mean(x * dy, axis=1, keepdims=True)  # (n, C)


def split_heads(x, n_head):
    n, c = x.shape
    return x.reshape(n, n_head, c // n_head).transpose(1, 0, 2)  # (n, C) -> (H, n, D)


def merge_heads(x):
    h, n, d = x.shape
    return x.transpose(1, 0, 2).reshape(n, h * d)  # (H, n, D) -> (n, C)


def causal_softmax(scores):
    """Softmax over the last axis, each row t over columns 0..t only (the rest get 0)."""
    n = scores.shape[-1]
    future = np.triu(np.ones((n, n), dtype=bool), k=1)  # (n, n): True above the diagonal
    scores = np.where(future, -np.inf, scores)  # (H, n, n)
    exps = np.exp(scores - scores.max(axis=-1, keepdims=True))  # (H, n, n); exp(-inf) = 0
    return exps / exps.sum(axis=-1, keepdims=True)  # (H, n, n)


# --- the model ----------------------------------------------------------------------------
def forward(p, config, tokens):
    """Loss of one document and everything backward needs.

    p: name -> weight matrix (rows = output features).  tokens: [BOS, ..., BOS].
    """
    n = min(config.block_size, len(tokens) - 1)
    inputs = np.asarray(tokens[:n], dtype=np.intp)  # (n,)
    targets = np.asarray(tokens[1 : n + 1], dtype=np.intp)  # (n,)
    scale_qk = config.head_dim**0.5  # attention logits are q.k / sqrt(D)

    x_embed = p["wte"][inputs] + p["wpe"][:n]  # (n, C)
    x, s_embed = rmsnorm(x_embed)  # (n, C)
    layers = []
    for li in range(config.n_layer):
        w = {part: p[layer_name(li, part)] for part in LAYER_MATRIX_NAMES}
        c = {"x_attn_in": x}
        # 1) multi-head causal self-attention
        c["xn_attn"], c["s_attn"] = rmsnorm(x)  # (n, C)
        c["q"] = split_heads(c["xn_attn"] @ w["attn_wq"].T, config.n_head)  # (H, n, D)
        c["k"] = split_heads(c["xn_attn"] @ w["attn_wk"].T, config.n_head)  # (H, n, D)
        c["v"] = split_heads(c["xn_attn"] @ w["attn_wv"].T, config.n_head)  # (H, n, D)
        scores = c["q"] @ c["k"].transpose(0, 2, 1) / scale_qk  # (H, n, n)
        c["att"] = causal_softmax(scores)  # (H, n, n)
        c["heads"] = merge_heads(c["att"] @ c["v"])  # (H, n, D) -> (n, C)
        x = c["heads"] @ w["attn_wo"].T + x  # (n, C)
        # 2) MLP
        c["x_mlp_in"] = x
        c["xn_mlp"], c["s_mlp"] = rmsnorm(x)  # (n, C)
        c["hidden"] = c["xn_mlp"] @ w["mlp_fc1"].T  # (n, F)
        c["relu"] = np.maximum(c["hidden"], 0.0)  # (n, F)
        x = c["relu"] @ w["mlp_fc2"].T + x  # (n, C)
        layers.append(c)
    logits = x @ p["lm_head"].T  # (n, V)
    shifted = logits - logits.max(axis=1, keepdims=True)  # (n, V)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (n, V)
    loss = -log_probs[np.arange(n), targets].mean()  # mean over positions of -log p(target)
    cache = {"n": n, "inputs": inputs, "targets": targets, "x_embed": x_embed,
             "s_embed": s_embed, "layers": layers, "x_final": x, "probs": np.exp(log_probs)}
    return float(loss), cache


def backward(p, g, config, cache):
    """Fill g (name -> gradient matrix, zeroed, same shapes as p) from forward's cache."""
    n, inputs, targets = cache["n"], cache["inputs"], cache["targets"]
    scale_qk = config.head_dim**0.5

    # loss = mean_t -log softmax(logits_t)[target_t]  =>  dlogits = (probs - onehot) / n
    dlogits = cache["probs"].copy()  # (n, V)
    dlogits[np.arange(n), targets] -= 1.0
    dlogits /= n
    g["lm_head"][...] = dlogits.T @ cache["x_final"]  # (V, n) @ (n, C) -> (V, C)
    dx = dlogits @ p["lm_head"]  # (n, V) @ (V, C) -> (n, C)

    for li in reversed(range(config.n_layer)):
        c = cache["layers"][li]
        w = {part: p[layer_name(li, part)] for part in LAYER_MATRIX_NAMES}
        gw = {part: g[layer_name(li, part)] for part in LAYER_MATRIX_NAMES}
        # 2) MLP: x = relu(rmsnorm(x_in) @ fc1.T) @ fc2.T + x_in
        gw["mlp_fc2"][...] = dx.T @ c["relu"]  # (C, n) @ (n, F) -> (C, F)
        dhidden = (dx @ w["mlp_fc2"]) * (c["hidden"] > 0)  # (n, F); relu'(0) = 0 as microgpt
        gw["mlp_fc1"][...] = dhidden.T @ c["xn_mlp"]  # (F, n) @ (n, C) -> (F, C)
        dxn = dhidden @ w["mlp_fc1"]  # (n, F) @ (F, C) -> (n, C)
        dx = dx + rmsnorm_backward(c["x_mlp_in"], c["s_mlp"], dxn)  # (n, C)
        # 1) attention: x = merge(softmax(q k^T / sqrt(D)) v) @ wo.T + x_in
        gw["attn_wo"][...] = dx.T @ c["heads"]  # (C, n) @ (n, C) -> (C, C)
        dheads = split_heads(dx @ w["attn_wo"], config.n_head)  # (H, n, D)
        att = c["att"]  # (H, n, n)
        datt = dheads @ c["v"].transpose(0, 2, 1)  # (H, n, D) @ (H, D, n) -> (H, n, n)
        dv = att.transpose(0, 2, 1) @ dheads  # (H, n, n) @ (H, n, D) -> (H, n, D)
        # softmax backward per row; masked entries have att = 0 and so get no gradient
        dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) / scale_qk  # (H, n, n)
        dq = dscores @ c["k"]  # (H, n, n) @ (H, n, D) -> (H, n, D)
        dk = dscores.transpose(0, 2, 1) @ c["q"]  # (H, n, n) @ (H, n, D) -> (H, n, D)
        dxn = np.zeros_like(dx)  # (n, C)
        for part, dpart in (("attn_wq", dq), ("attn_wk", dk), ("attn_wv", dv)):
            dpart = merge_heads(dpart)  # (n, C)
            gw[part][...] = dpart.T @ c["xn_attn"]  # (C, n) @ (n, C) -> (C, C)
            dxn += dpart @ w[part]  # (n, C) @ (C, C) -> (n, C)
        dx = dx + rmsnorm_backward(c["x_attn_in"], c["s_attn"], dxn)  # (n, C)

    dx_embed = rmsnorm_backward(cache["x_embed"], cache["s_embed"], dx)  # (n, C)
    np.add.at(g["wte"], inputs, dx_embed)  # (V, C): a token seen twice gets both rows
    g["wpe"][:n] = dx_embed  # (block_size, C): positions >= n get no gradient


# --- the trainer ----------------------------------------------------------------------------
def matrix_views(flat, layout):
    """name -> (rows, cols) view into the flat state-dict-ordered array (no copy)."""
    return {s.name: flat[s.offset : s.offset + s.size].reshape(s.rows, s.cols) for s in layout}


class NumpyTrainer(Trainer):
    """microgpt's training step as float64 NumPy matrices over the whole document."""

    name = "numpy"

    def __init__(self, config, layout, weights, lr, num_steps) -> None:
        super().__init__(config, layout, weights, lr, num_steps)
        self.w = np.array(weights, dtype=np.float64)  # (P,) flat, state-dict order
        self.g = np.zeros_like(self.w)  # (P,) gradient of the last loss_and_grads/step
        self.m = np.zeros_like(self.w)  # (P,) Adam first moment
        self.v = np.zeros_like(self.w)  # (P,) Adam second moment
        self.params = matrix_views(self.w, layout)
        self.grads = matrix_views(self.g, layout)

    def _forward_backward(self, tokens: list[int]) -> float:
        loss, cache = forward(self.params, self.config, tokens)
        self.g.fill(0.0)
        backward(self.params, self.grads, self.config, cache)
        return loss

    def loss_and_grads(self, tokens):
        loss = self._forward_backward(self.check_tokens(tokens))
        return loss, self.g.copy()

    def _adam(self, scalars) -> None:
        """microgpt's Adam, vectorised (same formula; np.sqrt in place of ** 0.5)."""
        b1, b2, eps = ADAM_BETA1, ADAM_BETA2, ADAM_EPS
        lr_t, bias_correction1, bias_correction2 = scalars
        g = self.g
        self.m *= b1
        self.m += (1 - b1) * g
        self.v *= b2
        self.v += (1 - b2) * (g * g)
        m_hat = self.m / bias_correction1
        v_hat = self.v / bias_correction2
        self.w -= lr_t * m_hat / (np.sqrt(v_hat) + eps)

    def weights(self):
        return self.w.copy()
