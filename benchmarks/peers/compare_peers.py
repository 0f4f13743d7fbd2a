"""Other microgpt ports side by side with microgpt.py and cymicrogpt: builds the ports whose
clones are present, then runs them all through `cymicrogpt bench --program`.

One way to time a program, not two: this script only builds.  For each port found (a clone
given with --port KEY=PATH, or found as DIR/owner+name under --clones DIR) it builds the
recipe of ports.json (recipes.py), out of the clone, cached under --work, and gives the
ladder one `--program NAME=COMMAND` per rung.  The ladder (src/cymicrogpt/ladder/programs.py)
checks each program's printed losses against the exact reference's, then times whole runs,
(T(N) - T(1)) / (N - 1) with N calibrated, in interleaved rounds.  cymicrogpt runs as a program
too (train_losses.py), microgpt.py through --microgpt.  A port that fails to build is a rung
whose command fails, so its row says why and the exit code is 1.

The result is the ladder's --json file, each port's entry annotated with its repository, the
commit built, its kind and the recipe's departures (`peer`).  `--table FILE.json` prints the
markdown table of such a file (the README's peers table is made by it).

    python benchmarks/peers/compare_peers.py --microgpt ../shared/seed/microgpt_from_article.py \\
        --clones ../peers-src --json benchmarks/peers/peers.json [--port KEY=PATH ...]
    python benchmarks/peers/compare_peers.py --table benchmarks/peers/peers.json

Nothing is downloaded: the ports come from the user's clones.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import recipes
from peers_table import markdown

from cymicrogpt.files import write_atomically
from cymicrogpt.ladder.results import load as load_results

HERE = Path(__file__).resolve().parent
DEFAULT_PORTS = HERE / "ports.json"
DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cymicrogpt-peers"
CYMICROGPT = "cymicrogpt"  # our rung: train_losses.py as a program


class UsageError(Exception):
    """A --port that names no port or no folder: exit 2, before anything is built."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare_peers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, metavar="FILE.json",
                        help="measure nothing: print the markdown table of a result file this script wrote")
    parser.add_argument("--microgpt", type=Path, help="the seed's microgpt.py (required unless --table)")
    parser.add_argument("--port", action="append", default=[], metavar="KEY=PATH",
                        help="a clone of the port KEY (repeatable; the keys are ports.json's)")
    parser.add_argument("--clones", type=Path, metavar="DIR",
                        help="every port whose clone is DIR/owner+name (e.g. DIR/1duo+microgpts)")
    parser.add_argument("--ports", type=Path, default=DEFAULT_PORTS, help=f"the recipes (default: {DEFAULT_PORTS})")
    parser.add_argument("--data", type=Path, help="the names file (default: the ladder's, names.txt)")
    parser.add_argument("--steps", type=int, default=300,
                        help="steps of the run whose losses are checked (the ladder's --steps; default: 300)")
    parser.add_argument("--impl", default="python", help="the ladder's built-in rungs (default: python)")
    parser.add_argument("--repeats", type=int, help="the ladder's --repeats")
    parser.add_argument("--min-time", type=float, help="the ladder's --min-time")
    parser.add_argument("--timeout", type=float, help="the ladder's --timeout")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"builds (default: {DEFAULT_WORK})")
    parser.add_argument("--out", type=Path, help="the ladder's --out folder (default: WORK/ladder)")
    parser.add_argument("--json", type=Path, help="the result file (default: WORK/peers.json)")
    args = parser.parse_args(argv)
    if args.table is None and args.microgpt is None:
        parser.error("--microgpt is required (or --table FILE.json)")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (a program's time per step is T(N) - T(1) over N - 1)")
    if args.clones is not None and not args.clones.is_dir():
        parser.error(f"--clones {args.clones}: not a directory")
    for item in args.port:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            parser.error(f"--port {item!r}: expected KEY=PATH")
    return args


def chosen_clones(args: argparse.Namespace, ports: dict[str, recipes.Port]) -> list[tuple[recipes.Port, Path]]:
    """(port, clone) for each port asked for with --port or found under --clones, in ports.json's order."""
    given = {}
    for item in args.port:
        key, _, path = item.partition("=")
        if key not in ports:
            raise UsageError(f"--port {item}: no port {key!r}; the ports are {', '.join(ports)}")
        if not Path(path).is_dir():
            raise UsageError(f"--port {item}: {path} is not a directory")
        given[key] = Path(path).resolve()
    if args.clones is not None:
        for key, port in ports.items():
            found = args.clones / port.clone_name()
            if key not in given and found.is_dir():
                given[key] = found.resolve()
    return [(port, given[key]) for key, port in ports.items() if key in given]


def port_programs(port: recipes.Port, clone: Path, args: argparse.Namespace, data: Path, work: Path
                  ) -> dict[str, str]:
    """Rung name -> COMMAND; a build that fails gives commands that fail, saying why."""
    try:
        builds = {n: recipes.build(port, clone, n, data, sys.executable, work, log)
                  for n in recipes.step_counts(port, args.steps)}
    except recipes.RecipeError as exc:
        log(str(exc))
        failing = f"echo {shlex.quote(f'not built: {exc}')} >&2; exit 1"
        return {rung.name: failing for rung in port.rungs}
    return recipes.commands(port, builds, args.steps)


def bench_argv(args: argparse.Namespace, programs: dict[str, str], out: Path, result: Path) -> list[str]:
    argv = [sys.executable, "-m", "cymicrogpt", "bench", "--impl", args.impl, "--steps", str(args.steps),
            "--microgpt", str(args.microgpt), "--out", str(out), "--json", str(result)]
    for option in ("data", "repeats", "min_time", "timeout"):
        if getattr(args, option) is not None:
            argv += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    for name, command in programs.items():
        argv += ["--program", f"{name}={command}"]
    return argv


def annotate(result: Path, ours: dict[str, str], chosen: list[tuple[recipes.Port, Path]], driver: str) -> None:
    """Add to the ladder's result file what it cannot know: each rung's kind, and for a port
    its repository, the commit built, the recipe's commit and its departures."""
    data = json.loads(result.read_text(encoding="utf-8"))
    peers = {}
    for port, clone in chosen:
        commit = recipes.head_commit(clone)
        for rung in port.rungs:
            peers[rung.name] = {"kind": rung.kind, "repository": port.repository, "commit": commit,
                                "recipe_commit": port.commit, "toolchain": port.toolchain, "note": rung.note}
    for entry in data["results"]:
        entry["peer"] = peers.get(entry["name"], {"kind": ours.get(entry["name"], "")})
    data["peers_command"] = driver
    text = (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")
    write_atomically(result, lambda fh: fh.write(text))


def log(message: str) -> None:
    print(f"compare_peers: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.table is not None:
        print(markdown(load_results(str(args.table)), args.table))
        return 0
    ours, ports = recipes.load(args.ports)
    try:
        chosen = chosen_clones(args, ports)
    except UsageError as exc:
        print(f"compare_peers: error: {exc}", file=sys.stderr)
        return 2
    work = args.work.resolve()
    data = (args.data or Path(subprocess.run([sys.executable, "-m", "cymicrogpt", "download"], capture_output=True,
                                             text=True, check=True).stdout.strip())).resolve()
    programs = {CYMICROGPT: f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'train_losses.py'))} "
                            "{data} {steps} cython"}
    for port, clone in chosen:
        programs.update(port_programs(port, clone, args, data, work))
    out = args.out or work / "ladder"
    result = args.json or work / "peers.json"
    log(f"{len(chosen)} port(s) found: {', '.join(port.key for port, _ in chosen) or 'none'}; running the ladder")
    before = result.stat().st_mtime_ns if result.is_file() else None
    process = subprocess.Popen(bench_argv(args, programs, out, result))
    # A SIGTERM to this script is passed on: the ladder stops, ends its programs, writes what it
    # measured and exits, and so do we after it.  A Ctrl-C reaches the ladder itself (one group).
    signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:  # the ladder got it too: it stops, writes what it measured, exits
            continue
    if result.is_file() and result.stat().st_mtime_ns != before:  # the ladder wrote it: a whole or partial run
        annotate(result, ours, chosen, shlex.join(["python", "benchmarks/peers/compare_peers.py", *argv]))
        log(f"wrote {result}")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (recipes.RecipeError, OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"compare_peers: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # while building: the ladder has not started
        print("compare_peers: interrupted", file=sys.stderr)
        sys.exit(130)
