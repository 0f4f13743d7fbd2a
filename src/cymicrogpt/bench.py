"""`cymicrogpt bench`: the efficiency ladder, the same training run on every implementation.

Every implementation gets the same initial weights and the same documents in the same
order (microgpt's seed-42 shuffle and init).  Each runs in a fresh process of its own,
so its peak memory is its own and a crash or a missing dependency fails only its row.
Per-step wall times (time.perf_counter) exclude the first, warm-up step; the table
reports medians.  The speed-up compares each implementation with the reference over the
steps both ran (the reference may run fewer), so both are timed on the same documents.
"""
from __future__ import annotations

import multiprocessing
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Optional, Sequence

from .config import DEFAULT_LR, DEFAULT_SEED, GPTConfig
from .ladder import IMPLEMENTATIONS, NotInstalled, trainer_class
from .progress import Progress
from .training import initialise

DEFAULT_REF_STEPS = 20  # the reference takes ~0.2 s per default step; more is just waiting
LOSS_WINDOW = 50  # steps per point of the chart's smoothed loss curves


@dataclass
class Row:
    impl: str
    status: str = "ok"  # ok | not installed | failed: <reason>
    step_times: list[float] = field(default_factory=list)  # seconds, warm-up step excluded
    losses: list[float] = field(default_factory=list)
    peak_rss_mib: Optional[float] = None

    @property
    def ms_per_step(self) -> Optional[float]:
        return statistics.median(self.step_times) * 1e3 if self.step_times else None


def _measure(impl: str, config: GPTConfig, layout, weights, token_seqs, lr: float, num_steps: int,
             queue) -> None:
    """Worker process: train `impl` on token_seqs, one per step, as the first steps of a
    num_steps-long run (the learning-rate decay depends on it); report a Row on `queue`."""
    row = Row(impl)
    try:
        trainer = trainer_class(impl)(config, layout, weights, lr, num_steps)
        progress = Progress(len(token_seqs), stream=sys.stdout)
        sys.stdout.write(f"{impl}:\n")
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
        traceback.print_exc(limit=3, file=sys.stderr)
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
               ref_steps: int = DEFAULT_REF_STEPS, seed: int = DEFAULT_SEED, lr: float = DEFAULT_LR) -> list[Row]:
    """One Row per implementation, each measured in a fresh process."""
    docs = list(docs)
    _, tokenizer, layout, weights = initialise(docs, config, seed)  # the same start as train()
    token_seqs = [tokenizer.encode(docs[i % len(docs)]) for i in range(steps)]
    context = multiprocessing.get_context("spawn")
    rows = []
    for impl in impls:
        n = min(steps, ref_steps) if impl == "python" else steps
        queue = context.Queue()
        worker = context.Process(target=_measure, args=(impl, config, layout, weights, token_seqs[:n], lr, steps, queue))
        worker.start()
        row = _wait_for_row(worker, queue)
        worker.join()
        if row is None:  # the worker died without reporting (e.g. a C-level crash)
            row = Row(impl, status=f"failed: worker process exited with code {worker.exitcode}")
        rows.append(row)
    return rows


def _wait_for_row(worker, queue) -> Optional[Row]:
    while True:
        try:
            return queue.get(timeout=0.5)
        except Empty:
            if not worker.is_alive():
                try:
                    return queue.get(timeout=1.0)  # reported just before exiting
                except Empty:
                    return None


def compare(rows: list[Row]) -> list[dict]:
    """Table cells: median ms/step, speed-up over python on common steps, max |loss diff|."""
    ref = next((r for r in rows if r.impl == "python" and r.status == "ok"), None)
    table = []
    for row in rows:
        cells = {"impl": row.impl, "status": row.status, "ms": row.ms_per_step, "speedup": None,
                 "loss_diff": None, "rss": row.peak_rss_mib, "steps": len(row.losses)}
        if ref is not None and row.status == "ok" and row.step_times:
            common = min(len(ref.step_times), len(row.step_times))
            if common:
                cells["speedup"] = statistics.median(ref.step_times[:common]) / statistics.median(row.step_times[:common])
            common_losses = min(len(ref.losses), len(row.losses))
            cells["loss_diff"] = max((abs(a - b) for a, b in zip(ref.losses[:common_losses], row.losses)), default=0.0)
        table.append(cells)
    return table


