"""Documents: reading a text file of one document per line, and the default dataset.

A data file must be a regular file of at most ``MAX_DATA_BYTES`` (64 MiB, ~280 times
names.txt) of UTF-8 text; a leading byte-order mark is dropped, as ``utf-8-sig`` does.
The default dataset is makemore's names.txt (commit 988aa59, MIT: datasets/names.LICENSE),
shipped inside the package, so training needs no network; setup.py refuses to build with
any other file there, and default_dataset() refuses an installed copy that was damaged since.
"""
from __future__ import annotations

import atexit
import codecs
import contextlib
import hashlib
import io
import os
from importlib import resources
from pathlib import Path
from typing import Union

from .files import read_capped

NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"  # setup.py reads it too
MAX_DATA_BYTES = 64 * 2**20

# Where as_file() keeps names.txt while the process lives.  An installed package is plain
# files and as_file() hands back the file itself (nothing to clean up); only a package
# imported from a zip archive (the pure-Python backend can run so) gets a temporary copy.
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


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


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_dataset() -> Path:
    """Path of the packaged names.txt, after checking its sha256 (DataError if it differs)."""
    packaged = resources.files(__package__) / "datasets" / "names.txt"
    path = _extracted.enter_context(resources.as_file(packaged))
    got = sha256_of(read_capped(path, "packaged dataset", DataError, MAX_DATA_BYTES))
    if got != NAMES_SHA256:
        raise DataError(f"the packaged dataset {path} is damaged (sha256 {got}, expected {NAMES_SHA256}); "
                        "reinstall cymicrogpt, or pass --data PATH")
    return path
