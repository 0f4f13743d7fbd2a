"""Reading documents, and the default dataset shipped in the package: present, intact, used
with no network and no cache, and refused in one line when damaged."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cymicrogpt
from command import assert_one_error_line, environment, run_command
from cymicrogpt.data import DataError, default_dataset, load_docs, sha256_of

# makemore's names.txt at commit 988aa59, written out here rather than taken from
# cymicrogpt.data: changing the packaged file and the pin together still fails this file.
MAKEMORE_NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: connection refused


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


# --- default_dataset: the packaged names.txt --------------------------------------------------
def test_the_packaged_dataset_is_makemores_names_txt() -> None:
    path = default_dataset()
    assert path == Path(cymicrogpt.__file__).parent / "datasets" / "names.txt"
    assert sha256_of(path.read_bytes()) == MAKEMORE_NAMES_SHA256
    assert len(load_docs(path)) == 32033


def test_its_license_ships_beside_it() -> None:
    license_text = (default_dataset().parent / "names.LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "Andrej Karpathy" in license_text


def offline_environment(tmp_path: Path) -> dict[str, str]:
    """No network (every proxy refuses: a download would fail) and an empty home and cache."""
    for name in ("home", "cache"):
        (tmp_path / name).mkdir()
    return environment(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"),
                       http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY,
                       HTTPS_PROXY=DEAD_PROXY, ALL_PROXY=DEAD_PROXY)


def test_train_needs_no_network_and_no_cache(tmp_path: Path) -> None:
    """The README's first command, on a machine that has never run cymicrogpt and is offline."""
    env = offline_environment(tmp_path)
    done = run_command("train", "--steps", 2, env=env, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("num docs: 32033\n")
    assert sorted(os.listdir(tmp_path)) == ["cache", "home"]  # nothing written, no cache made
    assert os.listdir(tmp_path / "home") == os.listdir(tmp_path / "cache") == []


def test_download_prints_the_packaged_path(tmp_path: Path) -> None:
    done = run_command("download", env=offline_environment(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{default_dataset()}\n", "")


def installed_copy(tmp_path: Path) -> Path:
    """A copy of the installed package under tmp_path/site (put it first on PYTHONPATH)."""
    package = Path(cymicrogpt.__file__).parent
    shutil.copytree(package, tmp_path / "site" / "cymicrogpt", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "site"


@pytest.mark.parametrize("damage", [b"emma\n", b""], ids=["truncated", "emptied"])
def test_a_damaged_packaged_copy_is_refused_in_one_line(tmp_path: Path, damage: bytes) -> None:
    site = installed_copy(tmp_path)
    names = site / "cymicrogpt" / "datasets" / "names.txt"
    names.write_bytes(damage)
    done = subprocess.run([sys.executable, "-m", "cymicrogpt", "train", "--steps", "1"], capture_output=True,
                          text=True, timeout=120, env=environment(PYTHONPATH=str(site)), cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, f"the packaged dataset {names} is damaged", sha256_of(damage),
                          "reinstall cymicrogpt, or pass --data PATH")


def test_a_missing_packaged_copy_is_refused(tmp_path: Path) -> None:
    site = installed_copy(tmp_path)
    (site / "cymicrogpt" / "datasets" / "names.txt").unlink()
    done = subprocess.run([sys.executable, "-m", "cymicrogpt", "download"], capture_output=True, text=True,
                          timeout=120, env=environment(PYTHONPATH=str(site)), cwd=tmp_path)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "packaged dataset file not found", "names.txt")


def test_from_a_zip_archive_it_is_a_temporary_copy_removed_at_exit(tmp_path: Path) -> None:
    """The pure-Python modules imported from a zip (zipimport): no file on disk to point at,
    so default_dataset() extracts one, which lives as long as the process."""
    package = Path(cymicrogpt.__file__).parent
    archive = tmp_path / "cymicrogpt.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the Python modules and names.txt: no extensions
        for path in sorted(package.rglob("*.py")) + [package / "datasets" / "names.txt"]:
            zf.write(path, f"cymicrogpt/{path.relative_to(package).as_posix()}")
    script = ("import cymicrogpt.data as d; p = d.default_dataset(); "
              "print(d.__file__); print(p); print(len(d.load_docs(p)))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=environment(PYTHONPATH=str(archive)), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    module, extracted, count = done.stdout.splitlines()
    assert module.startswith(str(archive)) and count == "32033"
    assert not Path(extracted).exists()
