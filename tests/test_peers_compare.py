"""benchmarks/peers: the recipes as data (ports.json, recipes.py), the driver that builds the
ports found and runs them through `cymicrogpt bench --program` (compare_peers.py), and the
table made from its result file (peers_table.py).  No real port is built here: stand-in
ports (small Python programs) go through the same build, ladder and table."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))
import compare_peers
import recipes
from peers_table import markdown
from portable_command import portable, run_repository

from cymicrogpt.ladder.results import load as load_results


def test_the_shipped_recipes_load():
    ours, ports = recipes.load(PEERS / "ports.json")
    assert {"microgpt.py", "cymicrogpt"} <= set(ours)
    assert len(ports) >= 11
    for port in ports.values():
        assert len(port.commit) == 40 and port.build and port.rungs
        for rung in port.rungs:  # a rung that writes its step count in but never reads {steps} would never stop
            assert port.steps_at_build or "{steps}" in rung.command


def write_ports(path: Path, ports: dict) -> Path:
    path.write_text(json.dumps({"format": recipes.FORMAT, "ours": {}, "ports": ports}))
    return path


def stand_in(name: str = "stand-in", build=("cp {src}/port.py port.py",), **rung) -> dict:
    return {"repository": "someone/port", "commit": "0" * 40, "toolchain": "python",
            "patches": [{"path": "port.py", "pattern": r"STEPS = (\d+)", "replacement": "{steps}"}],
            "build": list(build),
            "rungs": [{"name": name, "kind": "test double",
                       "command": f"{shlex.quote(sys.executable)} -u {{build}}/port.py", **rung}]}


@pytest.mark.parametrize("ports, message", [
    ({"a": stand_in("x"), "b": stand_in("x")}, "two rungs named x"),
    ({"a": stand_in("x=y")}, "rung name"),
    ({"a": {**stand_in(), "patches": [{"path": "p", "pattern": "no group", "replacement": ""}]}}, "one group"),
    ({"a": {"repository": "someone/port"}}, "bad recipe: KeyError"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, ports, message):
    with pytest.raises(recipes.RecipeError, match=message):
        recipes.load(write_ports(tmp_path / "ports.json", ports))


def test_a_file_that_is_not_a_ports_file_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(recipes.RecipeError, match="not a ports file"):
        recipes.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(recipes.RecipeError, match="not JSON"):
        recipes.load(tmp_path / "y.json")


def test_a_patch_rewrites_its_one_match_only(tmp_path):
    source = tmp_path / "main.rs"
    source.write_text('let num_steps = 1000;\nprint!("x");\nlet y = 1000;\n')
    recipes.apply_patch(source, recipes.Patch("main.rs", r"let num_steps = (\d+);", "{steps}"), 37, "p")
    recipes.apply_patch(source, recipes.Patch("main.rs", r'(print!\("x"\);)', "{match} flush();"), 37, "p")
    assert source.read_text() == 'let num_steps = 37;\nprint!("x"); flush();\nlet y = 1000;\n'
    with pytest.raises(recipes.RecipeError, match="found 0"):
        recipes.apply_patch(source, recipes.Patch("main.rs", r"NUM_STEPS = (\d+)", "{steps}"), 5, "p")
    with pytest.raises(recipes.RecipeError, match="found 2"):
        recipes.apply_patch(source, recipes.Patch("main.rs", r"(\d+);", "{steps}"), 5, "p")


def test_a_build_is_made_in_a_patched_copy_once_then_cached(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "port.py").write_text("STEPS = 1000\n")
    _, ports = recipes.load(write_ports(tmp_path / "ports.json", {"p": stand_in()}))
    logged = []
    folder = recipes.build(ports["p"], clone, 7, tmp_path / "names.txt", sys.executable, tmp_path / "work",
                           logged.append)
    assert (folder / "port.py").read_text() == "STEPS = 7\n" and (clone / "port.py").read_text() == "STEPS = 1000\n"
    again = recipes.build(ports["p"], clone, 7, tmp_path / "names.txt", sys.executable, tmp_path / "work",
                          logged.append)
    assert again == folder and len(logged) == 1
    (clone / "port.py").write_text("STEPS = 2000\n")  # a changed clone is built anew
    assert recipes.build(ports["p"], clone, 7, tmp_path / "names.txt", sys.executable, tmp_path / "work",
                         logged.append) != folder


def test_a_failing_build_names_its_log(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "port.py").write_text("STEPS = 1000\n")
    _, ports = recipes.load(write_ports(tmp_path / "ports.json", {"p": stand_in(build=["exit 3"])}))
    with pytest.raises(recipes.RecipeError, match=r"failed with exit 3: see .*build\.log"):
        recipes.build(ports["p"], clone, 7, tmp_path / "n.txt", sys.executable, tmp_path / "work", print)


def test_a_written_in_step_count_runs_the_checked_build_only_for_the_checked_run(tmp_path):
    _, ports = recipes.load(write_ports(tmp_path / "ports.json", {"p": {
        **stand_in(), "rungs": [{"name": "fixed", "kind": "k", "command": "cat {build}/which"},
                                {"name": "flag", "kind": "k", "command": "cat {build}/which; echo {steps}",
                                 "steps_at_run": True}]}}))
    builds = {}
    for steps in (20, recipes.LARGE_STEPS):
        builds[steps] = tmp_path / f"build {steps}"  # a space: the paths are quoted
        builds[steps].mkdir()
        (builds[steps] / "which").write_text(f"built for {steps}\n")
    commands = recipes.commands(ports["p"], builds, 20)

    def run(command: str, steps: int) -> str:
        return subprocess.run(command.replace("{steps}", str(steps)), shell=True, capture_output=True,
                              text=True, check=True).stdout

    assert run(commands["fixed"], 20) == "built for 20\n"
    assert run(commands["fixed"], 1) == run(commands["fixed"], 5000) == f"built for {recipes.LARGE_STEPS}\n"
    assert run(commands["flag"], 20) == f"built for {recipes.LARGE_STEPS}\n20\n"


def test_the_table_sorts_by_time_and_says_why_a_rung_failed(tmp_path):
    entry = {"status": "ok", "ms_per_step_range": [1.0, 2.0], "agreement": "differs", "digits": 1,
             "first_difference": 1, "steps_checked": 3}
    data = {"date": "D", "command": "cymicrogpt bench", "peers_command": "python compare_peers.py X",
            "baseline": "microgpt.py", "machine": {"cpu": "CPU", "cores": 2, "os": "OS", "python": "3",
                                                   "load_average": [1.0, 2.0, 3.0]},
            "results": [
                {**entry, "name": "microgpt.py", "ms_per_step": 100.0, "speedup": 1.0, "agreement": "identical",
                 "digits": 17, "first_difference": None, "peer": {"kind": "the seed's"}},
                {**entry, "name": "broken", "status": "failed: exited with code 1 after 0 steps: not built",
                 "ms_per_step": None, "ms_per_step_range": None, "speedup": None, "agreement": None,
                 "peer": {"kind": "k", "repository": "o/b", "commit": None, "recipe_commit": "b" * 40,
                          "toolchain": "cc", "note": "n"}},
                {**entry, "name": "port", "ms_per_step": 0.5, "speedup": 200.0,
                 "peer": {"kind": "a | b", "repository": "o/p", "commit": "a" * 40, "recipe_commit": "a" * 40,
                          "toolchain": "cc", "note": "its note"}},
            ]}
    lines = markdown(data, Path("peers.json")).splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| rung")]
    assert [row.split(" | ")[0] for row in rows] == ["| port", "| microgpt.py", "| broken"]
    assert rows[0] == "| port | a \\| b | 0.5 | 1 to 2 | 200 | differs from step 1 of 3 |"
    assert rows[1].endswith("| 1.00 | identical, bit for bit (3 steps) |")
    assert rows[2].endswith("| - | failed: exited with code 1 after 0 steps: not built |")
    assert "- port: o/p @aaaaaaa, cc; its note." in lines
    assert "- broken: o/b (not a git clone) (the recipe's: @bbbbbbb), cc; n." in lines
    assert "    python compare_peers.py X" in lines


# The ladder's command as compare_peers.py makes it: its cymicrogpt rung runs the repository's
# train_losses.py, here /home/me/repo's.
LADDER_COMMAND = ("cymicrogpt bench --steps 300 --program "
                  "'cymicrogpt=/usr/bin/python3 /home/me/repo/benchmarks/peers/train_losses.py {data} {steps} cython'")


@pytest.mark.parametrize("typed, shown", [
    # inputs beside the repository: relative to it, as the developers lay out ../shared and ../peers-src
    ("--microgpt /home/me/shared/seed/microgpt.py --data=/home/me/shared/data/names.txt --clones /home/me/peers-src",
     "--microgpt ../shared/seed/microgpt.py --data=../shared/data/names.txt --clones ../peers-src"),
    ("--port anton=/home/me/peers-src/A+b --ports /home/me/repo/benchmarks/peers/ports.json",
     "--port anton=../peers-src/A+b --ports benchmarks/peers/ports.json"),
    # inputs elsewhere: a placeholder named after the option
    ("--microgpt /opt/m.py --data /data/names.txt --clones /srv/c --port k=/srv/c/x --ports /etc/p.json",
     "--microgpt MICROGPT --data DATA --clones CLONES --port k=CLONE --ports PORTS"),
    # scratch folders and outputs: placeholders, under --work as BUILD_DIR/...; inside the repository, relative
    ("--work /home/me/peers-build/final --out /home/me/peers-build/final/ladder --json /tmp/r.json",
     "--work BUILD_DIR --out BUILD_DIR/ladder --json RESULT_JSON"),
    ("--out /tmp/o --json /home/me/repo/benchmarks/peers/peers.json --wo=/tmp/w",
     "--out OUT_DIR --json benchmarks/peers/peers.json --wo=BUILD_DIR"),  # an abbreviation, as argparse takes it
    # relative values were typed from the repository's root: kept; options without paths untouched
    ("--data names.txt --steps 300 --repeats 5 --impl python", "--data names.txt --steps 300 --repeats 5 --impl python"),
])
def test_the_table_shows_the_runs_command_with_no_folder_of_its_machine(typed, shown):
    prefix = "python benchmarks/peers/compare_peers.py "
    assert portable(prefix + typed, LADDER_COMMAND) == prefix + shown


def test_without_the_runs_repository_only_placeholders_replace_absolute_paths():
    typed = "python compare_peers.py --microgpt /home/me/shared/m.py --data names.txt --work /home/me/b"
    assert run_repository("cymicrogpt bench --steps 3") is None
    assert portable(typed, "cymicrogpt bench --steps 3") == "python compare_peers.py --microgpt MICROGPT --data names.txt --work BUILD_DIR"


def test_the_shipped_tables_are_the_scripts_output_for_the_run_as_recorded():
    data = load_results(str(PEERS / "peers.json"))
    assert portable(data["peers_command"], data["command"]) != data["peers_command"]  # kept as it ran
    table = markdown(data, Path("benchmarks/peers/peers.json"))
    assert "/work/" not in table and "../shared/seed/" in table and "--work BUILD_DIR" in table
    readme = PEERS.parents[1] / "README.md"  # beside the tests in a checkout; CI's test copy has no README
    for document in [PEERS / "RESULTS.md"] + ([readme] if readme.is_file() else []):
        assert table in document.read_text(encoding="utf-8"), f"{document}: regenerate its table with --table"


# --- the driver, end to end, with stand-ins ----------------------------------------------
SEED_STANDIN = """import os
for step in range(int(os.environ["MG_STEPS"])):
    print(f"step {step + 1} loss {1 / (step + 2)!r}")
