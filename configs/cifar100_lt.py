"""BNS + IP-DPP on CIFAR-100-LT (LDAM protocol, imbalance factor 100), CIFAR ResNet-34.

    python run.py --config=configs/cifar100_lt.py --workdir=workdirs/cifar100_lt
    python run.py --config=configs/cifar100_lt.py:smoke   # synthetic data, < 1 min CPU

Stage 1: BNS, B 512, 1000 epochs; probe: 50 images per class, 5 warm-up epochs.
Paper: probe 47.1 top-1, BNS + IP-DPP 52.4. Ours: not yet measured (no CIFAR-100 on the
development machines; GPU work). Many/Medium/Few: > 100 / 20-100 / < 20 training images.
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("stage1", "probe", "stage2")
    config.data.update(name="cifar100", imbalance_factor=100, many_threshold=100, few_threshold=20)
    config.data.synthetic.update(num_classes=100, train_per_class=40, test_per_class=10)
    config.model.encoder = "cifar_resnet34"
    config.stage1.batch_size = 512
    config.probe.update(per_class=50)
    config.probe.optim.warmup_epochs = 5.0
    return config_lib.apply_arg(config, arg)
