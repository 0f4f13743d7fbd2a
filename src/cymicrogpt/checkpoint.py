"""Checkpoints: a whole training run's state in one portable ``.npz`` file, and back.

This module reads and writes a plain record, ``RunState`` (run_state.py), and knows nothing of training:
``Run.state()`` and ``Run.from_state()`` (training.py) convert a run to and from it.  A
checkpoint holds everything a run is, so a run resumed from it continues bit for bit as
if it had never stopped: the config, the tokenizer's characters, the documents in
training order (no data file is needed to resume), the weights and Adam moments (float64,
flat state-dict order), the step counters, learning rate, seed, backend, the losses so
far and the exact state of the run's ``random.Random`` stream.

The file is a plain ``np.savez`` archive (uncompressed members) of numeric and string
arrays.  Text (characters, documents) is stored as UTF-32 code points, because NumPy
string arrays drop trailing NUL characters.  Writes are atomic (see files.py).

Loading trusts nothing in the file: only the members the format defines are read, each
one's zip entry and ``.npy`` header (dtype, shape, size) are checked before its data is
read, compressed members are refused (so nothing inflates), and so is an entry claiming
more bytes than the file holds (so nothing is allocated beyond the file's real size); no
pickle is ever loaded.  Then the values are checked as a run makes them: weights, moments
and losses finite, second moments never negative (NumPy checks, one pass each), and the
random-generator state by ``RunState`` itself, the one check that states built by hand get
too.  Every problem raises ``CheckpointError`` naming the file once.
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import BinaryIO, Optional, Union

import numpy as np

from .engines import check_backend
from .checks import check_count, check_docs, check_lr
from .config import GPTConfig, check_model_size
from .files import open_regular, write_atomically
from .run_state import RNG_STATE_LEN, RunState
from .tokenizer import Tokenizer

FORMAT_TAG = "cymicrogpt-checkpoint"
FORMAT_VERSION = 1
CONFIG_FIELDS = ("n_layer", "n_embd", "block_size", "n_head")

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message names the file and the problem."""



# --- text <-> arrays -------------------------------------------------------------------
def _text_to_codes(text: str) -> np.ndarray:
    # surrogatepass: any Python str round-trips, even one holding lone surrogates
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").copy()


def _codes_to_text(codes: np.ndarray) -> str:
    return codes.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


# --- saving ----------------------------------------------------------------------------
def state_arrays(state: RunState) -> dict[str, np.ndarray]:
    """The run's state as named arrays, ready for ``np.savez``."""
    rng_version, rng_words, gauss_next = state.rng_state
    config = state.config
    return {
        "format": np.array(FORMAT_TAG),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config": np.array([getattr(config, f) for f in CONFIG_FIELDS], dtype=np.int64),
        "chars": _text_to_codes(state.chars),
        "docs_codes": _text_to_codes("".join(state.docs)),
        "docs_lengths": np.array([len(d) for d in state.docs], dtype=np.int64),
        "weights": np.asarray(state.weights, dtype=np.float64),
        "adam_m": np.asarray(state.adam_m, dtype=np.float64),
        "adam_v": np.asarray(state.adam_v, dtype=np.float64),
        "step": np.array(state.step, dtype=np.int64),
        "num_steps": np.array(state.num_steps, dtype=np.int64),
        "lr": np.array(state.lr, dtype=np.float64),
        "seed": np.array(str(state.seed)),  # any Python int, however large
        "backend": np.array(state.backend),
        "losses": np.asarray(state.losses, dtype=np.float64),
        "rng_version": np.array(rng_version, dtype=np.int64),
        "rng_state": np.array(rng_words, dtype=np.int64),
        # gauss_next is a float or None: stored as an array of length 1 or 0
        "rng_gauss_next": np.array([] if gauss_next is None else [gauss_next], dtype=np.float64),
    }


def save_state(state: RunState, path: PathLike) -> None:
    """Write `state` to `path` atomically, through symlinks (see files.write_atomically);
    OSError if it cannot (also for an existing target that is not a regular file)."""
    arrays = state_arrays(state)
    write_atomically(path, lambda fh: np.savez(fh, **arrays))  # a file object: no ".npz" appended


# --- loading ---------------------------------------------------------------------------
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_EXPECTED_DTYPE = {"int": "an integer dtype", "float": "float64", "text": "a unicode string dtype"}