"""

# a port with its step count written in, reading input.txt as the ladder lays it out
PORT_STANDIN = """import time
STEPS = 1000
open("input.txt").close()
for step in range(STEPS):
    time.sleep(0.0005)
    print(f"step {step + 1:4d} / {STEPS} | loss {1 / (step + 2):.4f}", flush=True)
"""


@pytest.mark.slow
def test_the_driver_builds_what_is_present_and_runs_it_through_the_ladder(tmp_path, capsys):
    seed = tmp_path / "microgpt.py"
    seed.write_text(SEED_STANDIN)
    clones = tmp_path / "clones"
    clone = clones / "someone+port"
    clone.mkdir(parents=True)
    (clone / "port.py").write_text(PORT_STANDIN)
    ports = write_ports(tmp_path / "ports.json", {
        "good": stand_in("good-port"),
        "broken": {**stand_in("broken-port", build=["exit 3"]), "repository": "someone/port"},
        "absent": {**stand_in("absent-port"), "repository": "nobody/here"}})
    result = tmp_path / "peers.json"
    argv = ["--microgpt", str(seed), "--ports", str(ports), "--clones", str(clones), "--steps", "3",
            "--repeats", "1", "--min-time", "0.05", "--work", str(tmp_path / "work"), "--json", str(result),
            "--out", str(tmp_path / "ladder")]
    assert compare_peers.main(argv) == 1  # the broken port's row failed
    data = json.loads(result.read_text())
    rungs = {entry["name"]: entry for entry in data["results"]}
    assert list(rungs) == ["python", "microgpt.py", "cymicrogpt", "good-port", "broken-port"]  # not absent-port
    good = rungs["good-port"]
    assert good["status"] == "ok" and good["ms_per_step"] > 0 and good["agreement"] == "differs"
    built = {path.read_text().split("STEPS = ")[1].split("\n")[0]: path.parent
             for path in (tmp_path / "work" / "builds").glob("good-*/port.py")}
    assert set(built) == {"3", str(recipes.LARGE_STEPS)}  # checked on a 3-step build, timed on one the ladder stops
    assert good["command"].endswith(f"else {shlex.quote(sys.executable)} -u {built[str(recipes.LARGE_STEPS)]}/port.py; fi")
    assert good["peer"]["repository"] == "someone/port" and good["peer"]["commit"] is None  # not a git clone
    assert rungs["cymicrogpt"]["agreement"] == "identical" and rungs["cymicrogpt"]["digits"] == 17
    assert "not built: broken: build step failed with exit 3" in rungs["broken-port"]["status"]
    assert "Traceback" not in capsys.readouterr().err
    assert (clone / "port.py").read_text() == PORT_STANDIN
    assert compare_peers.main(["--table", str(result)]) == 0
    assert "| good-port | test double |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--microgpt", "m.py", "--port", "anton"], "expected KEY=PATH"),
    ([], "--microgpt is required"),
    (["--microgpt", "m.py", "--clones", "/nonexistent/clones"], "not a directory"),
    (["--microgpt", "m.py", "--steps", "1"], "--steps must be at least 2"),
])
def test_bad_command_lines_exit_2_before_any_build(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_peers.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("port, message", [("nosuchport=.", "no port 'nosuchport'"),
                                           ("anton=/nonexistent/clone", "is not a directory")])
def test_a_port_that_names_nothing_exits_2(tmp_path, port, message, capsys):
    assert compare_peers.main(["--microgpt", str(tmp_path / "m.py"), "--port", port,
                               "--work", str(tmp_path / "work")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("content, message", [('{"format": "other"}', "not a result file of `cymicrogpt bench --json`"),
                                              ("{", "not JSON")])
def test_a_table_of_a_file_that_is_not_a_result_is_a_one_line_error(tmp_path, content, message):
    (tmp_path / "x.json").write_text(content)
    done = subprocess.run([sys.executable, str(PEERS / "compare_peers.py"), "--table", str(tmp_path / "x.json")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("compare_peers: error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1


SLOW_PORT = """import os, time
STEPS = 1000
open("pid", "w").write(str(os.getpid()))
for step in range(STEPS):
    time.sleep(0.5)
    print(f"step {step + 1} loss 3.0", flush=True)
