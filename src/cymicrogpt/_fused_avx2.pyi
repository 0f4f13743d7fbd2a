"""Type stub for the AVX2 build of the fused training pass: the same source as cymicrogpt._fused
(setup.py compiles csrc/cymicrogpt/_fused.pyx a second time, with -mavx2 -mfma, on x86-64)."""
from cymicrogpt._fused import EXP_SHORTCUT_BUILT as EXP_SHORTCUT_BUILT
from cymicrogpt._fused import EXP_SHORTCUT_CONSTANTS as EXP_SHORTCUT_CONSTANTS
from cymicrogpt._fused import EXP_TABLE_BITS as EXP_TABLE_BITS
from cymicrogpt._fused import POW_SHORTCUT_MARGIN as POW_SHORTCUT_MARGIN
from cymicrogpt._fused import POW_SHORTCUT_RANGES as POW_SHORTCUT_RANGES
from cymicrogpt._fused import POW_SHORTCUT_TAIL_ALLOWANCE as POW_SHORTCUT_TAIL_ALLOWANCE
from cymicrogpt._fused import FusedGPT as FusedGPT
from cymicrogpt._fused import exp_array as exp_array
from cymicrogpt._fused import exp_shortcut_table as exp_shortcut_table
from cymicrogpt._fused import max_array as max_array
from cymicrogpt._fused import power_array as power_array
