"""Cross-entropy baseline on CIFAR-10-LT IF 100: ResNet-32 from scratch (the "ce" stage).

    python run.py --config=configs/baselines/ce_cifar10_lt.py --workdir=workdirs/ce_c10
    python run.py --config=configs/baselines/ce_cifar10_lt.py:smoke

SGD momentum 0.9, lr 0.1 at batch 128, wd 2e-4, 5 warm-up epochs then cosine, 200 epochs,
pad-4 crop + flip (the LDAM recipe, cosine instead of steps). Literature: about 70-71% top-1.
Measured here: see the README results table (short CPU run).
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("ce",)
    config.data.update(name="cifar10", imbalance_factor=100, many_threshold=500, few_threshold=200)
    config.model.encoder = "cifar_resnet32"
    return config_lib.apply_arg(config, arg)
