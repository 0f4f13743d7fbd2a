"""The engine behind backend "fused": the compiled graph engine, with its training pass
done by hand-written loops instead of a graph (csrc/cymicrogpt/_fused.pyx).

The weights and their gradients stay where the graph engine keeps them (the arena's first
nodes), so everything but the training pass is the graph engine's: sampling (value-only
graphs), the optimizer, gradients, checkpoints.  Both passes give the same bits; the
fused one builds no graph and searches no order, which makes it several times faster.

On x86-64 the loops are built twice (setup.py), SSE2 and AVX2 with FMA, the same bits;
the AVX2 build runs where the graph engine's kernels run theirs (the CPU has AVX2 and
CYMICROGPT_NO_AVX2 is unset; `_kernels.use_avx2` switches both for new loops) and the CPU
has FMA as well.

The pass's x ** -1, -2, -0.5 and -1.5 skip libm pow where csrc/cymicrogpt/pow_shortcut.h
proves pow's result, under the Adam kernel's rule (engines.adam.POW_SHORTCUT: glibc >= 2.28
on x86_64 or aarch64; CYMICROGPT_PLAIN_POW=1 turns it off): the same bits either way.

The exp shortcut.  The softmax's exps are libm exp, as microgpt's math.exp is (~330 calls
a step on the default model).  Where glibc documents exp's error (0.511 ULP at worst: its
e_exp.c, ARM's optimized-routines, from glibc 2.29 on; x86_64 and aarch64 use that
generic exp), the AVX2 build proves per argument which double exp returns and calls it
only for the ~2% it cannot prove (csrc/cymicrogpt/exp_shortcut.h has the argument).
glibc 2.28's exp (IBM's, fast path below |x| = 1.04) documents no such bound, so it keeps
plain exp, as do other C libraries and the baseline build.  ``CYMICROGPT_PLAIN_EXP=1``
turns the shortcut off; results are the same bits either way.
"""
from __future__ import annotations

import os
import platform
import sys
from types import ModuleType
from typing import Callable, Optional, Sequence

from .. import _fused
from .._fused import FusedGPT
from ..config import LAYER_MATRIX_NAMES, RMSNORM_EPS, GPTConfig
from ..params import MatrixSlot, layer_name
from .adam import POW_SHORTCUT, glibc_version, libm_shortcut_allowed
from .builds import avx2_fma_in_use, pick_build
from .compiled import GraphEngine

FIRST_DOCUMENTED_EXP_GLIBC = (2, 29)  # glibc's exp from ARM's optimized-routines, with its error analysis


def exp_shortcut_allowed(plain_exp: str, libc: Optional[str], machine: str, is_64bit: bool) -> tuple[bool, str]:
    """Whether the exp shortcut may run here, and why: (allowed, reason)."""
    return libm_shortcut_allowed("exp", "CYMICROGPT_PLAIN_EXP", FIRST_DOCUMENTED_EXP_GLIBC, "e_exp.c", plain_exp,
                                 libc, machine, is_64bit)


EXP_SHORTCUT, EXP_SHORTCUT_REASON = exp_shortcut_allowed(
    os.environ.get("CYMICROGPT_PLAIN_EXP", ""), glibc_version(), platform.machine(), sys.maxsize > 2**32)


def fused_module() -> ModuleType:
    """The compiled loops to run: their AVX2 build (which has FMA too) where the kernels run
    theirs and the CPU has FMA, else the baseline build."""
    return pick_build(_fused, avx2_fma_in_use())


class FusedEngine(GraphEngine):
    def __init__(self, layout: list[MatrixSlot], weights: Sequence[float]) -> None:
        super().__init__(layout, weights)
        self.layout = layout
        self._config: Optional[GPTConfig] = None  # the one the loops were made for
        self._loops: Optional[FusedGPT] = None

    def forward_backward(self, config: GPTConfig, tokens: Sequence[int]) -> float:
        return self.training_pass(config)(tokens)

    def training_pass(self, config: GPTConfig) -> Callable[[Sequence[int]], float]:
        """The loops' forward_backward (made for `config` on its first pass)."""
        if config is not self._config:
            self._loops = self.make_loops(config, EXP_SHORTCUT)
            self._config = config
        return self._loops.forward_backward

    def make_loops(self, config: GPTConfig, exp_shortcut: bool) -> FusedGPT:
        """The loops for `config` over this engine's weights (n_head is not in the layout),
        with the exp shortcut where `exp_shortcut` (and the build has it)."""
        slots = {slot.name: slot for slot in self.layout}
        offsets = [slots[name].offset for name in ("wte", "wpe", "lm_head")]  # slots WTE, WPE, LM_HEAD
        layer_offsets = [[slots[layer_name(li, part)].offset for part in LAYER_MATRIX_NAMES]  # slots WQ ... FC2
                         for li in range(config.n_layer)]
        hidden = slots[layer_name(0, "mlp_fc1")].rows  # the MLP's width
        return fused_module().FusedGPT(self.ops.arena, self.num_params, config.n_layer, config.n_embd,
                                       config.n_head, slots["wte"].rows, config.block_size, hidden, offsets,
                                       layer_offsets, RMSNORM_EPS, pow_shortcut=POW_SHORTCUT,
                                       exp_shortcut=exp_shortcut)