class _Archive:
    """The members of one checkpoint, read one at a time and checked before reading."""

    def __init__(self, path: PathLike, fh: BinaryIO) -> None:
        self.path = path
        magic = fh.read(len(_NPY_MAGIC))
        if magic.startswith(_NPY_MAGIC):
            raise self.fail("not a cymicrogpt checkpoint (a bare .npy array, not an .npz archive)")
        if magic[:4] not in _ZIP_MAGIC:
            raise self.fail("not a cymicrogpt checkpoint (not an .npz archive)")
        self.file_size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
        self.zip = zipfile.ZipFile(fh)

    def fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.path}: {problem}")

    def has(self, name: str) -> bool:
        return name + ".npy" in self.zip.namelist()

    def entry(self, name: str) -> zipfile.ZipInfo:
        """Field `name`'s zip entry, if it is one cymicrogpt can read: stored, not compressed,
        and no larger than the file (zipfile would allocate whatever size it claims)."""
        try:
            info = self.zip.getinfo(name + ".npy")
        except KeyError:
            raise self.fail(f"missing field {name!r}") from None
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise self.fail(f"field {name!r} is a compressed zip member: compressed members (np.savez_compressed) "
                            "are not supported; cymicrogpt writes and reads np.savez's uncompressed members only")
        if info.header_offset + info.compress_size > self.file_size:
            raise self.fail(f"field {name!r}: its zip entry claims {info.compress_size} bytes, more than the whole "
                            f"file holds ({self.file_size}); the file is truncated or corrupt")
        return info

    def get(self, name: str, kind: str, ndim: int, length: Optional[int] = None) -> np.ndarray:
        """Field `name` (kind "int", "float" or "text"; `ndim` 0 or 1; `length` if fixed)."""
        info = self.entry(name)
        with self.zip.open(info) as member:
            major_minor = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if major_minor == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(member)
            self._check_header(name, kind, ndim, length, shape, dtype)
            size = math.prod(shape) * dtype.itemsize
            if member.tell() + size != info.file_size:
                raise self.fail(f"field {name!r} holds {info.file_size - member.tell()} bytes of data, "
                                f"its header says {size}")
            data = member.read(size)
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    def _check_header(self, name, kind, ndim, length, shape, dtype) -> None:
        if dtype.hasobject:
            raise self.fail(f"field {name!r} holds pickled Python objects (dtype {dtype}), which cymicrogpt "
                            f"never loads; expected {_EXPECTED_DTYPE[kind]}")
        good = {"int": dtype.kind in "iu", "float": dtype.kind == "f" and dtype.itemsize == 8,
                "text": dtype.kind == "U"}[kind]
        if not good or dtype.fields is not None or dtype.subdtype is not None:
            raise self.fail(f"field {name!r} has dtype {dtype}, expected {_EXPECTED_DTYPE[kind]}")
        if len(shape) != ndim:
            raise self.fail(f"field {name!r} has shape {shape}, expected {'a scalar' if ndim == 0 else '1-D'}")
        if length is not None and shape[0] != length:
            raise self.fail(f"field {name!r} has {shape[0]} values, expected {length}")

    def integer(self, name: str) -> int:
        return int(self.get(name, "int", 0))

    def string(self, name: str) -> str:
        return str(self.get(name, "text", 0)[()])

    def floats(self, name: str, length: Optional[int] = None) -> np.ndarray:
        return self.get(name, "float", 1, length)

    def text(self, name: str) -> str:
        codes = self.get(name, "int", 1)
        invalid = self.fail(f"field {name!r} holds invalid character codes")
        if len(codes) and (codes.min() < 0 or codes.max() > 0x10FFFF):  # not code points at all
            raise invalid
        try:
            return _codes_to_text(codes)
        except UnicodeDecodeError:  # surrogates are kept (surrogatepass); only junk fails here
            raise invalid from None


def _check_format(fields: _Archive) -> None:
    if not fields.has("format"):
        raise fields.fail("not a cymicrogpt checkpoint (no format tag)")
    fields.entry("format")  # an unreadable entry (compressed, oversized) is named as such, not as "not a string"
    try:
        tag = fields.string("format")
    except CheckpointError:
        raise fields.fail("not a cymicrogpt checkpoint (its format tag is not a string)") from None
    if tag != FORMAT_TAG:
        raise fields.fail(f"not a cymicrogpt checkpoint (format tag {tag[:100]!r})")
    version = fields.integer("version")
    if version != FORMAT_VERSION:
        raise fields.fail(f"unsupported checkpoint version {version} (this cymicrogpt reads version {FORMAT_VERSION})")


def _read_config(fields: _Archive) -> GPTConfig:
    values = fields.get("config", "int", 1, len(CONFIG_FIELDS))
    try:
        return GPTConfig(**{f: int(x) for f, x in zip(CONFIG_FIELDS, values)})
    except ValueError as exc:
        raise fields.fail(f"bad config: {exc}") from None


def _read_docs(fields: _Archive, tokenizer: Tokenizer) -> list[str]:
    text = fields.text("docs_codes")
    lengths = fields.get("docs_lengths", "int", 1)
    # Bounded first, so that the int64 sum cannot overflow.
    if len(lengths) > len(text) or (lengths <= 0).any() or (lengths > len(text)).any() \
            or int(lengths.sum(dtype=np.int64)) != len(text):
        raise fields.fail("document lengths do not match the stored document text")
    ends = np.cumsum(lengths).tolist()
    docs = [text[end - n : end] for n, end in zip(lengths.tolist(), ends)]
    try:
        check_docs(docs)
    except ValueError as exc:
        raise fields.fail(str(exc)) from None
    unknown = set(text) - set(tokenizer.chars)
    if unknown:
        raise fields.fail(f"the documents use characters outside the vocabulary: {sorted(unknown)!r}")
    return docs


