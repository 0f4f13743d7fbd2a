"""`cymicrogpt bench --sweep PARAM=V1,V2,...` (ladder/sweep.py), stopped or not, the built-in
rungs' rounds, and the exit code of a failed built-in rung (issue 20, item 4 and its leftovers).

The sweeps here are tiny (n_embd 4 and 8, three steps): they check the table, the JSON, the
chart and --compare, never a time.  The program rung is test_bench_programs' stand-in, fed
with the exact losses cymicrogpt computes here for each width.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cymicrogpt as mg
from command import assert_one_error_line, run_command, start_command
from cymicrogpt.cli import main
from cymicrogpt.config import GPTConfig
from cymicrogpt.ladder import bench
from cymicrogpt.ladder.bench import Row, compare
from cymicrogpt.ladder.sweep import Point, Sweep, draw_chart, format_sweep_table, parse_sweep
from test_bench_command import wait_for_line
from test_bench_programs import STAND_IN, row

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="COMMAND is a POSIX shell command line")

STEPS = 3
WIDTHS = (4, 8)
SHAPE = ["--n-layer", 1, "--block-size", 8, "--n-head", 2]
QUICK = ["--steps", STEPS, "--ref-steps", 2, "--min-time", 0.05, *SHAPE]


def bench_run(data: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return run_command("bench", "--data", data, "--out", out, *QUICK, *extra, timeout=300)


@pytest.fixture
def stand_in(tmp_path: Path, tiny_docs: list[str]) -> str:
    """COMMAND of a program that follows --sweep n_embd: it prints, in full, the exact losses
    of the ladder's run at the width it is given ({n_embd} picks the losses file)."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    for width in WIDTHS:
        run = mg.train(list(tiny_docs), GPTConfig(n_layer=1, n_embd=width, block_size=8, n_head=2), steps=STEPS)
        (tmp_path / f"losses-{width}.txt").write_text("\n".join(map(repr, run.losses)))
    losses = shlex.quote(str(tmp_path / "losses-"))
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {losses}{{n_embd}}.txt r {{steps}}"


# --- bad input: exit 2 before anything runs -----------------------------------------------------
@pytest.mark.parametrize("sweep, fragments", [
    ("n_embd", ["--sweep", "has no '='"]),
    ("n_embd=", ["--sweep", "'' is not an integer"]),
    ("n_embd=8,x", ["--sweep", "'x' is not an integer"]),
    ("n_embd=8,1e3", ["--sweep", "'1e3' is not an integer"]),
    ("n_embd=8,16,8", ["--sweep", "8 given twice"]),
    ("n_head=2,4", ["--sweep", "cannot sweep 'n_head'", "n_embd, n_layer, block_size"]),
    ("lr=1,2", ["--sweep", "cannot sweep 'lr'"]),
    ("n_embd=8,10", ["--sweep n_embd=10", "must be divisible by n_head (4)"]),
    ("n_embd=0,8", ["--sweep n_embd=0", "n_embd must be a positive integer"]),
    ("block_size=-1,8", ["--sweep block_size=-1", "block_size must be a positive integer"]),
    ("n_layer=1,99999999999", ["--sweep n_layer=99999999999", "weights even with the smallest vocabulary"]),
])
def test_a_bad_sweep_exits_2_before_anything_runs(tmp_path, tiny_data_file, sweep, fragments):
    done = run_command("bench", "--data", tiny_data_file, "--out", tmp_path / "out", "--sweep", sweep)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert_one_error_line(done.stderr, *fragments)
    assert not (tmp_path / "out").exists()


def test_a_value_too_large_for_the_datas_vocabulary_exits_2_before_measuring(tmp_path, tiny_data_file):
    # fits the smallest vocabulary (see test_bench_command), not the tiny corpus's
    done = run_command("bench", "--data", tiny_data_file, "--out", tmp_path, "--n-layer", 1, "--n-embd", 1,
                       "--n-head", 1, "--sweep", f"block_size=2,{2**31 - 1 - 16}")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert_one_error_line(done.stderr, "bad model shape", f"at --sweep block_size={2**31 - 1 - 16}")


