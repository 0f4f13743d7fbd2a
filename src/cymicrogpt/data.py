"""Documents: reading a text file of one document per line, and the default dataset.

A data file must be a regular file of at most ``MAX_DATA_BYTES`` (64 MiB, ~280 times
names.txt) of UTF-8 text; a leading byte-order mark is dropped, as ``utf-8-sig`` does.
The default dataset is makemore's names.txt at a pinned commit, downloaded once, checked
against its sha256 and cached in the user cache directory.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import os
from pathlib import Path
from typing import Optional, Union

from .files import read_capped, write_atomically

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/988aa59/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
DOWNLOAD_TIMEOUT_S = 30
MAX_DATA_BYTES = 64 * 2**20


class DataError(ValueError):
    """A dataset that cannot be used; the message says why and what to do."""


def load_docs(path: Union[str, os.PathLike]) -> list[str]:
    """Stripped, non-blank lines of a UTF-8 text file, in file order (microgpt's `docs`)."""
    raw = read_capped(path, "data", DataError, MAX_DATA_BYTES)
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = str(memoryview(raw)[bom:], "utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path} is not UTF-8 text: undecodable byte 0x{raw[offset]:02x} "
            f"at line {line} (byte offset {offset})"
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


def cached_dataset_path(directory: Optional[Path] = None) -> Path:
    """Where default_dataset() keeps names.txt (in `directory`, default: cache_dir())."""
    return (cache_dir() if directory is None else Path(directory)) / "names.txt"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_dataset(url: str = NAMES_URL, sha256: str = NAMES_SHA256, directory: Optional[Path] = None) -> Path:
    """Path of the cached names.txt, downloading and verifying it on first use."""
    import urllib.error  # here, not at the top: they take a third of a start-up to import
    import urllib.request

    target = cached_dataset_path(directory)
    if os.path.lexists(target):
        try:
            cached = read_capped(target, "cached dataset", DataError, MAX_DATA_BYTES)
        except DataError as exc:
            raise DataError(f"{exc}; delete it to download names.txt again, or pass --data PATH") from None
        if sha256_of(cached) == sha256:
            return target
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read(MAX_DATA_BYTES + 1)
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
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda fh: fh.write(payload))
    except OSError as exc:
        raise DataError(f"cannot write the dataset cache in {target.parent}: {exc.strerror or exc}") from None
    return target
