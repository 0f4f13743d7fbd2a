"""Backend names -> engines: "python" (the reference) and "cython" (the compiled graph).

These are the engines `train` runs on (engines/interface.py); the efficiency ladder
(ladder/) times them beside its other implementations, starting from REFERENCE_BACKEND.
"""
from __future__ import annotations

from typing import Sequence

from ..config import GPTConfig
from .interface import Engine
from ..params import MatrixSlot

BACKENDS = ("cython", "python")
DEFAULT_BACKEND = "cython"
REFERENCE_BACKEND = "python"  # the parity oracle: every backend is float-== to it


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def make_engine(name: str, layout: list[MatrixSlot], weights: Sequence[float], config: GPTConfig) -> Engine:
    """A fresh engine holding `weights` (flat, state-dict order)."""
    check_backend(name)
    if name == REFERENCE_BACKEND:
        from ..reference import ReferenceEngine

        return ReferenceEngine(layout, weights)
    try:
        from .compiled import GraphEngine
    except ImportError as exc:  # a source checkout that was never built
        raise RuntimeError(
            "the compiled engine is not built; install the package with `pip install .` "
            f"or use backend='python' ({exc})"
        ) from exc
    return GraphEngine(layout, weights)
