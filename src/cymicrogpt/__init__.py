"""cymicrogpt: Karpathy's microgpt, exactly, on a compiled scalar autograd engine.

    import cymicrogpt as mg
    run = mg.train(mg.load_docs("names.txt"), steps=1000)
    run.losses, run.sample(20)
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# Public names -> the module defining them, imported on first use.  `import cymicrogpt`
# thus stays nearly free: the `cymicrogpt` command handles Ctrl-C from its first moments
# (see launch.py), and the pure-Python backend works in a tree whose extension (Value)
# was never built.
_EXPORTS = {
    "GPTConfig": ".config",
    "CheckpointError": ".checkpoint",
    "DataError": ".data",
    "load_docs": ".data",
    "DivergenceError": ".training",
    "Run": ".training",
    "train": ".training",
    "SamplingError": ".sampling",
    "Value": "._value",
    "collect": "._value",
    "graph_size": "._value",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from ._value import Value, collect, graph_size
    from .checkpoint import CheckpointError
    from .config import GPTConfig
    from .data import DataError, load_docs
    from .sampling import SamplingError
    from .training import DivergenceError, Run, train


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):  # a submodule, e.g. `cymicrogpt.data`, as if imported eagerly
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
