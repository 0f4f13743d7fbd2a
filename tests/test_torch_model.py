"""``Run.to_torch()``: microgpt as a torch module, against the run it came from.

The module sums in another order than the scalar engines (whole matrices, BLAS), so it is
compared with tolerances: ``module.evaluate(docs)`` within 1e-12 relative of
``run.evaluate(docs)`` (float == the training loss of each document, as the reference computes it);
batches (padded, masked) against the same documents one at a time.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (it is optional; CPU build: "
                            "`pip install torch --index-url https://download.pytorch.org/whl/cpu`)")

from cymicrogpt.config import GPTConfig  # noqa: E402
from cymicrogpt.data import load_docs  # noqa: E402
from cymicrogpt.torch_model import GPT, MicroGPT, document_losses  # noqa: E402
from cymicrogpt.training import start_run  # noqa: E402

# n_layer 1 and 2, n_embd 16 and 32, 4 and 8 heads, block sizes that truncate long names
CONFIGS = [
    pytest.param(GPTConfig(), id="1x16-h4-b16"),
    pytest.param(GPTConfig(n_layer=2, n_embd=32, n_head=8, block_size=8), id="2x32-h8-b8"),
    pytest.param(GPTConfig(n_layer=2, n_embd=16, n_head=4, block_size=5), id="2x16-h4-b5"),
    pytest.param(GPTConfig(n_layer=1, n_embd=32, n_head=8, block_size=6), id="1x32-h8-b6"),
    pytest.param(GPTConfig(n_layer=2, n_embd=16, n_head=8, block_size=16), id="2x16-h8-b16"),
]
TRAIN_STEPS = 15  # trained weights, not just the random start


@pytest.fixture(scope="module")
def names(names_path) -> list[str]:
    return load_docs(names_path)


def trained_run(names, config, steps=TRAIN_STEPS):
    run = start_run(names[:2000], config=config, steps=steps)
    run.train()
    return run


def held_out(names, run, count=300):
    """Names the run did not train on, in its vocabulary, and the 20 longest names (up to 15
    characters: 16 positions, so every block_size below 16 truncates some)."""
    docs = names[2000:2000 + count] + sorted(names[2000:], key=len)[-20:]
    return [doc for doc in docs if set(doc) <= set(run.tokenizer.chars)]


@pytest.mark.parametrize("config", CONFIGS)
def test_evaluate_matches_the_run(names, config):
    run = trained_run(names, config)
    docs = held_out(names, run)
    assert config.block_size == 16 or max(map(len, docs)) + 1 > config.block_size  # truncated documents
    module = run.to_torch()
    assert isinstance(module, torch.nn.Module) and module.wte.dtype == torch.float64
    expected = run.evaluate(docs)
    got = module.evaluate(docs)
    assert math.isfinite(expected) and expected > 0
    assert abs(got - expected) <= 1e-12 * expected, f"relative difference {abs(got - expected) / expected:.3g}"
    # in batches of any size: the same mean
    assert abs(module.evaluate(docs, batch_size=7) - expected) <= 1e-12 * expected


def test_batches_pad_and_mask_right(names):
    """A batch of documents of different lengths (some truncated) gives each document the
    loss and gradient it has alone: padding changes nothing."""
    config = GPTConfig(n_layer=2, n_embd=16, n_head=4, block_size=8)
    module = trained_run(names, config, steps=5).to_torch()
    docs = ["al", "maximiliano", "eve", "christopher", "b"]  # 3 to 12 positions: padded and truncated
    inputs, targets = module.batch(docs)
    assert inputs.shape == targets.shape == (len(docs), config.block_size)
    assert (targets == -100).sum().item() == sum(config.block_size - min(config.block_size, len(d) + 1) for d in docs)
    together = document_losses(module(inputs), targets)

    def loss_alone(doc):
        inputs, targets = module.batch([doc])
        return document_losses(module(inputs), targets)

    alone = torch.cat([loss_alone(doc) for doc in docs])
    assert torch.allclose(together, alone, rtol=1e-14, atol=0)

    def gradient(batch):
        module.zero_grad(set_to_none=True)
        module.loss(batch).backward()
        return torch.cat([p.grad.reshape(-1) for p in module.parameters()])

    mean_of_alone = sum(gradient([d]) for d in docs) / len(docs)
    g = gradient(docs)
    assert torch.max(torch.abs(g - mean_of_alone)) <= 1e-13 * torch.max(torch.abs(g))


def test_parameters_are_copies_with_microgpt_names(names):
    run = trained_run(names, GPTConfig(n_layer=2), steps=3)
    weights = run.state_dict()
    module = run.to_torch()
    assert list(module.state_dict()) == list(weights)  # names and order: wte, wpe, lm_head, layer0.attn_wq, ...
    exported = module.numpy_state_dict()
    assert all(exported[name].dtype == np.float64 and np.array_equal(exported[name], w) for name, w in weights.items())
    with torch.no_grad():
        module.wte.add_(1.0)
    assert np.array_equal(run.state_dict()["wte"], weights["wte"])  # the run is untouched
    run.train()
    assert np.array_equal(module.numpy_state_dict()["wpe"], weights["wpe"])  # and the module keeps its copy
    # the way back: the module's weights into a run, float ==
    run.load_state_dict(exported)
    assert all(np.array_equal(run.state_dict()[name], w) for name, w in exported.items())


def test_the_vocabulary_travels_with_the_module(names):
    run = trained_run(names, GPTConfig(), steps=2)
    module = run.to_torch()
    assert module.tokenizer.chars == run.tokenizer.chars
    with pytest.raises(ValueError, match="document 1 .'a#b'.: character '#' is not in the vocabulary"):
        module.evaluate(["emma", "a#b"])
    with pytest.raises(ValueError, match="no documents"):
        module.evaluate([])


def test_other_dtypes_and_bad_shapes(names):
    run = trained_run(names, GPTConfig(block_size=8), steps=2)
    docs = names[5000:5100]
    single = run.to_torch(dtype=torch.float32)
    assert single.wte.dtype == torch.float32
    assert abs(single.evaluate(docs) - run.evaluate(docs)) <= 1e-5 * run.evaluate(docs)
    module = run.to_torch()
    with pytest.raises(ValueError, match="block_size = 8"):
        module(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="missing tensor 'lm_head'"):
        MicroGPT.from_state_dict(run.config, run.tokenizer, {k: v for k, v in run.state_dict().items() if k != "lm_head"})


def test_the_ladder_rung_uses_this_module():
    """One torch model in the package: the ladder's torch rung trains a torch_model.GPT."""
    import random

    from cymicrogpt.ladder import trainer_class
    from cymicrogpt.params import init_weights, state_dict_layout

    config = GPTConfig(n_embd=8, n_head=2, block_size=8)
    layout = state_dict_layout(config, 5)
    trainer = trainer_class("torch")(config, layout, init_weights(random.Random(0), layout), 0.01, 3)
    assert type(trainer.model) is GPT
    before = trainer.model.wte.detach().clone()
    trainer.step([4, 0, 1, 2, 4])
    assert not torch.equal(trainer.model.wte, before)  # the rung's Adam moves the module's own weights
    assert np.array_equal(trainer.weights()[: before.numel()], trainer.model.wte.detach().reshape(-1).numpy())
