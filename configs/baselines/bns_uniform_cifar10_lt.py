"""Ablation: BNS + uniform under-sampling to k per class (the reference code's stage 2).

    python run.py --config=configs/baselines/bns_uniform_cifar10_lt.py --workdir=workdirs/bnsu
    python run.py --config=configs/baselines/bns_uniform_cifar10_lt.py:smoke

The recipe of ``configs/cifar10_lt.py`` with ``stage2.sampler = "uniform"``: every R epochs
each class above k is cut to k images drawn uniformly (the released code's "DPP" is in effect
such a draw). Compare with ``cifar10_lt.py`` (exact k-DPP, ``structured``). Expected: at most
the paper's 76.4; not yet measured. Run time: as ``cifar10_lt.py`` (GPU work).
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), os.pardir, "cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.stage2.sampler = "uniform"
    return config