@pytest.mark.parametrize("rung, sweep", [(["--program", "mine=true {steps} {n_layer}"], "n_embd=8,16"),
                                         (["--microgpt", "MICROGPT"], "block_size=8,16")])
def test_a_program_that_cannot_follow_the_sweep_is_refused(tmp_path, tiny_data_file, rung, sweep):
    script = tmp_path / "microgpt.py"
    script.write_text("print('never run')\n")
    rung = [str(script) if part == "MICROGPT" else part for part in rung]
    done = run_command("bench", "--data", tiny_data_file, "--out", tmp_path / "out", "--sweep", sweep, *rung)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    param = sweep.split("=")[0]
    assert_one_error_line(done.stderr, "cannot follow --sweep " + param, "{" + param + "}")


@pytest.mark.parametrize("product", ["ladder.md", "sweep.png"])
def test_a_sweeps_products_are_save_targets(tmp_path, tiny_data_file, product):
    out = tmp_path / "out"
    (out / product).mkdir(parents=True)
    done = run_command("bench", "--data", tiny_data_file, "--out", out, "--sweep", "n_embd=8,16")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert_one_error_line(done.stderr, "--out", product, "a directory")
    json_as_chart = run_command("bench", "--data", tiny_data_file, "--out", tmp_path / "o2", "--sweep", "n_embd=8,16",
                                "--json", tmp_path / "o2" / "sweep.png")
    assert json_as_chart.returncode == 2 and "is --out's sweep.png" in json_as_chart.stderr


def test_parse_sweep_sorts_and_accepts_the_option_spelling():
    assert parse_sweep("n-embd=32,8,16") == Sweep("n_embd", (8, 16, 32))
    assert parse_sweep(" block_size = 4 ") == Sweep("block_size", (4,))


# --- a tiny sweep, end to end -------------------------------------------------------------------
@pytest.mark.slow  # ~25 s on the shared 2-core machine: 12 workers, a program calibrated twice
def test_a_sweep_writes_its_table_json_and_chart_and_compares(tmp_path, tiny_data_file, stand_in):
    out, result_file = tmp_path / "out", tmp_path / "sweep.json"
    done = bench_run(tiny_data_file, out, "--impl", "python,cython,numpy", "--repeats", 2, "--program",
                     f"mine={stand_in}", "--sweep", "n_embd=" + ",".join(map(str, WIDTHS)), "--json", result_file)
    assert done.returncode == 0, done.stderr
    assert not (out / "ladder.png").exists()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        chart, wrote = None, f"no sweep.png\nwrote {out / 'ladder.md'} and {result_file}"
    else:
        chart, wrote = out / "sweep.png", f"wrote {out / 'ladder.md'} and {out / 'sweep.png'} and {result_file}"

    result = json.loads(result_file.read_text())
    assert result["sweep"] == {"param": "n_embd", "values": list(WIDTHS)}
    assert result["config"]["n_embd"] is None and result["config"]["block_size"] == 8
    entries = {(entry["name"], entry["n_embd"]): entry for entry in result["results"]}
    assert list(entries) == [(name, width) for width in WIDTHS for name in ("python", "cython", "numpy", "mine")]
    table = (out / "ladder.md").read_text()
    sweep_table = table.split("\n\n")[4]  # after the title, command, model and machine
    assert done.stdout.rstrip().endswith(wrote) and sweep_table + "\n" in done.stdout
    assert sweep_table.startswith("| rung | n_embd=4 | n_embd=8 |")
    for width in WIDTHS:
        python = entries["python", width]
        for name in ("python", "cython", "numpy", "mine"):
            entry = entries[name, width]
            assert entry["status"] == "ok" and entry["rounds"] == 2
            low, high = entry["ms_per_step_range"]
            assert low <= entry["ms_per_step"] <= high
            assert entry["speedup"] == pytest.approx(python["ms_per_step"] / entry["ms_per_step"])  # same width
            column = WIDTHS.index(width) + 1
            assert row(sweep_table, name)[column] == f"{entry['ms_per_step']:.4g} ms ({_ratio(entry['speedup'])})"
        assert entries["cython", width]["agreement"] == entries["mine", width]["agreement"] == "identical"
        assert f"## n_embd={width}" in table
    exact = [[name for (name, w), entry in entries.items() if w == width and (entry["agreement"], entry["digits"]) ==
              ("identical", 17)] for width in WIDTHS]
    fastest_exact = [min(names, key=lambda name: entries[name, w]["ms_per_step"]) for names, w in zip(exact, WIDTHS)]
    assert row(sweep_table, "**fastest exact**")[1:] == fastest_exact
    assert chart is None or chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --compare matches entries by rung and width: one rung made 3x slower at one width
    entries["cython", 8]["ms_per_step"] *= 3
    entries["cython", 8]["ms_per_step_range"] = [x * 3 for x in entries["cython", 8]["ms_per_step_range"]]
    after = tmp_path / "after.json"
    after.write_text(json.dumps(result))
    compared = run_command("bench", "--compare", result_file, after)
    assert compared.returncode == 0, compared.stderr
    assert row(compared.stdout, "cython (n_embd=8)")[3:] == ["3.000", "slower"]
    assert row(compared.stdout, "cython (n_embd=4)")[3:] == ["1.000", "noise (the ranges overlap)"]


