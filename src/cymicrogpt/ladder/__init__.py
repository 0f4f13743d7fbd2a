"""The efficiency ladder: the same microgpt training run on several implementations.

Every implementation trains the identical model from the same initial weights on the
same documents in the same order, one document per step, with microgpt's Adam and
linear learning-rate decay.  They differ only in how the arithmetic is done:

    python  the reference engine (scalar Value graph in pure Python)   exact
    cython  our compiled scalar graph                                  exact
    fused   the training pass fused into hand-written Cython loops:    exact
            no graph, no Python per operation
    numpy   whole-sequence matrices, hand-written backward, float64    ~1e-16 relative
    torch   PyTorch autograd on the CPU, float64                       ~1e-16 relative

The first three are the training backends (engines/__init__.py), held float-== to each
other by the parity tests (tests/test_parity.py); the others exist only here.  Each implementation is a class with this interface (see
`base.Trainer`):

    trainer = Impl(config, layout, weights, lr, num_steps)
    loss, grads = trainer.loss_and_grads(tokens)   # no update; grads flat, state-dict order
    loss = trainer.step(tokens)                    # forward + backward + Adam, returns the loss
"""
from __future__ import annotations

import importlib

from ..engines import BACKENDS, REFERENCE_BACKEND

# name -> (module of this package, class): the implementations that are not training backends
OTHER_TRAINERS = {
    "numpy": ("numpy_impl", "NumpyTrainer"),
    "torch": ("torch_impl", "TorchTrainer"),
}
# The reference first (every other row is compared with it), then the other exact backends.
EXACT = (REFERENCE_BACKEND,) + tuple(name for name in BACKENDS if name != REFERENCE_BACKEND)
IMPLEMENTATIONS = EXACT + tuple(OTHER_TRAINERS)


def trainer_class(name: str):
    """The Trainer class of implementation `name` (imports it lazily)."""
    if name in BACKENDS:
        from .graph import graph_trainer

        return graph_trainer(name)
    if name in OTHER_TRAINERS:
        module, cls = OTHER_TRAINERS[name]
        return getattr(importlib.import_module(f".{module}", __name__), cls)
    raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(IMPLEMENTATIONS)}")
