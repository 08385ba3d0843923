"""BNS + IP-DPP on CIFAR-10-LT (LDAM protocol, imbalance factor 100), CIFAR ResNet-18.

    python run.py --config=configs/cifar10_lt.py --workdir=workdirs/cifar10_lt
    python run.py --config=configs/cifar10_lt.py:smoke   # synthetic data, ResNet-8, < 1 min CPU
    python run.py --config=configs/cifar10_lt.py --config.data.imbalance_factor=50

Stage 1: BNS ("reference" form until measured otherwise), B 1024, 1000 epochs, AdamW 1e-3 x
B/256, 20 warm-up epochs, SimCLR strength 2. Probe: 100 images per class, 100 epochs.
Paper: probe 68.2 top-1 (69.4/66.0/67.6 many/medium/few), BNS + IP-DPP 76.4. Ours at full
length: not yet measured (1000 epochs is GPU work). Many/Few use the reference code's
CIFAR-10 thresholds (> 500 / < 200 training images).
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("stage1", "probe", "stage2")
    config.data.update(name="cifar10", imbalance_factor=100, many_threshold=500, few_threshold=200)
    config.model.encoder = "cifar_resnet18"
    config.stage1.batch_size = 1024
    config.probe.update(per_class=100)
    config.probe.optim.warmup_epochs = 20.0
    return config_lib.apply_arg(config, arg)
