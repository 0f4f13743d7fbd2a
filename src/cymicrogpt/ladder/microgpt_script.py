"""Timing Karpathy's microgpt.py itself, step by step, as one more row of the ladder.

Our pure-Python reference is not microgpt.py: it computes the same floats, but its
iterative topological sort and its object layout make it run at another speed (faster,
where we measured).  Users compare ports against microgpt.py, so the ladder can time the
script itself, in the same sitting, on the same documents.

The script is run unchanged, as a user runs it (`python microgpt.py`, cyclic GC on), in a
scratch directory whose `input.txt` holds the ladder's documents, so its own seed-42
shuffle gives the ladder's document order.  Every training step ends with a line
`step N ... loss X`: the time between two such lines, read as they arrive, is one step
(forward, backward, Adam; the first line also includes start-up, so step 1 is not timed,
as for every other row).  After `steps` lines the process is stopped.

The script has its configuration written in (n_layer 1, n_embd 16, block 16, 4 heads,
seed 42, lr 0.01, 1000 steps).  A variant that reads MG_INPUT, MG_STEPS, MG_SAMPLES,
MG_LAYER and MG_EMBD from the environment (as the one kept for this project's measurements
does) gets them set; the original ignores them.  The row checks the "num params" line the
script prints against the ladder's model and refuses a mismatch.  Losses are read as
printed: the original prints 4 decimals, so only a script that prints repr() can match
the reference bit for bit.

The script runs in a session of its own, so a Ctrl-C at the terminal reaches only the
ladder, which stops it (`stopped`), kills it and removes its scratch directory.
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

from ..config import GPTConfig

NAME = "microgpt.py"
STEP_LINE = re.compile(r"^step\s+(\d+)\b.*?\bloss\s+(\S+)")
PARAMS_LINE = re.compile(r"^num params:\s*(\d+)")
LINE_TIMEOUT_S = 600.0  # no line for this long: the script is considered hung
STOP_POLL_S = 0.2  # how often a stop request is looked at while waiting for a line


class ScriptError(RuntimeError):
    """microgpt.py could not be timed; the message says why."""


class Stopped(Exception):
    """The timing was stopped on request (`stopped()` became true) before it finished."""


def time_script(path: Path, docs: Sequence[str], config: GPTConfig, num_params: int, steps: int,
                num_steps: int, stopped: Callable[[], bool] = lambda: False
                ) -> tuple[list[float], list[float], Optional[float]]:
    """Run microgpt.py for `steps` training steps on `docs` (file order, before the shuffle).

    Returns (step_times for steps 2..steps in seconds, the losses it printed, its peak RSS in
    MiB or None where /proc is missing).  `num_steps` is the run length it is told (its lr
    decay depends on it).  Raises Stopped once `stopped()` is true."""
    path = Path(path)
    if not path.is_file():
        raise ScriptError(f"{path} is not a file")
    with tempfile.TemporaryDirectory(prefix="cymicrogpt-microgpt-") as scratch:
        data = Path(scratch) / "input.txt"
        data.write_text("\n".join(docs) + "\n", encoding="utf-8")
        env = dict(os.environ, MG_INPUT=str(data), MG_STEPS=str(num_steps), MG_SAMPLES="0",
                   MG_LAYER=str(config.n_layer), MG_EMBD=str(config.n_embd), PYTHONUNBUFFERED="1")
        errors = Path(scratch) / "stderr.txt"  # a file, not a pipe: a full pipe would stall the script
        with open(errors, "w", encoding="utf-8") as stderr:
            process = subprocess.Popen([sys.executable, "-u", str(path.resolve())], cwd=scratch, env=env,
                                       stdout=subprocess.PIPE, stderr=stderr, text=True,
                                       encoding="utf-8", errors="replace", start_new_session=True)
        lines: queue.Queue = queue.Queue()
        pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        pump.start()
        try:
            return _read_steps(process, lines, errors, num_params, steps, stopped)
        finally:
            if process.poll() is None:
                process.kill()  # the script we started, done with (or failed)
            process.wait()
            pump.join(timeout=5.0)  # it reaches EOF now and closes the pipe


def _read_steps(process: subprocess.Popen, lines: queue.Queue, errors: Path, num_params: int, steps: int,
                stopped: Callable[[], bool]):
    stamps: list[float] = []
    losses: list[float] = []
    peak: Optional[float] = None
    while len(losses) < steps:
        line = _next_line(lines, stopped)
        now = time.perf_counter()
        if line is None:  # the script ended
            process.wait()
            last = (errors.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                    or ["no error output"])[-1]
            raise ScriptError(f"it exited with code {process.returncode} after {len(losses)} steps: {last}")
        match = PARAMS_LINE.match(line)
        if match and int(match.group(1)) != num_params:
            raise ScriptError(f"it built a model of {match.group(1)} parameters, the ladder's has "
                              f"{num_params} (its configuration is written in the script)")
        match = STEP_LINE.match(line)
        if match:
            try:
                losses.append(float(match.group(2)))
            except ValueError:
                raise ScriptError(f"cannot read the loss in its line {line.strip()!r}") from None
            stamps.append(now)
            if len(losses) == steps:
                peak = _peak_rss_mib(process.pid)  # before it is stopped
    return [b - a for a, b in zip(stamps, stamps[1:])], losses, peak


def _next_line(lines: queue.Queue, stopped: Callable[[], bool]) -> Optional[str]:
    """The script's next line (None: it ended); Stopped on request, ScriptError if it hangs."""
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while not stopped():
        try:
            return lines.get(timeout=STOP_POLL_S)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise ScriptError(f"no output for {LINE_TIMEOUT_S:.0f} s") from None
    raise Stopped


def _pump(stream: IO[str], lines: queue.Queue) -> None:
    """Hands the script's lines over as they arrive; None at its end."""
    with stream:
        for line in stream:
            lines.put(line)
    lines.put(None)


def _peak_rss_mib(pid: int) -> Optional[float]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s*(\d+)\s*kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None
