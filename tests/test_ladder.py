"""The efficiency ladder: every implementation's step-1 gradients against the reference,
the table's arithmetic, microgpt.py as a rung, and the `cymicrogpt bench` command's outputs.
Programs as rungs in general: tests/test_bench_programs.py."""
import random
from pathlib import Path

import pytest

from cymicrogpt.ladder.bench import Row, compare, format_table, reference_losses, run_ladder
from cymicrogpt.cli import main
from cymicrogpt.config import GPTConfig
from cymicrogpt.ladder import trainer_class
from cymicrogpt.ladder.programs import Timing, microgpt_program
from cymicrogpt.params import init_weights, num_params, state_dict_layout
from cymicrogpt.training import initialise

CASES = [
    (GPTConfig(), [26, 0, 4, 9, 3, 26]),
    (GPTConfig(n_layer=2, n_embd=32, block_size=8, n_head=8), [26] + list(range(12)) + [26]),  # truncated
    (GPTConfig(n_layer=3, n_embd=12, block_size=5, n_head=3), [26, 3]),  # one position
]


def first_step(impl, config, tokens, seed=1):
    layout = state_dict_layout(config, 27)
    weights = init_weights(random.Random(seed), layout)
    return trainer_class(impl)(config, layout, weights, 0.01, 10).loss_and_grads(tokens)


@pytest.mark.parametrize("impl", ["cython", "fused"])
@pytest.mark.parametrize("config, tokens", CASES)
def test_exact_trainers_are_exact(impl, config, tokens):
    ref_loss, ref_grads = first_step("python", config, tokens)
    loss, grads = first_step(impl, config, tokens)
    assert loss == ref_loss
    assert grads.tolist() == ref_grads.tolist()


def test_fused_rejects_bad_tokens():
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    with pytest.raises(ValueError, match="token ids must lie in"):
        first_step("fused", config, [26, 99, 26])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        first_step("fused", config, [26])


