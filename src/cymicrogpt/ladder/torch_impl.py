"""The PyTorch rung of the ladder: the same whole-sequence model, autograd for the backward.

Float64 on the CPU.  The forward is the NumPy rung's (all n positions at once, causal mask
in the attention scores -- the same maths as microgpt's per-token key/value cache); the
backward is torch's autograd.  Results agree with the reference to ~1e-16 relative.

Adam is written out with torch ops in microgpt's form, not `torch.optim.Adam`:

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g**2
    w -= lr_t * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps),  lr_t = lr * (1 - step/num_steps)

torch.optim.Adam folds the bias corrections elsewhere -- it divides sqrt(v) by
sqrt(1 - b2**t) and then adds eps, and scales lr by 1/(1 - b1**t) -- so its eps acts at a
different scale and its updates differ from microgpt's.

Threads: torch's default intra-op thread count (torch.get_num_threads(), normally the
number of physical cores) is left alone; a caller may set it.  At microgpt's sizes each op
is tiny, so per-op dispatch and autograd bookkeeping dominate, not arithmetic.  On a busy
2-core machine, though, the default 2 threads sometimes stalled (whole runs several times
slower, single steps up to ~200 ms) where 1 thread stayed steady: a benchmark should report
torch.get_num_threads() and may prefer torch.set_num_threads(1).

torch is not a dependency of cymicrogpt: importing this module without it raises
`cymicrogpt.ladder.base.NotInstalled`, so `trainer_class("torch")` reports "not installed".
This rung needs only the CPU build; a plain `pip install torch` on Linux fetches the CUDA one
(several GB).  PyTorch documents the CPU-only install as CPU_ONLY below.
"""
from __future__ import annotations

from .base import NotInstalled, Trainer

CPU_ONLY = "pip install torch --index-url https://download.pytorch.org/whl/cpu"

try:
    import torch
except (ImportError, OSError) as exc:  # OSError: a torch whose shared libraries fail to load
    raise NotInstalled(f"torch is not installed or does not import ({exc}); "
                       f"`{CPU_ONLY}` installs the CPU build this implementation needs") from exc

import numpy as np

from ..config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, LAYER_MATRIX_NAMES, RMSNORM_EPS
from ..params import layer_name

DTYPE = torch.float64


def rmsnorm(x):
    return x * (torch.mean(x * x, dim=1, keepdim=True) + RMSNORM_EPS) ** -0.5  # (n, C)


def split_heads(x, n_head):
    n, c = x.shape
    return x.view(n, n_head, c // n_head).transpose(0, 1)  # (n, C) -> (H, n, D)


def merge_heads(x):
    h, n, d = x.shape
    return x.transpose(0, 1).reshape(n, h * d)  # (H, n, D) -> (n, C)


def forward(p, config, tokens):
    """Mean next-token cross-entropy of one document [BOS, ..., BOS], as a 0-d tensor.

    p: name -> weight matrix (a view of the flat leaf tensor; rows = output features).
    Shapes: n positions, C = n_embd, H heads of D = head_dim, F = 4*C, V = vocab_size.
    """
    n = min(config.block_size, len(tokens) - 1)
    inputs = torch.tensor(tokens[:n], dtype=torch.long)  # (n,)
    targets = torch.tensor(tokens[1 : n + 1], dtype=torch.long)  # (n,)
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)  # (n, n) above diagonal
    scale_qk = config.head_dim**0.5

    x = p["wte"][inputs] + p["wpe"][:n]  # (n, C)
    x = rmsnorm(x)  # (n, C)
    for li in range(config.n_layer):
        w = {part: p[layer_name(li, part)] for part in LAYER_MATRIX_NAMES}
        # 1) multi-head causal self-attention
        x_residual = x
        xn = rmsnorm(x)  # (n, C)
        q = split_heads(xn @ w["attn_wq"].T, config.n_head)  # (H, n, D)
        k = split_heads(xn @ w["attn_wk"].T, config.n_head)  # (H, n, D)
        v = split_heads(xn @ w["attn_wv"].T, config.n_head)  # (H, n, D)
        scores = (q @ k.transpose(1, 2)) / scale_qk  # (H, n, n)
        att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (H, n, n)
        x = merge_heads(att @ v) @ w["attn_wo"].T + x_residual  # (n, C)
        # 2) MLP
        x_residual = x
        hidden = rmsnorm(x) @ w["mlp_fc1"].T  # (n, F)
        x = torch.relu(hidden) @ w["mlp_fc2"].T + x_residual  # (n, C); relu'(0) = 0
    logits = x @ p["lm_head"].T  # (n, V)
    log_probs = torch.log_softmax(logits, dim=1)  # (n, V)
    return -log_probs[torch.arange(n), targets].mean()  # ()


class TorchTrainer(Trainer):
    """microgpt's training step in float64 PyTorch on the CPU, autograd backward."""

    name = "torch"

    def __init__(self, config, layout, weights, lr, num_steps) -> None:
        super().__init__(config, layout, weights, lr, num_steps)
        w = torch.tensor(np.asarray(weights, dtype=np.float64), dtype=DTYPE)  # (P,)
        self.w = w.requires_grad_(True)  # the one leaf: grads come out flat, state-dict order
        self.m = torch.zeros_like(w)  # (P,) Adam first moment
        self.v = torch.zeros_like(w)  # (P,) Adam second moment

    def _params(self):
        """name -> (rows, cols) view of the flat leaf, taken inside the graph."""
        return {s.name: self.w[s.offset : s.offset + s.size].view(s.rows, s.cols) for s in self.layout}

    def _forward_backward(self, tokens: list[int]) -> float:
        self.w.grad = None
        loss = forward(self._params(), self.config, tokens)
        loss.backward()
        return loss.item()

    def loss_and_grads(self, tokens):
        loss = self._forward_backward(self.check_tokens(tokens))
        return loss, self.w.grad.numpy().copy()

    @torch.no_grad()
    def _adam(self, scalars) -> None:
        """microgpt's Adam (see the module docstring), in place on the flat tensors."""
        b1, b2, eps = ADAM_BETA1, ADAM_BETA2, ADAM_EPS
        lr_t, bias_correction1, bias_correction2 = scalars
        g = self.w.grad
        self.m.mul_(b1).add_((1 - b1) * g)
        self.v.mul_(b2).add_((1 - b2) * (g * g))
        m_hat = self.m / bias_correction1
        v_hat = self.v / bias_correction2
        self.w.sub_(lr_t * m_hat / (torch.sqrt(v_hat) + eps))

    def weights(self):
        return self.w.detach().numpy().copy()
