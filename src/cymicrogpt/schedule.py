"""microgpt's Adam schedule: the three scalars of one training step, computed in one place.

microgpt's Adam loop evaluates, for the step with 0-based index ``step``::

    lr_t = learning_rate * (1 - step / num_steps)   # linear decay to 0
    m_hat = m[i] / (1 - beta1 ** (step + 1))         # bias corrections
    v_hat = v[i] / (1 - beta2 ** (step + 1))

Every optimizer (the reference's, the compiled backends', and the ladder's NumPy and
torch rungs) takes these three floats from ``adam_scalars`` and never types the
expressions again.  Exactness: they are microgpt's expressions with its operation order,
evaluated by Python's float arithmetic (``**`` is libm ``pow``, as in microgpt), so each
optimizer divides by the very floats microgpt divides by.  Computing them once per step
instead of once per parameter changes nothing: the same expression gives the same float.
The compiled Adam step (_adam.AdamState, which saves this call's microsecond a step)
evaluates these expressions in C only where Python's arithmetic is plain IEEE and libm
``pow`` (int steps below 2^53, a float lr, 0 < beta < 1, no errno), and calls this
function everywhere else; tests/test_adam.py holds the two to the same bits.
"""
from __future__ import annotations

from typing import NamedTuple

from .config import ADAM_BETA1, ADAM_BETA2


class AdamScalars(NamedTuple):
    lr_t: float  # the step's learning rate: lr * (1 - step_index / num_steps)
    bias_correction1: float  # 1 - beta1 ** (step_index + 1): m_hat = m / bias_correction1
    bias_correction2: float  # 1 - beta2 ** (step_index + 1): v_hat = v / bias_correction2


def adam_scalars(lr: float, step_index: int, num_steps: int) -> AdamScalars:
    """The scalars of the step with 0-based index `step_index` in a `num_steps`-step run
    with base learning rate `lr`: microgpt's expressions, float for float."""
    return AdamScalars(
        lr_t=lr * (1 - step_index / num_steps),
        bias_correction1=1 - ADAM_BETA1 ** (step_index + 1),
        bias_correction2=1 - ADAM_BETA2 ** (step_index + 1),
    )
