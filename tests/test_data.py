"""Reading documents and fetching the default dataset: good files, bad files, bad downloads."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cymicrogpt.data import DataError, cache_dir, default_dataset, load_docs

UNREACHABLE_URL = "http://127.0.0.1:9/names.txt"  # the discard port: connection refused


# --- load_docs -----------------------------------------------------------------------------
def test_strips_keeps_order_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_bytes(b"  zoe \n\nanna\r\n \t \nbob\rcarl\n  eve")
    assert load_docs(path) == ["zoe", "anna", "bob", "carl", "eve"]


def test_keeps_duplicates_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("zoë\nanna\nzoë\n", encoding="utf-8")
    assert load_docs(str(path)) == ["zoë", "anna", "zoë"]


def test_names_file(names_path: Path) -> None:
    docs = load_docs(names_path)
    assert len(docs) == 32033
    assert docs[:3] == ["emma", "olivia", "ava"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_docs(tmp_path / "nope.txt")
    assert "nope.txt" in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="directory"):
        load_docs(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\t\r\n"], ids=["empty", "only-blank"])
def test_no_documents(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="no documents"):
        load_docs(path)


def test_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("anna\nbob\nzoë\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3") as info:
        load_docs(path)
    assert "UTF-8" in str(info.value) and "0xeb" in str(info.value)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


# --- default_dataset -----------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path) -> tuple[str, str, bytes]:
    """A dataset reachable by URL (file://) and its sha256."""
    payload = b"emma\nolivia\nava\n"
    source = tmp_path / "served" / "names.txt"
    source.parent.mkdir()
    source.write_bytes(payload)
    return source.as_uri(), hashlib.sha256(payload).hexdigest(), payload


def test_download_checks_and_caches(tmp_path: Path, served) -> None:
    url, sha, payload = served
    cache = tmp_path / "cache"
    path = default_dataset(url, sha, directory=cache)
    assert path == cache / "names.txt"
    assert path.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == ["names.txt"]  # no temp files left
    # Cached: a second call does not download (the URL is dead now).
    assert default_dataset(UNREACHABLE_URL, sha, directory=cache) == path
    assert load_docs(path) == ["emma", "olivia", "ava"]


def test_bad_checksum_is_rejected_and_not_kept(tmp_path: Path, served) -> None:
    url, _, _ = served
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256"):
        default_dataset(url, "0" * 64, directory=cache)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_corrupt_cache_is_downloaded_again(tmp_path: Path, served) -> None:
    url, sha, payload = served
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "names.txt").write_bytes(b"truncated")
    assert default_dataset(url, sha, directory=cache).read_bytes() == payload


def test_unreachable_url_suggests_data_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data") as info:
        default_dataset(UNREACHABLE_URL, "0" * 64, directory=tmp_path / "cache")
    assert UNREACHABLE_URL in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_xdg_cache_home_is_honoured(tmp_path: Path, served, monkeypatch: pytest.MonkeyPatch) -> None:
    url, sha, _ = served
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "cymicrogpt"
    assert default_dataset(url, sha) == tmp_path / "xdg" / "cymicrogpt" / "names.txt"


def test_cache_falls_back_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "cymicrogpt"
