"""BNS + IP-DPP on ImageNet-LT (Liu et al. 2019 split lists), ResNet-50, streamed input.

    python run.py --config=configs/imagenet_lt.py --workdir=workdirs/imagenet_lt \
        --config.data.manual_dir=/data/imagenet2012 --config.data.split_dir=/data/ImageNet_LT
    python run.py --config=configs/imagenet_lt.py:smoke   # synthetic JPEGs, ResNet-8, CPU
    python run.py --config=configs/imagenet_lt.py --config.model.encoder=resnext50_32x4d

``manual_dir`` holds the ImageNet-2012 download (``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar``, or the extracted ``train/`` and ``val/`` folders); ``split_dir``
holds ``ImageNet_LT_{train,val,test}.txt``. The first run prepares an ArrayRecord copy of the
115,846 + 20,000 + 50,000 listed images in ``data_dir`` (no TensorFlow), then decodes the
training and test images once into a decoded store (``data.format="decoded"``: 256 x 256 uint8
centre squares, 22.8 GB for the training set, memory-mapped; ``data/input/decoded_store.py``):
each step gathers its rows on the host and crops (random resized crop 224 + flip, SimCLR colour
ops; evaluation's centre crop) on device. ``--config.data.format=jpeg`` decodes the JPEGs
every epoch instead (host crops with ``data.num_workers`` threads per process). Evaluated on
the 50,000-image test list (``data.test_split=val`` for the 20,000-image validation list).
Many/Medium/Few: > 100 / 20-100 / < 20 training images.

Paper: BNS + IP-DPP 51.7 top-1. The schedule below is ours (SPEC does not give ImageNet-LT
hyperparameters): 200 BNS epochs at B 512 in bfloat16, a 30-epoch probe on 20 images per class,
30 stage-2 epochs with k = 10 x 5 = 50 images per class re-drawn every 10 epochs.
Not yet measured (GPU work).
"""

from ltr_jax import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    config.pipeline = ("stage1", "probe", "stage2")
    config.data.update(name="imagenet_lt", many_threshold=100, few_threshold=20, image_size=224)
    config.data.update(format="decoded", decoded_size=256)  # decoded once, cropped on device
    config.model.update(encoder="resnet50", dtype="bfloat16", proj_hidden=2048, proj_dim=128)
    config.train.update(eval_every_epochs=10.0, checkpoint_every_steps=1000, eval_batch_size=1024)
    config.stage1.update(epochs=200, batch_size=512, augment_strength=1.0)
    config.stage1.optim.update(lr=1e-3, lr_base_batch=256, warmup_epochs=10.0)
    config.probe.update(per_class=20, epochs=30, batch_size=256)
    config.probe.optim.update(lr=1e-3, lr_base_batch=256, warmup_epochs=3.0)
    config.stage2.update(epochs=30, redraw_every_epochs=10, batch_size=256)
    config.stage2.optim.update(lr=2.5e-4, lr_base_batch=64, warmup_epochs=2.0)
    return config_lib.apply_arg(config, arg)
