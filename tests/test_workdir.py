"""The workdir: which folders a run accepts (ltr_jax's own, empty or new ones) and the lock
that refuses a second run in the same folder (an OS ``flock``, dropped when its holder dies).
"""

import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from flax import nnx

from ltr_jax import workdir
from ltr_jax.stages import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_run_errors import CE_SMOKE, _assert_one_line  # noqa: E402


def _foreign(folder) -> str:
    """A user's own folder: their config.json (not ltr_jax's), notes and a sub-folder."""
    os.makedirs(folder / "results")
    (folder / "config.json").write_text(json.dumps({"lr": 0.1, "model": "mine"}))
    (folder / "notes.txt").write_text("my notes")
    (folder / "results" / "table.csv").write_text("a,b\n")
    return str(folder)


def test_which_folders_are_workdirs(tmp_path):
    assert workdir.is_workdir(str(tmp_path / "new"))  # created by the run
    assert workdir.is_workdir(str(tmp_path))  # empty
    assert not workdir.is_workdir(_foreign(tmp_path / "mine"))
    legacy = tmp_path / "legacy"  # written before the lock file existed: still resumable
    legacy.mkdir()
    keys = ("seed", "pipeline", "data", "model", "train", "ce")
    (legacy / "config.json").write_text(json.dumps({k: {} for k in keys}))
    (legacy / "metrics.jsonl").write_text("")
    assert workdir.is_workdir(str(legacy))
    (legacy / "config.json").write_text("{not json")
    assert not workdir.is_workdir(str(legacy))
    marked = tmp_path / "marked"  # the lock file marks a folder a run created
    marked.mkdir()
    (marked / workdir.LOCK_FILE).write_text("")
    (marked / "metrics.jsonl").write_text("")
    assert workdir.is_workdir(str(marked))


def test_a_foreign_folder_is_refused_untouched(capsys, tmp_path):
    folder = _foreign(tmp_path / "mine")
    match = ("WorkdirError", "no ltr_jax run wrote", "config.json, notes.txt, results")
    _assert_one_line(capsys, folder, match=match)


def test_a_held_lock_refuses_a_second_run_naming_its_holder(tmp_path):
    wd = str(tmp_path / "wd")
    with workdir.lock(wd):
        # flock locks belong to an open file description: a second open() conflicts even in
        # this process, as a second run's would.
        with pytest.raises(workdir.WorkdirLockedError, match=f"pid {os.getpid()} on host"):
            workdir.check(wd)
        with pytest.raises(workdir.WorkdirLockedError, match="in use by another run"):
            with workdir.lock(wd):
                pass
        workdir.check(wd, writer=False)  # another process of the same multi-host run
        with workdir.lock(wd, writer=False):
            pass
    workdir.check(wd)  # released on exit
    with workdir.lock(wd):
        pass
    assert os.path.exists(os.path.join(wd, workdir.LOCK_FILE))  # kept as the marker


_HOLDER = """
import sys, time
from ltr_jax import workdir
with workdir.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_second_run_refused_then_a_killed_holder_does_not_block(capsys, tmp_path):
    """A real second process holds the lock: run.py refuses in one line naming its pid; once
    that process is killed (SIGKILL: no cleanup), the lock is gone and a run may start."""
    wd = str(tmp_path / "wd")
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, wd], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        match = ("WorkdirLockedError", f"pid {holder.pid} on host", "in use by another run")
        _assert_one_line(capsys, wd, match=match, config=CE_SMOKE)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert f"pid {holder.pid}" in open(os.path.join(wd, workdir.LOCK_FILE)).read()  # stale
    workdir.check(wd)
    with workdir.lock(wd):
        assert f"pid {os.getpid()}" in open(os.path.join(wd, workdir.LOCK_FILE)).read()


def test_an_export_left_by_a_run_killed_before_its_results_is_replaced(tmp_path):
    ctx = SimpleNamespace(workdir=str(tmp_path))
    common.save_module(ctx, "ce", "encoder", nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    retrained = nnx.Linear(2, 3, rngs=nnx.Rngs(1))  # the rerun's (same in a real rerun)
    common.save_module(ctx, "ce", "encoder", retrained)  # Orbax: StepAlreadyExistsError
    loaded = common.load_module(ctx, "ce", "encoder", nnx.Linear(2, 3, rngs=nnx.Rngs(2)))
    assert np.array_equal(loaded.kernel.get_value(), retrained.kernel.get_value())
