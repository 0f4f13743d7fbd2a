"""Type stub for the AVX2 build of the fused training pass: the same source as cymicrogpt._fused
(setup.py compiles csrc/cymicrogpt/_fused.pyx a second time, with -mavx2 -mfma, on x86-64)."""
from cymicrogpt._fused import POW_SHORTCUT_MARGIN as POW_SHORTCUT_MARGIN
from cymicrogpt._fused import POW_SHORTCUT_RANGES as POW_SHORTCUT_RANGES
from cymicrogpt._fused import POW_SHORTCUT_TAIL_ALLOWANCE as POW_SHORTCUT_TAIL_ALLOWANCE
from cymicrogpt._fused import FusedGPT as FusedGPT
from cymicrogpt._fused import power_array as power_array
