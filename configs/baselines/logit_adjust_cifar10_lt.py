"""Logit-adjusted loss (Menon et al., ICLR 2021), tau = 1, on CIFAR-10-LT IF 100, ResNet-32.

    python run.py --config=configs/baselines/logit_adjust_cifar10_lt.py --workdir=workdirs/la_c10
    python run.py --config=configs/baselines/logit_adjust_cifar10_lt.py:smoke

The cross-entropy recipe of ``ce_cifar10_lt.py`` with the loss on ``logits + tau * log prior``
(tau = 1: the same loss as Balanced Softmax; change ``ce.logit_adjust.tau`` for others).
Literature: 77.7 top-1 (Menon et al. 2021, ResNet-32, their schedule). Run time: as the CE
baseline.
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), "ce_cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.ce.update(loss="logit_adjust", logit_adjust=dict(tau=1.0))
    return config
