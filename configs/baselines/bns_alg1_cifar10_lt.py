"""Ablation: BNS + the paper's Algorithm 1 (greedy spectral selection) in stage 2.

    python run.py --config=configs/baselines/bns_alg1_cifar10_lt.py --workdir=workdirs/bns_alg1_c10
    python run.py --config=configs/baselines/bns_alg1_cifar10_lt.py:smoke

The recipe of ``configs/cifar10_lt.py`` with ``stage2.sampler = "paper_alg1"`` (eigenvectors
scanned in descending eigenvalue order, then greedy arg-max picks; SPEC §3) instead of the exact
k-DPP draw. Expected: not yet measured. Run time: as ``cifar10_lt.py`` plus one eigh per class
per draw (GPU work).
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), os.pardir, "cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.stage2.sampler = "paper_alg1"
    return config
