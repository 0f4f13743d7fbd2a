"""`cymicrogpt bench`: the efficiency ladder, the same training run on every implementation.

Every implementation gets the same initial weights and the same documents in the same
order (microgpt's seed-42 shuffle and init).  Each runs in a fresh process of its own,
so its peak memory is its own and a crash or a missing dependency fails only its row.
Optionally the seed's microgpt.py itself is timed in the same sitting (ladder/microgpt_script.py).

Per-step wall times (time.perf_counter) exclude the first, warm-up step.  The slow rows
(the reference, microgpt.py) run only the first `ref_steps` documents, so the table has two
time columns: the median over the shared steps 2..ref_steps, which every row ran on the same
documents and from which every speed-up is computed (a speed-up is the ratio of two cells of
that column), and the median over all the steps a row ran.

Losses are compared with the reference's, step by step.  Beyond the steps the reference ran,
the reference curve continues with an exact backend's (cython), and only if that backend's
losses were float-== to the reference's on every step both ran.

A stop signal (see interrupts.py) ends the ladder at once: the worker measuring is ended,
its row is marked stopped, the rows not begun are left out, and the table of what was
measured is written all the same, headed as partial.  Workers start with SIGINT and SIGHUP
blocked, so a Ctrl-C or a closed terminal, which reach every process of the terminal's
foreground group, stop them only through this process, which then ends them (SIGTERM).
"""
from __future__ import annotations

import contextlib
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
from typing import Optional, Sequence, Union

from ..engines import REFERENCE_BACKEND
from ..config import DEFAULT_LR, DEFAULT_SEED, GPTConfig
from . import EXACT, IMPLEMENTATIONS, NotInstalled, microgpt_script, trainer_class
from ..files import write_atomically
from ..interrupts import StopRequest, signal_name
from ..output import Console
from ..params import num_params
from ..progress import Progress
from ..training import initialise

DEFAULT_REF_STEPS = 20  # the reference takes ~0.1-0.2 s per default step; more is just waiting
LADDER_TABLE, LADDER_CHART = "ladder.md", "ladder.png"
LADDER_PRODUCTS = (LADDER_TABLE, LADDER_CHART)  # what `cymicrogpt bench` writes into its --out folder
DIFF_FLOOR = 1e-18  # where the loss chart draws a difference of exactly 0 (log scale)


@dataclass
class Row:
    impl: str
    status: str = "ok"  # ok | not installed | skipped: <reason> | failed: <reason>
    step_times: list[float] = field(default_factory=list)  # seconds, steps 2, 3, ... (warm-up excluded)
    losses: list[float] = field(default_factory=list)  # steps 1, 2, ...
    peak_rss_mib: Optional[float] = None

    @property
    def ms_per_step(self) -> Optional[float]:
        """Median over every timed step this row ran."""
        return statistics.median(self.step_times) * 1e3 if self.step_times else None

    def ms_over(self, timed_steps: int) -> Optional[float]:
        """Median over its first `timed_steps` timed steps (steps 2..timed_steps + 1)."""
        if self.status != "ok" or len(self.step_times) < timed_steps or timed_steps <= 0:
            return None
        return statistics.median(self.step_times[:timed_steps]) * 1e3


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
               microgpt: Optional[Union[str, Path]] = None, out: Optional[Console] = None,
               stop: Optional[StopRequest] = None) -> list[Row]:
    """One Row per implementation, each measured in a fresh process; with `microgpt` (the
    path of microgpt.py), a last row for the script itself over the first ref_steps steps.
    `out`: where this process prints (default: a Console over stdout); the workers print
    their progress to stdout, each through a Console of its own.  `stop`: once it is
    requested, the measuring ends (see the module docstring) and the rows so far are returned."""
    out = Console() if out is None else out
    stop = StopRequest() if stop is None else stop
    file_order = list(docs)
    docs = list(docs)
    _, tokenizer, layout, weights = initialise(docs, config, seed)  # the same start as train()
    token_seqs = [tokenizer.encode(docs[i % len(docs)]) for i in range(steps)]
    short = min(steps, ref_steps)  # the slow rows' share
    context = multiprocessing.get_context("spawn")
    rows = []
    for impl in impls:
        if stop.requested:
            return rows
        n = short if impl == REFERENCE_BACKEND else steps
        with _terminal_signals_blocked():  # inherited by the worker: see the module docstring
            queue = context.Queue()
            worker = context.Process(target=_measure,
                                     args=(impl, config, layout, weights, token_seqs[:n], lr, steps, queue))
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
        rows.append(row)
    if microgpt is not None and not stop.requested:
        rows.append(_measure_script(Path(microgpt), file_order, config, num_params(layout), short, steps, seed, lr,
                                    out, stop))
    return rows


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


