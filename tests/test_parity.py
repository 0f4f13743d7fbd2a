"""The compiled backends (the graph engine and the fused loops) are bit-identical to the
reference (float ==).

Each is stepped in lockstep with the reference; after every forward/backward the loss and every
parameter gradient must be equal, after every Adam step every parameter, and at the end
the sampled documents.
"""
import pytest

import cymicrogpt as mg
from cymicrogpt.config import GPTConfig
from cymicrogpt.training import start_run

NON_ASCII_DOCS = ["zoë", "łukasz", "日本語", "ångström", "ñandú", "çağrı", "😀smile", "Ωmega", "ß", "naïve"]


COMPILED = ["cython", "fused"]


def assert_lockstep(docs, config, steps, backend, seed=42, samples=5, temperature=0.5):
    ref = start_run(list(docs), config=config, steps=steps, backend="python", seed=seed)
    fast = start_run(list(docs), config=config, steps=steps, backend=backend, seed=seed)
    assert fast.engine.weights() == ref.engine.weights()
    for step in range(steps):
        loss_ref, loss_fast = ref.forward_backward(), fast.forward_backward()
        assert loss_fast == loss_ref, f"loss differs at step {step}"
        assert fast.engine.gradients() == ref.engine.gradients(), f"gradients differ at step {step}"
        ref.finish_step(loss_ref)
        fast.finish_step(loss_fast)
        assert fast.engine.weights() == ref.engine.weights(), f"parameters differ after step {step}"
        assert [list(map(float, x)) for x in fast.optimizer.moments()] == [list(x) for x in ref.optimizer.moments()]
    assert fast.sample(samples, temperature) == ref.sample(samples, temperature)
    return ref, fast


@pytest.mark.parametrize("backend", COMPILED)
def test_default_config_on_names_30_steps(backend, names_path):
    docs = mg.load_docs(names_path)
    ref, fast = assert_lockstep(docs, GPTConfig(), steps=30, backend=backend, samples=10)
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
    ref, fast = assert_lockstep(NON_ASCII_DOCS, config, steps=25, backend=backend, seed=3, samples=8, temperature=1.0)
    assert ref.tokenizer.vocab_size > 30


@pytest.mark.parametrize("backend", COMPILED)
def test_high_and_low_temperature_samples_agree(backend):
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    docs = ["anna", "bob", "carla", "dave", "eve"]
    for temperature in (0.05, 2.5):
        ref = mg.train(docs, config=config, steps=10, backend="python", seed=5)
        fast = mg.train(docs, config=config, steps=10, backend=backend, seed=5)
        assert fast.sample(12, temperature) == ref.sample(12, temperature)


@pytest.mark.parametrize("backend", COMPILED)
def test_gradients_match_central_differences(backend):
    """The compiled gradients are the true derivatives (independently of the reference)."""
    config = GPTConfig(n_layer=1, n_embd=8, block_size=6, n_head=2)
    run = start_run(["abcab", "bca", "cc"], config=config, steps=1, backend=backend, seed=11)
    run.forward_backward()
    grads = run.engine.gradients()
    weights = run.engine.weights()
    h = 1e-6
    for i in range(0, len(weights), 37):
        def loss_at(delta):
            shifted = list(weights)
            shifted[i] += delta
            run.engine.set_weights(shifted)
            value = run.forward_backward()
            return value

        numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
        assert grads[i] == pytest.approx(numeric, rel=1e-4, abs=1e-8), f"parameter {i}"


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_backend_reproduces_the_full_seed_run(backend, names_path, golden):
    """All 1000 steps and 20 samples of microgpt.py (golden values from running the seed's
    script unchanged, see tests/fixtures/), on each compiled backend."""
    gold = golden("seed_default_1000steps.json")
    run = mg.train(mg.load_docs(names_path), steps=gold["num_steps"], backend=backend, seed=42)
    assert run.losses == gold["losses"]
    assert run.sample(len(gold["samples"]), temperature=0.5) == gold["samples"]
