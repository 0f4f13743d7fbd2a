"""`cymicrogpt bench`: the efficiency ladder, the same training run on every implementation.

Every implementation gets the same initial weights and the same documents in the same
order (microgpt's seed-42 shuffle and init).  Each runs in a fresh process of its own,
so its peak memory is its own and a crash or a missing dependency fails only its row.
Other programs (`--program NAME=COMMAND`; `--microgpt PATH` for the seed's microgpt.py) are
rungs too: checked against the exact losses, then timed as whole processes (programs.py).

Per-step wall times (time.perf_counter) exclude the first, warm-up step.  Each implementation
runs in `repeats` rounds, a fresh worker each, the implementations taking turns; its figure
is the median over rounds of each round's median, with the rounds' range.  The slow rows
(the reference) run only the first `ref_steps` documents, so the table has two time columns:
the median over the shared steps 2..ref_steps, which every built-in row ran on the same
documents, and the median over all the steps a row ran.  A program's row has its own
whole-process figure in the first column instead.  Every speed-up is the ratio of the
baseline's cell of that column to the row's (the baseline: `baseline`, by default
microgpt.py when it is a rung, else the reference; see default_baseline).

Losses are compared with the reference's, step by step.  Beyond the steps the reference ran,
the reference curve continues with an exact backend's (cython), and only if that backend's
losses were float-== to the reference's on every step both ran.

A stop signal (see interrupts.py) ends the ladder at once: the worker or program measuring is ended,
its row is marked stopped, the rows not begun are left out, and the table of what was
measured is written all the same, headed as partial.  Workers start with SIGINT and SIGHUP
blocked, so a Ctrl-C or a closed terminal, which reach every process of the terminal's
foreground group, stop them only through this process, which then ends them (SIGTERM).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Optional, Sequence

from ..engines import REFERENCE_BACKEND
from ..config import DEFAULT_LR, DEFAULT_SEED, GPTConfig
from . import EXACT, IMPLEMENTATIONS, trainer_class
from .agreement import FULL_DIGITS, IDENTICAL, check_floats
from .base import NotInstalled
from .programs import FEW, MICROGPT_NAME, Measurement, Program, Timing, measure_programs
from ..files import write_atomically
from ..interrupts import StopRequest, signal_name
from ..output import Console
from ..params import num_params
from ..progress import Progress
from ..training import initialise, start_run

DEFAULT_REF_STEPS = 20  # the reference takes ~0.1-0.2 s per default step; more is just waiting
LADDER_TABLE, LADDER_CHART = "ladder.md", "ladder.png"
LADDER_PRODUCTS = (LADDER_TABLE, LADDER_CHART)  # what `cymicrogpt bench` writes into its --out folder
DIFF_FLOOR = 1e-18  # where the loss chart draws a difference of exactly 0 (log scale)


@dataclass
class Row:
    impl: str
    status: str = "ok"  # ok | not installed | skipped: <reason> | failed: <reason>
    step_times: list[float] = field(default_factory=list)  # seconds, steps 2, 3, ... (warm-up excluded), round 1
    losses: list[float] = field(default_factory=list)  # steps 1, 2, ...
    peak_rss_mib: Optional[float] = None
    command: Optional[str] = None  # a program's command line (None: a built-in implementation)
    measurement: Optional[Measurement] = None  # a program's check and timing (programs.py)
    later_rounds: list[list[float]] = field(default_factory=list)  # step_times of rounds 2, 3, ... (--repeats)

    @property
    def rounds(self) -> list[list[float]]:
        """Each round's step times (a round: one fresh worker, the same steps)."""
        return [self.step_times] + self.later_rounds

    @property
    def ms_per_step(self) -> Optional[float]:
        """Median over every timed step this row ran, in its first round."""
        return statistics.median(self.step_times) * 1e3 if self.step_times else None

    def ms_over(self, timed_steps: int) -> tuple[Optional[float], Optional[tuple[float, float]]]:
        """(median over rounds of each round's median over its first `timed_steps` timed
        steps (steps 2..timed_steps + 1), (min, max) over rounds); (None, None) if not measured."""
        if self.status != "ok" or len(self.step_times) < timed_steps or timed_steps <= 0:
            return None, None
        per_round = [statistics.median(times[:timed_steps]) * 1e3 for times in self.rounds]
        return statistics.median(per_round), (min(per_round), max(per_round))


