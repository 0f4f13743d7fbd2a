"""safetensors files: a run's weights for the rest of the ecosystem, and back.

The format (Hugging Face's ``safetensors``) is an 8-byte little-endian unsigned length N,
N bytes of UTF-8 JSON, then the tensors' raw little-endian bytes, back to back.  The JSON
maps each tensor's name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
into the data, which the tensors must cover exactly: no gap, no overlap, nothing after),
and the optional key ``__metadata__`` to a string-to-string map.  It is written and read
here with NumPy and the standard library alone: the format is that small, and the
``safetensors`` package would be a compiled (Rust) dependency for ~100 lines of Python,
one that must exist for every platform and Python we ship for.  ``tests/test_export.py``
checks, when the package is installed, that it reads our files and we read its files.

A run's file (``Run.export``) holds its ``state_dict()`` as ``F64`` tensors, in state-dict
order, and metadata: the model's shape (``n_layer``, ``n_embd``, ``n_head``,
``block_size``), its vocabulary (``chars``, the characters in token-id order, and
``bos_id``), the ``step`` it was trained to and the ``cymicrogpt_version`` that wrote it.
Like the official writer, the header is padded with spaces to a multiple of 8 bytes, so
that every tensor is aligned for a zero-copy load.

Reading trusts nothing: the file must be a regular file; the header's length must fit the
file and 100 MB (the official limit); the header is JSON without duplicate keys or NaN
constants; every tensor entry is checked (F64 only, a shape of non-negative integers,
offsets that match it) and the data must be exactly the tensors' bytes.  Loading into a run
(``Run.load_safetensors``) then checks the metadata against the run, and the tensors as
``Run.load_state_dict`` does (names, shapes, finiteness).  Every problem raises
``SafetensorsError``, one line naming the file and the tensor or metadata key.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Union

import numpy as np

from ._version import __version__
from .config import GPTConfig
from .files import open_regular, write_atomically
from .tokenizer import Tokenizer

PathLike = Union[str, os.PathLike]

LENGTH_BYTES = 8  # the header's length: an unsigned 64-bit little-endian integer
MAX_HEADER_BYTES = 100_000_000  # the official reader's limit
ALIGNMENT = 8  # header padded so that the data starts on a multiple of 8 bytes
F64 = "F64"
METADATA = "__metadata__"
CONFIG_KEYS = ("n_layer", "n_embd", "n_head", "block_size")


class SafetensorsError(ValueError):
    """A safetensors file that cannot be used; the message names the file and the problem."""


# --- writing ---------------------------------------------------------------------------------
def file_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> list[bytes]:
    """The file for float64 `tensors` (in their order) and string `metadata`, as pieces."""
    header: dict = {METADATA: dict(metadata)}
    data, offset = [], 0
    for name, tensor in tensors.items():
        raw = np.ascontiguousarray(tensor, dtype="<f8").tobytes()  # little-endian, C order
        header[name] = {"dtype": F64, "shape": list(np.shape(tensor)), "data_offsets": [offset, offset + len(raw)]}
        data.append(raw)
        offset += len(raw)
    # ensure_ascii: any str (a lone surrogate in a vocabulary too) becomes valid JSON in ASCII
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("ascii")
    text += b" " * (-(LENGTH_BYTES + len(text)) % ALIGNMENT)
    return [len(text).to_bytes(LENGTH_BYTES, "little"), text, *data]


def write(path: PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write `tensors` (float64) and `metadata` to `path` as a safetensors file, atomically
    (files.write_atomically: through symlinks, never over a non-regular file); OSError if
    it cannot."""
    pieces = file_bytes(tensors, metadata)
    write_atomically(path, lambda fh: fh.writelines(pieces))


