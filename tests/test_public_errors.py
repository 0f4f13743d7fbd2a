"""Every error the Python API raises on purpose can be caught by its top-level name.

``except cymicrogpt.CheckpointError`` must work without knowing which submodule defines
the class, as it does for DataError and DivergenceError.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig

# The modules behind the public API (the CLI's and the ladder's own errors stay internal).
API_MODULES = ["checks", "checkpoint", "config", "data", "files", "params", "run_state", "safetensors", "sampling",
               "state_dict", "tokenizer", "training"]
CONFIG = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)


def api_errors() -> dict[str, type]:
    """Name -> class of every exception class defined in API_MODULES."""
    found = {}
    for module_name in API_MODULES:
        module = importlib.import_module(f"cymicrogpt.{module_name}")
        found.update({name: value for name, value in vars(module).items()
                      if isinstance(value, type) and issubclass(value, Exception)
                      and value.__module__ == module.__name__})
    return found


def test_every_api_error_is_exported() -> None:
    errors = api_errors()
    assert {"CheckpointError", "DataError", "DivergenceError", "SamplingError"} <= set(errors)  # the scan works
    assert set(errors) <= set(mg.__all__)
    star: dict = {}
    exec("from cymicrogpt import *", star)
    for name, cls in errors.items():
        assert star[name] is cls and getattr(mg, name) is cls


def test_checkpoint_error_is_caught_by_its_public_name(tmp_path: Path) -> None:
    with pytest.raises(mg.CheckpointError, match="not found"):
        mg.Run.load(tmp_path / "missing.npz")


def test_sampling_error_is_caught_by_its_public_name() -> None:
    run = mg.train(["ab", "ba"], config=CONFIG, steps=1)
    run.engine.set_weights([math.nan] * run.num_params)
    with pytest.raises(mg.SamplingError, match="weights are not all finite"):
        run.sample(1)
