"""`cymicrogpt bench --program NAME=COMMAND`: any program as a rung (ladder/programs.py).

The programs here are stand-ins the tests write: a small Python script that prints, per
step, the exact losses the test computed with cymicrogpt itself (in full, rounded, drifted
or replaced), or fails in one of the ways a program can.  Nothing asserts a time: the stand-ins
only have to go through the check, the calibration and the timed rounds.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest

import cymicrogpt as mg
from command import TINY, assert_one_error_line, run_command
from cymicrogpt.config import GPTConfig

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="COMMAND is a POSIX shell command line")

STEPS = 3
QUICK = ["--steps", STEPS, "--ref-steps", 2, "--impl", "cython", "--repeats", 1, "--min-time", 0.05, *TINY]

# argv: LOSSES FORMAT STEPS [MODE].  Prints `step i loss X` for i = 1..STEPS, X the i-th loss
# of the file (the last one again past its end) in FORMAT ("r": repr), 5 ms per step.
STAND_IN = """\
import sys, time
losses = [float(x) for x in open(sys.argv[1]).read().split()]
fmt, steps, mode = sys.argv[2], int(sys.argv[3]), (sys.argv[4:] or [""])[0]
if mode == "crash":
    sys.exit("stand-in: it broke")
if mode == "hang":
    time.sleep(600)
if mode == "short":
    steps -= 1
step = 0
while step < steps or mode == "forever":  # forever: ignores its step count, as the original microgpt.py
    loss = losses[min(step, len(losses) - 1)]
    if mode == "drift":
        loss *= 1 + 1e-7 * step
    if mode == "other":
        loss += 0.25
    time.sleep(0.005)
    step += 1
    print(f"step {step} / {steps} | loss {repr(loss) if fmt == 'r' else format(loss, fmt)}", flush=True)