def _ratio(value: float) -> str:
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def test_the_chart_is_log_log_with_a_solid_line_per_exact_rung():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = Sweep("n_embd", (16, 64))
    points = [Point(width, GPTConfig(n_embd=width), [], compare(_rows(scale))) for width, scale in ((16, 1), (64, 4))]
    fig = draw_chart(plt, sweep, points, "n_layer=1")
    try:
        ax = fig.axes[0]
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # each rung's errorbar
        assert set(lines) == {"python (exact)", "cython (exact)", "numpy"}
        assert lines["cython (exact)"].get_linestyle() == "-" and lines["numpy"].get_linestyle() == "--"
        assert list(lines["numpy"].get_xdata()) == [16, 64]
        assert list(lines["numpy"].get_ydata()) == pytest.approx([2.0, 8.0])  # each point's median over rounds
    finally:
        plt.close(fig)
    text = format_sweep_table(sweep, points)
    assert row(text, "numpy")[1:] == ["2 ms (50x)", "8 ms (50x)"]
    assert row(text, "**fastest**")[1:] == row(text, "**fastest exact**")[1:] == ["cython", "cython"]


def _rows(scale: float) -> list[Row]:
    """python, cython (exact) and numpy (off by an ulp), two rounds each, times x scale."""
    losses = [3.0, 2.9, 2.8]
    return [Row("python", step_times=[0.1 * scale] * 2, losses=losses, later_rounds=[[0.1 * scale] * 2]),
            Row("cython", step_times=[0.001 * scale] * 2, losses=losses, later_rounds=[[0.0011 * scale] * 2]),
            Row("numpy", step_times=[0.002 * scale] * 2, losses=losses[:2] + [2.8000000000000003],
                later_rounds=[[0.002 * scale] * 2])]


# --- the built-in rungs' rounds ----------------------------------------------------------------
def test_a_built_in_rung_is_the_median_of_its_rounds_with_their_range():
    cells = {c["impl"]: c for c in compare([
        Row("python", step_times=[0.2, 0.2], losses=[3.0, 2.9, 2.8]),
        Row("cython", step_times=[0.001, 0.009], losses=[3.0, 2.9, 2.8],
            later_rounds=[[0.003, 0.003], [0.002, 0.004]])])}
    cython = cells["cython"]
    assert cython["ms"] == pytest.approx(3.0) and cython["ms_range"] == pytest.approx((3.0, 5.0))  # 5, 3, 3
    assert cython["rounds"] == 3 and "median of 3 rounds, range 3 to 5" in cython["how"]
    assert cells["python"]["rounds"] == 1 and "rounds" not in cells["python"]["how"]


