"""Validating the API's numeric arguments once, with messages that say what is wrong.

Counts are bounded by what a checkpoint stores them in (int64), so a run that starts can
always be saved.  Real numbers may be any ``numbers.Real`` (``float``, ``int``,
``fractions.Fraction``, NumPy floats...) except ``bool``, and are converted to ``float``
here, once: every engine then computes with the same Python float.
"""
from __future__ import annotations

import math
import numbers
import operator
import sys

COUNT_MAX = 2**63 - 1  # checkpoints store counts (steps, sizes) as int64


def check_count(name: str, value, maximum: int = COUNT_MAX) -> int:
    """A positive int (bool refused) of at most `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_moment_lengths(m, v, size: int) -> None:
    """An optimizer's set_moments arguments: one value per weight in each of m and v
    (ValueError before either buffer is written)."""
    for name, values in (("m", m), ("v", v)):
        if len(values) != size:
            raise ValueError(f"set_moments: {name} has {len(values)} values, the optimizer has {size} weights")


def check_real(name: str, value) -> float:
    """A finite real number as a float; ValueError (TypeError for non-numbers) otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int or Fraction beyond the float range
        raise ValueError(f"{name} must be a finite number, got one too large for a float") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def int_digits_limit() -> int:
    """Python's limit on the digits of an int converted to or from text (0: none)."""
    get_limit = getattr(sys, "get_int_max_str_digits", None)  # Python >= 3.10.7
    return get_limit() if get_limit is not None else 0


def check_seed(seed) -> int:
    """Any integer (NumPy's too) that a checkpoint can store: it keeps the seed as text."""
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be an integer, got {seed!r}") from None
    try:
        str(seed)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise ValueError(
            f"seed has more than {int_digits_limit()} digits, the most Python converts to text "
            "(a checkpoint stores the seed as text)"
        ) from None
    return seed


def check_lr(lr) -> float:
    value = check_real("lr", lr)
    if not value > 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    return value


def check_docs(docs, purpose: str = "train on") -> list[str]:
    if isinstance(docs, (str, bytes, bytearray)):
        # A str is iterable, but its "documents" would be its characters.
        raise TypeError(f"docs must be a collection of documents (strings), not a single {type(docs).__name__}; "
                        "wrap one document in a list, or split a text into lines")
    docs = list(docs)
    if not docs:
        raise ValueError(f"no documents to {purpose}")
    for i, doc in enumerate(docs):
        if not isinstance(doc, str) or not doc:
            raise ValueError(f"document {i} must be a non-empty string, got {doc!r}")
    return docs
