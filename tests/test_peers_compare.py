"""benchmarks/peers/compare_peers.py: reading and comparing printed losses, rewriting a
port's step constant, and one whole run with stand-in programs (no real port, nothing timed
for its numbers: the stand-ins only have to go through build, runs and report)."""
from __future__ import annotations

import math
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))
import compare_peers  # noqa: E402
from recipes import RECIPES, Recipe, StepsInSource  # noqa: E402

REFERENCE = {1: 3.3659669475848504, 2: 3.4242727838717717, 3: 3.177802125458052}


def test_full_precision_prints_are_compared_with_float_equality():
    printed = {1: repr(REFERENCE[1]), 2: repr(math.nextafter(REFERENCE[2], 0.0)), 3: repr(REFERENCE[3])}
    assert compare_peers.compare_losses(REFERENCE, printed, 3) == "2/3"


def test_seventeen_digit_prints_decide_too():
    printed = {s: f"{v:.17g}" for s, v in REFERENCE.items()}
    assert compare_peers.compare_losses(REFERENCE, printed, 3) == "3/3"


def test_four_decimals_cannot_decide_but_are_counted_to_their_digits():
    printed = {1: "3.3660", 2: "3.4243", 3: "3.1779"}  # the third is off in the 4th decimal
    cell = compare_peers.compare_losses(REFERENCE, printed, 3)
    assert cell == "undecidable, 5 significant digits printed: 2/3 agree to them"


def test_a_short_fixed_print_that_happens_to_be_a_repr_is_still_undecidable():
    # "2.5" reads back as 2.5 exactly, but the port prints everything with 4 decimals
    cell = compare_peers.compare_losses({1: 2.5, 2: 2.25}, {1: "2.5000", 2: "2.2500"}, 2)
    assert cell.startswith("undecidable")


def test_losses_of_some_steps_only_are_counted_over_those():
    cell = compare_peers.compare_losses(REFERENCE, {1: repr(REFERENCE[1]), 3: repr(REFERENCE[3])}, 3)
    assert cell == "2/2 printed"


def test_no_or_unreadable_losses_are_said_so():
    assert compare_peers.compare_losses(REFERENCE, {}, 3) == "no losses printed"
    assert compare_peers.compare_losses(REFERENCE, {9: "1.0"}, 3) == "no losses printed"  # past N
    assert compare_peers.compare_losses(REFERENCE, {1: "nan?"}, 3) == "unreadable losses"


def test_losses_are_read_from_carriage_return_progress_lines():
    text = "num docs: 3\nstep    1 | loss 3.3220\rstep    2 | loss 3.2568\rstep    2 | loss 3.2569\r\nsample 1: ab\n"
    assert compare_peers.parse_losses(text, RECIPES["mplekh"][0].losses) == {1: "3.3220", 2: "3.2569"}


@pytest.mark.parametrize("text, digits, half", [("3.3660", 5, 0.5e-4), ("0.0123", 3, 0.5e-4),
                                                ("2.6e-05", 2, 0.5e-6), ("-1.25E+02", 3, 0.5)])
def test_printed_precision(text, digits, half):
    assert compare_peers.significant_digits(text) == digits
    assert compare_peers.half_unit(text) == pytest.approx(half)


def test_step_constant_is_rewritten_only_where_it_is_found_once(tmp_path):
    source = tmp_path / "main.cpp"
    source.write_text("constexpr int NUM_STEPS = 1000;\nint x = 1000;\n")
    compare_peers.patch_steps(source, r"constexpr int NUM_STEPS = (\d+);", 37, "someone/port")
    assert source.read_text() == "constexpr int NUM_STEPS = 37;\nint x = 1000;\n"
    with pytest.raises(compare_peers.Failure, match="found 0"):
        compare_peers.patch_steps(source, r"let num_steps = (\d+);", 5, "someone/port")


def test_ratios_are_shown_only_for_positive_times():
    assert compare_peers.times(130.0, 0.25) == "520"
    assert compare_peers.times(130.0, 87.0) == "1.49"
    assert compare_peers.times(130.0, -0.01) == "-"  # T(N) - T(few) lost to the noise
    assert compare_peers.times(math.nan, 1.0) == "-"  # microgpt.py failed


def test_unused_placeholders_drop_out_of_a_command():
    assert compare_peers.fill(("g++", "{src}/a.cpp", "{loss_flags}"), src="/x", loss_flags="") == ["g++", "/x/a.cpp"]


