"""cymicrogpt: Karpathy's microgpt, exactly, on a compiled scalar autograd engine.

    import cymicrogpt as mg
    run = mg.train(mg.load_docs("names.txt"), steps=1000)
    run.losses, run.sample(20)
"""
# Public names -> the module defining them, imported on first use.  `import cymicrogpt`
# thus imports nothing at all: the `cymicrogpt` command runs this file before launch.py
# can install its Ctrl-C handler, so even `typing` (15 ms) would be a moment where a
# Ctrl-C prints a traceback.  And the pure-Python backend works in a tree whose
# extension (Value) was never built.
_EXPORTS = {
    "__version__": "._version",
    "GPTConfig": ".config",
    "CheckpointError": ".checkpoint",
    "DataError": ".data",
    "load_docs": ".data",
    "DivergenceError": ".training",
    "Run": ".training",
    "train": ".training",
    "SamplingError": ".sampling",
    "SafetensorsError": ".safetensors",
    "Value": "._value",
    "collect": "._value",
    "graph_size": "._value",
}

__all__ = [*_EXPORTS]

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from ._version import __version__
    from ._value import Value, collect, graph_size
    from .checkpoint import CheckpointError
    from .config import GPTConfig
    from .data import DataError, load_docs
    from .safetensors import SafetensorsError
    from .sampling import SamplingError
    from .training import DivergenceError, Run, train


def __getattr__(name: str):
    from importlib import import_module

    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):  # a submodule, e.g. `cymicrogpt.data`, as if imported eagerly
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
