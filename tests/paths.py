"""Where the tests find the shared data: ../shared beside the repository (never committed)."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NAMES = SHARED / "data" / "names.txt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def names_path() -> Path:
    if not NAMES.is_file():
        pytest.skip(f"makemore names.txt not found at {NAMES} (see DESIGN.md, Data)")
    return NAMES
