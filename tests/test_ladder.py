"""The efficiency ladder: every implementation's step-1 gradients against the reference,
and the `cymicrogpt bench` command's outputs."""
import random

import numpy as np
import pytest

from cymicrogpt.cli import main
from cymicrogpt.config import GPTConfig
from cymicrogpt.ladder import trainer_class
from cymicrogpt.params import init_weights, state_dict_layout

CASES = [
    (GPTConfig(), [26, 0, 4, 9, 3, 26]),
    (GPTConfig(n_layer=2, n_embd=32, block_size=8, n_head=8), [26] + list(range(12)) + [26]),  # truncated
    (GPTConfig(n_layer=3, n_embd=12, block_size=5, n_head=3), [26, 3]),  # one position
]


def first_step(impl, config, tokens, seed=1):
    layout = state_dict_layout(config, 27)
    weights = init_weights(random.Random(seed), layout)
    return trainer_class(impl)(config, layout, weights, 0.01, 10).loss_and_grads(tokens)


@pytest.mark.parametrize("config, tokens", CASES)
def test_cython_trainer_is_exact(config, tokens):
    ref_loss, ref_grads = first_step("python", config, tokens)
    loss, grads = first_step("cython", config, tokens)
    assert loss == ref_loss
    assert grads.tolist() == ref_grads.tolist()


@pytest.mark.parametrize("config, tokens", CASES)
def test_fused_trainer_gradients_within_1e_10(config, tokens):
    ref_loss, ref_grads = first_step("python", config, tokens)
    loss, grads = first_step("fused", config, tokens)
    assert abs(loss - ref_loss) <= 1e-12
    assert np.abs(grads - ref_grads).max() <= 1e-10 * np.abs(ref_grads).max()


def test_fused_trainer_trains_like_the_reference():
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    layout = state_dict_layout(config, 27)
    weights = init_weights(random.Random(4), layout)
    docs = [[26, 1, 2, 3, 26], [26, 5, 0, 26], [26, 7, 7, 8, 9, 10, 26]]
    exact = trainer_class("cython")(config, layout, weights, 0.01, 30)
    fused = trainer_class("fused")(config, layout, weights, 0.01, 30)
    for step in range(30):
        tokens = docs[step % len(docs)]
        assert abs(fused.step(tokens) - exact.step(tokens)) <= 1e-9
    assert np.abs(fused.weights() - exact.weights()).max() <= 1e-9


def test_fused_rejects_bad_tokens():
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    with pytest.raises(ValueError, match="token ids must lie in"):
        first_step("fused", config, [26, 99, 26])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        first_step("fused", config, [26])


@pytest.mark.parametrize("change, message", [
    (dict(n_head=0), "must be positive"),  # was a SIGFPE: n_embd % 0 under cdivision
    (dict(block=-1), "must be positive"),
    (dict(offsets=[0, 0, 10**9]), "lies outside"),  # was a segfault in the forward loop
    (dict(layer_offsets=[[0, 0, 0, 0, 0, 200]]), "lies outside"),
    (dict(offsets=[0, 0]), "need wte, wpe, lm_head"),
    (dict(layer_offsets=[[0] * 6] * 2), "need wte, wpe, lm_head"),
])
def test_fused_model_refuses_shapes_that_do_not_fit_its_weights(change, message):
    from cymicrogpt._fused import FusedGPT

    args = dict(n_layer=1, n_embd=4, n_head=2, vocab=3, block=2, hidden=16, offsets=[0, 0, 0],
                layer_offsets=[[0] * 6], weights=np.zeros(64), rmsnorm_eps=1e-5)
    FusedGPT(**args)  # fits: every matrix inside the 64 weights (they may overlap)
    with pytest.raises(ValueError, match=message):
        FusedGPT(**{**args, **change})


def test_bench_command_writes_the_ladder(tmp_path, capsys):
    data = tmp_path / "docs.txt"
    data.write_text("anna\nbob\ncarla\ndave\neve\nfrank\n")
    out = tmp_path / "ladder"
    code = main(["bench", "--data", str(data), "--steps", "6", "--ref-steps", "3", "--n-embd", "8",
                 "--n-head", "2", "--block-size", "8", "--impl", "python,cython,fused,torch", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = (out / "ladder.md").read_text()
    for impl in ("python", "cython", "fused", "torch"):
        assert f"| {impl} |" in printed and f"| {impl} |" in report
    cython_row = next(line for line in report.splitlines() if line.startswith("| cython |"))
    assert "| 0.0e+00 |" in cython_row  # exact: no loss difference from the reference
    assert "n_embd=8" in report and "Machine:" in report and "Command:" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in printed
    else:
        assert (out / "ladder.png").stat().st_size > 0


@pytest.mark.parametrize("argv", [["--impl", "gpu"], ["--impl", ""], ["--steps", "0"], ["--n-embd", "10"]])
def test_bench_bad_arguments_exit_2(argv, tmp_path, capsys):
    assert main(["bench", "--data", str(tmp_path / "missing.txt")] + argv) == 2
    assert capsys.readouterr().err.startswith("cymicrogpt: error:")


@pytest.mark.parametrize("impl", ["python", "cython"])
def test_graph_trainers_reject_a_one_token_document(impl):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        first_step(impl, GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2), [26])
