"""Helpers shared by the benchmarks in ``bench/`` (no JAX or torch import at module level).

Timing statistics, comma-separated CLI lists, machine description, Markdown tables and JSON
output. The benchmark scripts import this module by name (``python bench/<script>.py`` puts
``bench/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence

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
