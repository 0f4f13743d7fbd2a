"""Type stub for the AVX2 build of the fused training pass: the same source as cymicrogpt._fused
(setup.py compiles csrc/cymicrogpt/_fused.pyx a second time, with -mavx2, on x86-64)."""
from cymicrogpt._fused import FusedGPT as FusedGPT
