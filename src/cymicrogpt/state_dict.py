"""A run's weights as named matrices (microgpt's ``state_dict``), and back.

The engines keep every weight in one flat list in state-dict order (params.py); this module
cuts that list into microgpt's named matrices, ``{name: float64 ndarray of shape (rows,
cols)}`` (``wte`` (vocab, n_embd), ``wpe`` (block_size, n_embd), ``lm_head`` (vocab,
n_embd), ``layer{i}.attn_wq`` ... ``layer{i}.mlp_fc2``), and joins such a dict back into
the flat list, after checking it as a set of weights for this model: exactly the layout's
names, their shapes, numbers that convert to float64 without loss of kind, all finite.
This is the form weights leave cymicrogpt in (``Run.state_dict``, safetensors files) and
come back in (``Run.load_state_dict``), e.g. from PyTorch.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .params import MatrixSlot

StateDict = dict[str, np.ndarray]


def to_state_dict(layout: Sequence[MatrixSlot], weights: Sequence[float]) -> StateDict:
    """`weights` (flat, state-dict order) as {name: (rows, cols) float64 array}, in layout
    order; each array is a copy of its own, C-contiguous."""
    flat = np.asarray(weights, dtype=np.float64)
    return {slot.name: flat[slot.offset : slot.offset + slot.size].reshape(slot.rows, slot.cols).copy()
            for slot in layout}


def from_state_dict(layout: Sequence[MatrixSlot], tensors: Mapping) -> list[float]:
    """The flat weights (Python floats, state-dict order) of `tensors`, a mapping such as
    `to_state_dict` returns; ValueError naming the first tensor that is missing, extra,
    misshapen, of a dtype that is not a real number, or not finite (TypeError if
    `tensors` is not a mapping).  Anything ``np.asarray`` takes will do as a tensor
    (lists, NumPy arrays, CPU torch tensors without grad)."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"a state dict must be a mapping of tensor names to arrays, got {type(tensors).__name__}")
    names = [slot.name for slot in layout]
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ValueError(f"state dict is missing tensor {missing[0]!r}{_and_more(missing)}; this model's tensors are "
                         f"{_listed(names)}")
    expected = set(names)
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise ValueError(f"state dict has unexpected tensor {_show(extra[0])}{_and_more(extra)}; this model's "
                         f"tensors are {_listed(names)}")
    return np.concatenate([checked_tensor(slot, tensors[slot.name]).reshape(-1) for slot in layout]).tolist()


def checked_tensor(slot: MatrixSlot, value) -> np.ndarray:
    """`value` as the float64 (rows, cols) matrix of `slot`; ValueError naming it otherwise."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:  # ragged lists; a torch tensor that requires grad
        raise ValueError(f"tensor {slot.name!r} is not an array of numbers ({_first_line(exc)})") from None
    # Booleans, complex numbers, strings and objects are not weights; integers are (exactly
    # representable ones, as NumPy's "safe" cast says), and floats of at most 64 bits.
    if array.dtype.kind not in "iuf" or not np.can_cast(array.dtype, np.float64, casting="safe"):
        raise ValueError(f"tensor {slot.name!r} has dtype {array.dtype}, which does not convert to float64 "
                         "(weights are real numbers of at most 64 bits)")
    if array.shape != (slot.rows, slot.cols):
        raise ValueError(f"tensor {slot.name!r} has shape {tuple(array.shape)}, expected {(slot.rows, slot.cols)}")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        index = np.unravel_index(int(np.argmin(finite)), array.shape)  # the first non-finite value
        raise ValueError(f"tensor {slot.name!r} holds {float(array[index])!r} at {tuple(map(int, index))}; "
                         "weights must be finite")
    return array


def _and_more(names: list) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def _listed(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _show(name) -> str:
    return repr(name)[:80]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
