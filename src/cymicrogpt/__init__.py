"""cymicrogpt: Karpathy's microgpt, exactly, on a compiled scalar autograd engine.

    import cymicrogpt as mg
    run = mg.train(mg.load_docs("names.txt"), steps=1000)
    run.losses, run.sample(20)
"""
from ._version import __version__
from .config import GPTConfig
from .data import DataError, load_docs
from .training import Run, train

__all__ = ["__version__", "GPTConfig", "DataError", "load_docs", "Run", "train", "Value"]


def __getattr__(name: str):
    # The compiled Value is loaded on first use so that `cymicrogpt.reference` and the
    # pure-Python backend keep working in a tree whose extension was never built.
    if name == "Value":
        from ._value import Value

        return Value
    raise AttributeError(f"module 'cymicrogpt' has no attribute {name!r}")
