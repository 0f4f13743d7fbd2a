"""Checkpoints: a whole training run in one portable ``.npz`` file, and back.

A checkpoint holds everything ``Run`` is, so a run resumed from it continues bit for bit
as if it had never stopped: the config, the tokenizer's characters, the documents in
training order (no data file is needed to resume), the weights and Adam moments (float64,
flat state-dict order), the step counters, learning rate, seed, backend, the losses so
far and the exact state of the run's ``random.Random`` stream.

The file is a plain ``np.savez`` archive of numeric and string arrays: no pickle is
written and none is read (``allow_pickle=False``).  Text (characters, documents) is
stored as UTF-32 code points, because NumPy string arrays drop trailing NUL characters.
Writes are atomic: a crash never leaves a half-written checkpoint under the target name.
Every problem with a file to load raises ``CheckpointError`` naming the file.
"""
from __future__ import annotations

import io
import os
import random
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .backends import check_backend, make_engine
from .config import GPTConfig
from .data import read_bytes
from .params import num_params, state_dict_layout
from .tokenizer import Tokenizer
from .training import Run, check_docs, check_lr

FORMAT_TAG = "cymicrogpt-checkpoint"
FORMAT_VERSION = 1
CONFIG_FIELDS = ("n_layer", "n_embd", "block_size", "n_head")
RNG_STATE_LEN = 625  # random.Random.getstate()[1]: 624 Mersenne Twister words + the index

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
def checkpoint_arrays(run: Run) -> dict[str, np.ndarray]:
    """The run as named arrays, ready for ``np.savez``."""
    m, v = run.optimizer.moments()
    rng_version, rng_words, gauss_next = run.rng.getstate()
    config = run.config
    return {
        "format": np.array(FORMAT_TAG),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config": np.array([getattr(config, f) for f in CONFIG_FIELDS], dtype=np.int64),
        "chars": _text_to_codes(run.tokenizer.chars),
        "docs_codes": _text_to_codes("".join(run.docs)),
        "docs_lengths": np.array([len(d) for d in run.docs], dtype=np.int64),
        "weights": np.asarray(run.engine.weights(), dtype=np.float64),
        "adam_m": np.asarray(m, dtype=np.float64),
        "adam_v": np.asarray(v, dtype=np.float64),
        "step": np.array(run.step, dtype=np.int64),
        "num_steps": np.array(run.num_steps, dtype=np.int64),
        "lr": np.array(run.lr, dtype=np.float64),
        "seed": np.array(str(run.seed)),  # any Python int, however large
        "backend": np.array(run.backend),
        "losses": np.asarray(run.losses, dtype=np.float64),
        "rng_version": np.array(rng_version, dtype=np.int64),
        "rng_state": np.array(rng_words, dtype=np.int64),
        # gauss_next is a float or None: stored as an array of length 1 or 0
        "rng_gauss_next": np.array([] if gauss_next is None else [gauss_next], dtype=np.float64),
    }


def save_checkpoint(run: Run, path: PathLike) -> None:
    """Write `run` to `path` atomically (temp file, fsync, rename); OSError if it cannot."""
    path = Path(path)
    arrays = checkpoint_arrays(run)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # a file object: NumPy does not append ".npz"
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back (not thread-safe,
    # but a checkpoint is written by the thread that trains).
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- loading ---------------------------------------------------------------------------
def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive at `path`, read eagerly so that corruption shows here."""
    raw = read_bytes(path, "checkpoint", CheckpointError)
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} is not a cymicrogpt checkpoint (a bare .npy array, not an .npz archive)")
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt file?): {exc}"
        ) from None


class _Fields:
    """Typed access to the arrays of one checkpoint, with errors that name the file."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.arrays = arrays

    def fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.path}: {problem}")

    def get(self, name: str, kinds: str, ndim: int) -> np.ndarray:
        """Field `name`; its dtype kind must be in `kinds` ('i' int, 'u' unsigned, 'f', 'U')."""
        if name not in self.arrays:
            raise self.fail(f"missing field {name!r}")
        array = self.arrays[name]
        if array.dtype.kind not in kinds or array.ndim != ndim:
            shape = "a scalar" if ndim == 0 else f"{ndim}-D"
            raise self.fail(f"field {name!r} has dtype {array.dtype} and shape {array.shape}, expected {shape}")
        return array

    def integer(self, name: str) -> int:
        return int(self.get(name, "iu", 0))

    def string(self, name: str) -> str:
        return str(self.get(name, "U", 0))

    def floats(self, name: str, length: Optional[int] = None) -> np.ndarray:
        array = self.get(name, "f", 1)
        if array.dtype != np.float64:
            raise self.fail(f"field {name!r} is {array.dtype}, expected float64")
        if length is not None and len(array) != length:
            raise self.fail(f"field {name!r} has {len(array)} values, expected {length}")
        return array

    def text(self, name: str) -> str:
        try:
            return _codes_to_text(self.get(name, "iu", 1))
        except (UnicodeDecodeError, OverflowError):
            raise self.fail(f"field {name!r} holds invalid character codes") from None


