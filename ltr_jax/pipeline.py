"""The stage graph: load data once, run each configured stage in order, skip finished ones.

The workdir is the whole truth of a run: ``config.json`` (refused if a rerun's config differs),
``metrics.jsonl``, and per stage ``<stage>/checkpoints`` and ``<stage>/results.json``.
Rerunning the same command resumes from where it stopped.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import jax

from ltr_jax import metrics, runtime, stopping, train_lib, validation, writers
from ltr_jax import workdir as workdir_lib
from ltr_jax.data.input import make
from ltr_jax.errors import UserError
from ltr_jax.stages import common, crt, probe, rebalance, representation, supervised

T = TypeVar("T")

# Every stage, declared by its module (`common.Stage`: validate, make_setup, run, needs).
# Their order is the reports' (baselines first, then the method's stages).
STAGES: dict[str, common.Stage] = {
    "ce": supervised.declare("ce"),
    "crt": crt.DECLARATION,
    "stage1": representation.DECLARATION,
    "probe": probe.DECLARATION,
    "stage2": rebalance.DECLARATION,
}


def check_stages(names: Sequence[str]) -> tuple[str, ...]:
    """Validates stage names against the registry."""
    bad = [n for n in names if n not in STAGES]
    if bad or not names:
        given = ", ".join(bad) or "(none)"
        raise validation.ConfigError(
            f"Unknown stage(s) {given} in --stages; valid: {', '.join(STAGES)}."
        )
    return tuple(names)


def validate(config, stages: Sequence[str], num_devices: int) -> None:
    """Validates a run before anything trains: the data, model and train sections and the
    batch sizes (`validation.validate`), then every requested stage's own section.

    Raises:
      validation.ConfigError: the first invalid value, in one line.
    """
    names = check_stages(stages)
    validation.validate(config, names, num_devices)
    for name in names:
        STAGES[name].validate(config)


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


def stage_started(workdir: str, stage: str) -> bool:
    """A stage has started once it wrote a checkpoint (a step folder) or its results.json;
    an empty folder left by a failed attempt does not count."""
    folder = os.path.join(workdir, stage)
    if os.path.exists(os.path.join(folder, "results.json")):
        return True
    return any(d.isdigit() for _, dirs, _ in os.walk(folder) for d in dirs)


def check_recorded_config(config, workdir: str) -> list[str] | None:
    """Checks a rerun's config against WORKDIR/config.json (None: there is none yet).

    A change blocks only if a stage it affects has started (`stage_started`): a stage's
    section affects that stage, ``data``, ``model``, ``train`` and ``seed`` every stage,
    ``pipeline`` none. E.g. copy a workdir after stage 1 and the probe to try several stage-2
    settings.

    Returns:
      The accepted changes (``key: old -> new``), or None when no config is recorded.

    Raises:
      validation.ConfigError: a change that affects a started stage.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    diffs = _config_diff(saved, json.loads(config.to_json()))
    any_started = any(stage_started(workdir, s) for s in STAGES)
    started = lambda key: stage_started(workdir, key) if key in STAGES else any_started
    section = lambda diff: diff.split(".")[0].split(":")[0]
    blocking = [d for d in diffs if section(d) != "pipeline" and started(section(d))]
    if blocking:
        raise validation.ConfigError(
            f"{workdir} holds a run with a different config ({'; '.join(blocking)}). "
            "Use a new --workdir, or rerun with the recorded config to resume."
        )
    return diffs


def record_config(config, workdir: str) -> None:
    """Writes WORKDIR/config.json, or checks that a resumed run uses the same config
    (`check_recorded_config`) and records the accepted changes."""
    diffs = check_recorded_config(config, workdir)
    if diffs == []:
        return
    if diffs:
        logging.info("Config changes for stages not yet started: %s", "; ".join(diffs))
    if jax.process_index() == 0:
        writers.write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))


class DiskFullError(UserError, OSError):
    """The disk of the workdir (or of the data) filled up during the run."""


