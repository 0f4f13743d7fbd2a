"""The PyTorch rung of the ladder: the package's torch model (torch_model.py), autograd backward.

Float64 on the CPU.  The forward is ``torch_model.GPT``, the module ``Run.to_torch()`` returns,
on one document at a time (a batch of one, no padding): all n positions at once, causal mask
in the attention scores -- the same maths as microgpt's per-token key/value cache.  The
backward is torch's autograd.  Results agree with the reference to ~1e-16 relative.

Adam is written out with torch ops on one flat tensor in microgpt's form and order:

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g**2
    w -= lr_t * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps),  lr_t = lr * (1 - step/num_steps)

torch.optim.Adam computes the same update with another rounding order (lr / (1 - b1**t)
first, sqrt(v) / sqrt(1 - b2**t)) and one optimizer step per parameter tensor; the example
that continues a run in torch (examples/continue_in_torch.py) uses it.  Here the module's
parameters are views of one flat tensor (torch.nn.utils.vector_to_parameters), so
the update is a handful of ops on the whole model, as in the NumPy rung.

Threads: torch's default intra-op thread count (torch.get_num_threads(), normally the
number of physical cores) is left alone; a caller may set it.  At microgpt's sizes each op
is tiny, so per-op dispatch and autograd bookkeeping dominate, not arithmetic.  On a busy
2-core machine, though, the default 2 threads sometimes stalled (whole runs several times
slower, single steps up to ~200 ms) where 1 thread stayed steady: a benchmark should report
torch.get_num_threads() and may prefer torch.set_num_threads(1).

torch is not a dependency of cymicrogpt: importing this module without it raises
`cymicrogpt.ladder.base.NotInstalled`, so `trainer_class("torch")` reports "not installed".
This rung needs only the CPU build; a plain `pip install torch` on Linux fetches the CUDA one
(several GB).  torch_model.CPU_ONLY is PyTorch's documented CPU-only install.
"""
from __future__ import annotations

from .base import NotInstalled, Trainer

try:
    from ..torch_model import GPT, document_losses, torch
except ImportError as exc:  # torch missing: torch_model's one line says how to install it
    raise NotInstalled(str(exc)) from exc

import numpy as np
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS

DTYPE = torch.float64


class TorchTrainer(Trainer):
    """microgpt's training step in float64 PyTorch on the CPU, autograd backward."""

    name = "torch"

    def __init__(self, config, layout, weights, lr, num_steps) -> None:
        super().__init__(config, layout, weights, lr, num_steps)
        self.model = GPT(config, self.vocab_size, dtype=DTYPE)
        self.params = list(self.model.parameters())  # state-dict order, which is the layout's
        assert [name for name, _ in self.model.named_parameters()] == [slot.name for slot in layout]
        self.w = torch.tensor(np.asarray(weights, dtype=np.float64), dtype=DTYPE)  # (P,) flat, layout order
        vector_to_parameters(self.w, self.params)  # each parameter becomes a view of w: Adam updates w in place
        self.m = torch.zeros_like(self.w)  # (P,) Adam first moment
        self.v = torch.zeros_like(self.w)  # (P,) Adam second moment
        self.grad = torch.zeros_like(self.w)  # (P,) the last gradient, flat

    def _forward_backward(self, tokens: list[int]) -> float:
        self.model.zero_grad(set_to_none=True)
        inputs, targets = self.model.token_batch([tokens], pad_id=tokens[0])  # one document: no padding
        loss = document_losses(self.model(inputs), targets)[0]
        loss.backward()
        self.grad = parameters_to_vector([p.grad for p in self.params])  # (P,) layout order
        return loss.item()

    def loss_and_grads(self, tokens):
        loss = self._forward_backward(self.check_tokens(tokens))
        return loss, self.grad.numpy().copy()

    @torch.no_grad()
    def _adam(self, scalars) -> None:
        """microgpt's Adam (see the module docstring), in place on the flat tensors."""
        b1, b2, eps = ADAM_BETA1, ADAM_BETA2, ADAM_EPS
        lr_t, bias_correction1, bias_correction2 = scalars
        g = self.grad
        self.m.mul_(b1).add_((1 - b1) * g)
        self.v.mul_(b2).add_((1 - b2) * (g * g))
        m_hat = self.m / bias_correction1
        v_hat = self.v / bias_correction2
        self.w.sub_(lr_t * m_hat / (torch.sqrt(v_hat) + eps))

    def weights(self):
        return self.w.numpy().copy()