# --- reading ---------------------------------------------------------------------------------
def read(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (float64 arrays, in the file's data order) and metadata of the
    safetensors file `path`; SafetensorsError naming the problem otherwise."""
    fail = _failer(path)
    with open_regular(path, "safetensors", SafetensorsError) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(LENGTH_BYTES)
            if len(head) < LENGTH_BYTES:
                raise fail(f"it holds {len(head)} bytes, fewer than the {LENGTH_BYTES} of a header's length; "
                           "not a safetensors file")
            length = int.from_bytes(head, "little")
            if length > min(MAX_HEADER_BYTES, size - LENGTH_BYTES):
                raise fail(f"its header length is {length} bytes, more than the file holds ({size}) or "
                           f"{MAX_HEADER_BYTES:,} bytes; not a safetensors file, or a truncated one")
            entries, metadata = _parse_header(fh.read(length), fail)
            data_size = size - LENGTH_BYTES - length
            order = _check_offsets(entries, data_size, fail)
            data = fh.read(data_size + 1)  # +1: notice a file that grew since the fstat
        except OSError as exc:
            raise fail(f"cannot be read: {exc.strerror or exc}") from None
    if len(data) != data_size:
        raise fail("it changed size while being read")
    tensors = {name: np.frombuffer(data, dtype="<f8", count=math.prod(entries[name][0]), offset=entries[name][1][0])
               .reshape(entries[name][0]).astype(np.float64) for name in order}
    return tensors, metadata


def _failer(path: PathLike):
    return lambda problem: SafetensorsError(f"safetensors file {os.fspath(path)}: {problem}")


def _parse_header(raw: bytes, fail) -> tuple[dict[str, tuple[tuple[int, ...], list[int]]], dict[str, str]]:
    """({name: (shape, [begin, end])}, metadata) from the header's bytes, every entry checked."""
    def no_duplicates(pairs: list) -> dict:
        keys = [key for key, _ in pairs]
        repeated = next((key for key in keys if keys.count(key) > 1), None)
        if repeated is not None:
            raise fail(f"its header names {repeated[:80]!r} twice")
        return dict(pairs)

    def no_constants(name: str):
        raise fail(f"its header holds {name}, which is not JSON")

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        if isinstance(exc, SafetensorsError):
            raise
        raise fail(f"its header is not JSON text ({exc}); not a safetensors file") from None
    except RecursionError:
        raise fail("its header nests too deeply to be a safetensors header") from None
    if not isinstance(header, dict) or not raw.startswith(b"{"):
        raise fail("its header is not a JSON object; not a safetensors file")
    metadata = header.pop(METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail(f"its {METADATA} is not a map of strings to strings")
    return {name: _entry(name, entry, fail) for name, entry in header.items()}, metadata


def _entry(name: str, entry, fail) -> tuple[tuple[int, ...], list[int]]:
    def bad(problem: str) -> SafetensorsError:
        return fail(f"tensor {name[:80]!r} {problem}")

    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise bad('is not described by exactly "dtype", "shape" and "data_offsets"')
    if entry["dtype"] != F64:
        raise bad(f"has dtype {str(entry['dtype'])[:20]}; cymicrogpt reads float64 ({F64}) tensors only "
                  "(convert it with .double() or .astype('float64') before saving)")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        raise bad(f"has shape {str(shape)[:80]}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
            and 0 <= offsets[0] <= offsets[1]):
        raise bad(f"has data_offsets {str(offsets)[:80]}, not [begin, end] with 0 <= begin <= end")
    if offsets[1] - offsets[0] != math.prod(shape) * 8:
        raise bad(f"has data_offsets {offsets}: {offsets[1] - offsets[0]} bytes, but its shape {tuple(shape)} "
                  f"in {F64} takes {math.prod(shape) * 8}")
    return tuple(shape), offsets


def _check_offsets(entries: dict, data_size: int, fail) -> list[str]:
    """The tensors in data order, once their bytes are found to tile the data exactly."""
    order = sorted(entries, key=lambda name: entries[name][1])
    position = 0
    for name in order:
        begin, end = entries[name][1]
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap at byte {position}"
            raise fail(f"tensor {name[:80]!r} starts at byte {begin} of the data and {what}")
        position = end
    if position != data_size:
        problem = "more bytes than the file's data holds" if position > data_size else \
            f"{data_size - position} bytes of data after the last tensor"
        raise fail(f"the tensors claim {position} bytes of data, the file has {data_size}: {problem}")
    return order


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- a run's metadata --------------------------------------------------------------------------
def run_metadata(config: GPTConfig, tokenizer: Tokenizer, step: int) -> dict[str, str]:
    """The metadata of a run's file: its shape, vocabulary, step and cymicrogpt's version."""
    return {**{key: str(getattr(config, key)) for key in CONFIG_KEYS}, "chars": tokenizer.chars,
            "bos_id": str(tokenizer.bos), "step": str(step), "cymicrogpt_version": __version__}


def check_metadata(path: PathLike, metadata: Mapping[str, str], config: GPTConfig, tokenizer: Tokenizer) -> None:
    """SafetensorsError unless `metadata` describes a model of `config`'s shape with
    `tokenizer`'s vocabulary (the step and version may be anything)."""
    fail = _failer(path)
    expected = run_metadata(config, tokenizer, 0)
    for key in (*CONFIG_KEYS, "chars", "bos_id"):
        if key not in metadata:
            raise fail(f"its metadata has no {key!r}; a cymicrogpt weights file names the model's shape "
                       f"({', '.join(CONFIG_KEYS)}) and vocabulary (chars, bos_id) there")
        if metadata[key] != expected[key]:
            raise fail(f"its metadata {key!r} is {metadata[key][:100]!r}, the run's is {expected[key][:100]!r}")
