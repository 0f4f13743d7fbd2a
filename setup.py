"""Build the compiled core: every csrc/cymicrogpt/*.pyx becomes cymicrogpt.<name>.

Exactness decides the compiler flags, so the compiled engine rounds exactly as CPython:
- -ffp-contract=off: no a*b+c fused into one FMA (a different rounding);
- -fno-builtin-pow/exp/log: gcc otherwise rewrites pow(x, -1.0) as 1.0/x and
  pow(x, 2.0) as x*x, which differ from libm pow (what Python's ** calls) in the last
  bit for some inputs (measured: 3 of the first 30 default-run losses);
- never -ffast-math or -march=native.
MSVC gets /fp:precise, its equivalent (no contraction, IEEE semantics).
Release builds carry no debug info (-g0) and, on Linux, are linked stripped (-s):
the shipped .so files shrink about 5x and compute exactly the same.
The package ships makemore's names.txt as its default dataset: the build stops, saying so,
unless src/cymicrogpt/datasets/names.txt has the sha256 that cymicrogpt.data pins.
Set CYMICROGPT_DEBUG=1 to build with bounds checks, without optimisation and with
debug symbols, for debugging; CYMICROGPT_PROFILE=1 to keep the release build's code but
add symbols and skip the strip (for callgrind, perf, py-spy --native); CYMICROGPT_ANNOTATE=1 writes Cython's HTML annotation
(cython -a) beside the generated C, build/cython/csrc/cymicrogpt/*.html.
"""
import ast
import hashlib
import os
import platform
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CYMICROGPT_DEBUG", "") == "1"
PROFILE = os.environ.get("CYMICROGPT_PROFILE", "") == "1"
ANNOTATE = os.environ.get("CYMICROGPT_ANNOTATE", "") == "1"

# One set of directives for every module (scikit-learn's convention).
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}


def check_packaged_names(names: Path = Path("src/cymicrogpt/datasets/names.txt")) -> None:
    """Stop the build unless `names` has the sha256 pinned in cymicrogpt/data.py: a wheel must
    never ship a names.txt that default_dataset() would refuse at run time."""
    # The pin is read from data.py's source, not imported: one value in one place, and no
    # import of a package whose extensions are not built yet.
    module = ast.parse(Path("src/cymicrogpt/data.py").read_text(encoding="utf-8"))
    expected = next(ast.literal_eval(node.value) for node in module.body if isinstance(node, ast.Assign)
                    and [getattr(target, "id", None) for target in node.targets] == ["NAMES_SHA256"])
    try:
        got = hashlib.sha256(names.read_bytes()).hexdigest()
    except OSError as exc:
        sys.exit(f"setup.py: cannot read the default dataset {names}: {exc.strerror or exc}")
    if got != expected:
        sys.exit(f"setup.py: {names} has sha256 {got}, expected {expected}: it is not makemore's names.txt "
                 "(commit 988aa59), the package's default dataset; restore that file (byte for byte: "
                 "no line-ending conversion) and build again")


check_packaged_names()

LINK_ARGS = []
# Link libm by name: a reference left unversioned binds, under glibc, to the oldest version of
# exp/pow/log (GLIBC_2.2.5, the SVID error-handling wrappers around the same functions: about a
# third more instructions per call), while CPython's math and float ** are linked to the current
# ones (GLIBC_2.29).  With -lm the compiled core calls the very functions Python calls.
LIBRARIES = [] if sys.platform == "win32" else ["m"]
if sys.platform == "win32":
    COMPILE_ARGS = ["/fp:precise"]  # MSVC: no contraction, IEEE semantics
else:
    COMPILE_ARGS = [
        "-ffp-contract=off",
        "-fno-builtin-pow",
        "-fno-builtin-exp",
        "-fno-builtin-log",
    ] + (["-O0", "-g"] if DEBUG else ["-O3", "-g" if PROFILE else "-g0"])  # after Python's CFLAGS: these win
    if sys.platform.startswith("linux") and not (DEBUG or PROFILE):
        LINK_ARGS = ["-s"]  # strip at link time (macOS's ld64 has no -s: only Linux)

extensions = [
    Extension(
        f"cymicrogpt.{pyx.stem}",
        [str(pyx)],
        include_dirs=["csrc/cymicrogpt"],  # hand-written C headers (adam_shortcut.h, axpy_rows.h, pow_shortcut.h, ...)
        libraries=LIBRARIES,
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    )
    for pyx in sorted(Path("csrc/cymicrogpt").glob("*.pyx"))
]


def builds_for_x86_64() -> bool:
    """Is every target of this build x86-64, with a gcc-style compiler?  (macOS cross-builds
    name their targets in ARCHFLAGS, e.g. "-arch arm64" on an x86-64 runner.)"""
    if sys.platform == "win32" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    archs = os.environ.get("ARCHFLAGS", "").split()[1::2] if sys.platform == "darwin" else []
    return all(arch == "x86_64" for arch in archs)


# The Adam kernel and the fused training pass once more, for CPUs with AVX2:
# cymicrogpt._adam_avx2 and cymicrogpt._fused_avx2, the very same sources (copied to build/,
# renamed) compiled with the flags below, which engines/adam.py and engines/fused.py pick at
# run time where the CPU and OS support them; there csrc/cymicrogpt/adam_shortcut.h adds
# Adam's AVX2 passes, and axpy_rows.h the pass's four-lane sums.  The results are the same
# bits: AVX2 only runs each IEEE operation on four lanes instead of two, in the same order
# per element (-ffp-contract=off forbids contracting a*b+c into an FMA); the libm calls are
# the same functions.  Both builds also have FMA (-mfma), for explicit FMAs only: the proven-exact
# ones of adam_shortcut.h's two residuals and pow_shortcut.h's product errors (their headers say
# why they give the baseline's very doubles), and those of exp_shortcut.h's double-double exp,
# whose error bound counts them; engines pick these builds where the CPU has FMA too.
AVX2_TWINS = {"_adam": ["-mavx2", "-mfma"], "_fused": ["-mavx2", "-mfma"]}
if builds_for_x86_64() and not DEBUG:
    generated = Path("build/generated/cymicrogpt")
    generated.mkdir(parents=True, exist_ok=True)
    for name, flags in AVX2_TWINS.items():
        for suffix in (".pyx", ".pxd"):
            original = Path("csrc/cymicrogpt/" + name + suffix)
            if not original.exists():
                continue
            source = original.read_text(encoding="utf-8")
            target = generated / (name + "_avx2" + suffix)
            if not target.exists() or target.read_text(encoding="utf-8") != source:  # keep it fresh, not newer
                target.write_text(source, encoding="utf-8")
        extensions.append(Extension(f"cymicrogpt.{name}_avx2", [str(generated / (name + "_avx2.pyx"))],
                                    include_dirs=["csrc/cymicrogpt"], libraries=LIBRARIES,
                                    extra_compile_args=COMPILE_ARGS + flags, extra_link_args=LINK_ARGS))

setup(
    ext_modules=cythonize(
        extensions,
        # so `cimport cymicrogpt._arena` finds csrc/cymicrogpt/_arena.pxd (and the AVX2 build its own)
        include_path=["csrc", "build/generated"],
        # One C directory per mode: Cython regenerates C only when a .pyx/.pxd is newer, not
        # when the directives change, so a shared one would keep release C in a debug build.
        build_dir="build/cython-debug" if DEBUG else "build/cython",
        compiler_directives=DIRECTIVES,
        annotate=ANNOTATE,
        force=ANNOTATE,  # up-to-date C would otherwise be kept, and no HTML written
    ),
)