def format_table(table: list[dict]) -> str:
    lines = ["| implementation | ms/step (median) | speed-up vs python | max abs loss diff vs python | peak RSS (MiB) | steps | status |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for c in table:
        ms = f"{c['ms']:.4f}" if c["ms"] is not None else "-"
        speed = f"{c['speedup']:.0f}x" if c["speedup"] is not None else "-"
        diff = f"{c['loss_diff']:.1e}" if c["loss_diff"] is not None else "-"
        rss = f"{c['rss']:.0f}" if c["rss"] is not None else "-"
        lines.append(f"| {c['impl']} | {ms} | {speed} | {diff} | {rss} | {c['steps']} | {c['status']} |")
    return "\n".join(lines)


def environment() -> str:
    import numpy

    try:
        import torch

        torch_version = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_version = "not installed"
    from . import __version__

    return (f"cymicrogpt {__version__}; Python {platform.python_version()}; NumPy {numpy.__version__}; "
            f"torch {torch_version}; {platform.machine()}, {multiprocessing.cpu_count()} CPUs, "
            f"{platform.platform()}")


def write_outputs(out_dir: Path, rows: list[Row], table: list[dict], config: GPTConfig, command: str) -> list[str]:
    """DIR/ladder.md, and DIR/ladder.png when matplotlib is installed.  Returns notes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = []
    md = [f"# Efficiency ladder ({time.strftime('%Y-%m-%d')})", "",
          f"Command: `{command}`", "",
          f"Model: n_layer={config.n_layer}, n_embd={config.n_embd}, block_size={config.block_size}, "
          f"n_head={config.n_head}", "",
          f"Machine: {environment()}", "", format_table(table), "",
          "ms/step: median over the timed steps (the first step is a warm-up and not timed). "
          "Speed-up: the reference's median over the steps both ran divided by this "
          "implementation's median over those same steps (same documents). "
          "Peak RSS: the whole worker process, interpreter and imports included.", ""]
    (out_dir / "ladder.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        notes.append("matplotlib is not installed (pip install 'cymicrogpt[bench]'): no ladder.png")
        return notes
    ok = [c for c in table if c["ms"] is not None]
    fig, (ax_speed, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    bars = ax_speed.barh([c["impl"] for c in ok], [c["ms"] for c in ok], color="tab:blue")
    ax_speed.bar_label(bars, labels=[f"{c['ms']:.3g} ms" for c in ok], padding=3, fontsize=8)
    ax_speed.set_xscale("log")
    ax_speed.set_xlim(right=max(c["ms"] for c in ok) * 20)
    ax_speed.set_xlabel("ms per training step (log scale)")
    ax_speed.invert_yaxis()
    longest = max((len(row.losses) for row in rows), default=0)
    window = max(1, min(LOSS_WINDOW, longest // 10))
    for row in rows:
        if len(row.losses) >= window:
            smooth = np.convolve(row.losses, np.ones(window) / window, mode="valid")  # running mean
            ax_loss.plot(range(window, len(row.losses) + 1), smooth, label=row.impl, linewidth=1)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss" if window == 1 else f"loss (running mean of {window} steps)")
    ax_loss.legend()
    fig.suptitle(f"microgpt training: n_layer={config.n_layer}, n_embd={config.n_embd}, "
                 f"block_size={config.block_size}")
    fig.tight_layout()
    fig.savefig(out_dir / "ladder.png", dpi=110)
    plt.close(fig)
    return notes


def parse_impls(text: str) -> list[str]:
    impls = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in impls if name not in IMPLEMENTATIONS]
    if unknown or not impls:
        raise ValueError(f"unknown implementation(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {','.join(IMPLEMENTATIONS)}")
    return impls
