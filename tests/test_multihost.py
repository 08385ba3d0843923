"""Multi-process runs on localhost: the library's host/global-array helpers and checkpoints
across 2 processes (``tests/multihost_worker.py``), and the pipeline with the data in device
memory (CIFAR smoke), whose 2 processes x 2 CPU devices must give the results of 1 process x 4
devices (``tests/multihost_runs.py``: how, and the tolerance): ``stage1 -> probe -> stage2``
(two IP-DPP draws) and the supervised baseline ``ce -> crt`` (class-balanced sampling on the
frozen ``ce`` encoder), in one run of each kind (every process start costs a JAX start and a
load of the compiled steps), shortened to a few steps. The streamed data path:
``test_multihost_streamed.py`` (a file of its own, so that ``--dist loadfile`` spreads the two
over the workers).
"""

import os
import sys

import multihost_runs as mh
import pytest


@pytest.mark.slow
def test_library_helpers_across_two_processes(tmp_path):
    worker, port = os.path.join(mh.ROOT, "tests", "multihost_worker.py"), str(mh.free_port())
    commands = [[sys.executable, worker, str(i), "2", port, str(tmp_path)] for i in range(2)]
    mh.run_processes(commands, devices=2, log_prefix=tmp_path / "worker")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["3"]
    assert (tmp_path / "ok_0").exists() and (tmp_path / "ok_1").exists()


@pytest.mark.slow
def test_two_processes_give_the_one_process_results_in_device_memory(tmp_path):
    mh.check_two_processes_give_the_one_process_results(
        tmp_path, mh.CONFIGS["in_memory"], "stage1,probe,stage2,ce,crt"
    )