"""


@pytest.fixture
def stand_in(tmp_path: Path, tiny_docs: list[str]):
    """COMMAND for the stand-in with a mode; the exact losses of the ladder's STEPS-step run
    (computed here by cymicrogpt on the same documents and model) in its losses file."""
    script, losses = tmp_path / "stand_in.py", tmp_path / "losses.txt"
    script.write_text(STAND_IN)
    run = mg.train(list(tiny_docs), GPTConfig(n_layer=1, n_embd=8, block_size=8, n_head=2), steps=STEPS)
    losses.write_text("\n".join(map(repr, run.losses)))

    def command(fmt: str = "r", mode: str = "") -> str:
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(losses))} {fmt} {{steps}} {mode}"

    return command


def bench(data: Path, out: Path, *extra, timeout: float = 120):
    return run_command("bench", "--data", data, "--out", out, *QUICK, *extra, timeout=timeout)


def row(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_programs_are_checked_at_the_precision_they_print_then_timed(tmp_path, tiny_data_file, stand_in):
    done = bench(tiny_data_file, tmp_path / "out",
                 "--program", f"full={stand_in('r')}", "--program", f"rounded={stand_in('.4f')}",
                 "--program", f"drifted={stand_in('r', 'drift')}", "--program", f"other={stand_in('.4f', 'other')}",
                 "--program", f"unbounded={stand_in('r', 'forever')}")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert "| speed-up vs python |" not in table  # no reference among the rungs: the first one measured
    assert "| speed-up vs cython |" in table
    expected = {"full": "identical, bit for bit (3 steps)", "rounded": "identical, to the 5 digits printed (3 steps)",
                "other": "differs from step 1 of 3", "unbounded": "identical, bit for bit (3 steps)"}
    for name, losses in expected.items():
        cells = row(table, name)
        assert cells[6] == losses and cells[-1] == "ok", cells
        assert cells[3].startswith("whole process, (T(") and "median of 1 rounds" in cells[3]
        assert float(cells[1]) > 0 and cells[2].endswith("x")
    assert row(table, "drifted")[6].startswith("agrees to ") and "up to step 1 of 3" in row(table, "drifted")[6]
    assert f"- full: `{stand_in('r')}`" in table  # the command lines, as given


@pytest.mark.parametrize("mode, why", [("crash", "exited with code 1 after 0 steps: stand-in: it broke"),
                                       ("short", f"printed {STEPS - 1} step lines for a run of {STEPS} steps"),
                                       ("hang", "ran past --timeout 2 s")])
def test_a_failing_program_fails_its_row_only_and_the_exit_code_says_so(tmp_path, tiny_data_file, stand_in, mode,
                                                                         why):
    # --timeout bounds every run, the good program's timed ones too (ten start-ups): only with "hang"
    timeout = ["--timeout", 2] if mode == "hang" else ["--program", f"good={stand_in('r')}"]
    done = bench(tiny_data_file, tmp_path / "out", "--program", f"bad={stand_in('r', mode)}", *timeout)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "1 rung(s) failed (bad; their rows say why)", "ladder.md")
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert row(table, "bad")[-1] == f"failed: {why}"
    assert row(table, "cython")[-1] == "ok"  # the rest is measured
    assert mode == "hang" or row(table, "good")[-1] == "ok"


def test_a_command_that_does_not_start_says_so(tmp_path, tiny_data_file):
    done = bench(tiny_data_file, tmp_path / "out", "--program", "missing=no-such-program-here {steps}")
    assert done.returncode == 1
    cells = row((tmp_path / "out" / "ladder.md").read_text(), "missing")
    assert cells[-1].startswith("failed: exited with code 127 after 0 steps:") and "not found" in cells[-1]


def test_the_baseline_can_be_any_rung(tmp_path, tiny_data_file, stand_in):
    done = bench(tiny_data_file, tmp_path / "out", "--program", f"mine={stand_in()}", "--baseline", "mine")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert "| speed-up vs mine |" in table
    assert row(table, "mine")[2] == "1.00x"
    assert "Each speed-up is mine's ms/step divided by the row's." in table


def test_a_baseline_that_failed_gives_no_speed_ups_and_says_why(tmp_path, tiny_data_file, stand_in):
    done = bench(tiny_data_file, tmp_path / "out", "--program", f"mine={stand_in('r', 'crash')}", "--baseline", "mine")
    assert done.returncode == 1
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert row(table, "cython")[2] == "-"
    assert "The baseline, mine, was not measured (failed: exited with code 1" in table


@pytest.mark.parametrize("argv, fragments", [
    (["--program", "no-equals-sign"], ["--program", "has no '='"]),
    (["--program", "=python3 x.py"], ["--program", "empty name"]),
    (["--program", "name="], ["--program", "empty command"]),
    (["--program", "a=true", "--program", "a=false"], ["two rungs named a"]),
    (["--program", "cython=true"], ["two rungs named cython"]),
    (["--baseline", "nobody"], ["--baseline nobody: no such rung", "cython"]),
    (["--program", "a=true", "--steps", "1"], ["--steps must be more than 1"]),
    (["--repeats", "0"], ["--repeats"]),
    (["--min-time", "-1"], ["--min-time"]),
])
def test_bad_program_options_exit_2_before_anything_runs(tmp_path, tiny_data_file, argv, fragments):
    done = bench(tiny_data_file, tmp_path / "out", *argv)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, *fragments)
    assert not (tmp_path / "out").exists()


# --- the result as JSON, and two result files compared ------------------------------------
def test_json_holds_the_whole_result(tmp_path, tiny_data_file, stand_in):
    result_file = tmp_path / "result.json"
    done = bench(tiny_data_file, tmp_path / "out", "--program", f"mine={stand_in()}", "--impl", "python,cython",
                 "--json", result_file)
    assert done.returncode == 0, done.stderr
    result = json.loads(result_file.read_text())
    assert result["data"] == {"path": str(tiny_data_file.resolve()), "documents": len(tiny_data_file.read_text().split()),
                              "sha256": hashlib.sha256(tiny_data_file.read_bytes()).hexdigest()}
    assert result["config"] == {"n_layer": 1, "n_embd": 8, "block_size": 8, "n_head": 2, "steps": STEPS, "ref_steps": 2}
    assert {"cpu", "cores", "os", "libc", "python", "numpy", "torch", "cymicrogpt", "avx2_kernels", "graph_avx2_kernels"} <= set(result["machine"])
    assert result["baseline"] == "python" and result["stopped_by"] is None
    entries = {entry["name"]: entry for entry in result["results"]}
    assert list(entries) == ["python", "cython", "mine"]
    mine, python = entries["mine"], entries["python"]
    assert mine["command"] == stand_in() and entries["cython"]["kind"] == "built-in"
    assert (mine["agreement"], mine["digits"], mine["first_difference"]) == ("identical", 17, None)
    low, high = mine["ms_per_step_range"]
    assert low <= mine["ms_per_step"] <= high and mine["ms_per_sample"] == mine["ms_per_step"]
    assert mine["speedup"] == pytest.approx(python["ms_per_step"] / mine["ms_per_step"])
    assert entries["cython"]["agreement"] == "identical"
    assert python["ms_per_step_range"] == [python["ms_per_step"]] * 2 and python["rounds"] == mine["rounds"] == 1
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert row(table, "mine")[1] == f"{mine['ms_per_step']:.4f}"  # the table and the file agree


def test_two_result_files_compare_rung_by_rung(tmp_path, tiny_data_file, stand_in):
    before = tmp_path / "before.json"
    done = bench(tiny_data_file, tmp_path / "out", "--program", f"mine={stand_in()}", "--json", before, "--repeats", 2)
    assert done.returncode == 0, done.stderr
    result = json.loads(before.read_text())
    entries = {entry["name"]: entry for entry in result["results"]}
    mine, cython = entries["mine"], entries["cython"]
    assert mine["rounds"] == cython["rounds"] == 2
    mine["ms_per_step"] *= 3  # outside its own range: a real change
    mine["ms_per_step_range"] = [x * 3 for x in mine["ms_per_step_range"]]
    cython.update(rounds=1, ms_per_step_range=[cython["ms_per_step"]] * 2)  # as a --repeats 1 run writes it
    after = tmp_path / "after.json"
    after.write_text(json.dumps(result))
    done = run_command("bench", "--compare", before, after)
    assert done.returncode == 0, done.stderr
    assert row(done.stdout, "mine")[3:] == ["3.000", "slower"]
    assert row(done.stdout, "cython")[-1] == "one round, or no range: no spread to tell it from noise"
    same = run_command("bench", "--compare", before, before)
    assert row(same.stdout, "mine")[3:] == row(same.stdout, "cython")[3:] == ["1.000", "noise (the ranges overlap)"]


@pytest.mark.parametrize("target, fragment", [("data", "is the data file"), ("table", "is --out's ladder.md")])
def test_json_never_replaces_an_input_or_another_product(tmp_path, tiny_data_file, target, fragment):
    path = tiny_data_file if target == "data" else tmp_path / "out" / "ladder.md"
    done = bench(tiny_data_file, tmp_path / "out", "--json", path)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, "--json", fragment)


def test_compare_refuses_a_file_that_is_no_result(tmp_path, tiny_data_file):
    done = run_command("bench", "--compare", tiny_data_file, tiny_data_file)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "--compare", "not JSON")
    other = tmp_path / "other.json"
    other.write_text('{"results": []}')
    assert_one_error_line(run_command("bench", "--compare", other, other).stderr, "not a result file")


def test_a_program_is_timed_over_at_least_the_built_in_rungs_shared_documents(tmp_path, tiny_data_file, stand_in):
    # calibration alone would give the stand-in a few dozen steps (ten ~0.03 s start-ups at 5 ms a step)
    done = bench(tiny_data_file, tmp_path / "out", "--program", f"mine={stand_in()}", "--steps", 120, "--ref-steps", 120)
    assert done.returncode == 0, done.stderr
    how = row((tmp_path / "out" / "ladder.md").read_text(), "mine")[3]
    timed = int(how.split("(T(", 1)[1].split(")", 1)[0])
    assert timed >= 121, how
