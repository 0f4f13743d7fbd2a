"""The recipes of ports.json: how each other microgpt port is built, and the COMMAND that runs
it as a rung of `cymicrogpt bench --program NAME=COMMAND`.

The project ships none of these ports' code.  A recipe says what the port's README says (the
build commands) and how we depart from it (`note`).  ports.json is one object:

    format   FORMAT
    ours     {rung name: what it is}, for the rungs that are not ports (microgpt.py, ...)
    ports    {KEY: port}, KEY being what compare_peers.py's --port takes; a port has
      repository  owner/name on GitHub
      commit      the commit the recipe was written and tested against
      toolchain   what the build needs
      patches     [{path, pattern, replacement}]: rewrites in a copy of the clone.  `pattern`
                  is a regular expression with one group that must be found exactly once in
                  `path`; the group's text becomes `replacement`, in which {steps} is the
                  build's step count and {match} the group's own text
      build       shell command lines, run in order in the build folder
      rungs       [{name, kind, command, note, steps_at_run}]: the rows this build gives

Placeholders in build commands: {src} the clone (its patched copy when there are patches),
{build} the build folder, {steps} the build's step count, {data} the names file, {python}
the driver's Python.  In a rung's command the driver fills {build}; the ladder fills {data}
and {steps} (programs.py), and runs it in a scratch folder holding the data as input.txt.

A port whose build uses {steps} (in a command or a patch) has its step count written in: it is
built twice, for the ladder's --steps (the run whose losses are checked) and for LARGE_STEPS
(the timed runs, which the ladder stops when step k + 1 is printed), and its COMMAND picks the
build by {steps}.  A rung with `steps_at_run` takes {steps} itself and runs the large build.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FORMAT = "cymicrogpt-peers/1"
LARGE_STEPS = 10_000_000  # more steps than any calibrated run: the ladder stops the program first
BUILD_TIMEOUT_S = 1800


class RecipeError(Exception):
    """ports.json is unusable, a clone does not match its recipe, or a build failed: one line."""


@dataclass(frozen=True)
class Patch:
    path: str
    pattern: str
    replacement: str


@dataclass(frozen=True)
class Rung:
    name: str
    kind: str
    command: str
    note: str = ""
    steps_at_run: bool = False


@dataclass(frozen=True)
class Port:
    key: str
    repository: str
    commit: str
    toolchain: str
    patches: tuple[Patch, ...]
    build: tuple[str, ...]
    rungs: tuple[Rung, ...]

    @property
    def steps_at_build(self) -> bool:
        return any("{steps}" in text for text in (*self.build, *(p.replacement for p in self.patches)))

    def clone_name(self) -> str:
        """The folder name compare_peers.py's --clones looks for: owner+name."""
        return self.repository.replace("/", "+")


