"""The ladder's results, machine-readable (`bench --json FILE`), and two result files compared
(`bench --compare A.json B.json`).

A result file is one JSON object: the machine, the data, the config, the baseline, how
rungs were timed, `sweep` (null, or {"param": "n_embd", "values": [...]} for `bench --sweep`,
whose swept size is then null in `config`), and `results`, one entry per rung (per rung and
value for a sweep):

    name               the rung's name
    n_embd (etc.)      a sweep's entries only: the swept size's value for this entry
    command | kind     a program's command line, or "built-in" for our own implementations
    status             "ok", or why not ("failed: ...", "stopped (SIGINT)", "not installed ...")
    ms_per_step        the figure the speed-ups come from (null if not measured)
    ms_per_step_range  [min, max] over its rounds (--repeats; null if not measured)
    rounds             how many rounds ms_per_step is the median of
    ms_per_sample      time per document: every rung trains on one document per step
    speedup            the baseline's ms_per_step over this one's
    how_timed          how ms_per_step was measured, in words
    agreement, digits, first_difference
                       the rung's losses against the exact reference's (ladder/agreement.py);
                       a built-in rung's floats are compared in full
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
from pathlib import Path
from typing import Optional, Sequence

from .._version import __version__
from ..config import GPTConfig
from .programs import Timing

FORMAT = "cymicrogpt-bench-results/1"  # the value of "format": what --compare accepts


class ResultsError(ValueError):
    """A file --compare cannot read as bench results; the message says why."""


def results(tables: Sequence[list[dict]], config: GPTConfig, data_path: Path, documents: int, steps: int,
            ref_steps: int, timing: Timing, command: str, stopped_by: Optional[str],
            sweep: Optional[tuple[str, Sequence[int]]] = None) -> dict:
    """The whole result as a JSON-ready dict.  `tables`: bench.compare's rows, one table, or
    one per value of `sweep` (the swept size's name and values; `config` holds the other sizes)."""
    sizes = {"n_layer": config.n_layer, "n_embd": config.n_embd, "block_size": config.block_size,
             "n_head": config.n_head}
    swept = {} if sweep is None else {sweep[0]: None}
    entries = [_entry(c, {} if sweep is None else {sweep[0]: value})
               for table, value in zip(tables, sweep[1] if sweep else [None]) for c in table]
    return {
        "format": FORMAT, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "stopped_by": stopped_by, "machine": machine(),
        "data": {"path": str(data_path.resolve()), "sha256": hashlib.sha256(data_path.read_bytes()).hexdigest(),
                 "documents": documents},
        "config": {**sizes, **swept, "steps": steps, "ref_steps": ref_steps},
        "timing": {"repeats": timing.repeats, "min_time_s": timing.min_time, "timeout_s": timing.timeout},
        "baseline": tables[0][0]["baseline"] if tables and tables[0] else None,
        "sweep": None if sweep is None else {"param": sweep[0], "values": list(sweep[1])},
        "results": entries,
    }


def _entry(c: dict, swept: dict) -> dict:
    agreement = c["agreement"]
    entry = {"name": c["impl"], **swept}
    entry.update({"command": c["command"]} if c["command"] is not None else {"kind": "built-in"})
    entry.update({
        "status": c["status"], "ms_per_step": c["ms"], "ms_per_step_range": list(c["ms_range"]) if c["ms_range"] else None,
        "rounds": c["rounds"], "ms_per_sample": c["ms"], "speedup": c["speedup"], "how_timed": c["how"],
        "agreement": agreement.verdict if agreement else None, "digits": agreement.digits if agreement else None,
        "first_difference": agreement.first_difference if agreement else None,
        "steps_checked": agreement.steps if agreement else 0,
    })
    return entry


def machine() -> dict:
    """What the figures depend on: CPU, cores, OS, C library, Python, NumPy, torch, cymicrogpt
    and which builds of its Adam and graph kernels ran."""
    from .._kernels import uses_avx2
    from ..engines.adam import ADAM_KERNELS, POW_SHORTCUT_REASON

    libc, libc_version = platform.libc_ver()
    return {
        "cpu": cpu_model(), "cores": multiprocessing.cpu_count(), "machine": platform.machine(),
        "os": platform.platform(), "libc": f"{libc} {libc_version}".strip() or None,
        "python": platform.python_version(), "numpy": _version_of("numpy"), "torch": _version_of("torch"),
        "cymicrogpt": __version__, "avx2_kernels": ADAM_KERNELS.__name__.endswith("_avx2"),
        "graph_avx2_kernels": uses_avx2(),
        "adam_pow": POW_SHORTCUT_REASON, "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load(path: str) -> dict:
    """A result file written by --json; ResultsError naming what is wrong otherwise."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ResultsError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("results"), list):
        raise ResultsError(f"{path}: not a result file of `cymicrogpt bench --json` (format {FORMAT})")
    return data


def compare_files(a: dict, b: dict, paths: Sequence[str]) -> str:
    """A markdown comparison, rung by rung, of two result files A and B read from `paths`
    (before/after, or two machines); for sweeps, rung by rung at each value.  A change is
    marked as noise when the two runs' ranges overlap: each figure could be the other's
    within its own spread."""
    first, second = "A", "B"
    lines = [f"{name} = {path}: {data['date']}, {data['machine']['cpu']}, `{data['command']}`"
             for name, path, data in ((first, paths[0], a), (second, paths[1], b))]
    for part in ("config", "data", "sweep"):
        if _without_path(a.get(part)) != _without_path(b.get(part)):
            lines.append(f"warning: the two runs differ in {part}: {_without_path(a.get(part))} vs "
                         f"{_without_path(b.get(part))}")
    lines += ["", f"| rung | {first} ms/step | {second} ms/step | {second} / {first} | change |",
              "|---|---:|---:|---:|---|"]
    rungs_b = {_key(entry, b): entry for entry in b["results"]}
    seen = set()
    for entry in a["results"]:
        seen.add(_key(entry, a))
        lines.append(_compare_row(_label(entry, a), entry, rungs_b.get(_key(entry, a)), second))
    for entry in b["results"]:
        if _key(entry, b) not in seen:
            lines.append(f"| {_label(entry, b)} | - | {_ms(entry)} | - | only in {second} |")
    return "\n".join(lines)


def _swept(data: dict) -> Optional[str]:
    return (data.get("sweep") or {}).get("param")


def _key(entry: dict, data: dict) -> tuple:
    """What names an entry across two files: the rung, and the swept size's value in a sweep."""
    param = _swept(data)
    return entry["name"], param, entry.get(param) if param else None


def _label(entry: dict, data: dict) -> str:
    param = _swept(data)
    return entry["name"] + (f" ({param}={entry.get(param)})" if param else "")


def _compare_row(label: str, a: dict, b: Optional[dict], second: str) -> str:
    if b is None:
        return f"| {label} | {_ms(a)} | - | - | not in {second} |"
    if not (a["ms_per_step"] and b["ms_per_step"]):
        return f"| {label} | {_ms(a)} | {_ms(b)} | - | not measured in both |"
    ratio = b["ms_per_step"] / a["ms_per_step"]
    ranges = a["ms_per_step_range"], b["ms_per_step_range"]
    if None in ranges or 1 in (a.get("rounds"), b.get("rounds")):  # files before "rounds": a range spans rounds
        change = "one round, or no range: no spread to tell it from noise"
    elif ranges[0][0] <= ranges[1][1] and ranges[1][0] <= ranges[0][1]:
        change = "noise (the ranges overlap)"
    else:
        change = "faster" if ratio < 1 else "slower"
    return f"| {label} | {_ms(a)} | {_ms(b)} | {ratio:.3f} | {change} |"


def _ms(entry: dict) -> str:
    if not entry["ms_per_step"]:
        return "-"
    spread = entry["ms_per_step_range"]
    return f"{entry['ms_per_step']:.4g}" + (f" ({spread[0]:.4g}-{spread[1]:.4g})" if spread else "")


def _without_path(part: Optional[dict]) -> Optional[dict]:
    return None if part is None else {key: value for key, value in part.items() if key != "path"}