def _measure(impl: str, config: GPTConfig, layout, weights, token_seqs, lr: float, num_steps: int,
             queue) -> None:
    """Worker process: train `impl` on token_seqs, one per step, as the first steps of a
    num_steps-long run (the learning-rate decay depends on it); report a Row on `queue`."""
    row = Row(impl)
    out = Console()  # a closed or full stdout costs the progress lines, never the measurement
    try:
        trainer = trainer_class(impl)(config, layout, weights, lr, num_steps)
        progress = Progress(len(token_seqs), stream=out)
        out.print(f"{impl}:")
        for i, tokens in enumerate(token_seqs):
            start = time.perf_counter()
            loss = trainer.step(tokens)
            elapsed = time.perf_counter() - start
            if i > 0:
                row.step_times.append(elapsed)
            row.losses.append(float(loss))
            progress.update(i + 1, loss)
        progress.close()
    except NotInstalled as exc:
        row.status = f"not installed ({exc})"
    except Exception as exc:  # a failing implementation is reported in its row, not fatal
        row.status = f"failed: {type(exc).__name__}: {exc}"
        out.print(f"{impl} failed: {type(exc).__name__}: {exc}")  # one line, as the table says it
    row.peak_rss_mib = peak_rss_mib()
    queue.put(row)


def peak_rss_mib() -> Optional[float]:
    """This process's peak resident memory, or None where `resource` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run_ladder(docs: Sequence[str], config: GPTConfig, steps: int, impls: Sequence[str],
               ref_steps: int = DEFAULT_REF_STEPS, seed: int = DEFAULT_SEED, lr: float = DEFAULT_LR,
               programs: Sequence[Program] = (), timing: Timing = Timing(), out: Optional[Console] = None,
               stop: Optional[StopRequest] = None) -> list[Row]:
    """One Row per implementation, then one per program (programs.py: checked against the
    exact losses of a `steps`-step run, then timed).  The implementations run in
    `timing.repeats` rounds, each round every implementation in turn, each time in a fresh
    process (interleaved, as the programs' rounds are, so that a change of the machine's load
    hits them all); a row's time is the median over its rounds, with their range.
    `out`: where this process prints (default: a Console over stdout); the workers print
    their progress to stdout, each through a Console of its own.  `stop`: once it is
    requested, the measuring ends (see the module docstring) and the rows so far are returned;
    a row stopped after its first round keeps the rounds it finished."""
    out = Console() if out is None else out
    stop = StopRequest() if stop is None else stop
    file_order = list(docs)
    docs = list(docs)
    _, tokenizer, layout, weights = initialise(docs, config, seed)  # the same start as train()
    token_seqs = [tokenizer.encode(docs[i % len(docs)]) for i in range(steps)]
    short = min(steps, ref_steps)  # the slow rows' share
    built_in: dict[str, Row] = {}  # by implementation: its first round, later rounds added
    for round_no in range(1, timing.repeats + 1):
        if timing.repeats > 1 and impls:
            out.print(f"round {round_no} / {timing.repeats}")
        for impl in impls:
            if stop.requested:
                return list(built_in.values())
            first = built_in.get(impl)
            if first is not None and first.status != "ok":
                continue  # failed or not installed in an earlier round
            n = short if impl == REFERENCE_BACKEND else steps
            row = _run_worker(impl, config, layout, weights, token_seqs[:n], lr, steps, stop)
            if first is None:
                built_in[impl] = row
            elif row.status == "ok":
                first.later_rounds.append(row.step_times)
                first.peak_rss_mib = max(filter(None, (first.peak_rss_mib, row.peak_rss_mib)), default=None)
            elif not stop.requested:  # a stop ends only the round, not a row already measured
                first.status = f"{row.status} (in round {round_no})"
    rows = list(built_in.values())
    if programs and not stop.requested:
        reference = exact_losses(file_order, config, steps, seed, lr)
        measured = measure_programs(programs, file_order, config, steps, reference, num_params(layout), timing,
                                    at_least=short + 1, log=out.print, stopped=lambda: stop.requested)
        rows += [_program_row(program, measurement, stop) for program, measurement in zip(programs, measured)]
    return rows


def _run_worker(impl: str, config: GPTConfig, layout, weights, token_seqs, lr: float, num_steps: int,
                stop: StopRequest) -> Row:
    """One round of `impl`, measured in a fresh worker process (see _measure)."""
    context = multiprocessing.get_context("spawn")
    with _terminal_signals_blocked():  # inherited by the worker: see the module docstring
        queue = context.Queue()
        worker = context.Process(target=_measure,
                                 args=(impl, config, layout, weights, token_seqs, lr, num_steps, queue))
        worker.start()
    try:
        row = _wait_for_row(worker, queue, stop)
    finally:  # also when a second signal raises Interrupted here: no worker outlives us
        if worker.is_alive():
            worker.terminate()
        worker.join()
        queue.close()
    if row is None:
        row = Row(impl, status=f"stopped ({signal_name(stop.signum)})" if stop.requested else
                  f"failed: worker process exited with code {worker.exitcode}")  # e.g. a C-level crash
    return row


def exact_losses(docs: Sequence[str], config: GPTConfig, steps: int, seed: int, lr: float) -> list[float]:
    """The reference's losses for a `steps`-step run on `docs` (file order), computed by the
    compiled engine, which is float-== to the reference by contract (tests/test_parity.py)."""
    run = start_run(list(docs), config=config, steps=steps, seed=seed, lr=lr)
    run.train()
    return list(run.losses)


def _program_row(program: Program, measurement: Measurement, stop: StopRequest) -> Row:
    status = f"stopped ({signal_name(stop.signum)})" if measurement.status == "stopped" else measurement.status
    losses = [float(text) for text in measurement.printed] if measurement.agreement else []
    return Row(program.name, status=status, losses=losses, command=program.command, measurement=measurement)


@contextlib.contextmanager
def _terminal_signals_blocked():
    """SIGINT and SIGHUP blocked in this thread for the block (POSIX): a process started
    inside inherits the mask, so they never reach it; this process gets any that arrived
    once they are unblocked.

    multiprocessing's resource tracker (a process of its own, started by the first Queue)
    is started here too: it ignores SIGINT and SIGTERM itself, but a SIGHUP to the terminal's
    group would kill it, and its relaunch prints warnings and tracebacks."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows has no terminal signals to block
        yield
        return
    from multiprocessing import resource_tracker

    blocked = {signal.SIGINT, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # ensure_running unblocks SIGINT as it returns
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _wait_for_row(worker, queue, stop: StopRequest) -> Optional[Row]:
    """The worker's Row; None if it died without one, or once a stop is requested."""
    while not stop.requested:
        try:
            return queue.get(timeout=0.2)  # also how often a stop request is seen
        except Empty:
            if not worker.is_alive():
                try:
                    return queue.get(timeout=1.0)  # reported just before exiting
                except Empty:
                    return None
    return None


def reference_losses(rows: list[Row]) -> tuple[list[float], Optional[str]]:
    """The reference's loss at every step available, and the exact row that continues it
    past the reference's last step (None if none does).  See the module docstring."""
    ref = next((r for r in rows if r.impl == REFERENCE_BACKEND and r.status == "ok"), None)
    if ref is None:
        return [], None
    n = len(ref.losses)
    for row in rows:
        if (row.impl in EXACT and row.impl != REFERENCE_BACKEND and row.status == "ok"
                and len(row.losses) > n and row.losses[:n] == ref.losses):
            return ref.losses + row.losses[n:], row.impl
    return list(ref.losses), None


def stand_in_reference(rows: Sequence[Row]) -> Optional[Row]:
    """Without a measured python rung (too slow for a large model), the exact backend's row
    whose losses serve as the reference: float-== to python's by contract (tests/test_parity.py),
    not checked in this run, as the losses programs are checked against (exact_losses)."""
    if any(r.impl == REFERENCE_BACKEND and r.status == "ok" for r in rows):
        return None
    return next((r for r in rows if r.impl in EXACT and r.status == "ok"), None)


def default_baseline(rows: Sequence[Row]) -> Optional[str]:
    """The rung speed-ups are relative to, by default: microgpt.py when it was measured (as in
    the seed's table and every port's), else the reference, else the first rung measured."""
    measured = [r.impl for r in rows if r.status == "ok"]
    for name in (MICROGPT_NAME, REFERENCE_BACKEND):
        if name in measured:
            return name
    return measured[0] if measured else None


def compare(rows: list[Row], baseline: Optional[str] = None) -> list[dict]:
    """Table cells, one dict per row (see the module docstring and write_outputs' notes);
    speed-ups against the row named `baseline` (default: default_baseline)."""
    baseline = default_baseline(rows) if baseline is None else baseline
    timed = [len(r.step_times) for r in rows if r.status == "ok" and r.step_times]
    shared = min(timed, default=0)  # timed steps every built-in row ran: steps 2..shared + 1
    reference, continued_by = reference_losses(rows)
    ref_steps = next((len(r.losses) for r in rows if r.impl == REFERENCE_BACKEND and r.status == "ok"), 0)
    stand_in = stand_in_reference(rows)
    if stand_in is not None:
        reference = stand_in.losses
    table = []
    for row in rows:
        ms, ms_range = _row_ms(row, shared)
        # the row that continues the reference is compared only where the reference ran
        against = reference[:ref_steps] if row.impl == continued_by else reference
        compared = min(len(row.losses), len(against)) if row.status == "ok" else 0
        loss_diff = max(abs(a - b) for a, b in zip(row.losses, against)) if compared else None
        if row.measurement is not None:
            agreement = row.measurement.agreement
        else:  # a built-in rung's floats, compared in full
            agreement = check_floats(row.losses[:compared], against[:compared]) if compared else None
        table.append({
            "impl": row.impl, "status": row.status, "command": row.command, "shared_steps": shared,
            "ms": ms, "ms_range": ms_range, "rounds": _rounds(row) if ms is not None else 0,
            "how": _how_timed(row, shared),
            "ms_all": row.ms_per_step if row.status == "ok" else None, "baseline": baseline,
            "is_reference": row.impl == REFERENCE_BACKEND or row is stand_in, "stand_in": row is stand_in,
            "agreement": agreement, "loss_diff": loss_diff, "loss_steps": compared,
            "exact": agreement is not None and agreement.verdict == IDENTICAL and agreement.digits >= FULL_DIGITS,
            "rss": row.peak_rss_mib, "steps": len(row.losses),
        })
    base_ms = next((c["ms"] for c in table if c["impl"] == baseline), None)
    for c in table:
        c["speedup"] = base_ms / c["ms"] if base_ms and c["ms"] and c["ms"] > 0 else None
    return table


def _row_ms(row: Row, shared: int) -> tuple[Optional[float], Optional[tuple[float, float]]]:
    """The row's ms/step for the speed-ups, and its range over rounds."""
    if row.measurement is None:
        return row.ms_over(shared)
    return row.measurement.summary() if row.status == "ok" else (None, None)


def _rounds(row: Row) -> int:
    return len(row.rounds) if row.measurement is None else len(row.measurement.round_ms)


def _how_timed(row: Row, shared: int) -> str:
    if row.measurement is None:
        if not shared:
            return "-"
        rounds, (_, spread) = len(row.rounds), row.ms_over(shared)
        return (f"in process, median of steps 2-{shared + 1}"
                + (f", median of {rounds} rounds, range {spread[0]:.4g} to {spread[1]:.4g}"
                   if spread is not None and rounds > 1 else ""))
    m = row.measurement
    if not m.round_ms:
        return "-"
    low, high = min(m.round_ms), max(m.round_ms)
    return (f"whole process, (T({m.timed_steps}) - T({FEW})) / {m.timed_steps - FEW}, median of "
            f"{len(m.round_ms)} rounds, range {low:.4g} to {high:.4g}")


def format_table(table: list[dict]) -> str:
    baseline = table[0]["baseline"] if table else None
    columns = [("implementation", "---"), ("ms/step", "---:"), (f"speed-up vs {baseline}", "---:"),
               ("how timed", "---"), ("ms/step, all its steps", "---:"), ("steps", "---:"),
               ("losses vs reference (steps compared)", "---"), ("peak RSS (MiB)", "---:"), ("status", "---")]
    lines = ["| " + " | ".join(name for name, _ in columns) + " |",
             "|" + "|".join(align for _, align in columns) + "|"]
    for c in table:
        cells = [c["impl"], _number(c["ms"], "{:.4f}"), _ratio(c["speedup"]), c["how"], _number(c["ms_all"], "{:.4f}"),
                 str(c["steps"]), _loss_cell(c), _number(c["rss"], "{:.0f}"), _cell(c["status"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def _loss_cell(c: dict) -> str:
    if c["command"] is not None and c["agreement"] is not None:
        return c["agreement"].describe()
    if c["is_reference"] and c["status"] == "ok":
        return f"reference ({c['steps']} steps)" + (", exact by contract: no python rung" if c["stand_in"] else "")
    if c["loss_diff"] is None:
        return "-"
    if c["loss_diff"] == 0:
        return f"0, identical ({c['loss_steps']} steps)"
    return f"{c['loss_diff']:.1e} ({c['loss_steps']} steps)"


def environment() -> str:
    import numpy

    try:
        import torch

        torch_version = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_version = "not installed"
    from .._version import __version__

    return (f"cymicrogpt {__version__}; Python {platform.python_version()}; NumPy {numpy.__version__}; "
            f"torch {torch_version}; {platform.machine()}, {multiprocessing.cpu_count()} CPUs, "
            f"{platform.platform()}{load_average()}")


def load_average() -> str:
    """"; load average ...": how busy the machine was (timings on a busy one run slow), or ""."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):  # Windows has none
        return ""
    return f"; load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) at the end"


def write_outputs(out_dir: Path, rows: list[Row], table: list[dict], config: GPTConfig, command: str,
                  stopped_by: Optional[str] = None) -> list[str]:
    """DIR/ladder.md, and DIR/ladder.png when matplotlib is installed, each written
    atomically (files.py).  `stopped_by`: the signal that ended the ladder early, which the
    table's heading then says.  Returns notes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [*heading("Efficiency ladder", command, model_line(config), stopped_by), format_table(table), "",
          *explanations(rows, table)]
    write_atomically(out_dir / LADDER_TABLE, lambda fh: fh.write("\n".join(md).encode("utf-8")))

    def draw(plt):
        fig, (ax_speed, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2))
        _plot_speed(ax_speed, table)
        _, continued_by = reference_losses(rows)
        ref_steps = next((len(r.losses) for r in rows if r.impl == REFERENCE_BACKEND and r.status == "ok"), 0)
        _plot_loss_diffs(ax_loss, rows, continued_by, ref_steps)
        fig.suptitle(f"microgpt training: n_layer={config.n_layer}, n_embd={config.n_embd}, "
                     f"block_size={config.block_size}")
        return fig

    return save_chart(out_dir / LADDER_CHART, draw)


def heading(title: str, command: str, model: str, stopped_by: Optional[str]) -> list[str]:
    """The first lines of ladder.md: title and date, whether it is partial, command, model, machine."""
    partial = ([f"**Partial:** stopped by {stopped_by}. A row marked stopped was cut short; the "
                "implementations not begun by then are missing.", ""] if stopped_by else [])
    return [f"# {title} ({time.strftime('%Y-%m-%d')})", "", *partial, f"Command: `{command}`", "",
            f"Model: {model}", "", f"Machine: {environment()}", ""]


def model_line(config: GPTConfig, **shown: str) -> str:
    """"n_layer=1, n_embd=16, ...": the config's sizes, any of them shown otherwise by `shown`."""
    return ", ".join(f"{name}={value}" for name, value in {**dataclasses.asdict(config), **shown}.items())


def explanations(rows: list[Row], table: list[dict]) -> list[str]:
    """What a ladder table's columns mean, for these rows (lines of markdown)."""
    _, continued_by = reference_losses(rows)
    ref_steps = next((len(r.losses) for r in rows if r.impl == REFERENCE_BACKEND and r.status == "ok"), 0)
    shared = table[0]["shared_steps"] if table else 0
    stand_in = stand_in_reference(rows)
    md = [f"ms/step: for a built-in row, the median over rounds (--repeats, each round a fresh worker process, "
          f"the rows taking turns) of the median over steps 2-{shared + 1}, which every built-in row ran on the "
          "same documents (step 1 is a warm-up, not timed), timed inside the worker; for a "
          "program, the median over rounds of (T(N) - T(1)) / (N - 1), T(k) being the wall time of a whole "
          "run of k steps (start-up, data loading and sampling cancel), N calibrated per program so that "
          "the difference outlasts ten of its start-ups and --min-time, and covers the built-in rows' "
          f"steps (`how timed` gives N, the rounds and their range). {_speedup_note(table)} "
          "ms/step, all its steps: a built-in row's median over every step it ran in its first round "
          "(documents differ in length, so this can differ from the first column). "
          "Losses: for a built-in row, the largest |loss - reference loss| over the steps compared"
          + (f" (past step {ref_steps} the reference is {continued_by}'s run, whose losses were "
             f"float-== to python's on all {ref_steps} steps both ran)" if continued_by else "")
          + (f" (no python rung: the reference is {stand_in.impl}'s run, float-== to python's by contract, as "
             "the parity tests check, not in this run)" if stand_in else "")
          + "; for a program, its printed losses against the exact ones at the precision it printed: "
          "identical (bit for bit when printed in full, e.g. with repr), agrees to K significant digits, "
          "or differs from step S. Peak RSS: the whole worker process, interpreter and imports included.", ""]
    if not any(r.impl == MICROGPT_NAME for r in rows):
        md += ["microgpt.py itself was not timed in this run (--microgpt PATH adds it). Our pure-Python "
               "reference computes the same floats but is not microgpt.py and runs at another speed, so a "
               "speed-up over python is not one over microgpt.py.", ""]
    programs = [r for r in rows if r.command is not None]
    if programs:
        md += ["Programs:", "", *[f"- {r.impl}: `{r.command}`" for r in programs], ""]
    return md


def save_chart(path: Path, draw) -> list[str]:
    """The figure `draw(pyplot)` returns, written to `path` as PNG, atomically; without
    matplotlib, nothing is drawn and the note returned says so."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [f"matplotlib is not installed (pip install 'cymicrogpt[bench]'): no {path.name}"]
    fig = draw(plt)
    try:
        fig.tight_layout()
        write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)
    return []


def _speedup_note(table: list[dict]) -> str:
    baseline = next((c for c in table if c["impl"] == table[0]["baseline"]), None) if table else None
    if baseline is None:
        return "No rung was measured: no speed-ups."
    if baseline["ms"] is None:
        return f"The baseline, {baseline['impl']}, was not measured ({baseline['status']}): no speed-ups."
    return f"Each speed-up is {baseline['impl']}'s ms/step divided by the row's."


def _plot_speed(ax, table: list[dict]) -> None:
    """Bars of the ms/step column, fastest at the top, labelled with the speed-up against the
    baseline; the rungs whose losses are the reference's bit for bit in one colour, the rest
    in another."""
    ok = sorted((c for c in table if c["ms"] is not None and c["ms"] > 0), key=lambda c: c["ms"])
    if not ok:
        return
    colours = ["tab:blue" if c["exact"] else "tab:orange" for c in ok]
    bars = ax.barh([c["impl"] for c in ok], [c["ms"] for c in ok], color=colours)
    baseline = ok[0]["baseline"]
    labels = [f"{c['ms']:.3g} ms" + (f" ({_ratio(c['speedup'])} {baseline})" if c["speedup"] else "") for c in ok]
    ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(c["ms"] for c in ok) * 300)
    ax.set_xlabel("ms per training step (log scale)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="exact (bit for bit)"),
                       Patch(color="tab:orange", label="not exact, or not shown exact")], fontsize=8, loc="upper right")
    ax.invert_yaxis()


def _plot_loss_diffs(ax, rows: list[Row], continued_by: Optional[str], ref_steps: int) -> None:
    """|loss - reference loss| per step, log scale.  log(0) is undefined, so exactly-0
    differences go to a band at the bottom labelled "0 (identical)", one height per
    implementation so that none hides another's."""
    reference, _ = reference_losses(rows)
    largest = 0.0
    band = 0
    for row in rows:
        if row.impl == REFERENCE_BACKEND or row.status != "ok":
            continue
        against = reference[:ref_steps] if row.impl == continued_by else reference
        diffs = [abs(a - b) for a, b in zip(row.losses, against)]
        if not diffs:
            continue
        zero_at = DIFF_FLOOR * 2.0 ** band  # within [DIFF_FLOOR, 10 * DIFF_FLOOR)
        band += 1
        largest = max(largest, max(diffs))
        label = row.impl + (" (all identical)" if not any(diffs) else "")
        ax.plot(range(1, len(diffs) + 1), [d if d > 0 else zero_at for d in diffs], ".", markersize=3, label=label)
    if not band:
        return
    ax.set_yscale("log")
    ax.axhspan(DIFF_FLOOR / 1.5, DIFF_FLOOR * 2.0 ** band * 1.5, color="0.92", zorder=0)
    if reference:
        ulp = math.ulp(statistics.median(reference))
        ax.axhline(ulp, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate("1 ulp of the median loss", (1, ulp), textcoords="offset points", xytext=(2, 3), fontsize=7,
                    color="grey")
    top = max(1e-12, largest * 1e3)
    ax.set_ylim(DIFF_FLOOR / 3, top)
    decades = list(range(-16, int(math.log10(top)) + 1, 2))
    ax.set_yticks([DIFF_FLOOR * 2.0 ** (band / 2)] + [10.0 ** k for k in decades],
                  ["0 (identical)"] + [f"1e{k}" for k in decades])
    ax.minorticks_off()
    ax.set_xlabel("step")
    ax.set_ylabel("|loss - reference loss|")
    ax.legend(fontsize=8, loc="upper right")


def parse_impls(text: str) -> list[str]:
    impls = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in impls if name not in IMPLEMENTATIONS]
    if unknown or not impls:
        raise ValueError(f"unknown implementation(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {','.join(IMPLEMENTATIONS)}")
    return impls
