"""Documents: reading a text file of one document per line, and the default dataset.

The default dataset is makemore's names.txt at a pinned commit, downloaded once, checked
against its sha256 and cached in the user cache directory.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/988aa59/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
DOWNLOAD_TIMEOUT_S = 30


class DataError(ValueError):
    """A dataset that cannot be used; the message says why and what to do."""


def read_bytes(path: Path, what: str, error: type[Exception]) -> bytes:
    """The bytes of `path`, or `error` with one line saying why not (`what`: "data", ...)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def load_docs(path: Union[str, os.PathLike]) -> list[str]:
    """Stripped, non-blank lines of a UTF-8 text file, in file order (microgpt's `docs`)."""
    path = Path(path)
    raw = read_bytes(path, "data", DataError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not UTF-8 text: undecodable byte 0x{raw[exc.start]:02x} "
            f"at line {line} (byte offset {exc.start})"
        ) from None
    # StringIO(newline=None) splits lines exactly as open() in text mode does in microgpt.
    docs = [line.strip() for line in io.StringIO(text, newline=None) if line.strip()]
    if not docs:
        raise DataError(f"{path} holds no documents (it is empty or has only blank lines)")
    return docs


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/cymicrogpt, or ~/.cache/cymicrogpt."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cymicrogpt"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_dataset(url: str = NAMES_URL, sha256: str = NAMES_SHA256, directory: Optional[Path] = None) -> Path:
    """Path of the cached names.txt, downloading and verifying it on first use."""
    directory = cache_dir() if directory is None else Path(directory)
    target = directory / "names.txt"
    if target.is_file() and sha256_of(target.read_bytes()) == sha256:
        return target
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download the default dataset from {url} ({reason}); "
            "pass --data PATH (or load_docs(path)) to train on a local file"
        ) from None
    got = sha256_of(payload)
    if got != sha256:
        raise DataError(
            f"the download from {url} has sha256 {got}, expected {sha256}; it was not used or kept"
        )
    # Atomic: a crash mid-write never leaves a truncated names.txt in the cache.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".names.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"cannot write the dataset cache in {directory}: {exc.strerror or exc}") from None
    return target
