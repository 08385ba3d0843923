"""BNS + IP-DPP on ImageNet-LT, fine-tuning a Swin-B (window 7, 224 px) from a local file.

    python run.py --config=configs/vit/imagenet_lt_swin_base.py --workdir=workdirs/inlt_swin_b \
        --config.data.manual_dir=/data/imagenet2012 --config.data.split_dir=/data/ImageNet_LT \
        --config.model.init_from=/weights/swin_base_patch4_window7_224/model.safetensors
    python run.py --config=configs/vit/imagenet_lt_swin_base.py:smoke   # tiny Swin, CPU

``model.init_from``: a timm / Hugging Face ``model.safetensors`` of
``swin_base_patch4_window7_224`` (timm layout; the original Microsoft ``.pth`` files must be
converted to safetensors first). The recipe is that of configs/vit/imagenet_lt_vit_base.py
(ours, after the Swin and MAE fine-tuning recipes) with layer decay 0.9 and stochastic depth
0.2, the usual Swin-B fine-tuning values. Not yet measured (GPU work).
"""

import os

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    recipe = os.path.join(os.path.dirname(__file__), "imagenet_lt_vit_base.py")
    config = config_lib.load_config_file(recipe, arg)
    smoke = arg == "smoke"
    config.model.update(
        encoder="swin_smoke" if smoke else "swin_base_patch4_window7_224",
        drop_path_rate=0.1 if smoke else 0.2,
    )
    config.stage1.optim.layer_decay = 0.9
    config.stage2.optim.layer_decay = 0.9
    return config