def test_bench_command_writes_the_ladder(tmp_path, capsys):
    data = tmp_path / "docs.txt"
    data.write_text("anna\nbob\ncarla\ndave\neve\nfrank\n")
    out = tmp_path / "ladder"
    code = main(["bench", "--data", str(data), "--steps", "6", "--ref-steps", "3", "--n-embd", "8",
                 "--n-head", "2", "--block-size", "8", "--impl", "python,cython,fused,torch", "--repeats", "2",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = (out / "ladder.md").read_text()
    for impl in ("python", "cython", "fused", "torch"):
        assert f"| {impl} |" in printed and f"| {impl} |" in report
    # exact: no loss difference from the reference; the fused row is compared past the
    # reference's 3 steps with the exact cython row's continuation
    for exact, compared in (("cython", 3), ("fused", 6)):
        row = next(line for line in report.splitlines() if line.startswith(f"| {exact} |"))
        assert f"| 0, identical ({compared} steps) |" in row
        assert "| in process, median of steps 2-3, median of 2 rounds, range " in row
    assert "n_embd=8" in report and "Machine:" in report and "Command:" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in printed
    else:
        assert (out / "ladder.png").stat().st_size > 0


@pytest.mark.parametrize("argv", [["--impl", "gpu"], ["--impl", ""], ["--steps", "0"], ["--n-embd", "10"],
                                  ["--microgpt", "no-such-microgpt.py"], ["--microgpt", ""]])
def test_bench_bad_arguments_exit_2(argv, tmp_path, capsys):
    assert main(["bench", "--data", str(tmp_path / "missing.txt")] + argv) == 2
    assert capsys.readouterr().err.startswith("cymicrogpt: error:")


@pytest.mark.parametrize("impl", ["python", "cython"])
def test_graph_trainers_reject_a_one_token_document(impl):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        first_step(impl, GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2), [26])


def test_speed_ups_are_ratios_of_the_shared_steps_column():
    """The bug this table once had: python timed on 3 steps, cython on 9 with slower later
    documents; a speed-up must compare the same documents, and say which."""
    rows = [Row("python", step_times=[0.3, 0.1, 0.2], losses=[3.0, 2.9, 2.8, 2.7]),
            Row("cython", step_times=[0.001, 0.001, 0.001] + [0.004] * 6, losses=[3.0, 2.9, 2.8, 2.7] + [2.6] * 6),
            Row("numpy", step_times=[0.002] * 9, losses=[3.0, 2.9, 2.8, 2.7 + 1e-15] + [2.6] * 6),
            Row("torch", status="not installed (no torch)")]
    table = {c["impl"]: c for c in compare(rows)}
    assert table["python"]["shared_steps"] == 3
    assert table["python"]["ms"] == pytest.approx(200.0)
    assert table["cython"]["ms"] == pytest.approx(1.0)
    assert table["cython"]["ms_all"] == pytest.approx(4.0)  # the later, slower steps
    for impl in ("python", "cython", "numpy"):
        c = table[impl]
        assert c["baseline"] == "python"  # no microgpt.py: the reference
        assert c["speedup"] == pytest.approx(table["python"]["ms"] / c["ms"])
    assert table["cython"]["speedup"] == pytest.approx(200.0)
    assert table["torch"]["ms"] is None and table["torch"]["speedup"] is None
    assert [c["exact"] for c in table.values()] == [True, True, False, False]
    text = format_table(list(table.values()))
    assert "| speed-up vs python |" in text
    assert "| cython | 1.0000 | 200x | in process, median of steps 2-4 | 4.0000 | 10 |" in text
    assert "| torch | - | - | in process, median of steps 2-4 | - | 0 | - | - | not installed (no torch) |" in text
    numpy = {c["impl"]: c for c in compare(rows, baseline="numpy")}
    assert numpy["cython"]["speedup"] == pytest.approx(2.0) and numpy["numpy"]["speedup"] == pytest.approx(1.0)


def test_the_reference_continues_with_an_exact_backend_only_where_it_agreed():
    python = Row("python", step_times=[0.1], losses=[3.0, 2.5])
    cython = Row("cython", step_times=[0.001] * 4, losses=[3.0, 2.5, 2.4, 2.3, 2.2])
    numpy = Row("numpy", step_times=[0.001] * 4, losses=[3.0, 2.5, 2.4, 2.3 + 2e-15, 2.2])
    assert reference_losses([python, cython, numpy]) == ([3.0, 2.5, 2.4, 2.3, 2.2], "cython")
    table = {c["impl"]: c for c in compare([python, cython, numpy])}
    assert (table["cython"]["loss_diff"], table["cython"]["loss_steps"]) == (0.0, 2)  # only where python ran
    assert table["numpy"]["loss_diff"] == pytest.approx(2e-15) and table["numpy"]["loss_steps"] == 5
    cython.losses[1] = 2.5000000000000004  # one ulp off: cython no longer stands in for python
    assert reference_losses([python, cython, numpy]) == ([3.0, 2.5], None)
    table = {c["impl"]: c for c in compare([python, cython, numpy])}
    assert table["cython"]["loss_diff"] == pytest.approx(4.4e-16) and table["numpy"]["loss_steps"] == 2


FAKE_MICROGPT = """
import os, time
docs = [line.strip() for line in open(os.environ.get("MG_INPUT", "input.txt")) if line.strip()]
print("num docs:", len(docs))
print("num params:", os.environ["FAKE_PARAMS"])
for step in range(int(os.environ.get("MG_STEPS", 1000))):
    time.sleep(0.01)
    print(f"step {step + 1:4d} / 1000 | loss {float(len(docs[step % len(docs)])):.4f}")  # the original's format
"""


def test_microgpt_is_a_program_rung_with_its_variables_set(tmp_path, monkeypatch):
    """--microgpt's rung: the script, run with this Python, reading MG_INPUT and MG_STEPS; its
    'loss' at step i is the length of the i-th document it read (file order: it shuffles itself)."""
    path = tmp_path / "microgpt.py"
    path.write_text(FAKE_MICROGPT)
    config = GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2)
    docs = ["anna", "bob", "carla", "dave", "eve", "frank"]
    _, _, layout, _ = initialise(list(docs), config, 42)
    monkeypatch.setenv("FAKE_PARAMS", str(num_params(layout)))
    rows = run_ladder(docs, config, steps=4, impls=["python"], ref_steps=2, programs=[microgpt_program(path)],
                      timing=Timing(repeats=1, min_time=0.05))
    assert [r.impl for r in rows] == ["python", "microgpt.py"]
    script = rows[1]
    assert script.status == "ok", script.status
    assert script.losses == [4.0, 3.0, 5.0, 4.0]
    assert script.measurement.agreement.verdict == "differs"  # lengths are not losses
    table = {c["impl"]: c for c in compare(rows)}
    assert table["python"]["baseline"] == "microgpt.py"  # microgpt.py measured: the default baseline
    assert table["microgpt.py"]["speedup"] == pytest.approx(1.0)
    assert table["python"]["speedup"] == pytest.approx(table["microgpt.py"]["ms"] / table["python"]["ms"])
    monkeypatch.setenv("FAKE_PARAMS", "123")
    rows = run_ladder(docs, config, steps=4, impls=[], programs=[microgpt_program(path)],
                      timing=Timing(repeats=1, min_time=0.05))
    assert rows[0].status == f"failed: it built a model of 123 parameters, the ladder's has {num_params(layout)}"


SEED_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "seed" / "microgpt_from_article.py"


@pytest.mark.skipif(not SEED_SCRIPT.is_file(), reason="the developers' runnable copy of the seed's "
                    "microgpt.py (it prints repr(loss)) is not beside this repository")
def test_real_microgpt_matches_the_reference_when_it_prints_repr(names_path):
    """The seed's script, run by the ladder, prints the reference's floats."""
    import cymicrogpt as mg

    rows = run_ladder(mg.load_docs(names_path), GPTConfig(), steps=3, impls=["python"], ref_steps=3,
                      programs=[microgpt_program(SEED_SCRIPT)], timing=Timing(repeats=1, min_time=0.05))
    assert rows[1].status == "ok", rows[1].status
    assert rows[1].losses == rows[0].losses
    assert rows[1].measurement.agreement.describe() == "identical, bit for bit (3 steps)"
