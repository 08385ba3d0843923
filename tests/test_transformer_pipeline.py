"""Every transformer family trains through the whole pipeline (stage 1 -> probe -> stage 2).

One tiny run per architecture at smoke size (2 stage-1 steps, 1 probe step, 30 stage-2 steps), on
the in-memory synthetic data of configs/vit/cifar100_lt_vit_small.py:smoke: DeiT (the ViT
blocks, class-token pooling) and Swin, each fine-tuned from a local timm ``safetensors`` file
(the conversion fixtures) with the one ``model.init_from`` override a user would give. The
average-pooled ViT from scratch runs the same stage code with the same blocks (only its pooling
differs, checked against timm in tests/test_transformers.py), so it has no pipeline run here.
"""

import json
import os

import numpy as np
import pytest
from ml_collections import FrozenConfigDict

from ltr_jax import config_lib, pipeline, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "transformers")

SMOKE = os.path.join(ROOT, "configs", "vit", "cifar100_lt_vit_small.py")
# name -> (encoder override, init_from fixture)
PIPELINES = {
    "deit": ("deit_smoke", "vit_cls.safetensors"),
    "swin": ("swin_smoke", "swin.safetensors"),
}


def _tiny_pipeline_config(name: str):
    """The ``:smoke`` config shrunk to a couple of steps per stage, from a local file."""
    encoder, init = PIPELINES[name]
    config = config_lib.load_config_file(SMOKE, "smoke")
    config.data.synthetic.update(num_classes=4, train_per_class=40, test_per_class=25)
    config.data.update(many_threshold=30, few_threshold=10)
    config.model.update(encoder=encoder, init_from=os.path.join(FIXTURES, init))
    config.train.update(eval_every_epochs=0.0, eval_batch_size=32, tensorboard=False)
    config.stage1.update(epochs=1, batch_size=32)
    config.probe.update(epochs=1, batch_size=16, per_class=8)
    config.stage2.update(
        epochs=30, batch_size=16, redraw_every_epochs=30, k_per_class=8, augment="crop_flip"
    )
    config.stage2.optim.lr = STAGE2_LR
    return config


# Stage 2 must learn: its top-1 on the 100 balanced test images (25 %: chance, 4 classes) is at
# least `MIN_TOP1`. One draw of 8, 8, 8, 4 images (1 step an epoch), 30 steps on crop-and-flip
# views at 160x the recipe's lr (peak 1e-2 at batch 16, layer decay 0.75): the synthetic
# classes' colour survives these views (not the recipe's SimCLR views, tests/test_baselines.py),
# and steps cost little next to compiling. Each class is learned whole or not at all (25
# points); the fourth (4 training images) not always. Seeds 0-3 (config.seed; 0 is the test's),
# CPU-2: DeiT 75, 100, 100, 100 and Swin 75, 99, 75, 75 (3 or 4 classes), from probes of 22, 25,
# 25, 45 and 25, 50, 46, 25; 8 steps at lr 6.25e-4 (10x the recipe's): DeiT 50, 50 and Swin 25,
# 25 (seeds 0, 1). The threshold asks for 3 classes: above every probe, so stage 2 must add one.
STAGE2_LR = 4e-2
MIN_TOP1 = 60.0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_transformer_trains_through_the_pipeline(name, tmp_path):
    config = _tiny_pipeline_config(name)
    results = pipeline.run(FrozenConfigDict(config), str(tmp_path))
    final = results["stage2"]
    assert final["top1"] >= MIN_TOP1 and len(final["per_class_acc"]) == 4, final["per_class_acc"]
    assert final["encoder"] == PIPELINES[name][0]
    records = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    report = json.loads((tmp_path / "stage1" / "init_from.json").read_text())
    assert report["missing"] == [] and report["unexpected"] == [] and report["loaded"]
