"""Run outputs: step-indexed metrics.jsonl, TensorBoard event files, console progress.

Only process 0 writes. After a resume, metric lines past the restored step are dropped so the
file again describes exactly one run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np


def _jsonable(value):
    if isinstance(value, (np.generic, jax.Array)):
        value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: str) -> list[dict]:
    """All records of a JSONL file ([] when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str):
    """The JSON object in ``path`` (None when the file does not exist)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_jsonl(path: str, records: list[dict]) -> None:
    """Rewrites a JSONL file atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(f"{path}.tmp", "w") as f:
        f.writelines(json.dumps(r, default=_jsonable) + "\n" for r in records)
    os.replace(f"{path}.tmp", path)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically (temporary file + rename), so a kill never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_jsonable)
    os.replace(tmp, path)


class MetricWriter:
    """Appends ``{"stage", "step", ...}`` records to WORKDIR/metrics.jsonl and TensorBoard."""

    def __init__(self, workdir: str, stage: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.stage = stage
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter  # optional heavy import, only when writing

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", stage))

    def truncate_after(self, step: int) -> None:
        """Drops this stage's records with step > ``step`` (those of a run that was killed)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        keep = [
            r for r in read_jsonl(self.path) if r.get("stage") != self.stage or r["step"] <= step
        ]
        write_jsonl(self.path, keep)

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"stage": self.stage, "step": int(step), "time": time.time()}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self._tb.add_scalar(f"{self.stage}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Progress on the console: a tqdm bar on a terminal and, for logs that go through a pipe,
    an INFO line (stage, step/total, loss, images/s, ETA) at the first update, then every
    ``info_every_s`` seconds and at the end. Silent on processes > 0."""

    def __init__(
        self, total: int, initial: int, desc: str, images_per_step: int, info_every_s: float = 60.0
    ):
        self.total, self.desc, self.images_per_step = total, desc, images_per_step
        self.info_every_s = info_every_s
        self._bar = None
        self._last = (initial, time.perf_counter())
        self._last_info = None  # (step, time) of the last INFO line
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=True)

    def update(self, step: int, metrics: dict) -> float:
        """Moves the bar to ``step``; returns images/s since the last update."""
        last_step, last_time = self._last
        now = time.perf_counter()
        speed = (step - last_step) * self.images_per_step / max(now - last_time, 1e-9)
        self._last = (step, now)
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            shown = {k: f"{v:.4g}" for k, v in metrics.items() if isinstance(v, float)}
            self._bar.set_postfix(**shown, img_s=f"{speed:.0f}")
        info_due = self._last_info is None or now - self._last_info[1] >= self.info_every_s
        if self.enabled and (info_due or step == self.total):
            self._log_info(step, now, metrics.get("loss"), speed)
        return speed

    def _log_info(self, step: int, now: float, loss: float | None, speed: float) -> None:
        # The ETA comes from the rate since the last INFO line (the first: the update's rate).
        if self._last_info is None:
            steps_per_s = speed / max(self.images_per_step, 1)
        else:
            steps_per_s = (step - self._last_info[0]) / max(now - self._last_info[1], 1e-9)
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("inf")
        self._last_info = (step, now)
        logging.info(
            "%s: step %d/%d (%.1f%%), loss %s, %.1f images/s, ETA %s",
            self.desc,
            step,
            self.total,
            100.0 * step / max(self.total, 1),
            "n/a" if loss is None else f"{loss:.4g}",
            speed,
            format_duration(eta),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_duration(seconds: float) -> str:
    """``1h02m03s`` / ``2m03s`` / ``4s``; ``?`` when not finite."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