def disk_full(error: BaseException) -> OSError | None:
    """The "no space left" error in ``error``'s chain (Orbax and TensorStore wrap it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        error = error.__cause__ or error.__context__
    return None


def run(config, workdir: str, stages: Sequence[str] | None = None) -> dict[str, dict]:
    """Runs the pipeline (``config.pipeline`` unless ``stages`` is given).

    Everything the user gives is checked before anything is written: the config (`validate`),
    the environment (``$LTR_DEADLINE_UNIX``), the workdir (`ltr_jax.workdir.check`), the
    earlier stages, the data and the stages' input files (``Stage.check_inputs``).

    Returns:
      The results of every requested stage, by name (read back for finished stages).
    """
    names = check_stages(stages if stages else config.pipeline)
    validate(config, names, jax.device_count())
    stopper = stopping.Stopper.from_env(agree_every=config.train.log_every_steps)
    workdir_lib.check(workdir, writer=jax.process_index() == 0)
    needs = {name: STAGES[name].needs(config) for name in STAGES}
    validation.check_earlier_stages(names, needs, workdir)
    check_recorded_config(config, workdir)  # a rerun's config changes, before the data loads
    mesh = runtime.make_mesh()
    data = make.load_input(config.data, mesh)
    warnings = validation.validate_data(config, names, data.class_counts, data.class_names)
    for name in names:
        if STAGES[name].check_inputs is not None:
            STAGES[name].check_inputs(config, data)
    for stage_warnings in warnings.values():
        for warning in stage_warnings:
            logging.warning("%s", warning)
    thresholds = config.data.many_threshold, config.data.few_threshold
    for note in metrics.empty_group_notes(data.class_counts, *thresholds):
        logging.warning("%s", note)
    try:
        with workdir_lib.lock(workdir, writer=jax.process_index() == 0):
            record_config(config, workdir)  # only once the config is valid and its data loads
            ctx = common.StageContext(config, workdir, mesh, data, runtime.root_key(config.seed))
            return _run_stages(ctx, names, stopper, warnings)
    except Exception as e:  # a full disk surfaces wrapped in Orbax's and TensorStore's types
        if isinstance(e, UserError) or (full := disk_full(e)) is None:
            raise
        path = full.filename or workdir
        raise DiskFullError(
            f"No space left on device while writing {path}: free space on that disk (or give a "
            "--workdir on another one); rerunning the same command resumes from the last "
            "checkpoint.",
        ) from e


def _run_stages(ctx: common.StageContext, names, stopper, warnings) -> dict[str, dict]:
    results, workdir = {}, ctx.workdir
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
            results[name] = STAGES[name].run(ctx)
            results[name]["timing"] = stage_timing(workdir, name, time.perf_counter() - began)
            if warnings.get(name):
                results[name]["warnings"] = warnings[name]
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


USAGE_ERROR = 2  # exit code of every user error (a bad flag, config, workdir or input)


def fail(prog: str, message: object) -> NoReturn:
    """Exits with one ``<prog>: message`` line on stderr and exit code 2 (a user error)."""
    sys.stderr.write(f"{prog}: {' '.join(str(message).split())}\n")
    sys.exit(USAGE_ERROR)


def run_or_exit(prog: str, fn: Callable[[], T], *, debug: Callable[[], bool] = bool) -> T:
    """``fn()``, with the failure handling of every command line (run.py, sweep).

    A user error (`errors.UserError`) exits with one line and code 2 (raised with its
    traceback when ``debug()``); a clean stop (signal, deadline, preemption) exits with
    `stopping.EXIT_CODE`, resumable by rerunning the same command.
    """
    try:
        return fn()
    except UserError as e:  # say what is wrong and how to fix it, without a traceback
        if debug():
            raise
        fail(prog, f"{type(e).__name__}: {e}")
    except stopping.Stopped as e:
        logging.warning("%s Exit code %d.", e, stopping.EXIT_CODE)
        sys.exit(stopping.EXIT_CODE)
