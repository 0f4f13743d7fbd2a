"""Read only by .ci/run (`paths.NAMES`); the tests use conftest.py's fixtures.
Remove this file together with that line of .ci/run."""
from conftest import NAMES_PATH as NAMES  # noqa: F401