def _measure_script(path: Path, file_order: list[str], config: GPTConfig, params: int, count: int,
                    num_steps: int, seed: int, lr: float, out: Console, stop: StopRequest) -> Row:
    row = Row(microgpt_script.NAME)
    if (seed, lr) != (DEFAULT_SEED, DEFAULT_LR):
        row.status = f"skipped: microgpt.py has seed {DEFAULT_SEED} and lr {DEFAULT_LR} written in"
        return row
    out.print(f"{microgpt_script.NAME} ({path}): {count} steps")
    try:
        row.step_times, row.losses, row.peak_rss_mib = microgpt_script.time_script(
            path, file_order, config, params, count, num_steps, stopped=lambda: stop.requested)
    except microgpt_script.Stopped:
        row.status = f"stopped ({signal_name(stop.signum)})"
    except (microgpt_script.ScriptError, OSError) as exc:
        row.status = f"failed: {exc}"
    return row


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


def compare(rows: list[Row]) -> list[dict]:
    """Table cells, one dict per row (see the module docstring and write_outputs' notes)."""
    timed = [len(r.step_times) for r in rows if r.status == "ok" and r.step_times]
    shared = min(timed, default=0)  # timed steps every row ran: steps 2..shared + 1
    ms_ref = next((r.ms_over(shared) for r in rows if r.impl == REFERENCE_BACKEND), None)
    ms_script = next((r.ms_over(shared) for r in rows if r.impl == microgpt_script.NAME), None)
    reference, continued_by = reference_losses(rows)
    ref_steps = next((len(r.losses) for r in rows if r.impl == REFERENCE_BACKEND and r.status == "ok"), 0)
    table = []
    for row in rows:
        ms = row.ms_over(shared)
        # the row that continues the reference is compared only where the reference ran
        against = reference[:ref_steps] if row.impl == continued_by else reference
        compared = min(len(row.losses), len(against)) if row.status == "ok" else 0
        table.append({
            "impl": row.impl, "status": row.status, "shared_steps": shared,
            "ms_shared": ms, "ms_all": row.ms_per_step if row.status == "ok" else None,
            "x_python": ms_ref / ms if ms and ms_ref else None,
            "x_microgpt": ms_script / ms if ms and ms_script else None,
            "is_reference": row.impl == REFERENCE_BACKEND,
            "loss_diff": max(abs(a - b) for a, b in zip(row.losses, against)) if compared else None,
            "loss_steps": compared, "rss": row.peak_rss_mib, "steps": len(row.losses),
        })
    return table


