"""Your own long-tailed dataset from an image folder: BNS + IP-DPP (and the CE baseline).

    python run.py --config=configs/examples/image_folder_lt.py \
        --config.data.train_path=/data/my_set/train --config.data.test_path=/data/my_set/test
    python run.py --config=configs/examples/image_folder_lt.py:smoke \
        --config.data.train_path=/data/my_set/train   # <= 50 images per class, ResNet-8, minutes
    python run.py --config=configs/examples/image_folder_lt.py --stages=ce   # the CE baseline
    python -m ltr_jax.report workdirs/image_folder_lt --out=reports/my_set
    python -m ltr_jax.predict workdirs/image_folder_lt /data/new_photos --out=preds.csv

The folder is ``train_path/<class>/<image>`` (any format Pillow reads); without ``test_path``
a seeded 20% of every class is held out for testing. Images are resized and centre-cropped
to 32 x 32 and made long-tailed at imbalance factor 100 (LDAM protocol; 1 keeps a folder that
is long-tailed already). Many / Few: > 100 / < 20 training images (on a small set a group may
be empty: README "Many / Few thresholds"). The budgets are those of the CIFAR-10-LT recipe
scaled down for a small set; not measured on any dataset.
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("stage1", "probe", "stage2")
    config.data.update(
        name="image_folder",
        train_path="data/my_set/train",
        image_size=32,
        imbalance_factor=100,
        many_threshold=100,
        few_threshold=20,
    )
    config.model.encoder = "cifar_resnet32"
    config.stage1.update(epochs=500, batch_size=256)
    config.probe.update(per_class=100, epochs=100)
    config.stage2.update(epochs=100)
    return config_lib.apply_arg(config, arg)