"""


@pytest.mark.slow
def test_a_sigterm_to_the_driver_stops_the_ladder_which_writes_what_it_measured(tmp_path):
    seed = tmp_path / "microgpt.py"
    seed.write_text(SEED_STANDIN)
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "port.py").write_text(SLOW_PORT.replace('"pid"', repr(str(tmp_path / "pid"))))
    ports = write_ports(tmp_path / "ports.json", {"slow": stand_in("slow-port")})
    result = tmp_path / "peers.json"
    driver = subprocess.Popen(
        [sys.executable, str(PEERS / "compare_peers.py"), "--microgpt", str(seed), "--ports", str(ports),
         "--port", f"slow={clone}", "--steps", "3", "--work", str(tmp_path / "work"), "--json", str(result),
         "--out", str(tmp_path / "ladder")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in driver.stderr:  # the ladder's progress goes to stdout; its errors and ours to stderr
        if "running the ladder" in line:
            break
    while not (tmp_path / "pid").exists():  # the slow port is running
        assert driver.poll() is None
    driver.terminate()
    assert driver.wait(timeout=60) == 128 + 15
    rest = driver.stderr.read()
    assert "interrupted by SIGTERM" in rest and "Traceback" not in rest
    data = json.loads(result.read_text())
    assert data["stopped_by"] == "SIGTERM"
    slow = next(entry for entry in data["results"] if entry["name"] == "slow-port")
    assert slow["status"] == "stopped (SIGTERM)" and slow["peer"]["repository"] == "someone/port"
    assert not running(int((tmp_path / "pid").read_text()))  # the ladder ended the port's process


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, killed and waiting for init to reap it, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())
