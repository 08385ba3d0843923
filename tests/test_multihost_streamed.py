"""The streamed pipeline (ImageNet-LT smoke: synthetic JPEGs through the Grain pipeline) across
processes: every process decodes only its rows of each global batch, and 2 processes x 2 CPU
devices give the results of 1 process x 4 (``tests/multihost_runs.py``: how, and the
tolerance). Stage 1 -> probe -> stage 2 (two IP-DPP draws over features of streamed images);
``ce`` and ``crt`` cross processes in ``tests/test_multihost.py`` (in device memory; their
streamed feed is stage 1's) and stream in one process in ``tests/test_inputs.py``.
A file of its own so that ``--dist loadfile`` can run it beside the in-memory one.
"""

import multihost_runs as mh
import pytest


@pytest.mark.slow
def test_two_processes_give_the_one_process_results_streamed(tmp_path):
    mh.check_two_processes_give_the_one_process_results(
        tmp_path, mh.CONFIGS["streamed"], "stage1,probe,stage2"
    )
