"""The compiled backends (the graph engine and the fused loops) are bit-identical to the
reference (float ==).

Each is stepped in lockstep with the reference; after every forward/backward the loss and every
parameter gradient must be equal, after every Adam step every parameter, and at the end
the sampled documents.  The reference's side of a run is recorded once per test session and
compared with each compiled backend (the pure-Python reference is the slow part).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from typing import NamedTuple

import pytest
from conftest import FIXTURES

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig
from cymicrogpt.training import start_run

NON_ASCII_DOCS = ["zoë", "łukasz", "日本語", "ångström", "ñandú", "çağrı", "😀smile", "Ωmega", "ß", "naïve"]


COMPILED = ["cython", "fused"]


class Step(NamedTuple):
    loss: float
    gradients: list[float]
    weights: list[float]  # after the Adam step
    moments: list[list[float]]


class Recorded(NamedTuple):
    weights: list[float]  # at the start
    steps: list[Step]
    samples: list[str]


@functools.cache
def reference_run(docs: tuple[str, ...], config: GPTConfig, steps: int, seed: int, samples: int,
                  temperature: float) -> Recorded:
    """The reference's run, step by step (cached: each compiled backend is compared with the same)."""
    ref = start_run(list(docs), config=config, steps=steps, backend="python", seed=seed)
    weights, recorded = ref.engine.weights(), []
    for _ in range(steps):
        loss = ref.forward_backward()
        gradients = ref.engine.gradients()
        ref.finish_step(loss)
        recorded.append(Step(loss, gradients, ref.engine.weights(), [list(x) for x in ref.optimizer.moments()]))
    return Recorded(weights, recorded, ref.sample(samples, temperature))


def assert_lockstep(docs, config, steps, backend, seed=42, samples=5, temperature=0.5):
    ref = reference_run(tuple(docs), config, steps, seed, samples, temperature)
    fast = start_run(list(docs), config=config, steps=steps, backend=backend, seed=seed)
    assert fast.engine.weights() == ref.weights
    for step, expected in enumerate(ref.steps):
        loss = fast.forward_backward()
        assert loss == expected.loss, f"loss differs at step {step}"
        assert fast.engine.gradients() == expected.gradients, f"gradients differ at step {step}"
        fast.finish_step(loss)
        assert fast.engine.weights() == expected.weights, f"parameters differ after step {step}"
        assert [list(map(float, x)) for x in fast.optimizer.moments()] == expected.moments
    assert fast.sample(samples, temperature) == ref.samples
    return fast


@pytest.mark.parametrize("backend", COMPILED)
def test_default_config_on_names_30_steps(backend, names_path):
    docs = mg.load_docs(names_path)
    fast = assert_lockstep(docs, GPTConfig(), steps=30, backend=backend, samples=10)
    assert len(fast.losses) == 30


@pytest.mark.parametrize(
    "config, steps, seed",
    [
        (GPTConfig(n_layer=2, n_embd=32, block_size=8, n_head=8), 4, 1),  # block < longest name
        (GPTConfig(n_layer=3, n_embd=12, block_size=5, n_head=3), 8, 7),
        (GPTConfig(n_layer=1, n_embd=8, block_size=24, n_head=1), 12, 123),
        # 14 rows and columns (mlp 56): every path of the vector kernels' loops, tails included
        (GPTConfig(n_layer=1, n_embd=14, block_size=8, n_head=2), 6, 11),
    ],
    ids=["2x32-h8-b8", "3x12-h3-b5", "1x8-h1-b24", "1x14-h2-b8"],
)
@pytest.mark.parametrize("backend", COMPILED)
def test_other_configs_on_names(config, steps, seed, backend, names_path):
    docs = mg.load_docs(names_path)
    assert_lockstep(docs, config, steps=steps, backend=backend, seed=seed)


@pytest.mark.parametrize("backend", COMPILED)
def test_non_ascii_corpus(backend):
    config = GPTConfig(n_layer=2, n_embd=8, block_size=10, n_head=2)
    fast = assert_lockstep(NON_ASCII_DOCS, config, steps=25, backend=backend, seed=3, samples=8, temperature=1.0)
    assert fast.tokenizer.vocab_size > 30


