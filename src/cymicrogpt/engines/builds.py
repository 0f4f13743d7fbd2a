"""Which build of a compiled module to run: its AVX2 build or its baseline.

On x86-64 setup.py compiles some modules twice (AVX2_TWINS: _adam, _fused): the baseline
under the module's own name and an AVX2 build named <name>_avx2, the same source and the
same bits.  Debug builds and other machines have no AVX2 build; there the baseline runs.
Whether the AVX2 build may run is each caller's condition (engines/adam.py: the CPU has
AVX2 and FMA; engines/fused.py: that, and _kernels runs its AVX2 build, avx2_fma_in_use,
which also lets the graph engine's ops take FMA products): importing it on a CPU without
them may already stop the process (SIGILL).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .. import _adam, _kernels


def avx2_fma_in_use() -> bool:
    """Do the kernels run their AVX2 build (CYMICROGPT_NO_AVX2 unset) on a CPU with FMA: the
    condition of the fused loops' AVX2 build and of the graph engine's FMA products."""
    return _kernels.uses_avx2() and _adam.cpu_has_avx2_fma()


def pick_build(baseline: ModuleType, avx2: bool) -> ModuleType:
    """`baseline`'s AVX2 build where `avx2` is true and that build exists, else `baseline`."""
    if avx2:
        try:
            return importlib.import_module(baseline.__name__ + "_avx2")
        except ImportError:  # not built: not x86-64, or a debug build
            pass
    return baseline