def load(path: Path) -> tuple[dict[str, str], dict[str, Port]]:
    """(ours, ports) from a ports.json; RecipeError naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise RecipeError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecipeError(f"{path}: not a ports file (format {FORMAT})")
    try:
        ports = {key: _port(key, entry) for key, entry in data["ports"].items()}
        ours = {str(name): str(kind) for name, kind in data.get("ours", {}).items()}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RecipeError(f"{path}: bad recipe: {type(exc).__name__}: {exc}") from None
    names = [rung.name for port in ports.values() for rung in port.rungs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RecipeError(f"{path}: two rungs named {', '.join(repeated)}")
    return ours, ports


def _port(key: str, entry: dict) -> Port:
    rungs = tuple(Rung(name=r["name"], kind=r["kind"], command=r["command"], note=r.get("note", ""),
                       steps_at_run=bool(r.get("steps_at_run", False))) for r in entry["rungs"])
    for rung in rungs:
        if not rung.name or "=" in rung.name or rung.name != rung.name.strip():
            raise ValueError(f"rung name {rung.name!r}: no '=', no surrounding spaces, not empty")
    patches = tuple(Patch(p["path"], p["pattern"], p["replacement"]) for p in entry.get("patches", ()))
    for patch in patches:
        if re.compile(patch.pattern).groups != 1:
            raise ValueError(f"{key}: pattern {patch.pattern!r} needs exactly one group")
    return Port(key=key, repository=entry["repository"], commit=entry["commit"], toolchain=entry.get("toolchain", ""),
                patches=patches, build=tuple(entry["build"]), rungs=rungs)


def fill(template: str, **values: object) -> str:
    """`template` with {name} replaced by the shell-quoted value for each name given; other
    placeholders ({data} and {steps} of a rung's command) are left for the ladder."""
    quoted = {name: shlex.quote(str(value)) for name, value in values.items()}
    return re.sub(r"\{(\w+)\}", lambda m: quoted.get(m.group(1), m.group(0)), template)


def commands(port: Port, builds: dict[int, Path], check_steps: int) -> dict[str, str]:
    """Rung name -> COMMAND for `--program`, given the port's builds by step count.  A build
    with the step count written in runs for the checked run's count, the large one otherwise."""
    result = {}
    for rung in port.rungs:
        if not port.steps_at_build:
            result[rung.name] = fill(rung.command, build=builds[0])
        elif rung.steps_at_run:
            result[rung.name] = fill(rung.command, build=builds[LARGE_STEPS])
        else:
            checked, timed = (fill(rung.command, build=builds[n]) for n in (check_steps, LARGE_STEPS))
            result[rung.name] = f"if [ {{steps}} = {check_steps} ]; then {checked}; else {timed}; fi"
    return result


def step_counts(port: Port, check_steps: int) -> tuple[int, ...]:
    """The builds a port needs: 0 stands for the one build of a port that takes {steps} at run time."""
    return (check_steps, LARGE_STEPS) if port.steps_at_build else (0,)


def build(port: Port, clone: Path, steps: int, data: Path, python: str, work: Path,
          log: Callable[[str], None]) -> Path:
    """The build folder of `port` for `steps` steps (0: none written in), built once and then
    taken from the cache under `work` (keyed by the recipe, the clone's files and the data)."""
    key = hashlib.sha256(json.dumps([repr(port.patches), port.build, steps, str(data), python,
                                     fingerprint(clone)]).encode()).hexdigest()[:16]
    folder = work / "builds" / f"{port.key}-{key}"
    if (folder / ".built").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    src = clone
    if port.patches:
        src = folder / "src"
        shutil.copytree(clone, src, ignore=shutil.ignore_patterns(".git"), symlinks=True)
        for patch in port.patches:
            apply_patch(src / patch.path, patch, steps, port.key)
    log_path = folder / "build.log"
    log(f"building {port.key} ({port.repository}{f', {steps} steps' if steps else ''}) in {folder}")
    for template in port.build:
        command = fill(template, src=src, build=folder, steps=steps, data=data, python=python)
        with open(log_path, "ab") as out:
            out.write(f"$ {command}\n".encode())
            out.flush()
            try:
                done = subprocess.run(command, shell=True, cwd=folder, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                raise RecipeError(f"{port.key}: build ran past {BUILD_TIMEOUT_S} s: see {log_path}") from None
        if done.returncode != 0:
            raise RecipeError(f"{port.key}: build step failed with exit {done.returncode}: see {log_path}")
    (folder / ".built").touch()
    return folder


def apply_patch(path: Path, patch: Patch, steps: int, key: str) -> None:
    """Rewrite the patch's one match in `path` (a copy of the clone's file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{key}: cannot read {patch.path} in the clone: {exc.strerror or exc}") from None
    matches = list(re.finditer(patch.pattern, text))
    if len(matches) != 1:
        raise RecipeError(f"{key}: expected one match of {patch.pattern!r} in {patch.path}, found {len(matches)}: "
                          "the clone no longer matches the recipe")
    match = matches[0]
    new = patch.replacement.replace("{steps}", str(steps)).replace("{match}", match.group(1))
    path.write_text(text[:match.start(1)] + new + text[match.end(1):], encoding="utf-8")


def fingerprint(clone: Path) -> str:
    """sha256 over the clone's files (not .git): a change in the clone rebuilds."""
    digest = hashlib.sha256()
    for path in sorted(p for p in clone.rglob("*") if p.is_file() and ".git" not in p.relative_to(clone).parts):
        digest.update(str(path.relative_to(clone)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def head_commit(clone: Path) -> str | None:
    """The clone's checked-out commit, or None when it is not a git clone (or git is missing)."""
    try:
        done = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
