"""cRT (Kang et al., ICLR 2020): CE training, then classifier re-training on the frozen encoder.

    python run.py --config=configs/baselines/crt_cifar10_lt.py --workdir=workdirs/crt_c10
    python run.py --config=configs/baselines/crt_cifar10_lt.py:smoke

Stage ``ce``: the cross-entropy recipe of ``ce_cifar10_lt.py`` (ResNet-32, 200 epochs).
Stage ``crt``: the encoder frozen in eval mode, a fresh linear head trained for 10 epochs with
class-balanced sampling on features of the whole long-tailed set (no augmentation), SGD 0.2 at
batch 512 (scaled linearly: 0.05 at 128), wd 5e-4, cosine. Literature: Kang et al. report no
CIFAR numbers; later papers report roughly 73-76 top-1 at IF 100. Run time: the CE baseline's
plus seconds.
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), "ce_cifar10_lt.py")
    config = config_lib.load_config_file(recipe, arg)
    config.pipeline = ("ce", "crt")
    return config