@pytest.mark.parametrize("backend", COMPILED)
def test_high_and_low_temperature_samples_agree(backend):
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    docs = ["anna", "bob", "carla", "dave", "eve"]
    for temperature in (0.05, 2.5):
        fast = mg.train(docs, config=config, steps=10, backend=backend, seed=5)
        assert fast.sample(12, temperature) == reference_samples(tuple(docs), config, temperature)


@functools.cache
def reference_samples(docs: tuple[str, ...], config: GPTConfig, temperature: float) -> list[str]:
    return mg.train(list(docs), config=config, steps=10, backend="python", seed=5).sample(12, temperature)


@pytest.mark.parametrize("backend", COMPILED)
def test_gradients_match_central_differences(backend):
    """The compiled gradients are the true derivatives (independently of the reference)."""
    config = GPTConfig(n_layer=1, n_embd=8, block_size=6, n_head=2)
    run = start_run(["abcab", "bca", "cc"], config=config, steps=1, backend=backend, seed=11)
    run.forward_backward()
    grads = run.engine.gradients()
    weights = run.engine.weights()
    h = 1e-6

    def loss_at(i, delta):
        shifted = list(weights)
        shifted[i] += delta
        run.engine.set_weights(shifted)
        return run.forward_backward()

    for i in range(0, len(weights), 37):
        numeric = (loss_at(i, h) - loss_at(i, -h)) / (2 * h)
        assert grads[i] == pytest.approx(numeric, rel=1e-4, abs=1e-8), f"parameter {i}"


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_backend_reproduces_the_full_seed_run(backend, names_path, golden):
    """All 1000 steps and 20 samples of microgpt.py (golden values from running the seed's
    script unchanged, see tests/fixtures/), on each compiled backend."""
    gold = golden("seed_default_1000steps.json")
    run = mg.train(mg.load_docs(names_path), steps=gold["num_steps"], backend=backend, seed=42)
    assert run.losses == gold["losses"]
    assert run.sample(len(gold["samples"]), temperature=0.5) == gold["samples"]


# glibc's build of exp, log and pow without FMA (x86_64: the tunable hides AVX2 and FMA from
# glibc's choice); the CPUs that lack FMA get it by default
PLAIN_LIBM = "glibc.cpu.hwcaps=-AVX2,-FMA"
PLAIN_LIBM_TWIN = "seed_default_1000steps.libm-without-fma.json"
FULL_RUN_CHILD = """
import json, math, sys
import cymicrogpt as mg
names, fingerprint = sys.argv[1], json.loads(sys.argv[2])
runs = {}
for backend in sys.argv[3:]:
    run = mg.train(mg.load_docs(names), steps=1000, backend=backend, seed=42)
    runs[backend] = [run.losses, run.sample(20, temperature=0.5)]
print(json.dumps({"fingerprint": [getattr(math, name)(*args) for name, args, _ in fingerprint], "runs": runs}))
"""


@pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"),
                    reason="glibc on x86_64 only: the tunable that picks its libm build")
def test_compiled_backends_reproduce_the_full_seed_run_under_the_other_libm(names_path):
    """Under glibc's build of exp, log and pow without FMA, microgpt.py's own losses differ
    from step 11 on (tests/fixtures/ holds its run recorded both ways); every compiled
    backend, with the pow and exp shortcuts it uses on this CPU, follows that libm too."""
    twin = json.loads((FIXTURES / PLAIN_LIBM_TWIN).read_text())
    child = subprocess.run([sys.executable, "-c", FULL_RUN_CHILD, str(names_path), json.dumps(twin["libm_fingerprint"]),
                            *COMPILED], env=dict(os.environ, GLIBC_TUNABLES=PLAIN_LIBM), capture_output=True, text=True,
                           check=False)
    assert child.returncode == 0, child.stderr
    found = json.loads(child.stdout)
    if found["fingerprint"] != [result for _, _, result in twin["libm_fingerprint"]]:
        pytest.skip(f"GLIBC_TUNABLES={PLAIN_LIBM} did not select the libm {PLAIN_LIBM_TWIN} was recorded with")
    for backend in COMPILED:
        assert found["runs"][backend] == [twin["losses"], twin["samples"]], backend
