"""Type stub for the AVX2 build of the Adam kernels: the same source as cymicrogpt._adam
(setup.py compiles csrc/cymicrogpt/_adam.pyx a second time, with -mavx2 -mfma, on x86-64)."""
from cymicrogpt._adam import AdamState as AdamState
from cymicrogpt._adam import (SHORTCUT_ALLOWANCES as SHORTCUT_ALLOWANCES, SHORTCUT_MARGIN as SHORTCUT_MARGIN,
                              SHORTCUT_ROOT_RANGE as SHORTCUT_ROOT_RANGE,
                              SHORTCUT_SQUARE_RANGE as SHORTCUT_SQUARE_RANGE, adam_step as adam_step,
                              cpu_has_avx2_fma as cpu_has_avx2_fma, divide_array as divide_array,
                              power_array as power_array)
