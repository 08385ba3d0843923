"""Ablation: SupCon (Khosla et al. 2020) instead of BNS in stage 1, then probe and IP-DPP.

    python run.py --config=configs/baselines/supcon_cifar10_lt.py --workdir=workdirs/supcon_c10
    python run.py --config=configs/baselines/supcon_cifar10_lt.py:smoke

The recipe of ``configs/cifar10_lt.py`` (ResNet-18, 1000 stage-1 epochs, probe, IP-DPP stage 2)
with the supervised contrastive loss (tau 0.1) on the same two SimCLR views. Expected: not
reported for this setting; the paper's point is that BNS beats softmax-based contrastive losses
on long-tailed data. Run time: as ``cifar10_lt.py`` (GPU work).
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), os.pardir, "cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.stage1.loss = "supcon"
    config.stage1.supcon.tau = 0.1
    return config
