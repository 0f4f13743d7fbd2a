"""The efficiency ladder: the same microgpt training run on several implementations.

Every implementation trains the identical model from the same initial weights on the
same documents in the same order, one document per step, with microgpt's Adam and
linear learning-rate decay.  They differ only in how the arithmetic is done:

    python  the reference engine (scalar Value graph in pure Python)   exact
    cython  our compiled scalar graph                                  exact
    numpy   whole-sequence matrices, hand-written backward, float64    ~1e-16 relative
    torch   PyTorch autograd on the CPU, float64                       ~1e-16 relative
    fused   Cython, no graph: hand-written forward/backward loops      ~1e-16 relative

Each implementation is a class with this interface (see `base.Trainer`):

    trainer = Impl(config, layout, weights, lr, num_steps)
    loss, grads = trainer.loss_and_grads(tokens)   # no update; grads flat, state-dict order
    loss = trainer.step(tokens)                    # forward + backward + Adam, returns the loss
"""
from __future__ import annotations

IMPLEMENTATIONS = ("python", "cython", "numpy", "torch", "fused")


class NotInstalled(RuntimeError):
    """An optional dependency of an implementation (e.g. torch) is missing."""


def trainer_class(name: str):
    """The Trainer class of implementation `name` (imports it lazily)."""
    if name in ("python", "cython"):
        from .graph import graph_trainer

        return graph_trainer(name)
    if name == "numpy":
        from .numpy_impl import NumpyTrainer

        return NumpyTrainer
    if name == "torch":
        from .torch_impl import TorchTrainer

        return TorchTrainer
    if name == "fused":
        from .fused import FusedTrainer

        return FusedTrainer
    raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(IMPLEMENTATIONS)}")
