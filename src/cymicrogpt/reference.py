"""``cymicrogpt.reference``: the pure-Python reference engine, the parity oracle, under its
public name.  It lives in engines/reference.py, beside the compiled engine; this module
only re-exports it, so both names give the very same classes."""
from .engines.reference import ReferenceAdam, ReferenceEngine, Value

__all__ = ["ReferenceAdam", "ReferenceEngine", "Value"]
