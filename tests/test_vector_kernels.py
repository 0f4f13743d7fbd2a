"""The two builds of the graph's vector kernels (_kernels.pyx: baseline and AVX2, picked at
import) give the same bits: runs on both are float-== in every loss, weight and sample
(matrices whose row and column counts leave remainders in both builds' loops included).  CYMICROGPT_NO_AVX2=1 keeps the baseline, as it does for Adam."""
import subprocess
import sys

import numpy as np
import pytest

from cymicrogpt import _kernels
from cymicrogpt.config import GPTConfig
from cymicrogpt.training import train

from conftest import TINY_DOCS


@pytest.fixture
def restore_kernels():
    was = _kernels.uses_avx2()
    yield
    _kernels.use_avx2(was)


@pytest.mark.parametrize("config", [GPTConfig(n_layer=2, n_embd=12, block_size=8, n_head=3),  # odd lengths: remainders
                                    GPTConfig(n_layer=1, n_embd=14, block_size=8, n_head=2),  # 14 = 8 + 4 + 2
                                    GPTConfig(n_layer=1, n_embd=16, block_size=16, n_head=4)], ids=str)
def test_both_builds_give_the_same_bits(config, restore_kernels):
    runs = []
    for avx2 in (False, True):
        _kernels.use_avx2(avx2)
        run = train(list(TINY_DOCS), config=config, steps=40, seed=5)
        runs.append((run.losses, run.engine.weight_array.copy(), run.sample(5)))
    (losses0, weights0, samples0), (losses1, weights1, samples1) = runs
    assert losses0 == losses1 and samples0 == samples1
    assert np.array_equal(weights0, weights1)


def test_the_switch_keeps_the_baseline():
    code = "from cymicrogpt import _kernels; print(_kernels.uses_avx2())"
    out = subprocess.run([sys.executable, "-c", code], env={"CYMICROGPT_NO_AVX2": "1", "PATH": ""},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