def _worker_that_dies(impl, config, layout, weights, token_seqs, lr, num_steps, queue) -> None:
    """Stands in for bench._measure in the worker: cython dies as a C-level crash would."""
    if impl == "cython":
        os._exit(3)
    bench_measure(impl, config, layout, weights, token_seqs, lr, num_steps, queue)


bench_measure = bench._measure


def test_a_built_in_rung_that_fails_gives_exit_1_and_the_rest_is_measured(tmp_path, tiny_data_file, monkeypatch,
                                                                          capsys):
    # the spawned worker unpickles its target by name: this module's function, which it imports
    monkeypatch.setattr(bench, "_measure", _worker_that_dies)
    out = tmp_path / "out"
    code = main(["bench", "--data", str(tiny_data_file), "--out", str(out), "--steps", "3", "--ref-steps", "2",
                 "--impl", "cython,fused", "--repeats", "1", *map(str, SHAPE)])
    assert code == 1
    assert_one_error_line(capsys.readouterr().err, "1 rung(s) failed (cython; their rows say why)", "ladder.md")
    table = (out / "ladder.md").read_text()
    assert row(table, "cython")[-1] == "failed: worker process exited with code 3"
    assert row(table, "fused")[-1] == "ok"


def test_without_the_python_rung_cythons_run_is_the_reference_by_contract():
    losses = [3.0, 2.9, 2.8]
    cells = {c["impl"]: c for c in compare([
        Row("cython", step_times=[0.001] * 2, losses=losses),
        Row("numpy", step_times=[0.002] * 2, losses=losses[:2] + [2.8000000000000003])])}
    assert cells["cython"]["exact"] and cells["cython"]["stand_in"] and not cells["numpy"]["exact"]
    assert cells["numpy"]["loss_diff"] == pytest.approx(4.4e-16) and cells["numpy"]["agreement"].first_difference == 3
    text = bench.format_table(list(cells.values()))
    assert row(text, "cython")[6] == "reference (3 steps), exact by contract: no python rung"
    assert "no python rung: the reference is cython's run" in " ".join(bench.explanations(
        [Row("cython", step_times=[0.001], losses=losses)], list(cells.values())))


@pytest.mark.slow  # ~9 s: cython's 20,000 steps before the stop
def test_a_stopped_sweep_writes_the_values_measured_so_far(tmp_path, tiny_data_file):
    out, result_file = tmp_path / "out", tmp_path / "sweep.json"
    # n_embd 8: cython's 20,000 steps take seconds, then the reference's would take many minutes
    process = start_command("bench", "--data", tiny_data_file, "--out", out, "--json", result_file,
                            "--impl", "cython,python", "--steps", 20000, "--ref-steps", 20000, "--repeats", 1,
                            "--sweep", "n_embd=8,16", *SHAPE, start_new_session=True)
    try:
        wait_for_line(process.stdout, "python:", timeout=120)
        os.killpg(process.pid, signal.SIGTERM)
        printed, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.startswith("cymicrogpt: interrupted by SIGTERM after 1 of 4 rungs and values;") and "(partial)" in err
    table = (out / "ladder.md").read_text()
    assert "**Partial:** stopped by SIGTERM" in table
    sweep_table = table.split("\n\n")[5]  # after the partial note too
    assert sweep_table.startswith("| rung | n_embd=8 |\n") and row(sweep_table, "python")[1] == "stopped"
    result = json.loads(result_file.read_text())
    assert result["stopped_by"] == "SIGTERM" and result["sweep"]["values"] == [8, 16]
    assert [(e["name"], e["n_embd"], e["status"]) for e in result["results"]] == [
        ("cython", 8, "ok"), ("python", 8, "stopped (SIGTERM)")]
