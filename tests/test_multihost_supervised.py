"""The supervised baseline across processes, data in device memory (CIFAR smoke): ``ce`` then
``crt`` (class-balanced sampling on the frozen ``ce`` encoder) in 2 processes x 2 CPU devices
give the results of 1 process x 4 (``tests/multihost_runs.py``: how, and the tolerance).
"""

import multihost_runs as mh
import pytest


@pytest.mark.slow
def test_two_processes_give_the_one_process_results_for_ce_and_crt(tmp_path):
    mh.check_two_processes_give_the_one_process_results(tmp_path, mh.CONFIGS["in_memory"], "ce,crt")
