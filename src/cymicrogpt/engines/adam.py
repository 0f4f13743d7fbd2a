"""Adam for the compiled backend: microgpt's update as one compiled loop, bit-identical.

`VectorAdam` keeps the moments in NumPy arrays and hands each step to a compiled state
bound once (`cymicrogpt._adam.AdamState`): one `noexcept nogil` pass over the parameters
in microgpt's operation order.  The scalars microgpt's loop evaluates are microgpt's
floats: ``1 - beta1`` and ``1 - beta2`` once, the decayed learning rate and the bias
corrections of schedule.py each step, computed by the state in C where that is Python's
very arithmetic (its docstring says where; tests/test_adam.py checks them against
schedule.adam_scalars), by schedule.adam_scalars elsewhere.  Over a compiled engine's
arena the step reads the weights where the arena keeps them, with no Python in between.

The pow shortcut.  microgpt's ``g**2`` and ``v_hat**0.5`` call libm ``pow`` (about 10 ns
each, two per parameter per step).  Where libm's ``pow`` comes with its error analysis
(0.54 ULP at worst, about 0.513 ULP for results between 2^-64 and 2^64), the kernel
proves, input by input, that ``pow`` must return ``g*g`` or ``sqrt(v_hat)`` and skips the
call (about 97% of inputs; the argument is in csrc/cymicrogpt/_adam.pyx).  That analysis
is glibc's from 2.29 (ARM's pow; on x86_64 and aarch64 it uses that generic pow; 32-bit
x86 has its own), and glibc 2.28's pow (IBM's) states a smaller worst case (0.5064 ULP),
so the shortcut is enabled on glibc >= 2.28 there, detected at run time: a wheel built
against an old glibc runs on new ones.
musl ships the same pow, but a process cannot ask musl its version, so musl keeps plain
``pow``, as do macOS, Windows and every other C library.  The results are the same
either way; only the speed differs.

AVX2.  On x86-64 the kernel is also built with AVX2 and FMA (setup.py: the same source,
four lanes per operation instead of SSE2's two; FMA only where adam_shortcut.h proves it
gives the baseline's very doubles, the shortcut's two residuals), and used where the CPU
has both: the same bits, faster.

Environment: ``CYMICROGPT_PLAIN_POW=1`` forces plain libm ``pow`` everywhere;
``CYMICROGPT_NO_AVX2=1`` keeps the baseline (SSE2) build of the kernel.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from types import ModuleType
from typing import Callable, Optional

import numpy as np

from .. import _adam
from .._arena import Arena
from ..checks import check_moment_lengths
from ..config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from ..schedule import adam_scalars
from .builds import pick_build

FIRST_DOCUMENTED_GLIBC = (2, 28)  # IBM's pow (0.5064 ULP at worst), then ARM's from 2.29: both analysed
GENERIC_LIBM_MACHINES = ("x86_64", "amd64", "aarch64", "arm64")  # use glibc's dbl-64 e_pow.c and e_exp.c


def glibc_version() -> Optional[str]:
    """The running C library as glibc reports it ("glibc 2.36"), or None off glibc."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or not glibc
        return None


def libm_shortcut_allowed(function: str, switch: str, first_glibc: tuple[int, int], source: str, plain: str,
                          libc: Optional[str], machine: str, is_64bit: bool) -> tuple[bool, str]:
    """Whether a shortcut that proves libm `function`'s results may run here, and why:
    (allowed, reason).  It may where the environment variable `switch` is not "1" and the C
    library is glibc >= `first_glibc` on a 64-bit x86_64 or aarch64, whose `function` is
    the generic one in `source`, with the error analysis the proof reads."""
    if plain == "1":
        return False, f"plain {function}: {switch}=1"
    match = re.fullmatch(r"glibc (\d+)\.(\d+)(\..*)?", libc or "")
    if match is None:
        return False, f"plain {function}: the C library ({libc or 'not glibc'}) documents no {function} error bound"
    version = (int(match.group(1)), int(match.group(2)))
    if version < first_glibc:
        return False, f"plain {function}: {libc} predates glibc {first_glibc[0]}.{first_glibc[1]}'s {function}"
    if machine.lower() not in GENERIC_LIBM_MACHINES or not is_64bit:
        return False, (f"plain {function}: {libc} on {machine} ({'64' if is_64bit else '32'}-bit) "
                       f"may use another {function}")
    return True, f"{function} shortcut: {libc} on {machine}, {function}'s error analysed ({source})"


