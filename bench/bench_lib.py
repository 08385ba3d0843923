"""Helpers shared by the benchmarks in ``bench/`` (no JAX or torch import at module level).

Timing statistics, comma-separated CLI lists, machine description, the case loop
(`run_cases`: every combination of the axes, a failing case recorded with its error, each row
printed as it finishes), the table columns every step benchmark shares (`STEP_COLUMNS`, display
units by `shown`), Markdown tables and JSON output (`report`). A benchmark script keeps only
what it measures (its ``run_case``) and its own extra columns. The scripts import this module
by name (``python bench/<script>.py`` puts ``bench/`` on ``sys.path``).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence

# The CIFAR-10-LT IF100 training set (LDAM protocol) and its stage-2 subset at k = 500.
CIFAR10_LT_IF100_SIZE = 12406
CIFAR10_LT_IF100_SUBSET = 3391
NUM_CLASSES = 10


def csv_list(cast: Callable = str) -> Callable[[str], list]:
    """An argparse ``type`` for comma-separated lists, e.g. ``--batch_sizes 256,512``."""
    return lambda text: [cast(item) for item in text.split(",") if item]


def summarize(times: Sequence[float], images_per_step: int) -> dict:
    """Median / min / mean step time (s) and images/s at the median step time."""
    median = statistics.median(times)
    return {
        "step_s_median": median,
        "step_s_min": min(times),
        "step_s_mean": statistics.fmean(times),
        "steps_timed": len(times),
        "images_per_s": images_per_step / median,
    }


def nvidia_smi() -> str | None:
    """``nvidia-smi`` output, or None where there is none."""
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def machine_info() -> dict:
    """Host facts every result file records."""
    return {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table: ``columns`` are (header, row key, format spec); missing keys print '-'."""

    def cell(row: dict, key: str, spec: str) -> str:
        value = row.get(key)
        return "-" if value is None else format(value, spec)

    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k, s) for _, k, s in columns) + " |")
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` as indented JSON, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"wrote {path}")


Column = tuple[str, str, str]  # (header, row key, format spec)

# The columns of every per-step benchmark; a script adds its own around them (`columns`).
CASE_COLUMNS: tuple[Column, ...] = (
    ("backbone", "backbone", ""),
    ("dtype", "dtype", ""),
    ("batch", "batch_size", "d"),
)
STEP_COLUMNS: tuple[Column, ...] = (
    ("images/s", "images_per_s", ",.0f"),
    ("step ms (median)", "step_ms", ".1f"),
)
ERROR_COLUMN: Column = ("error", "error", "")


def columns(
    first: Sequence[Column] = (), measured: Sequence[Column] = (), *, error: bool = True
) -> list[Column]:
    """A benchmark's table: its own leading columns, the shared case columns (backbone, dtype,
    batch), the shared step columns, its own measured columns, then the error column."""
    return [*first, *CASE_COLUMNS, *STEP_COLUMNS, *measured, *([ERROR_COLUMN] if error else [])]


def shown(row: Mapping) -> dict:
    """Display units shared by every step benchmark: ``step_ms`` from ``step_s_median``."""
    out = dict(row)
    if "step_s_median" in row:
        out["step_ms"] = 1e3 * row["step_s_median"]
    return out


def grid(**axes: Iterable) -> list[dict]:
    """Every combination of the named axes, the first axis outermost: ``grid(a=[1, 2], b="xy")``
    is ``[{a: 1, b: x}, {a: 1, b: y}, {a: 2, b: x}, {a: 2, b: y}]``."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


def run_cases(
    cases: Iterable[Mapping],
    run_case: Callable[..., dict | list[dict]],
    table: Sequence[Column],
    show: Callable[[Mapping], dict] = shown,
) -> list[dict]:
    """``run_case(**case)`` for every case, in order; a case that fails (e.g. out of memory)
    is recorded as its case with ``error``. Each row's table line is printed as it finishes.

    Returns:
      The rows (a case may return several, e.g. one per contender).
    """
    rows = []
    for case in cases:
        try:
            result = run_case(**case)
        except Exception as e:  # a benchmark records a failing case and goes on
            result = dict(case, error=f"{type(e).__name__}: {e}"[:300])
        for row in result if isinstance(result, list) else [result]:
            rows.append(row)
            print(markdown_table([show(row)], table).splitlines()[-1], flush=True)
    return rows


def report(
    rows: Sequence[dict],
    table: Sequence[Column],
    path: str,
    payload: dict,
    show: Callable[[Mapping], dict] = shown,
) -> dict:
    """Prints the whole table and writes ``payload`` (plus the machine and ``results``) to
    ``path`` as JSON; returns the written payload."""
    print()
    print(markdown_table([show(r) for r in rows], table))
    payload = {**payload, "machine": machine_info(), "results": list(rows)}
    write_json(path, payload)
    return payload
