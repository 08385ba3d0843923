"""Balanced Softmax baseline (Ren et al., NeurIPS 2020) on CIFAR-10-LT IF 100, ResNet-32.

    python run.py --config=configs/baselines/balanced_softmax_cifar10_lt.py --workdir=workdirs/bsm
    python run.py --config=configs/baselines/balanced_softmax_cifar10_lt.py:smoke

The cross-entropy recipe of ``ce_cifar10_lt.py`` with the loss on ``logits + log prior``
(test-time logits unadjusted). Literature for this loss family at IF 100 with ResNet-32: about
77-78 top-1 (e.g. Menon et al. 2021 report 77.7 for the logit-adjusted loss). Run time: as the
CE baseline.
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), "ce_cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.ce.loss = "balanced_softmax"
    return config
