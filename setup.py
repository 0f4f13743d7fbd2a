"""Build the compiled core: every csrc/cymicrogpt/*.pyx becomes cymicrogpt.<name>.

Exactness decides the compiler flags, so the compiled engine rounds exactly as CPython:
- -ffp-contract=off: no a*b+c fused into one FMA (a different rounding);
- -fno-builtin-pow/exp/log: gcc otherwise rewrites pow(x, -1.0) as 1.0/x and
  pow(x, 2.0) as x*x, which differ from libm pow (what Python's ** calls) in the last
  bit for some inputs (measured: 3 of the first 30 default-run losses);
- never -ffast-math or -march=native.  Set CYMICROGPT_DEBUG=1 to
build with bounds checks and without optimisation, for debugging.
"""
import os
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CYMICROGPT_DEBUG", "") == "1"

# One set of directives for every module (scikit-learn's convention).
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

if sys.platform == "win32":
    COMPILE_ARGS = ["/fp:precise"]  # MSVC: no contraction, IEEE semantics
else:
    COMPILE_ARGS = [
        "-ffp-contract=off",
        "-fno-builtin-pow",
        "-fno-builtin-exp",
        "-fno-builtin-log",
    ] + (["-O0", "-g"] if DEBUG else ["-O3"])

extensions = [
    Extension(
        f"cymicrogpt.{pyx.stem}",
        [str(pyx)],
        extra_compile_args=COMPILE_ARGS,
    )
    for pyx in sorted(Path("csrc/cymicrogpt").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],  # so `cimport cymicrogpt._arena` finds csrc/cymicrogpt/_arena.pxd
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("CYMICROGPT_ANNOTATE", "") == "1",
    ),
)
