"""Other microgpt ports side by side with microgpt.py and cymicrogpt, timed in one sitting.

For each port the user has cloned (``--port KEY=PATH``; recipes.py says how each is built
and run), for the seed's microgpt.py (``--microgpt PATH``) and for cymicrogpt's backends:

* build it as its README says (recipes.py), out of its clone, once per step count;
* time whole runs of N and of `few` training steps; T(N) - T(few) over N - few is the time
  per step with start-up and sampling cancelled.  Runs of all programs are interleaved (one
  round of every program, then the next round) so a change of load hits all of them; each
  figure is a median over rounds, after one untimed warm-up run;
* read the losses each program prints in its N-step run and count those equal (float ==)
  to microgpt.py's at the same step.  Where a program prints too few digits to decide
  equality, the table says so and counts the losses that agree to the digits printed;
* write a markdown table: ms/step, x microgpt.py, losses equal, kind; and the same ratio in
  CPU time, steadier than wall-clock time on a shared machine.

Nothing is downloaded: the ports come from the user's clones, the names file from --data
(copied beside each program under the name it expects).  Builds are cached in --work,
keyed by the clone's content and the build's commands.

    python benchmarks/peers/compare_peers.py --microgpt ../shared/seed/microgpt_from_article.py \\
        --port anton=PATH --port charbel=PATH --port mplekh=PATH --port enjector=PATH \\
        --port kristianmk=PATH [--steps 300] [--few 20] [--reference] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from cymicrogpt.ladder.agreement import half_unit, identifies_a_double, significant_digits
from cymicrogpt.ladder.results import cpu_model
from recipes import RECIPES, Recipe

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "names.txt"
DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cymicrogpt-peers"
BUILD_TIMEOUT_S = 1800


class Failure(Exception):
    """Something the user can fix (a path, a build, a program that fails): one line, exit 1."""


# --- the programs being compared ---------------------------------------------------------
@dataclass
class Contender:
    label: str
    kind: str
    command: Callable[[int], list[str]]  # argv for a run of this many steps
    cwd: Path
    losses_regex: str
    repeats: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    steps_variable: str = ""  # environment variable that carries the step count, if any
    loss_command: Optional[list[str]] = None  # untimed N-step run that prints the losses
    note: str = ""
    # filled in by the measurement
    wall: dict[int, list[float]] = field(default_factory=dict)  # steps -> seconds per run
    cpu: dict[int, list[float]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # the N-step runs' output
    error: str = ""


def run_program(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[float, float, str]:
    """Run to completion: (wall seconds, CPU seconds of the child, stdout + stderr)."""
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"`{shlex.join(argv)}` ran longer than {timeout:.0f} s") from None
        except OSError as exc:
            raise Failure(f"cannot run `{shlex.join(argv)}`: {exc.strerror}") from None
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
    if proc.returncode != 0:
        last = text.strip().splitlines()[-1:] or ["no output"]
        raise Failure(f"`{shlex.join(argv)}` exited with {proc.returncode}: {last[0][:200]}")
    return wall, cpu, text


# --- building a port ---------------------------------------------------------------------
def fingerprint(clone: Path) -> str:
    """sha256 over the clone's files (not .git): a rebuild follows any change."""
    digest = hashlib.sha256()
    for path in sorted(p for p in clone.rglob("*") if p.is_file() and ".git" not in p.relative_to(clone).parts):
        digest.update(str(path.relative_to(clone)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def fill(template: tuple[str, ...], **values: object) -> list[str]:
    """Format each argument; an argument that becomes empty (an unused {loss_flags}) is dropped."""
    return [arg for arg in (part.format(**values) for part in template) if arg]


def uses_steps_at_build(recipe: Recipe) -> bool:
    return recipe.steps_in_source is not None or any("{steps}" in part for cmd in recipe.build for part in cmd)


def build_port(recipe: Recipe, clone: Path, clone_id: str, steps: int, for_losses: bool, data: Path,
               work: Path, log: Callable[[str], None]) -> Path:
    """The recipe's program for `steps` steps (built once, then taken from the cache)."""
    loss_flags = recipe.loss_flags if for_losses else ""
    key_steps = steps if uses_steps_at_build(recipe) else None
    key = hashlib.sha256(json.dumps([recipe.build, recipe.program, repr(recipe.steps_in_source), key_steps,
                                     loss_flags, str(data), clone_id]).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", recipe.repo).strip("-")
    build_dir = work / "builds" / f"{slug}-{key}"
    program = build_dir / recipe.program
    if (build_dir / ".built").is_file() and program.is_file():
        return program
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    src = clone
    if recipe.steps_in_source is not None:
        src = build_dir / "src"
        shutil.copytree(clone, src, ignore=shutil.ignore_patterns(".git"))
        patch_steps(src / recipe.steps_in_source.path, recipe.steps_in_source.pattern, steps, recipe.repo)
    build_log = build_dir / "build.log"
    what = [f"{steps} steps"] if key_steps is not None else []
    what += ["printing losses"] if loss_flags else []
    log(f"building {recipe.repo}{' (' + ', '.join(what) + ')' if what else ''} in {build_dir}")
    for template in recipe.build:
        argv = fill(template, src=src, build=build_dir, steps=steps, data=data, loss_flags=loss_flags)
        with open(build_log, "ab") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            try:
                done = subprocess.run(argv, cwd=build_dir, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise Failure(f"{recipe.repo}: cannot run `{argv[0]}` ({exc}); see {build_log}") from None
        if done.returncode != 0:
            raise Failure(f"{recipe.repo}: `{shlex.join(argv)}` failed with exit {done.returncode}; see {build_log}")
    if not program.is_file():
        raise Failure(f"{recipe.repo}: the build made no {program}")
    (build_dir / ".built").touch()
    return program


def patch_steps(path: Path, pattern: str, steps: int, repo: str) -> None:
    text = path.read_text()
    found = list(re.finditer(pattern, text))
    if len(found) != 1:
        raise Failure(f"{repo}: expected one match of {pattern!r} in {path.name}, found {len(found)} "
                      "(the clone differs from the one recipes.py was written for)")
    match = found[0]
    path.write_text(text[:match.start(1)] + str(steps) + text[match.end(1):])


def port_contender(recipe: Recipe, clone: Path, args: argparse.Namespace, work: Path,
                   log: Callable[[str], None]) -> Contender:
    clone_id = fingerprint(clone)
    programs = {n: build_port(recipe, clone, clone_id, n, False, args.data, work, log) for n in (args.steps, args.few)}
    run_dir = work / "runs" / re.sub(r"[^A-Za-z0-9]+", "-", recipe.label).strip("-")
    run_dir.mkdir(parents=True, exist_ok=True)
    if recipe.data_as:
        shutil.copyfile(args.data, run_dir / recipe.data_as)

    def command(steps: int, program: Optional[Path] = None, extra: tuple[str, ...] = ()) -> list[str]:
        return [str(program or programs[steps])] + fill(recipe.args + extra, steps=steps, data=args.data)

    loss_command = None
    if recipe.needs_loss_run:
        loss_program = (build_port(recipe, clone, clone_id, args.steps, True, args.data, work, log)
                        if recipe.loss_flags else programs[args.steps])
        loss_command = command(args.steps, loss_program, recipe.loss_args)
    return Contender(label=f"{recipe.label} ({describe_clone(clone)})", kind=recipe.kind, command=command,
                     cwd=run_dir, losses_regex=recipe.losses, repeats=args.repeats, loss_command=loss_command,
                     note=recipe.note)


def describe_clone(clone: Path) -> str:
    """The clone's commit (and whether it has local changes), for the table."""
    try:
        commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git clone"
    return f"@{commit}" + (", modified" if dirty else "")


def python_contenders(args: argparse.Namespace, work: Path) -> list[Contender]:
    """microgpt.py itself, then cymicrogpt's backends (through train_losses.py)."""
    run_dir = work / "runs" / "python"
    run_dir.mkdir(parents=True, exist_ok=True)
    contenders = [Contender(
        label="microgpt.py (the seed's)", kind="scalar Value graph, recursive topological sort",
        command=lambda steps: [args.python, str(args.microgpt)], cwd=run_dir, repeats=args.python_repeats,
        # the seed script reads its data, step count and number of samples from the environment
        env=dict(os.environ, MG_INPUT=str(args.data), MG_SAMPLES="0"), steps_variable="MG_STEPS",
        losses_regex=r"step (\d+) loss (\S+)")]
    backends = [("cython", "scalar graph arena, the reference's DFS order", args.repeats)]
    if args.reference:
        backends.append(("python", "pure-Python Value graph, iterative topological sort", args.python_repeats))
    for backend, kind, repeats in backends:
        contenders.append(Contender(
            label=f"cymicrogpt {backend}", kind=kind, cwd=run_dir, repeats=repeats,
            command=lambda steps, b=backend: [args.python, str(HERE / "train_losses.py"), str(args.data), str(steps), b],
            losses_regex=r"step (\d+) loss (\S+)"))
    return contenders


# --- measuring ---------------------------------------------------------------------------
def run_steps(contender: Contender, steps: int, timeout: float) -> tuple[float, float, str]:
    env = dict(contender.env, **{contender.steps_variable: str(steps)}) if contender.steps_variable else contender.env
    return run_program(contender.command(steps), contender.cwd, env, timeout)


def measure(contenders: list[Contender], args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """Warm-up, then rounds: in each round every contender runs N steps, then few steps."""
    live = [c for c in contenders if not c.error]
    for contender in live:
        try:
            run_steps(contender, args.few, args.timeout)
        except Failure as exc:
            contender.error = str(exc)
            log(f"{contender.label}: {exc}")
    for round_no in range(max(c.repeats for c in contenders)):
        for contender in [c for c in contenders if not c.error and round_no < c.repeats]:
            try:
                for steps in (args.steps, args.few):
                    wall, cpu, text = run_steps(contender, steps, args.timeout)
                    contender.wall.setdefault(steps, []).append(wall)
                    contender.cpu.setdefault(steps, []).append(cpu)
                    if steps == args.steps and contender.loss_command is None:
                        contender.outputs.append(text)
            except Failure as exc:
                contender.error = str(exc)
                log(f"{contender.label}: {exc}")
                continue
            log(f"round {round_no + 1}: {contender.label}: {round_ms(contender, args)[-1]:.4f} ms/step")
    for contender in contenders:
        if contender.loss_command is not None and not contender.error:
            try:
                contender.outputs.append(run_program(contender.loss_command, contender.cwd, contender.env,
                                                     args.timeout)[2])
            except Failure as exc:
                contender.error = str(exc)


def per_step_ms(contender: Contender, args: argparse.Namespace, times: Optional[dict] = None) -> float:
    """(median T(N) - median T(few)) / (N - few), in milliseconds."""
    times = contender.wall if times is None else times
    span = statistics.median(times[args.steps]) - statistics.median(times[args.few])
    return span / (args.steps - args.few) * 1e3


def round_ms(contender: Contender, args: argparse.Namespace) -> list[float]:
    """Each round's own (T(N) - T(few)) / (N - few), in milliseconds: the spread of the median."""
    return [(n - f) / (args.steps - args.few) * 1e3 for n, f in zip(contender.wall[args.steps], contender.wall[args.few])]


def quartiles(values: list[float]) -> str:
    if len(values) < 4:
        return f"{min(values):.4g} to {max(values):.4g}"
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.4g} to {high:.4g}"


# --- losses ------------------------------------------------------------------------------
def parse_losses(text: str, regex: str) -> dict[int, str]:
    """Step number -> the loss as printed (the last print of a step wins)."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(regex, text)}


def compare_losses(reference: dict[int, float], printed: dict[int, str], steps: int) -> str:
    """The table cell: equal losses n/N, or why equality cannot be decided from the output."""
    printed = {s: t for s, t in printed.items() if 1 <= s <= steps}
    if not printed:
        return "no losses printed"
    of = f"{len(printed)} printed" if len(printed) < steps else str(steps)
    try:
        values = {s: float(t) for s, t in printed.items()}
    except ValueError:
        return "unreadable losses"
    # A port prints enough digits to decide when every loss identifies one double and the
    # format is not a short fixed one (a 4-decimal print can happen to be a shortest repr).
    if all(identifies_a_double(t) for t in printed.values()) and max(map(significant_digits, printed.values())) >= 15:
        equal = sum(values[s] == reference[s] for s in values)
        return f"{equal}/{of}"
    digits = max(map(significant_digits, printed.values()))  # the format's precision (%g drops zeros)
    agree = sum(abs(values[s] - reference[s]) <= half_unit(printed[s]) * (1 + 1e-9) for s in values)
    return f"undecidable, {digits} significant digits printed: {agree}/{of} agree to them"


# --- the report --------------------------------------------------------------------------
def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return out[0] if out else "not found"


def times(base_ms: float, ms: float) -> str:
    """How many times faster than the base; "-" where a time is not positive (noise won)."""
    if not (ms > 0 and base_ms > 0):
        return "-"
    ratio = base_ms / ms
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:,.0f}"


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def report(contenders: list[Contender], args: argparse.Namespace, started: str, loads: list[str]) -> str:
    seed = contenders[0]
    reference = {s: float(t) for s, t in parse_losses(seed.outputs[0], seed.losses_regex).items()} if seed.outputs else {}
    seed_ms, seed_cpu_ms = ((per_step_ms(seed, args), per_step_ms(seed, args, seed.cpu)) if not seed.error
                            else (math.nan, math.nan))
    lines = [
        f"Measured {started} on {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}; "
        f"load average {loads[0]} at the start, {loads[-1]} at the end.",
        f"Python {platform.python_version()} ({args.python}); {tool_version(['g++', '--version'])}; "
        f"{tool_version(['cargo', '--version'])}; {tool_version(['cmake', '--version'])}.",
        f"Time per step = (median T({args.steps} steps) - median T({args.few} steps)) / {args.steps - args.few}, "
        f"whole processes, {args.python_repeats} rounds for pure Python, {args.repeats} for compiled programs; "
        "one untimed warm-up run each; losses of the N-step run compared with microgpt.py's (float ==); "
        "CPU: the same from the child's user + system time (getrusage); "
        "rounds' middle half: the interquartile range of each round's own T(N) - T(few) per step; "
        f"data: {args.data}.",
        "",
        "Command:",
        "",
        "    " + shlex.join([Path(sys.executable).name, *sys.argv]),
        "",
        "| implementation | kind | ms/step | x microgpt.py | losses equal to microgpt.py's | CPU ms/step "
        "| x microgpt.py in CPU time | rounds' middle half, ms/step |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    notes = []
    for contender in contenders:
        if contender.error:
            lines.append(f"| {contender.label} | {contender.kind} | failed | | {cell(contender.error)} | | | |")
            continue
        ms = per_step_ms(contender, args)
        cpu_ms = per_step_ms(contender, args, contender.cpu)
        if contender is seed:
            losses = "itself" + (f" ({len(reference)} losses)" if len(reference) == args.steps else ", losses missing")
        elif not reference:
            losses = "no microgpt.py losses to compare"
        else:
            found = [parse_losses(text, contender.losses_regex) for text in contender.outputs]
            losses = compare_losses(reference, found[0], args.steps)
            if any(f != found[0] for f in found[1:]):
                losses += "; differ between runs"
        lines.append(f"| {contender.label} | {contender.kind} | {ms:.4g} | {times(seed_ms, ms)} | {losses} | "
                     f"{cpu_ms:.4g} | {times(seed_cpu_ms, cpu_ms)} | {quartiles(round_ms(contender, args))} |")
        if contender.note:
            notes.append(f"- {contender.label}: {contender.note}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


# --- command line ------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="ports: " + ", ".join(f"{k} ({RECIPES[k][0].repo})" for k in RECIPES))
    parser.add_argument("--microgpt", type=Path, required=True, help="the seed's microgpt.py (runnable, MG_* variables)")
    parser.add_argument("--port", action="append", default=[], metavar="KEY=PATH",
                        help="a local clone of a port (repeatable); KEY is one of the ports listed below")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the names file (default: {DEFAULT_DATA})")
    parser.add_argument("--steps", type=int, default=300, help="N: training steps of the long run (default: 300)")
    parser.add_argument("--few", type=int, default=20, help="training steps of the short run (default: 20)")
    parser.add_argument("--repeats", type=int, default=21, help="rounds for compiled programs (default: 21)")
    parser.add_argument("--python-repeats", type=int, default=3,
                        help="rounds for microgpt.py and the pure-Python reference (default: 3)")
    parser.add_argument("--reference", action="store_true", help="also time cymicrogpt's pure-Python reference")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that runs microgpt.py and cymicrogpt (default: this one)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"builds and runs (default: {DEFAULT_WORK})")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one run (default: 1800)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.few < args.steps:
        parser.error("need 1 <= --few < --steps")
    if args.repeats < 1 or args.python_repeats < 1:
        parser.error("repeats must be at least 1")
    for name in ("microgpt", "data"):
        path = getattr(args, name)
        if not path.is_file():
            parser.error(f"--{name}: no such file: {path}")
        setattr(args, name, path.resolve())
    ports = []
    for item in args.port:
        key, sep, path = item.partition("=")
        if not sep or key not in RECIPES:
            parser.error(f"--port {item!r}: expected KEY=PATH with KEY one of {', '.join(RECIPES)}")
        if not Path(path).is_dir():
            parser.error(f"--port {item!r}: {path} is not a directory")
        ports.append((key, Path(path).resolve()))
    args.ports = ports
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    clock = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - clock:6.0f}s] {message}", file=sys.stderr, flush=True)

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    work = args.work.resolve()
    contenders = python_contenders(args, work)
    for key, clone in args.ports:
        for recipe in RECIPES[key]:
            try:
                contenders.append(port_contender(recipe, clone, args, work, log))
            except Failure as exc:
                log(str(exc))
                contenders.append(Contender(label=recipe.label, kind=recipe.kind, command=lambda steps: [],
                                            cwd=work, losses_regex="", repeats=0, error=str(exc)))
    log(f"{len(contenders)} programs ready; timing")
    measure(contenders, args, log)
    loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    text = report(contenders, args, started, loads)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 1 if any(c.error for c in contenders) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Failure, OSError) as exc:
        print(f"compare_peers: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("compare_peers: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the table piped into a reader that stopped (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)
