"""Where the tests find names.txt (conftest.find_names): environment, cache, ../shared."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import NAMES_ENV, UnusableNames, find_names, how_to_get_names
from cymicrogpt.data import sha256_of

CONTENT = b"emma\nolivia\n"  # stands in for names.txt: the lookup compares hashes only
SHA = sha256_of(CONTENT)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / name / "names.txt" for name in ("env", "cache", "shared")}


def put(path: Path, content: bytes = CONTENT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def lookup(places, environ=None):
    return find_names(environ or {}, places["cache"], places["shared"], sha256=SHA)


def test_the_environment_variable_comes_first(places):
    for name in places:
        put(places[name])
    assert lookup(places, {NAMES_ENV: str(places["env"])}) == places["env"]


def test_then_the_cache_then_shared(places):
    put(places["shared"])
    assert lookup(places) == places["shared"]
    put(places["cache"])
    assert lookup(places) == places["cache"]


def test_a_cached_file_with_another_hash_is_passed_over(places):
    put(places["cache"], b"truncated")
    assert lookup(places) is None
    put(places["shared"])
    assert lookup(places) == places["shared"]


def test_an_empty_variable_is_unset(places):
    put(places["shared"])
    assert lookup(places, {NAMES_ENV: ""}) == places["shared"]


@pytest.mark.parametrize("target", ["missing", "directory"])
def test_a_variable_naming_no_file_is_an_error(places, target):
    path = places["env"] if target == "missing" else places["env"].parent
    path.parent.mkdir(parents=True, exist_ok=True)
    put(places["shared"])  # present, but the user asked for another file
    with pytest.raises(UnusableNames, match=f"{NAMES_ENV}=.* is not a file"):
        lookup(places, {NAMES_ENV: str(path)})


@pytest.mark.parametrize("where", ["env", "shared"])
def test_another_file_than_names_txt_is_an_error(places, where):
    put(places[where], b"zoe\n")
    with pytest.raises(UnusableNames, match="is not makemore's names.txt"):
        lookup(places, {NAMES_ENV: str(places["env"])} if where == "env" else None)


def test_nothing_found_says_how_to_get_it(places):
    assert lookup(places) is None
    reason = how_to_get_names(places["cache"], places["shared"])
    assert "default_dataset()" in reason and NAMES_ENV in reason
    assert str(places["cache"]) in reason and str(places["shared"]) in reason
