"""The stage graph: load data once, run each configured stage in order, skip finished ones.

The workdir is the whole truth of a run: ``config.json`` (refused if a rerun's config differs),
``metrics.jsonl``, and per stage ``<stage>/checkpoints`` and ``<stage>/results.json``.
Rerunning the same command resumes from where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import jax

from ltr_jax import runtime, stopping, train_lib, writers
from ltr_jax.data import inputs
from ltr_jax.stages import common, crt, probe, rebalance, representation, supervised

STAGES: dict[str, Callable[[common.StageContext], dict]] = {
    "ce": lambda ctx: supervised.run(ctx, "ce"),
    "stage1": representation.run,
    "probe": probe.run,
    "stage2": rebalance.run,
    "crt": crt.run,
}


def check_stages(names: Sequence[str]) -> tuple[str, ...]:
    """Validates stage names against the registry."""
    bad = [n for n in names if n not in STAGES]
    if bad:
        raise ValueError(f"Unknown stage(s) {bad}; valid: {', '.join(STAGES)}.")
    return tuple(names)


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Differences from recorded config ``a`` to ``b``; keys that ``a`` lacks (added to the
    code after the run was recorded, with their default) are not differences."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return diffs


def record_config(config, workdir: str) -> None:
    """Writes WORKDIR/config.json, or checks that a resumed run uses the same config.

    Changes are allowed only in ``pipeline`` and in the sections of stages that have not
    started (no ``WORKDIR/<stage>/`` yet): e.g. copy a workdir after stage 1 and the probe to
    try several stage-2 settings. The recorded config is then updated.
    """
    current = json.loads(config.to_json())
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        diffs = _config_diff(saved, current)
        started = lambda key: key not in STAGES or os.path.exists(os.path.join(workdir, key))
        blocking = [d for d in diffs if d.split(".")[0].split(":")[0] != "pipeline"
                    and started(d.split(".")[0].split(":")[0])]  # fmt: skip
        if blocking:
            raise ValueError(
                f"{workdir} holds a run with a different config ({'; '.join(blocking)}). "
                "Use a new --workdir, or rerun with the recorded config to resume."
            )
        if not diffs:
            return
        logging.info("Config changes for stages not yet started: %s", "; ".join(diffs))
    if jax.process_index() == 0:
        writers.write_json(path, current)


def run(config, workdir: str, stages: Sequence[str] | None = None) -> dict[str, dict]:
    """Runs the pipeline (``config.pipeline`` unless ``stages`` is given).

    Returns:
      The results of every requested stage, by name (read back for finished stages).
    """
    names = check_stages(stages if stages else config.pipeline)
    os.makedirs(workdir, exist_ok=True)
    record_config(config, workdir)
    mesh = runtime.make_mesh()
    data = inputs.load(config.data, mesh)
    ctx = common.StageContext(config, workdir, mesh, data, runtime.root_key(config.seed))
    results = {}
    stopper = stopping.Stopper.from_env(agree_every=config.train.log_every_steps)
    with stopper.signals():  # a stop between stages; each training loop polls its own
        for name in names:
            path = common.results_path(workdir, name)
            if os.path.exists(path):
                logging.info("Stage %s already finished (%s): skipped.", name, path)
                with open(path) as f:
                    results[name] = json.load(f)
                continue
            stopper.check_between_stages(name)
            began = time.perf_counter()
            results[name] = STAGES[name](ctx)
            results[name]["timing"] = stage_timing(workdir, name, time.perf_counter() - began)
            common.write_results(ctx, name, results[name])
            logging.info("Stage %s finished: %s", name, common.results_path(workdir, name))
    return results


def stage_timing(workdir: str, stage: str, seconds: float) -> dict:
    """``timing`` of a stage's results.json: wall time (this process's time in the stage plus
    the loop time of earlier processes that a resume kept), and the loop's steps, seconds and
    images/s (``train_lib.loop_timing``)."""
    loop = train_lib.loop_timing(workdir, stage) or {}
    earlier = loop.get("loop_s", 0.0) - loop.get("last_process_loop_s", 0.0)
    return dict(wall_s=round(seconds + earlier, 3), **loop)
