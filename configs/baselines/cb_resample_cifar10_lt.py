"""Class-balanced re-sampling baseline on CIFAR-10-LT IF 100: ResNet-32 from scratch, CE.

    python run.py --config=configs/baselines/cb_resample_cifar10_lt.py --workdir=workdirs/cb_c10
    python run.py --config=configs/baselines/cb_resample_cifar10_lt.py:smoke

The cross-entropy recipe of ``ce_cifar10_lt.py`` (SGD 0.1 @128, 200 epochs, crop + flip) with
every batch drawn class-uniformly, then image-uniformly inside the class. Literature (Cao et
al. 2019, Table 2, "CB RS"): 70.6 top-1. Run time: as the CE baseline (GPU work at 200 epochs;
about 7 h at 100 images/s on a 2-core CPU).
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), "ce_cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.ce.sampler = "class_balanced"
    return config
