"""LDAM-DRW (Cao et al., NeurIPS 2019) on CIFAR-10-LT IF 100, ResNet-32 with a cosine head.

    python run.py --config=configs/baselines/ldam_drw_cifar10_lt.py --workdir=workdirs/ldam_c10
    python run.py --config=configs/baselines/ldam_drw_cifar10_lt.py:smoke

LDAM margins m_c ~ n_c^(-1/4) (largest 0.5) on the true-class cosine logit, scale s = 30;
deferred re-weighting with class-balanced weights (beta 0.9999) from epoch 160 of 200 (the
last fifth of the epochs: epoch 1 of 2 in ``:smoke``); SGD 0.1 @128, wd 2e-4, 5 warm-up epochs,
then cosine (the LDAM code steps the lr down at epochs 160 and 180). When overriding
``ce.epochs``, set ``ce.drw_start_epoch`` too. Literature: 77.0 top-1 (Cao et al. 2019,
Table 2). Run time: as the CE baseline.
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), "ce_cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.ce.update(
        loss="ldam", head="cosine", ldam=dict(max_margin=0.5, scale=30.0), drw_beta=0.9999
    )
    config.ce.drw_start_epoch = config.ce.epochs * 4 // 5  # 160 of 200
    return config
