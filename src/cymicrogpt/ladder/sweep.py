"""`cymicrogpt bench --sweep PARAM=V1,V2,...`: the ladder at each value of one model size.

The seed claims that small models are bound by the graph's overhead and that other ways of
computing win only once the arithmetic per step grows.  A sweep measures where: the whole
ladder (bench.py's run_ladder: every rung, its rounds interleaved) at each value of
`n_embd`, `n_layer` or `block_size`, the values one after another in one sitting, the other
sizes as given.  It writes one table of time per step (rungs by values, in ladder.md and on
stdout, each value's full ladder table below it), `sweep.png` (time per step against the
value, log-log, one line per rung: solid where the rung's losses were the reference's bit
for bit at every value, dashed otherwise), and with --json one result entry per rung and
value, carrying the value (`"n_embd": 32`).

A program learns the model's shape only through its COMMAND's placeholders (`{n_embd}`
...; programs.py), so a program follows a sweep only if its command or environment holds
the swept one; one that does not would train the same model at every value, and is refused
before anything runs (check_programs).  --microgpt's environment names {n_layer} and
{n_embd} (MG_LAYER, MG_EMBD, for a microgpt.py that reads them): it follows those two
sweeps, and the original script, which reads neither, fails the rows of every other size
with its `num params` line; it cannot follow block_size.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..config import GPTConfig
from ..files import write_atomically
from ..interrupts import StopRequest
from ..output import Console
from .bench import (LADDER_TABLE, Row, compare, explanations, format_table, heading, model_line, run_ladder,
                    save_chart)
from .programs import Program

SWEEPABLE = ("n_embd", "n_layer", "block_size")
SWEEP_CHART = "sweep.png"
SWEEP_PRODUCTS = (LADDER_TABLE, SWEEP_CHART)  # what `bench --sweep` writes into its --out folder


@dataclass(frozen=True)
class Sweep:
    param: str  # one of SWEEPABLE
    values: tuple[int, ...]  # ascending, no repeats

    def label(self, value: int) -> str:
        return f"{self.param}={value}"


def parse_sweep(text: str) -> Sweep:
    """PARAM=V1,V2,..., as --sweep takes it; ValueError saying what is wrong."""
    param, sep, listed = text.partition("=")
    param = param.strip().replace("-", "_")
    if not sep:
        raise ValueError(f"{text!r} has no '=': give PARAM=V1,V2,... (PARAM one of {', '.join(SWEEPABLE)})")
    if param not in SWEEPABLE:
        raise ValueError(f"cannot sweep {param!r}; choose from {', '.join(SWEEPABLE)}")
    values = []
    for item in listed.split(","):
        try:
            values.append(int(item))
        except ValueError:
            raise ValueError(f"{param}: {_shorten(item.strip())!r} is not an integer "
                             f"(give {param}=V1,V2,...)") from None
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"{param}: {', '.join(map(str, repeated))} given twice")
    return Sweep(param, tuple(sorted(values)))


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_programs(sweep: Sweep, programs: Sequence[Program]) -> None:
    """ValueError for a program that cannot follow the sweep (see the module docstring)."""
    placeholder = "{" + sweep.param + "}"
    for program in programs:
        if not any(placeholder in text for text in (program.command, *(value for _, value in program.env))):
            raise ValueError(f"rung {program.name} cannot follow --sweep {sweep.param}: its command has no "
                             f"{placeholder} (a program learns the model's shape only from the placeholders "
                             "{n_layer}, {n_embd}, {block_size}, {n_head} in its COMMAND), so it would train "
                             "the same model at every value")


@dataclass
class Point:
    """The ladder measured at one value of the sweep."""

    value: int
    config: GPTConfig
    rows: list[Row]
    table: list[dict]  # bench.compare's cells


def run_sweep(docs: Sequence[str], sweep: Sweep, configs: Sequence[GPTConfig], steps: int, impls: Sequence[str],
              baseline: Optional[str], out: Console, stop: StopRequest, **ladder) -> list[Point]:
    """The ladder at each value, in order (`ladder`: run_ladder's other options); stops with
    the points measured so far once `stop` is requested (the last one possibly partial)."""
    points = []
    for value, config in zip(sweep.values, configs):
        if stop.requested:
            break
        out.print(f"--- {sweep.label(value)} ---")
        rows = run_ladder(docs, config, steps, impls, out=out, stop=stop, **ladder)
        points.append(Point(value, config, rows, compare(rows, baseline)))
    return points


def format_sweep_table(sweep: Sweep, points: Sequence[Point]) -> str:
    """Rungs by values: each cell the rung's ms/step and its speed-up against that value's
    baseline; then the fastest rung at each value, and the fastest exact one."""
    names = _rung_names(points)
    lines = ["| rung | " + " | ".join(sweep.label(p.value) for p in points) + " |",
             "|---|" + "---:|" * len(points)]
    for name in names:
        cells = [_cell(next((c for c in p.table if c["impl"] == name), None)) for p in points]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for title, exact_only in (("**fastest**", False), ("**fastest exact**", True)):
        lines.append(f"| {title} | " + " | ".join(_fastest(p.table, exact_only) for p in points) + " |")
    return "\n".join(lines)


def _rung_names(points: Sequence[Point]) -> list[str]:
    return list(dict.fromkeys(c["impl"] for p in points for c in p.table))


def _cell(c: Optional[dict]) -> str:
    if c is None:
        return "not run"
    if c["ms"] is None:
        return c["status"].split(":")[0].split(" (")[0]  # "failed", "not installed", "stopped": the details below
    speedup = c["speedup"]
    ratio = "" if speedup is None else f" ({speedup:,.0f}x)" if speedup >= 10 else f" ({speedup:.2f}x)"
    return f"{c['ms']:.4g} ms{ratio}"


def _fastest(table: list[dict], exact_only: bool) -> str:
    measured = [c for c in table if c["ms"] is not None and (c["exact"] or not exact_only)]
    return min(measured, key=lambda c: c["ms"])["impl"] if measured else "-"


def write_sweep_outputs(out_dir: Path, sweep: Sweep, points: Sequence[Point], base: GPTConfig, command: str,
                        stopped_by: Optional[str] = None) -> list[str]:
    """DIR/ladder.md (the sweep's table, then each value's ladder table) and, when
    matplotlib is installed, DIR/sweep.png, each written atomically.  Returns notes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    swept = ", ".join(map(str, sweep.values))
    model = model_line(base, **{sweep.param: f"{swept} (swept)"})
    baseline = points[0].table[0]["baseline"] if points and points[0].table else None
    legend = (f"Each cell: the rung's ms per training step at that value (as in the tables below), and in brackets "
              f"its speed-up against {baseline or 'the baseline'} at the same value. Fastest exact: the fastest rung "
              "whose losses were the reference's bit for bit at that value (without the python rung, an exact "
              "backend's run, cython's if measured, is the reference, exact by contract).")
    md = [*heading(f"Sweep of {sweep.param}", command, model, stopped_by), format_sweep_table(sweep, points), "",
          legend, ""]
    for point in points:
        md += [f"## {sweep.label(point.value)}", "", format_table(point.table), ""]
    if points:
        md += explanations(points[0].rows, points[0].table)
    write_atomically(out_dir / LADDER_TABLE, lambda fh: fh.write("\n".join(md).encode("utf-8")))
    return save_chart(out_dir / SWEEP_CHART, lambda plt: draw_chart(plt, sweep, points, model))


def draw_chart(plt, sweep: Sweep, points: Sequence[Point], model: str):
    """Time per step against the swept value, log-log, a line per rung: solid for a rung
    exact at every value it was measured at, dashed otherwise; the bars span its rounds."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for name in _rung_names(points):
        measured = [(p.value, c) for p in points for c in p.table if c["impl"] == name and c["ms"] is not None]
        if not measured:
            continue
        exact = all(c["exact"] for _, c in measured)
        xs, ys = [v for v, _ in measured], [c["ms"] for _, c in measured]
        low = [c["ms"] - (c["ms_range"] or (c["ms"],))[0] for _, c in measured]
        high = [(c["ms_range"] or (0, c["ms"]))[1] - c["ms"] for _, c in measured]
        by_contract = any(c["stand_in"] for _, c in measured)
        ax.errorbar(xs, ys, yerr=[low, high], fmt="o-" if exact else "s--", color=next(colours), capsize=3,
                    markersize=4, label=name + (" (exact by contract)" if by_contract else " (exact)" if exact else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(sweep.values), [str(v) for v in sweep.values])
    ax.minorticks_off()
    ax.set_xlabel(f"{sweep.param} (log scale)")
    ax.set_ylabel("ms per training step (log scale)")
    ax.grid(True, which="major", color="0.9")
    ax.legend(fontsize=8, title="solid: exact (bit for bit); dashed: not, or not shown", title_fontsize=7)
    ax.set_title(f"microgpt training step against {sweep.param} ({model})", fontsize=9)
    return fig