def format_table(table: list[dict]) -> str:
    shared = table[0]["shared_steps"] if table else 0
    window = f"steps 2-{shared + 1}" if shared else "shared steps"
    script = any(c["impl"] == microgpt_script.NAME for c in table)
    columns = [("implementation", "---"), (f"ms/step, {window} (same documents for all)", "---:"),
               ("speed-up vs python", "---:")]
    if script:
        columns.append(("speed-up vs microgpt.py", "---:"))
    columns += [("ms/step, all its steps", "---:"), ("steps", "---:"),
                ("max abs loss diff vs reference (steps compared)", "---"), ("peak RSS (MiB)", "---:"),
                ("status", "---")]
    lines = ["| " + " | ".join(name for name, _ in columns) + " |",
             "|" + "|".join(align for _, align in columns) + "|"]
    for c in table:
        cells = [c["impl"], _number(c["ms_shared"], "{:.4f}"), _ratio(c["x_python"])]
        if script:
            cells.append(_ratio(c["x_microgpt"]))
        cells += [_number(c["ms_all"], "{:.4f}"), str(c["steps"]), _loss_cell(c), _number(c["rss"], "{:.0f}"),
                  c["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def _loss_cell(c: dict) -> str:
    if c["is_reference"] and c["status"] == "ok":
        return f"reference ({c['steps']} steps)"
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
    from .. import __version__

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
    notes = []
    _, continued_by = reference_losses(rows)
    ref_steps = next((len(r.losses) for r in rows if r.impl == REFERENCE_BACKEND and r.status == "ok"), 0)
    shared = table[0]["shared_steps"] if table else 0
    partial = ([f"**Partial:** stopped by {stopped_by}. A row marked stopped was cut short; the "
                "implementations not begun by then are missing.", ""] if stopped_by else [])
    md = [f"# Efficiency ladder ({time.strftime('%Y-%m-%d')})", "", *partial,
          f"Command: `{command}`", "",
          f"Model: n_layer={config.n_layer}, n_embd={config.n_embd}, block_size={config.block_size}, "
          f"n_head={config.n_head}", "",
          f"Machine: {environment()}", "", format_table(table), "",
          f"ms/step, steps 2-{shared + 1}: the median over the steps every row ran, on the same documents "
          "(step 1 is a warm-up, not timed). Each speed-up is the ratio of two cells of this column: "
          "the slower implementation's time divided by this row's. "
          "ms/step, all its steps: the median over every step the row ran (documents differ in length, "
          "so this can differ from the first column). "
          "Loss diff: the largest |loss - reference loss| over the steps compared"
          + (f"; past step {ref_steps} the reference is {continued_by}'s run, whose losses were "
             f"float-== to python's on all {ref_steps} steps both ran" if continued_by else "")
          + ". Peak RSS: the whole worker process, interpreter and imports included.", ""]
    if any(r.impl == microgpt_script.NAME for r in rows):
        md += ["microgpt.py: the script itself, run unchanged in its own process on the same documents "
               "(the time between the lines it prints after each step); its losses are read as it prints "
               "them (the original prints 4 decimals, so a difference up to 5e-05 is only rounding).", ""]
    else:
        md += ["microgpt.py itself was not timed in this run. Our pure-Python reference computes the same "
               "floats but is not microgpt.py and runs at another speed, so a speed-up over python is not "
               "one over microgpt.py (benchmarks/bench_microgpt.py in the source tree measures the factor).", ""]
    text = "\n".join(md).encode("utf-8")
    write_atomically(out_dir / LADDER_TABLE, lambda fh: fh.write(text))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        notes.append("matplotlib is not installed (pip install 'cymicrogpt[bench]'): no ladder.png")
        return notes
    fig, (ax_speed, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2))
    _plot_speed(ax_speed, table)
    _plot_loss_diffs(ax_loss, rows, continued_by, ref_steps)
    fig.suptitle(f"microgpt training: n_layer={config.n_layer}, n_embd={config.n_embd}, "
                 f"block_size={config.block_size}")
    fig.tight_layout()
    try:
        write_atomically(out_dir / LADDER_CHART, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)
    return notes


def _plot_speed(ax, table: list[dict]) -> None:
    """Bars of the shared-steps column: the one the speed-ups come from."""
    ok = [c for c in table if c["ms_shared"] is not None]
    if not ok:
        return
    bars = ax.barh([c["impl"] for c in ok], [c["ms_shared"] for c in ok], color="tab:blue")
    labels = [f"{c['ms_shared']:.3g} ms" + (f" ({c['x_python']:,.0f}x python)" if c["x_python"] else "")
              for c in ok]
    ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(c["ms_shared"] for c in ok) * 300)
    ax.set_xlabel(f"ms per training step, steps 2-{ok[0]['shared_steps'] + 1} (log scale)")
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
