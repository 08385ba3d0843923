"""Clean stops (signals, deadline, multi-process agreement), progress lines, checkpoint
cadence, and exact resumes after a stop inside stage 1 and inside stage 2."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils
from ml_collections import FrozenConfigDict

from ltr_jax import config_lib, pipeline, stopping, train_lib, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "cifar10_lt.py") + ":smoke"
# A few steps per stage, two IP-DPP draws; the smoke sizes otherwise.
SHORTEN = {
    "stage1.epochs": 1,
    "probe.epochs": 1,
    "stage2.epochs": 2,
    "stage2.redraw_every_epochs": 1,
    "train.tensorboard": False,
}


def test_deadline_from_env():
    assert stopping.deadline_from_env({}) is None
    assert stopping.deadline_from_env({stopping.DEADLINE_ENV: " 12.5 "}) == 12.5
    with pytest.raises(ValueError, match="LTR_DEADLINE_UNIX='soon' is not a number"):
        stopping.deadline_from_env({stopping.DEADLINE_ENV: "soon"})


def test_deadline_stops_at_the_first_step_past_it():
    now = [100.0]
    stopper = stopping.Stopper(105.0, clock=lambda: now[0], process_count=1)
    assert stopper.poll(1) == (None, False)
    assert stopper.poll(2, checkpoint_due=True) == (None, True)
    now[0] = 105.0
    reason, save = stopper.poll(3)
    assert "deadline" in reason and not save


def test_processes_agree_at_multiples_of_agree_every():
    seen = []

    def gather(flags):  # this process: flags; the other one wants to stop and save
        seen.append(flags.tolist())
        return np.stack([flags, np.asarray([1, 1], np.int32)])

    stopper = stopping.Stopper(None, agree_every=5, gather=gather, process_count=2)
    stopper.request("SIGTERM")
    assert stopper.poll(3) == (None, False) and not seen  # no collective between agreements
    assert stopper.poll(5) == ("SIGTERM", True) and seen == [[1, 0]]
    quiet = stopping.Stopper(None, agree_every=5, gather=gather, process_count=2)
    assert quiet.poll(10) == ("stop requested by another process", True)
    with pytest.raises(stopping.Stopped, match="stopped before stage2 .stop requested by another"):
        quiet.check_between_stages("stage2")


def test_signals_ask_for_a_stop_and_nested_stoppers_share_it():
    outer, inner = stopping.Stopper(process_count=1), stopping.Stopper(process_count=1)
    before = signal.getsignal(signal.SIGTERM)
    with outer.signals():
        with inner.signals():
            signal.raise_signal(signal.SIGTERM)
            assert inner.local_reason() == "SIGTERM"
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C interrupts at once
                signal.raise_signal(signal.SIGINT)
        assert outer.local_reason() == "SIGTERM"  # handed back to the pipeline's stopper
        late = stopping.Stopper(process_count=1)
        with late.signals():  # a loop started after the request stops at once
            assert late.local_reason() == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_checkpoint_cadence_by_steps_and_minutes(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(train_lib.time, "monotonic", lambda: now[0])
    train = config_lib.base_config().train
    train.update(checkpoint_every_steps=0, checkpoint_every_minutes=2.0)
    cadence = train_lib._CheckpointCadence(train)
    now[0] = 119.0
    assert not cadence.time_due() and not cadence.steps_due(100)
    now[0] = 120.0
    assert cadence.time_due()
    cadence.saved()
    now[0] = 200.0
    assert not cadence.time_due()
    train.update(checkpoint_every_steps=3, checkpoint_every_minutes=0.0)
    steps = train_lib._CheckpointCadence(train)
    now[0] = 1e6
    assert [s for s in range(1, 10) if steps.steps_due(s)] == [3, 6, 9] and not steps.time_due()


def test_progress_info_lines(caplog, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(writers.time, "perf_counter", lambda: now[0])
    progress = writers.Progress(100, 0, "stage1", images_per_step=10, info_every_s=60.0)
    with caplog.at_level(logging.INFO):
        for step in range(10, 101, 10):
            now[0] = step * 2.0  # 0.5 steps/s: 5 images/s
            progress.update(step, {"loss": 1.5})
    progress.close()
    lines = [r.getMessage() for r in caplog.records if "stage1: step" in r.getMessage()]
    # The first update, one a minute later (step 40 at t=80 s), step 70 (t=140 s), the end.
    assert [line.split()[2] for line in lines] == ["10/100", "40/100", "70/100", "100/100"]
    assert lines[1] == "stage1: step 40/100 (40.0%), loss 1.5, 5.0 images/s, ETA 2m00s"
    assert writers.format_duration(3725) == "1h02m05s" and writers.format_duration(4) == "4s"


def _shortened(**extra):
    config = config_lib.load_config_file(SMOKE)
    for dotted, value in {**SHORTEN, **extra}.items():
        section, key = dotted.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[key] = value
    return FrozenConfigDict(config)


def _without_timing(results: dict) -> dict:
    return {stage: {k: v for k, v in r.items() if k != "timing"} for stage, r in results.items()}


def _losses(workdir) -> list:
    records = writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return [(r["stage"], r["step"], r["loss"]) for r in records if "loss" in r]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache for this module: reruns and the rehearsal's processes
    (same programs, same 8 CPU devices) load the executables instead of compiling again. The
    suite's shared cache when tests/conftest.py set one (tests/test_stages.py runs the same
    shortened config, so each file loads what the other compiled), else one of our own."""
    shared = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if shared and jax.config.jax_compilation_cache_dir == shared:
        yield shared
        return
    from jax._src import compilation_cache

    path = str(tmp_path_factory.mktemp("jax_cache"))
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {n: getattr(jax.config, n) for n in names}
    compilation_cache.reset_cache()
    for name, value in zip(names, (path, 0.0, 0)):
        jax.config.update(name, value)
    yield path
    compilation_cache.reset_cache()
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, compile_cache):
    """The shortened smoke pipeline run straight through: (workdir, results)."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    return workdir, pipeline.run(_shortened(), workdir)


@pytest.mark.slow
def test_stops_in_stage1_and_stage2_then_reruns_give_the_uninterrupted_run(
    uninterrupted, tmp_path, monkeypatch
):
    """SIGTERM inside stage 1, a preemption notice inside the probe, the deadline inside
    stage 2; each rerun resumes.

    The preemption service is simulated at JAX's API: a notice arrives at probe step 5 and
    ``multihost_utils.reached_preemption_sync_point`` names step 7 as the sync point (on a
    real TPU / Cloud job every process learns it from the coordination service).
    """
    straight_dir, straight = uninterrupted
    write = writers.MetricWriter.write
    sync_point, asked = [None], []

    def reached_preemption_sync_point(step):
        asked.append(step)
        return step == sync_point[0]

    def write_then_stop(self, step, metrics):
        write(self, step, metrics)
        if (self.stage, step) == ("stage1", 5) and "loss" in metrics:
            signal.raise_signal(signal.SIGTERM)
        if (self.stage, step) == ("probe", 5) and "loss" in metrics:
            sync_point[0] = 7  # a notice: the processes agree to stop after step 7
            asked.clear()
        if (self.stage, step) == ("stage2", 10) and "loss" in metrics:
            monkeypatch.setattr(stopping, "_wall_clock", lambda: 2e9)  # the deadline passes

    monkeypatch.setattr(writers.MetricWriter, "write", write_then_stop)
    monkeypatch.setattr(stopping, "_preemption_service_running", lambda: True)
    monkeypatch.setattr(
        multihost_utils, "reached_preemption_sync_point", reached_preemption_sync_point
    )
    config, workdir = _shortened(), str(tmp_path)
    with pytest.raises(stopping.Stopped, match="stage1 stopped at step 5 .SIGTERM"):
        pipeline.run(config, workdir)
    with pytest.raises(stopping.Stopped, match=r"probe stopped at step 7 \(preemption notice"):
        pipeline.run(config, workdir)
    # Asked after every step (JAX's contract; Orbax asks again as it saves step 7).
    assert asked[:3] == [5, 6, 7] and set(asked) == {5, 6, 7}, asked
    probe_steps = os.listdir(os.path.join(workdir, "probe", "checkpoints"))
    assert "7" in probe_steps and not os.path.exists(os.path.join(workdir, "probe", "results.json"))
    sync_point[0] = None
    monkeypatch.setenv(stopping.DEADLINE_ENV, "1999999999")
    with pytest.raises(stopping.Stopped, match="stage2 stopped at step 10 .deadline"):
        pipeline.run(config, workdir)
    monkeypatch.undo()
    results = pipeline.run(config, workdir)

    assert _without_timing(results) == _without_timing(straight)
    assert _losses(workdir) == _losses(straight_dir)
    draws = lambda d: writers.read_jsonl(os.path.join(d, "stage2", "draws.jsonl"))
    assert draws(workdir) == draws(straight_dir)
    timing = results["stage1"]["timing"]
    assert timing["steps"] == results["stage1"]["num_steps"] and timing["processes"] == 2
    assert timing["wall_s"] >= timing["loop_s"] > 0 and timing["images_per_s"] > 0
    assert results["stage2"]["timing"]["processes"] == 2
    assert results["probe"]["timing"]["processes"] == 2  # stopped by the preemption notice
    saved = json.loads(open(os.path.join(workdir, "stage1", "results.json")).read())
    assert saved == results["stage1"]


def _driver(out_dir, work, env) -> subprocess.Popen:
    """The device command at smoke sizes (``bench/gpu_reproduce.py --smoke``), shortened."""
    overrides = [f"--config.{k}={v}" for k, v in SHORTEN.items() if k != "train.tensorboard"]
    driver = os.path.join(ROOT, "bench", "gpu_reproduce.py")
    cmd = [
        sys.executable,
        driver,
        str(out_dir),
        "--smoke",
        "--wheels=",
        f"--work={work}",
        "--copy_every_s=1",
        "--",
        *overrides,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_rehearsal_of_the_device_command_cut_in_stage1_then_resumed(
    uninterrupted, compile_cache, tmp_path
):
    """The driver cut inside stage 1 (SIGTERM, forwarded to run.py: a clean stop, exit 75),
    then the identical command: the uninterrupted run's results, every file in OUT."""
    straight_dir, straight = uninterrupted
    work, env = tmp_path / "work", dict(os.environ, JAX_COMPILATION_CACHE_DIR=compile_cache)
    first = _driver(tmp_path / "out1", work, env)
    deadline = time.time() + 300
    metrics = work / "run" / "metrics.jsonl"
    while not any(r["stage"] == "stage1" for r in writers.read_jsonl(str(metrics))):
        assert first.poll() is None and time.time() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    log, _ = first.communicate(timeout=300)
    assert first.returncode == stopping.EXIT_CODE, log[-3000:]
    summary = json.loads((tmp_path / "out1" / "summary.json").read_text())
    assert summary["status"].startswith("stopped") and "sigterm_at" in summary
    assert "stage1 stopped at step" in log and summary["results"]["stage1"] is None

    second = _driver(tmp_path / "out2", work, env)
    log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log[-3000:]
    assert "stage1: resumed from step" in log and "stage1: step 12/12" in log
    out = tmp_path / "out2"
    assert sorted(os.listdir(out)) == sorted(
        [
            "log.txt",
            "summary.json",
            "metrics.jsonl",
            "draws.jsonl",
            "config.json",
            "stage1_results.json",
            "probe_results.json",
            "stage2_results.json",
        ]
    )
    results = {s: json.loads((out / f"{s}_results.json").read_text()) for s in straight}
    assert _without_timing(results) == _without_timing(straight)
    assert _losses(out.parent / "work" / "run") == _losses(straight_dir)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["headline"]["stage2"]["top1"] is not None
    assert results["stage1"]["timing"]["processes"] == 2