# --- one whole run with stand-ins --------------------------------------------------------
SEED_STANDIN = """import os
steps = int(os.environ["MG_STEPS"])
assert os.environ["MG_SAMPLES"] == "0"
open(os.environ["MG_INPUT"]).close()
for step in range(steps):
    print(f"step {step + 1} loss {1 / (step + 2)!r}")
"""

# A "port" with a compile-time step count that prints microgpt's losses exactly on even steps
PORT_STANDIN = """#!{python}
import math
STEPS = 1000
open("input.txt").close()  # the names file, where the recipe says the port reads it
for step in range(STEPS):
    loss = 1 / (step + 2)
    print(f"step {{step + 1}} | loss {{loss if step % 2 else math.nextafter(loss, 0.0)!r}}")
"""

INSTALL = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"


@pytest.fixture
def standins(tmp_path, monkeypatch):
    seed = tmp_path / "microgpt.py"
    seed.write_text(SEED_STANDIN)
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "port.py").write_text(PORT_STANDIN.format(python=sys.executable))
    (clone / "port.py").chmod((clone / "port.py").stat().st_mode | stat.S_IXUSR)
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\nisabella\n")
    good = Recipe(repo="someone/port", label="stand-in port", kind="test double",
                  build=((sys.executable, "-c", INSTALL, "{src}/port.py", "port"),), program="port",
                  data_as="input.txt", steps_in_source=StepsInSource("port.py", r"STEPS = (\d+)"),
                  losses=r"step (\d+) \| loss (\S+)")
    broken = Recipe(repo="someone/broken", label="broken port", kind="test double",
                    build=((sys.executable, "-c", "raise SystemExit(3)"),), program="never", losses="")
    monkeypatch.setitem(RECIPES, "standin", (good,))
    monkeypatch.setitem(RECIPES, "broken", (broken,))
    return tmp_path, seed, clone, data


def run_main(tmp_path, seed, data, *ports):
    out = tmp_path / "table.md"
    argv = ["--microgpt", str(seed), "--data", str(data), "--steps", "4", "--few", "1", "--repeats", "2",
            "--python-repeats", "1", "--work", str(tmp_path / "work"), "--out", str(out)]
    for port in ports:
        argv += ["--port", port]
    return compare_peers.main(argv), out.read_text()


def row(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {label}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_whole_run_builds_times_and_compares_every_program(standins, capsys):
    tmp_path, seed, clone, data = standins
    code, table = run_main(tmp_path, seed, data, f"standin={clone}")
    assert code == 0
    assert row(table, "microgpt.py")[4] == "itself (4 losses)"
    port = row(table, "stand-in port (not a git clone)")
    assert port[4] == "2/4"  # steps 2 and 4 print microgpt's loss, steps 1 and 3 the next float down
    assert float(port[2]) == float(port[2])  # a number, not "failed"
    assert row(table, "cymicrogpt cython")[4] == "0/4"  # real training losses against 1/(step+2)
    # the step constant was rewritten in a copy for each step count; the clone is untouched
    assert "STEPS = 1000" in (clone / "port.py").read_text()
    copies = sorted((tmp_path / "work" / "builds").glob("someone-port-*/src/port.py"))
    assert sorted(p.read_text().split("STEPS = ")[1].split("\n")[0] for p in copies) == ["1", "4"]
    # a second run takes the builds from the cache
    capsys.readouterr()
    assert run_main(tmp_path, seed, data, f"standin={clone}")[0] == 0
    assert "building" not in capsys.readouterr().err


def test_a_port_that_fails_to_build_is_a_row_and_a_non_zero_exit(standins, capsys):
    tmp_path, seed, clone, data = standins
    code, table = run_main(tmp_path, seed, data, f"broken={clone}", f"standin={clone}")
    assert code == 1
    cells = row(table, "broken port")
    assert cells[2] == "failed" and "failed with exit 3" in cells[4]
    assert row(table, "stand-in port (not a git clone)")[4] == "2/4"  # the others still ran
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--port", "nosuchport=."], "expected KEY=PATH with KEY one of"),
    (["--port", "anton"], "expected KEY=PATH"),
    (["--port", "anton=/nonexistent/clone"], "is not a directory"),
    (["--steps", "5", "--few", "5"], "need 1 <= --few < --steps"),
])
def test_bad_command_lines_are_one_line_errors(standins, capsys, argv, message):
    tmp_path, seed, _, data = standins
    with pytest.raises(SystemExit) as exit_info:
        compare_peers.main(["--microgpt", str(seed), "--data", str(data), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
