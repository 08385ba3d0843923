"""Helpers of the multi-process pipeline tests (``test_multihost*.py``; not a test module).

A pipeline run goes through ``run.py`` in subprocesses (the test process has 8 devices), the
two-process one with ``--multihost`` and an explicit localhost coordinator; JAX's CPU
collectives across processes use Gloo (the default ``jax_cpu_collectives_implementation``).

Tolerance: Gloo reduces the cross-device sums of a step (gradients, BatchNorm statistics) in
another order than one process does, so the runs differ by float32 rounding that training then
amplifies: logged losses agree to ``LOSS_RTOL`` = 1e-3 relative (observed: at most 1.1e-4, after
12 SGD steps of ``ce``). Every results.json (accuracies over 200 test images, per class too)
and the per-class counts of every IP-DPP draw must be equal.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from ltr_jax import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {  # in device memory; streamed (synthetic JPEGs through the Grain pipeline)
    "in_memory": os.path.join(ROOT, "configs", "cifar10_lt.py") + ":smoke",
    "streamed": os.path.join(ROOT, "configs", "imagenet_lt.py") + ":smoke",
}
SHORTEN = (  # a few steps per stage; two stage-2 draws; only the final evaluation, and only the
    # checkpoints a stage always writes (its exported encoder / head, its last step): the
    # in-stage ones cost 15 % of a run (CPU-2) and cross processes in test_multihost.py's
    # library-helpers test
    "--config.train.eval_every_epochs=0",
    "--config.train.checkpoint_every_steps=0",
    "--config.stage1.epochs=1",
    "--config.probe.epochs=1",
    "--config.stage2.epochs=2",
    "--config.stage2.redraw_every_epochs=1",
    "--config.ce.epochs=1",
    "--config.crt.epochs=1",
)
TIMEOUT_S = 900
LOSS_RTOL = 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"  # not conftest's 8
    # This checkout's ltr_jax, also for tests/multihost_worker.py (whose own folder is tests/).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return env


def run_processes(commands: list[list[str]], devices: int, log_prefix) -> None:
    """Runs one process per command, each with ``devices`` CPU devices; fails with the log of
    a failed one."""
    logs = [open(f"{log_prefix}.{i}.log", "w+") for i in range(len(commands))]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=_env(devices), stdout=log, stderr=subprocess.STDOUT)
        for cmd, log in zip(commands, logs)
    ]
    _wait_all(procs, logs)


def launch(config: str, workdir, stages: str, num_processes: int, devices: int) -> None:
    """Runs ``run.py`` in ``num_processes`` processes (``--multihost`` when more than one)."""
    cmd = [
        sys.executable,
        os.path.join(ROOT, "run.py"),
        f"--config={config}",
        f"--workdir={workdir}",
        f"--stages={stages}",
        *SHORTEN,
    ]
    if num_processes == 1:
        return run_processes([cmd], devices, workdir)
    cmd += [
        "--multihost",
        f"--coordinator_address=localhost:{free_port()}",
        f"--num_processes={num_processes}",
    ]
    commands = [cmd + [f"--process_id={i}"] for i in range(num_processes)]
    run_processes(commands, devices, workdir)


def _wait_all(procs, logs) -> None:
    """Waits for every process; on a failure or timeout kills the others (which would hang)."""
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
        failed = any(p.returncode not in (None, 0) for p in procs)
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for i, (p, log) in enumerate(zip(procs, logs)):
        log.seek(0)
        text = log.read()
        log.close()
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{text[-6000:]}"


def results(workdir, stages: str) -> dict:
    """Every stage's results.json without its ``timing`` (times differ between runs)."""
    loaded = {s: json.loads((workdir / s / "results.json").read_text()) for s in stages.split(",")}
    return {s: {k: v for k, v in r.items() if k != "timing"} for s, r in loaded.items()}


def losses(workdir) -> dict:
    """(stage, step) -> the logged training loss."""
    records = writers.read_jsonl(str(workdir / "metrics.jsonl"))
    return {(r["stage"], r["step"]): r["loss"] for r in records if "loss" in r}


def check_two_processes_give_the_one_process_results(tmp_path, config: str, stages: str) -> None:
    """Runs ``stages`` of ``config`` in 1 process x 4 CPU devices and in 2 processes x 2: equal
    results.json files and workdir listings, a loss logged by every stage, the same losses to
    ``LOSS_RTOL``, and with stage 2 the per-class counts of its two IP-DPP draws."""
    one, two = tmp_path / "one", tmp_path / "two"
    launch(config, one, stages, num_processes=1, devices=4)
    launch(config, two, stages, num_processes=2, devices=2)

    assert results(two, stages) == results(one, stages)
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    curves_one, curves_two = losses(one), losses(two)
    assert curves_two.keys() == curves_one.keys()
    assert set(stages.split(",")) <= {stage for stage, _ in curves_one}  # every stage logged
    keys = sorted(curves_one)
    np.testing.assert_allclose(
        [curves_two[k] for k in keys], [curves_one[k] for k in keys], rtol=LOSS_RTOL
    )
    if "stage2" not in stages.split(","):
        return
    draws_one, draws_two = (
        writers.read_jsonl(str(w / "stage2" / "draws.jsonl")) for w in (one, two)
    )
    assert len(draws_two) == 2
    assert [d["counts"] for d in draws_two] == [d["counts"] for d in draws_one]
    for d1, d2 in zip(draws_one, draws_two):
        np.testing.assert_allclose(d2["mean_p_class"], d1["mean_p_class"], rtol=LOSS_RTOL)