def _check_format(fields: _Fields) -> None:
    if "format" not in fields.arrays:
        raise fields.fail("not a cymicrogpt checkpoint (no format tag)")
    tag = fields.arrays["format"]
    if tag.dtype.kind != "U" or tag.ndim != 0 or str(tag) != FORMAT_TAG:
        raise fields.fail(f"not a cymicrogpt checkpoint (format tag {tag!r})")
    version = fields.integer("version")
    if version != FORMAT_VERSION:
        raise fields.fail(f"unsupported checkpoint version {version} (this cymicrogpt reads version {FORMAT_VERSION})")


def _read_config(fields: _Fields) -> GPTConfig:
    values = fields.get("config", "iu", 1)
    if len(values) != len(CONFIG_FIELDS):
        raise fields.fail(f"field 'config' has {len(values)} values, expected {len(CONFIG_FIELDS)}")
    try:
        return GPTConfig(**{f: int(x) for f, x in zip(CONFIG_FIELDS, values)})
    except ValueError as exc:
        raise fields.fail(f"bad config: {exc}") from None


def _read_docs(fields: _Fields, tokenizer: Tokenizer) -> list[str]:
    text = fields.text("docs_codes")
    lengths = fields.get("docs_lengths", "iu", 1)
    if (lengths <= 0).any() or int(lengths.sum()) != len(text):
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


def _read_rng(fields: _Fields) -> random.Random:
    version = fields.integer("rng_version")
    if version != random.Random.VERSION:
        raise fields.fail(f"unsupported random-generator state version {version} (expected {random.Random.VERSION})")
    words = fields.get("rng_state", "iu", 1)
    if len(words) != RNG_STATE_LEN:
        raise fields.fail(f"field 'rng_state' has {len(words)} values, expected {RNG_STATE_LEN}")
    gauss = fields.floats("rng_gauss_next")
    if len(gauss) > 1:
        raise fields.fail(f"field 'rng_gauss_next' has {len(gauss)} values, expected 0 or 1")
    gauss_next = float(gauss[0]) if len(gauss) else None
    rng = random.Random()
    try:
        rng.setstate((version, tuple(int(w) for w in words), gauss_next))
    except (ValueError, TypeError, OverflowError) as exc:
        raise fields.fail(f"bad random-generator state: {exc}") from None
    return rng


def _read_counters(fields: _Fields) -> tuple[int, int, float, int]:
    step, num_steps = fields.integer("step"), fields.integer("num_steps")
    if num_steps <= 0:
        raise fields.fail(f"num_steps must be positive, got {num_steps}")
    if not 0 <= step <= num_steps:
        raise fields.fail(f"step {step} is outside 0..num_steps ({num_steps})")
    try:
        lr = check_lr(float(fields.get("lr", "f", 0)))
    except ValueError as exc:
        raise fields.fail(str(exc)) from None
    try:
        seed = int(fields.string("seed"))
    except ValueError:
        raise fields.fail(f"seed is not an integer: {fields.string('seed')!r}") from None
    return step, num_steps, lr, seed


def load_checkpoint(path: PathLike, backend: Optional[str] = None) -> Run:
    """The ``Run`` saved at `path`, on `backend` (default: the backend it was saved from)."""
    path = Path(path)
    fields = _Fields(path, read_arrays(path))
    _check_format(fields)
    config = _read_config(fields)
    chars = fields.text("chars")
    try:
        tokenizer = Tokenizer(chars)
    except ValueError as exc:
        raise fields.fail(f"bad vocabulary: {exc}") from None
    docs = _read_docs(fields, tokenizer)
    layout = state_dict_layout(config, tokenizer.vocab_size)
    size = num_params(layout)
    weights = fields.floats("weights", size)
    adam_m, adam_v = fields.floats("adam_m", size), fields.floats("adam_v", size)
    step, num_steps, lr, seed = _read_counters(fields)
    losses = fields.floats("losses", step)
    rng = _read_rng(fields)
    stored_backend = fields.string("backend")
    if backend is None:
        try:
            backend = check_backend(stored_backend)
        except ValueError as exc:
            raise fields.fail(str(exc)) from None
    else:
        check_backend(backend)

    # Python floats for the engines: the reference engine must compute with float, not np.float64.
    engine = make_engine(backend, layout, weights.tolist(), config)
    optimizer = engine.make_optimizer(lr)
    optimizer.set_moments(adam_m.tolist(), adam_v.tolist())
    return Run(config=config, tokenizer=tokenizer, docs=docs, engine=engine, optimizer=optimizer,
               rng=rng, num_steps=num_steps, lr=lr, seed=seed, backend=backend, step=step,
               losses=losses.tolist())
