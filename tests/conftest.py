"""Shared fixtures: the names dataset (skipped where absent) and a tiny corpus and model."""
from __future__ import annotations

from pathlib import Path

import pytest

from cymicrogpt.config import GPTConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMES_PATH = REPO_ROOT.parent / "shared" / "data" / "names.txt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

TINY_DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "zoe", "liam", "noah", "eli"]


@pytest.fixture(scope="session")
def names_path() -> Path:
    """makemore's names.txt, read from ../shared/data beside the repository."""
    if not NAMES_PATH.is_file():
        pytest.skip(f"names.txt not found at {NAMES_PATH} (the dataset is never committed)")
    return NAMES_PATH


@pytest.fixture
def tiny_docs() -> list[str]:
    return list(TINY_DOCS)


@pytest.fixture
def tiny_config() -> GPTConfig:
    return GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)


@pytest.fixture
def tiny_data_file(tmp_path: Path, tiny_docs: list[str]) -> Path:
    """The tiny corpus as a text file, one document per line."""
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(tiny_docs) + "\n", encoding="utf-8")
    return path
