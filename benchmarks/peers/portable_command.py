"""The command a result file records, in a form that holds on any machine: what the peers table
prints, while the result file keeps the command as it ran.

compare_peers.py records its own command line as typed (`peers_command`), so it names the
running machine's folders.  Shown portably, a path option's value is:

- relative to the repository when it lies inside it (the driver runs from its root, so a
  relative value stays as typed);
- for an input (the seed script, the data, the clones, the recipes) beside the repository,
  relative to it as the developers lay things out: `../shared/seed/microgpt_from_article.py`,
  `../peers-src`;
- for a scratch folder or output of the run (--work, --out, --json) outside the repository,
  a placeholder: BUILD_DIR for --work, and anything under it as BUILD_DIR/...;
- anything else, a placeholder named after its option (DATA, CLONES, ...).

The repository the run was made in is the one whose train_losses.py the run's cymicrogpt rung
ran: compare_peers.py always adds that rung, with the script's absolute path.
"""
from __future__ import annotations

import shlex
from pathlib import PurePosixPath

INPUTS = {"--microgpt": "MICROGPT", "--data": "DATA", "--clones": "CLONES", "--ports": "PORTS"}
OUTPUTS = {"--work": "BUILD_DIR", "--out": "OUT_DIR", "--json": "RESULT_JSON"}
PORT = "--port"  # KEY=PATH, a clone: an input
OUR_RUNG = "cymicrogpt="
OUR_SCRIPT = ("benchmarks", "peers", "train_losses.py")


def portable(command: str, ladder_command: str = "") -> str:
    """`command` (a shell line) with its path options' values made portable (module docstring);
    `ladder_command` is the ladder's own recorded command, which tells where the run's
    repository was."""
    repository = run_repository(ladder_command)
    words = shlex.split(command)
    found = path_options(words)
    work = next((value for option, value, _ in found.values() if option == "--work"), None)
    for index, (option, value, prefix) in found.items():
        words[index] = prefix + _path(option, value, repository, work)
    return shlex.join(words)


def run_repository(ladder_command: str) -> PurePosixPath | None:
    """The repository of the run: the folder of the train_losses.py its cymicrogpt rung ran."""
    words = shlex.split(ladder_command)
    for program in (words[i + 1] for i, word in enumerate(words[:-1]) if word == "--program"):
        if program.startswith(OUR_RUNG):
            for word in shlex.split(program[len(OUR_RUNG):]):
                path = PurePosixPath(word)
                if path.is_absolute() and path.parts[-len(OUR_SCRIPT):] == OUR_SCRIPT:
                    return path.parents[len(OUR_SCRIPT) - 1]
    return None


def path_options(words: list[str]) -> dict[int, tuple[str, str, str]]:
    """Index of each path option's value in `words` -> (the option's full name, the value, and
    what precedes the value in that word: "--opt=" when written so, else "")."""
    found = {}
    for index, word in enumerate(words):
        name, equals, value = word.partition("=")
        option = _full_name(name) if word.startswith("--") else None
        if option and equals:
            found[index] = (option, value, f"{name}=")
        elif option and index + 1 < len(words):
            found[index + 1] = (option, words[index + 1], "")
    return found


def _full_name(typed: str) -> str | None:
    """The path option `typed` names, in full (argparse takes any unique prefix), or None."""
    names = (*INPUTS, *OUTPUTS, PORT)
    if typed in names:
        return typed
    matches = [name for name in names if name.startswith(typed)] if len(typed) > 2 else []
    return matches[0] if len(matches) == 1 else None


def _path(option: str, value: str, repository: PurePosixPath | None, work: str | None) -> str:
    if option == PORT:
        key, _, clone = value.partition("=")
        return f"{key}={_input(clone, 'CLONE', repository)}"
    if option in INPUTS:
        return _input(value, INPUTS[option], repository)
    path = PurePosixPath(value)
    if not path.is_absolute() or _inside(path, repository):
        return _relative(path, repository)
    if option != "--work" and work is not None and path.is_relative_to(work):
        return str(PurePosixPath(OUTPUTS["--work"]) / path.relative_to(work))
    return OUTPUTS[option]


def _input(value: str, placeholder: str, repository: PurePosixPath | None) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute() or _inside(path, repository):
        return _relative(path, repository)
    if repository is not None and path.is_relative_to(repository.parent):
        return str(".." / path.relative_to(repository.parent))
    return placeholder


def _inside(path: PurePosixPath, repository: PurePosixPath | None) -> bool:
    return repository is not None and path.is_relative_to(repository)


def _relative(path: PurePosixPath, repository: PurePosixPath | None) -> str:
    return str(path.relative_to(repository)) if path.is_absolute() else str(path)
