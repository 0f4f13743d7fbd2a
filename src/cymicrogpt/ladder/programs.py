"""Any program as a rung of the ladder: `cymicrogpt bench --program NAME=COMMAND`.

COMMAND is a shell command line.  Before it runs, `{data}` in it becomes the path of a file
holding the ladder's documents (in file order: the program shuffles them itself, as
microgpt does), `{steps}` the number of training steps of this run, and `{n_layer}`,
`{n_embd}`, `{block_size}`, `{n_head}` the ladder's model shape.  It runs in a scratch
folder of its own where the documents are also `input.txt`, with stdin closed, in a session
of its own (a Ctrl-C at the terminal reaches only the ladder, which then ends it).

Its output must have one line per training step holding `step`, the step number and later
`loss` and a number (STEP_LINE): microgpt's `step    1 / 1000 | loss 3.3660` and
`step 1 loss 3.3659669475848504` both read.  A `num params: N` line, if printed, must
match the ladder's model.

A program is measured in three stages:

1. **Checked**: one run of `steps` steps (the ladder's --steps, untimed), whose losses are
   compared with the exact reference's on the same documents (agreement.py).
2. **Calibrated**: one run of FEW steps gives the start-up time s (with one step); then runs
   grow from `steps` steps (x2, or x10 while far short) until T(n) - T(FEW) lasts at least
   DOMINANCE start-ups and `min_time` seconds, and N is the step count that lasts that long
   at the time per step found: the difference then dominates the start-up's jitter (as
   pyperf calibrates its loops).  A 0.1 ms/step
   program with a 0.3 s start-up gets N near 30,000.  N is at least `at_least`: the ladder
   asks for --ref-steps + 1, so that every program's timed steps 2..N include the documents
   of the built-in rungs' shared steps (a step's time depends on its document's length).
3. **Timed**, `repeats` rounds: in each round every program runs N steps, then FEW steps,
   one program after another (interleaved, so a change of the machine's load hits all of
   them).  A round gives (T(N) - T(FEW)) / (N - FEW): the time per step with start-up,
   data loading and any sampling at the end cancelled.  The row reports the median over
   rounds and their range.

T(k) is wall time (time.perf_counter) from starting the command to its exit.  A program
that ignores `{steps}` (microgpt.py's original, 1000 steps written in) is stopped when it
prints step k + 1: then T(k) runs to that line, in both runs alike, so the difference is
still N - FEW steps; it should print unbuffered (Python: `-u`) for that line to arrive on time.

A program that does not start, exits non-zero, runs past `timeout`, or prints no step
lines or another number of them fails its row with one line saying why (ProgramError).
"""
from __future__ import annotations

import math
import os
import queue
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

from ..config import GPTConfig
from .agreement import Agreement, check_losses

STEP_LINE = re.compile(r"\bstep\s*(\d+)\b.*?\bloss\b\W*?([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)",
                       re.IGNORECASE)
PARAMS_LINE = re.compile(r"^num params:\s*(\d+)", re.MULTILINE)
FEW = 1  # steps of the short run, whose time is subtracted
DOMINANCE = 10  # the timed steps last at least this many start-ups
DEFAULT_MIN_TIME_S = 2.0  # ... and at least this long
DEFAULT_REPEATS = 5
DEFAULT_TIMEOUT_S = 600.0  # one run of a program, at most
STOP_POLL_S = 0.1  # how often a stop request is looked at while a program runs
MICROGPT_NAME = "microgpt.py"


class ProgramError(RuntimeError):
    """The program could not be measured; the message says why, in one line."""


class Stopped(Exception):
    """The measuring was stopped on request (`stopped()` became true)."""


@dataclass(frozen=True)
class Program:
    name: str  # the rung's name in the table
    command: str  # a shell command line, with placeholders (see the module docstring)
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables; placeholders filled in too


@dataclass(frozen=True)
class Timing:
    """How programs are timed (see the module docstring)."""

    repeats: int = DEFAULT_REPEATS  # rounds
    min_time: float = DEFAULT_MIN_TIME_S  # seconds the timed steps last at least
    timeout: float = DEFAULT_TIMEOUT_S  # seconds one run may take


@dataclass
class Measurement:
    """What the three stages found for one program (see the module docstring)."""

    name: str
    status: str = "not begun"  # ok | failed: <why> | stopped | not begun
    agreement: Optional[Agreement] = None
    printed: list[str] = field(default_factory=list)  # the checked run's losses, as printed
    timed_steps: Optional[int] = None  # N
    round_ms: list[float] = field(default_factory=list)  # each round's (T(N) - T(FEW)) / (N - FEW), in ms

    def summary(self) -> tuple[Optional[float], Optional[tuple[float, float]]]:
        """(median ms/step over the rounds, (min, max)); (None, None) before any round."""
        if not self.round_ms:
            return None, None
        return statistics.median(self.round_ms), (min(self.round_ms), max(self.round_ms))


