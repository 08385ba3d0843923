"""BNS + IP-DPP on CIFAR-100-LT (imbalance factor 100) with a small-patch ViT-S from scratch.

    python run.py --config=configs/vit/cifar100_lt_vit_small.py --workdir=workdirs/c100_vit_s
    python run.py --config=configs/vit/cifar100_lt_vit_small.py:smoke   # tiny ViT, CPU

ViT-S (384-d, 12 blocks, 6 heads) on 4 x 4 patches of the 32 px images (64 tokens + class
token), stochastic depth 0.1. The paper gives no transformer schedules: this recipe is ours,
after DeiT's (Touvron et al. 2021): AdamW (0.9, 0.999), lr 5e-4 x B / 512, weight decay 0.05
(none on norms, biases, position embeddings and the class token), long warm-up, cosine;
gradient clipping at norm 1 for the from-scratch stage 1. Stage 1 = BNS, then the probe and
IP-DPP stage 2 of the ResNet recipe (configs/cifar100_lt.py), stage 2 with layer decay 0.75.
Not yet measured (GPU work).
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("stage1", "probe", "stage2")
    config.data.update(name="cifar100", imbalance_factor=100, many_threshold=100, few_threshold=20)
    config.data.synthetic.update(num_classes=100, train_per_class=40, test_per_class=10)
    config.model.update(encoder="vit_small_patch4_32", proj_hidden=2048, proj_dim=128)
    config.stage1.update(epochs=1000, batch_size=512)
    config.stage1.optim.update(
        lr=5e-4,
        lr_base_batch=512,
        b2=0.999,
        weight_decay=0.05,
        warmup_epochs=40.0,
        clip_grad_norm=1.0,
    )
    config.probe.update(per_class=50)
    config.probe.optim.warmup_epochs = 5.0
    config.stage2.optim.update(lr=2.5e-4, lr_base_batch=64, b2=0.999, layer_decay=0.75)
    config = config_lib.apply_arg(config, arg)
    if arg == "smoke":
        config.model.encoder = "vit_smoke"
    return config
