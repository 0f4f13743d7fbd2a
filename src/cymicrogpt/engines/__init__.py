"""The training backends: one registry from backend name to engine, the only place the
names are typed.

These are the engines `train` runs on (engines/interface.py says what an engine does);
the efficiency ladder (ladder/) times them beside its other implementations, starting
from REFERENCE_BACKEND.
"""
from __future__ import annotations

import importlib
from typing import Sequence

from .interface import Engine
from ..params import MatrixSlot

# Backend name -> (module of this package, engine class).  Imported on first use: the
# reference runs where NumPy is missing and the compiled extension was never built.
ENGINES = {
    "cython": ("compiled", "GraphEngine"),  # the compiled scalar graph: the default
    "python": ("reference", "ReferenceEngine"),  # pure Python, microgpt's Value: the parity oracle
    "fused": ("fused", "FusedEngine"),  # the compiled graph engine, trained by graph-free loops
}
BACKENDS = tuple(ENGINES)
DEFAULT_BACKEND, REFERENCE_BACKEND = BACKENDS[:2]  # in the registry's order; every backend is float-== to the oracle


def check_backend(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def make_engine(name: str, layout: list[MatrixSlot], weights: Sequence[float]) -> Engine:
    """A fresh engine of backend `name` holding `weights` (flat, state-dict order)."""
    module, cls = ENGINES[check_backend(name)]
    try:
        engine_class = getattr(importlib.import_module(f".{module}", __name__), cls)
    except ImportError as exc:  # the compiled engine, in a source checkout that was never built
        raise RuntimeError(
            "the compiled engine is not built; install the package with `pip install .` "
            f"or use backend={REFERENCE_BACKEND!r} ({exc})"
        ) from exc
    return engine_class(layout, weights)