def parse_program(text: str) -> Program:
    """NAME=COMMAND, as --program takes it; ValueError if either part is missing."""
    name, sep, command = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} has no '=': give NAME=COMMAND")
    if not name.strip():
        raise ValueError(f"{text!r} has an empty name: give NAME=COMMAND")
    if not command.strip():
        raise ValueError(f"{text!r} has an empty command: give NAME=COMMAND")
    return Program(name.strip(), command)


def microgpt_program(path: Path) -> Program:
    """--microgpt PATH: microgpt.py run unchanged with this Python, as its users run it.  A
    variant reading MG_INPUT, MG_STEPS, MG_SAMPLES, MG_LAYER and MG_EMBD (as the project's
    copy of the seed's script does) gets them set; the original ignores them."""
    env = (("MG_INPUT", "{data}"), ("MG_STEPS", "{steps}"), ("MG_SAMPLES", "0"), ("MG_LAYER", "{n_layer}"),
           ("MG_EMBD", "{n_embd}"))
    return Program(MICROGPT_NAME, f"{shlex.quote(sys.executable)} -u {shlex.quote(str(Path(path).resolve()))}", env)


def fill(template: str, data: Path, steps: int, config: GPTConfig, quote: Callable[[str], str] = shlex.quote) -> str:
    """The template with its placeholders replaced; the data path quoted with `quote`."""
    values = {"data": quote(str(data)), "steps": str(steps), "n_layer": str(config.n_layer),
              "n_embd": str(config.n_embd), "block_size": str(config.block_size), "n_head": str(config.n_head)}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def measure_programs(programs: Sequence[Program], docs: Sequence[str], config: GPTConfig, steps: int,
                     reference: Sequence[float], num_params: int, timing: Timing = Timing(), at_least: int = FEW + 1,
                     log: Callable[[str], None] = print, stopped: Callable[[], bool] = lambda: False
                     ) -> list[Measurement]:
    """One Measurement per program, in order.  `docs`: file order; `reference`: the exact
    losses of a `steps`-step run on them; `at_least`: the smallest N; `stopped`: once true,
    every program still being measured is ended and marked stopped."""
    measurements = [Measurement(program.name) for program in programs]
    live: list[tuple[Measurement, Runner]] = []
    with tempfile.TemporaryDirectory(prefix="cymicrogpt-programs-") as scratch:
        try:
            for index, (program, measurement) in enumerate(zip(programs, measurements)):
                runner = Runner(program, Path(scratch) / str(index), docs, config, timing.timeout, stopped)
                log(f"{program.name}: checking ({steps} steps) and calibrating")
                try:
                    _check_and_calibrate(measurement, runner, steps, reference, num_params, timing.min_time)
                    measurement.timed_steps = max(measurement.timed_steps, at_least)
                except ProgramError as exc:
                    measurement.status = f"failed: {exc}"
                    log(f"{program.name} failed: {exc}")
                    continue
                measurement.status = "ok"
                live.append((measurement, runner))
                log(f"{program.name}: {measurement.agreement.describe()}; timed as runs of "
                    f"{measurement.timed_steps} and {FEW} steps")
            for round_no in range(1, timing.repeats + 1):
                for measurement, runner in list(live):
                    try:
                        measurement.round_ms.append(_one_round(runner, measurement.timed_steps))
                    except ProgramError as exc:
                        measurement.status = f"failed: {exc}"
                        log(f"{measurement.name} failed: {exc}")
                        live.remove((measurement, runner))
                        continue
                    log(f"round {round_no} / {timing.repeats}: {measurement.name}: {measurement.round_ms[-1]:.4g} ms/step "
                        f"(N = {measurement.timed_steps})")
        except Stopped:
            for measurement in measurements:
                if measurement.status in ("ok", "not begun") and len(measurement.round_ms) < timing.repeats:
                    measurement.status = "stopped"
    return measurements


def _check_and_calibrate(measurement: Measurement, runner: "Runner", steps: int, reference: Sequence[float],
                         num_params: int, min_time: float) -> None:
    """Stage 1, the agreement of a `steps`-step run; stage 2, the timed step count N."""
    if steps <= FEW:
        raise ProgramError(f"needs more than {FEW} steps to be timed (--steps {steps})")
    checked, losses, output = runner.run(steps)
    params = PARAMS_LINE.search(output)
    if params and int(params.group(1)) != num_params:
        raise ProgramError(f"it built a model of {params.group(1)} parameters, the ladder's has {num_params}")
    measurement.printed, measurement.agreement = losses, check_losses(losses, list(reference)[:steps])
    measurement.timed_steps = _calibrate(runner, steps, checked, min_time)


