"""engines/builds.pick_build: a compiled module's AVX2 build where asked for and built, else
its baseline (the choice engines/adam.py and engines/fused.py make with it)."""
import importlib.util

import pytest

from cymicrogpt import _adam, _fused, _kernels
from cymicrogpt.engines.builds import pick_build


def test_the_baseline_unless_avx2_is_asked_for():
    assert pick_build(_fused, False) is _fused


def test_the_avx2_build_where_it_was_built():
    if not _adam.cpu_has_avx2_fma():
        pytest.skip("this CPU cannot run the AVX2 builds (AVX2 and FMA)")
    built = importlib.util.find_spec("cymicrogpt._fused_avx2") is not None  # not in a debug build
    chosen = pick_build(_fused, True)
    assert chosen.__name__ == ("cymicrogpt._fused_avx2" if built else "cymicrogpt._fused")


def test_the_baseline_where_no_avx2_build_exists():
    assert pick_build(_kernels, True) is _kernels  # _kernels picks its AVX2 code itself: no twin module
