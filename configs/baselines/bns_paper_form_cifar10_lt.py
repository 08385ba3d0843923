"""Ablation: the paper's form of the BNS loss (Eq. 12, negatives averaged) in stage 1.

    python run.py --config=configs/baselines/bns_paper_form_cifar10_lt.py --workdir=workdirs/bnsp
    python run.py --config=configs/baselines/bns_paper_form_cifar10_lt.py:smoke

The recipe of ``configs/cifar10_lt.py`` with ``stage1.bns.form = "paper"`` (m = 4 extra
same-class anchors) instead of the loss the reference code optimises. Paper: probe 68.2,
BNS + IP-DPP 76.4 (which form produced them is what this ablation measures). Run time: as
``cifar10_lt.py`` (GPU work).
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), os.pardir, "cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.stage1.bns.form = "paper"
    return config
