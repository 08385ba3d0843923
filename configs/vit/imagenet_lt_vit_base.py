"""BNS + IP-DPP on ImageNet-LT, fine-tuning a ViT-B/16 from a local pretrained file.

    python run.py --config=configs/vit/imagenet_lt_vit_base.py --workdir=workdirs/inlt_vit_b \
        --config.data.manual_dir=/data/imagenet2012 --config.data.split_dir=/data/ImageNet_LT \
        --config.model.init_from=/weights/vit_base_patch16_224.augreg_in21k/model.safetensors
    python run.py --config=configs/vit/imagenet_lt_vit_base.py:smoke   # tiny ViT, CPU

``model.init_from`` is a file you already have (nothing is downloaded): a timm / Hugging Face
``model.safetensors`` of ``vit_base_patch16_224`` (any of its tags), or a big_vision / AugReg
``.npz`` (``--config.model.init_format=big_vision`` if the suffix is not ``.npz``). Its head is
dropped; the load report is WORKDIR/stage1/init_from.json. Without it the ViT-B trains from
scratch (not what this recipe is for).

The paper gives no transformer schedules: this recipe is ours, after the MAE / BEiT
fine-tuning recipes (He et al. 2022): AdamW (0.9, 0.999), weight decay 0.05 (none on norms,
biases, position embeddings, class token), layer-wise lr decay 0.65, stochastic depth 0.1,
gradient clipping at 1, bfloat16. Stage 1 = 30 BNS epochs at B 512 (lr 1e-4 x B / 256),
probe as in configs/imagenet_lt.py, stage 2 = 30 IP-DPP epochs (lr 5e-5 x B / 64, decay 0.75).
Not yet measured (GPU work).
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("stage1", "probe", "stage2")
    config.data.update(name="imagenet_lt", many_threshold=100, few_threshold=20, image_size=224)
    config.model.update(
        encoder="vit_base_patch16_224",
        dtype="bfloat16",
        proj_hidden=2048,
        proj_dim=128,
        drop_path_rate=0.1,
    )
    config.train.update(eval_every_epochs=10.0, checkpoint_every_steps=1000, eval_batch_size=1024)
    config.stage1.update(epochs=30, batch_size=512, augment_strength=1.0)
    config.stage1.optim.update(
        lr=1e-4,
        lr_base_batch=256,
        b2=0.999,
        warmup_epochs=5.0,
        layer_decay=0.65,
        clip_grad_norm=1.0,
    )
    config.probe.update(per_class=20, epochs=30, batch_size=256)
    config.probe.optim.update(lr=1e-3, lr_base_batch=256, warmup_epochs=3.0)
    config.stage2.update(epochs=30, redraw_every_epochs=10, batch_size=256)
    config.stage2.optim.update(
        lr=5e-5, lr_base_batch=64, b2=0.999, warmup_epochs=2.0, layer_decay=0.75, clip_grad_norm=1.0
    )
    config = config_lib.apply_arg(config, arg)
    if arg == "smoke":  # synthetic JPEGs at 32 px, a tiny ViT from scratch
        config.model.update(encoder="vit_smoke", drop_path_rate=0.1)
    return config
