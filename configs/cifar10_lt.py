"""CIFAR-10-LT (LDAM protocol, imbalance factor 100).

    python run.py --config=configs/cifar10_lt.py --workdir=workdirs/cifar10_lt
    python run.py --config=configs/cifar10_lt.py:smoke   # synthetic data, ResNet-8, < 1 min CPU

Currently the pipeline is the cross-entropy baseline (ResNet-32, SGD 0.1, 200 epochs,
crop + flip). Expected: not yet measured at full length (see README results table).
Many/Few use the reference code's CIFAR-10 thresholds (> 500 / < 200 training images).
"""

from ltr_jax import config_lib


def smoke(config):
    """Shrinks any config to a CPU run of a few seconds per stage on synthetic data."""
    config.data.name = "synthetic"
    config.data.imbalance_factor = 10
    config.data.many_threshold, config.data.few_threshold = 50, 20
    config.model.encoder = "cifar_resnet8"
    config.model.proj_hidden, config.model.proj_dim = 64, 32
    config.train.update(log_every_steps=5, eval_every_epochs=1.0, checkpoint_every_steps=10,
                        eval_batch_size=64, tensorboard=True)  # fmt: skip
    return config


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.data.name = "cifar10"
    config.data.many_threshold, config.data.few_threshold = 500, 200
    if arg == "smoke":
        config = smoke(config)
        config.ce.update(epochs=2, batch_size=32)
        config.ce.optim.warmup_epochs = 0.5
    elif arg:
        raise ValueError(f"Unknown config arg {arg!r}; valid: smoke.")
    return config