def _calibrate(runner: "Runner", steps: int, checked: float, min_time: float) -> int:
    """N such that T(N) - T(FEW) lasts `target`: DOMINANCE start-ups and at least min_time.
    Like pyperf's loop calibration, the run grows (x2, or x10 while far short) until its
    difference reaches the target: a difference of a few milliseconds, drowned in the
    start-up's jitter, never sets N."""
    few, _, _ = runner.run(FEW)  # start-up and FEW steps; warm, after the checked run
    enough = max(DOMINANCE * few, min_time)  # an upper bound of the target: few holds a step too
    n, elapsed = steps, checked - few
    while elapsed < enough:
        n = FEW + (n - FEW) * (10 if elapsed < enough / 10 else 2)
        elapsed = runner.run(n)[0] - few
    per_step = elapsed / (n - FEW)
    target = max(DOMINANCE * max(few - FEW * per_step, 0.0), min_time)
    return FEW + max(1, math.ceil(target / per_step))


def _one_round(runner: "Runner", timed_steps: int) -> float:
    """(T(N) - T(FEW)) / (N - FEW), in milliseconds."""
    long, _, _ = runner.run(timed_steps)
    short, _, _ = runner.run(FEW)
    return (long - short) / (timed_steps - FEW) * 1e3


class Runner:
    """Runs one program, for any number of steps, in its scratch folder."""

    def __init__(self, program: Program, folder: Path, docs: Sequence[str], config: GPTConfig, timeout: float,
                 stopped: Callable[[], bool]) -> None:
        folder.mkdir(parents=True)
        self.program, self.folder, self.config = program, folder, config
        self.timeout, self.stopped = timeout, stopped
        self.data = folder / "input.txt"
        self.data.write_text("\n".join(docs) + "\n", encoding="utf-8")

    def run(self, steps: int) -> tuple[float, list[str], str]:
        """(seconds from start to exit, the losses printed for steps 1..steps, its stdout).
        ProgramError if it fails or prints another number of step lines; Stopped on request."""
        command = fill(self.program.command, self.data, steps, self.config)
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   **{key: fill(value, self.data, steps, self.config, quote=str) for key, value in self.program.env})
        errors = self.folder / "stderr.txt"  # a file, not a pipe: a full pipe would stall the program
        with open(errors, "w", encoding="utf-8") as stderr:
            start = time.perf_counter()
            process = subprocess.Popen(command, shell=True, cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=stderr, text=True, encoding="utf-8",
                                       errors="replace", start_new_session=True)
        lines: queue.Queue = queue.Queue()
        pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        pump.start()
        try:
            end, output, losses = self._read(process, lines, start, steps)
        finally:
            _end_session(process)
            pump.join(timeout=5.0)
        if end is None:
            raise ProgramError(f"{_exit(process.returncode)} after {len(losses)} steps: {_last_line(errors)}")
        printed = [losses.get(step) for step in range(1, steps + 1)]
        if None in printed:
            raise ProgramError(f"printed {len(losses)} step lines for a run of {steps} steps" if losses else
                               f"printed no step lines (`step N ... loss X`): {_last_line(errors)}")
        return end - start, printed, output

    def _read(self, process: subprocess.Popen, lines: queue.Queue, start: float, steps: int):
        """(the time it ended, None if it failed; its output; step -> loss as printed).  Reads
        until the program exits, or prints step steps + 1 (then the time is taken there)."""
        output: list[str] = []
        losses: dict[int, str] = {}  # step -> loss as printed; a progress line reprinted wins
        while True:
            if self.stopped():
                raise Stopped
            if time.perf_counter() - start > self.timeout:
                raise ProgramError(f"ran past --timeout {self.timeout:g} s")
            try:
                line = lines.get(timeout=STOP_POLL_S)
            except queue.Empty:
                continue
            if line is None:  # it closed its output: it is ending
                process.wait()
                return (None if process.returncode else time.perf_counter()), "".join(output), losses
            output.append(line)
            for part in line.split("\r"):
                match = STEP_LINE.search(part)
                if match:
                    losses[int(match.group(1))] = match.group(2)
            if len(losses) > steps:  # it ignores {steps}: stopped at its next step
                return time.perf_counter(), "".join(output), losses


def _pump(stream: IO[str], lines: queue.Queue) -> None:
    """Hands the program's lines over as they arrive; None at its end."""
    with stream:
        for line in stream:
            lines.put(line)
    lines.put(None)


def _end_session(process: subprocess.Popen) -> None:
    """Kills whatever is left of the program's session (the shell and its children)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # all gone already
        pass
    process.wait()


def _exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _last_line(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return _shorten(text[-1]) if text else "no error output"


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
