"""Which names.txt the tests use (conftest.find_names): $CYMICROGPT_NAMES, else the packaged one."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import NAMES_ENV, UnusableNames, find_names
from cymicrogpt.data import DataError, sha256_of

CONTENT = b"emma\nolivia\n"  # stands in for names.txt: the lookup compares hashes only
SHA = sha256_of(CONTENT)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / name / "names.txt" for name in ("env", "packaged")}


def put(path: Path, content: bytes = CONTENT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def lookup(places, environ=None):
    return find_names(environ or {}, lambda: places["packaged"], sha256=SHA)


def test_the_environment_variable_comes_first(places):
    for name in places:
        put(places[name])
    assert lookup(places, {NAMES_ENV: str(places["env"])}) == places["env"]


def test_otherwise_the_packaged_file(places):
    put(places["packaged"])
    assert lookup(places) == places["packaged"]


def test_an_empty_variable_is_unset(places):
    put(places["packaged"])
    assert lookup(places, {NAMES_ENV: ""}) == places["packaged"]


@pytest.mark.parametrize("target", ["missing", "directory"])
def test_a_variable_naming_no_file_is_an_error(places, target):
    path = places["env"] if target == "missing" else places["env"].parent
    path.parent.mkdir(parents=True, exist_ok=True)
    put(places["packaged"])  # present, but the user asked for another file
    with pytest.raises(UnusableNames, match=f"{NAMES_ENV}=.* is not a file"):
        lookup(places, {NAMES_ENV: str(path)})


def test_a_variable_naming_another_file_than_names_txt_is_an_error(places):
    put(places["env"], b"zoe\n")
    with pytest.raises(UnusableNames, match="is not makemore's names.txt"):
        lookup(places, {NAMES_ENV: str(places["env"])})


def test_a_damaged_packaged_file_is_an_error_not_a_skip():
    def damaged() -> Path:
        raise DataError("the packaged dataset /x/names.txt is damaged (sha256 ...)")

    with pytest.raises(UnusableNames, match="packaged dataset .* is damaged"):
        find_names({}, damaged)


def test_by_default_the_packaged_file_is_the_installed_package_s():
    import cymicrogpt

    path = find_names({})
    assert path == Path(cymicrogpt.__file__).parent / "datasets" / "names.txt"