def pow_shortcut_allowed(plain_pow: str, libc: Optional[str], machine: str, is_64bit: bool) -> tuple[bool, str]:
    """Whether the pow shortcut may run here, and why: (allowed, reason)."""
    return libm_shortcut_allowed("pow", "CYMICROGPT_PLAIN_POW", FIRST_DOCUMENTED_GLIBC, "e_pow.c", plain_pow, libc,
                                 machine, is_64bit)


POW_SHORTCUT, POW_SHORTCUT_REASON = pow_shortcut_allowed(
    os.environ.get("CYMICROGPT_PLAIN_POW", ""), glibc_version(), platform.machine(), sys.maxsize > 2**32)


def adam_kernels(no_avx2: str = os.environ.get("CYMICROGPT_NO_AVX2", "")) -> ModuleType:
    """The compiled Adam module to run: its AVX2 build where there is one and the CPU runs
    it (AVX2 and FMA; same source, same bits, several times as fast), else the baseline build."""
    return pick_build(_adam, no_avx2 != "1" and _adam.cpu_has_avx2_fma())


ADAM_KERNELS = adam_kernels()


def read_only(array: np.ndarray) -> np.ndarray:
    """A view of `array` that cannot be written through, nor made writeable: its base is a
    read-only memoryview (a plain view's WRITEABLE flag can be set back on, and its base is
    `array` itself)."""
    return np.asarray(memoryview(array).toreadonly())


class VectorAdam:
    """microgpt's Adam over arrays: the moments here (`m` and `v`, read-only views: write
    them with set_moments), each step one call into the compiled kernel (`_adam.AdamState`,
    bound once, which then need not check v's signs each step).  `weights` gives the weights and gradients: an
    Arena (the compiled engines': they are its first `size` nodes, and `step` is then the
    compiled method itself, no Python in between) or a function returning live
    (params, grads) arrays."""

    beta1, beta2 = ADAM_BETA1, ADAM_BETA2

    def __init__(self, weights: Arena | Callable[[], tuple[np.ndarray, np.ndarray]], size: int, lr: float,
                 shortcut: bool = POW_SHORTCUT, kernels: ModuleType = ADAM_KERNELS, eps: float = ADAM_EPS) -> None:
        self.lr = lr  # these three are bound into the compiled state here: set them by the constructor
        self.eps = eps
        self.shortcut = shortcut  # may the kernel skip libm pow where its result is proven
        self.kernels = kernels  # the build of cymicrogpt._adam to run (the same bits either way)
        self._m = np.zeros(size)  # first moment buffer
        self._v = np.zeros(size)  # second moment buffer
        self.m, self.v = read_only(self._m), read_only(self._v)  # written by steps and set_moments only
        arena = weights if isinstance(weights, Arena) else None
        self._state = kernels.AdamState(self._m, self._v, lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                                        shortcut=shortcut, schedule=adam_scalars, arena=arena, private_moments=True,
                                        refuse_non_finite=True)  # the Optimizer interface's rule
        # `step` is an attribute of the instance only, never one shadowing a method of the
        # class: Python finds a shadowing one ~5x slower, and training asks for it every step.
        if arena is not None:
            self.step = self._state.step
        else:
            self.arrays = weights  # returns (params, grads): live views of their storage
            self.step = self._step_on_arrays

    step: Callable[[int, int], None]  # (step_index, num_steps): see _step_on_arrays

    def _step_on_arrays(self, step_index: int, num_steps: int) -> None:
        """One Adam step in place (grads zeroed); raises, changing nothing, where microgpt's
        loop would raise (OverflowError when a gradient's square overflows) and where a
        gradient is nan or infinite (FloatingPointError)."""
        params, grads = self.arrays()
        self._state.step_on(params, grads, step_index, num_steps)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        return self.m.copy(), self.v.copy()

    def set_moments(self, m, v) -> None:
        check_moment_lengths(m, v, len(self._m))
        new_m, new_v = np.empty_like(self._m), np.empty_like(self._v)
        new_m[:], new_v[:] = m, v  # what cannot be converted raises here, before either buffer changes
        self._m[:], self._v[:] = new_m, new_v
        self._state.moments_changed()  # the state trusts v's signs between steps only