def _read_rng_state(fields: _Archive) -> tuple:
    """The stored state, as random.Random.getstate() gives it; RunState checks it (run_state.py)."""
    version = fields.integer("rng_version")
    words = fields.get("rng_state", "int", 1, RNG_STATE_LEN)  # fixed length: no huge list from a bad file
    gauss = fields.floats("rng_gauss_next")
    if len(gauss) > 1:
        raise fields.fail(f"field 'rng_gauss_next' has {len(gauss)} values, expected 0 or 1")
    return version, tuple(words.tolist()), float(gauss[0]) if len(gauss) else None


def _read_counters(fields: _Archive) -> tuple[int, int, float, int]:
    step, num_steps = fields.integer("step"), fields.integer("num_steps")
    try:
        check_count("num_steps", num_steps)
    except ValueError as exc:
        raise fields.fail(str(exc)) from None
    if not 0 <= step <= num_steps:
        raise fields.fail(f"step {step} is outside 0..num_steps ({num_steps})")
    lr = float(fields.get("lr", "float", 0))
    try:
        lr = check_lr(lr)
    except ValueError as exc:
        raise fields.fail(str(exc)) from None
    seed_text = fields.string("seed")
    try:
        seed = int(seed_text)
    except ValueError:
        raise fields.fail(f"seed is not an integer (or has more digits than Python converts): "
                          f"{seed_text[:100]!r}") from None
    return step, num_steps, lr, seed


def _check_finite(fields: _Archive, name: str, values: np.ndarray) -> None:
    # A run that trains never stores a NaN or an infinity: a step with a non-finite loss or
    # gradient raises DivergenceError before it changes anything (training.py).
    finite = np.isfinite(values)  # (n,) bool
    if not finite.all():
        index = int(np.argmin(finite))  # the first False
        raise fields.fail(f"field {name!r} holds {float(values[index])!r} at index {index}; a checkpoint holds finite "
                          "numbers only (a saved run never has a NaN or infinite weight, moment or loss)")


def _check_non_negative(fields: _Archive, name: str, values: np.ndarray) -> None:
    # Adam's second moment is a running mean of squares, v = beta2*v + (1-beta2)*g**2 from 0,
    # so never negative; a negative one would make v_hat**0.5 a complex number in microgpt.
    negative = values < 0  # (n,) bool; -0.0 is not negative (and harmless: its root is 0)
    if negative.any():
        index = int(np.argmax(negative))  # the first True
        raise fields.fail(f"field {name!r} holds {float(values[index])!r} at index {index}; Adam's second moments "
                          "are running means of squares, never negative")


def load_state(path: PathLike) -> RunState:
    """The run state saved at `path`, every field checked; CheckpointError otherwise."""
    with open_regular(path, "checkpoint", CheckpointError) as fh:
        try:
            return _load(_Archive(path, fh))
        except CheckpointError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
                NotImplementedError) as exc:
            raise CheckpointError(f"checkpoint {path} is not readable (truncated or corrupt file?): "
                                  f"{exc}") from None


def _load(fields: _Archive) -> RunState:
    _check_format(fields)
    config = _read_config(fields)
    chars = fields.text("chars")
    try:
        tokenizer = Tokenizer(chars)
        check_model_size(config, tokenizer.vocab_size)
    except ValueError as exc:
        raise fields.fail(f"bad vocabulary or model size: {exc}") from None
    docs = _read_docs(fields, tokenizer)
    # The config's weight count, from its numbers, against the weights' .npy header: a
    # config that claims a huge model is refused here, before anything of its size exists.
    size = config.num_params(tokenizer.vocab_size)
    weights = fields.floats("weights", size)
    adam_m, adam_v = fields.floats("adam_m", size), fields.floats("adam_v", size)
    step, num_steps, lr, seed = _read_counters(fields)
    losses = fields.floats("losses", step)
    for name, values in (("weights", weights), ("adam_m", adam_m), ("adam_v", adam_v), ("losses", losses)):
        _check_finite(fields, name, values)
    _check_non_negative(fields, "adam_v", adam_v)
    rng_state = _read_rng_state(fields)
    stored = fields.string("backend")
    try:
        backend = check_backend(stored)
    except ValueError as exc:
        raise fields.fail(str(exc)) from None
    try:
        # Python floats: the reference engine must compute with float, not np.float64.
        return RunState(config=config, chars=chars, docs=docs, weights=weights.tolist(), adam_m=adam_m.tolist(),
                        adam_v=adam_v.tolist(), step=step, num_steps=num_steps, lr=lr, seed=seed, backend=backend,
                        losses=losses.tolist(), rng_state=rng_state)
    except ValueError as exc:  # RunState refuses an unusable random-generator state
        raise fields.fail(str(exc)) from None
