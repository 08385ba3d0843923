"""Every transformer family trains through the whole pipeline (stage 1 -> probe -> stage 2).

One tiny run per architecture at smoke size (2 stage-1 steps, 1 probe and 1 stage-2 epoch), on
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
    config.data.synthetic.update(num_classes=4, train_per_class=40, test_per_class=8)
    config.data.update(many_threshold=30, few_threshold=10)
    config.model.update(encoder=encoder, init_from=os.path.join(FIXTURES, init))
    config.train.update(eval_every_epochs=0.0, eval_batch_size=32, tensorboard=False)
    config.stage1.update(epochs=1, batch_size=32)
    config.probe.update(epochs=1, batch_size=16, per_class=8)
    config.stage2.update(
        epochs=1, batch_size=16, redraw_every_epochs=1, k_per_class=8, augment="crop_flip"
    )
    return config


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_transformer_trains_through_the_pipeline(name, tmp_path):
    config = _tiny_pipeline_config(name)
    results = pipeline.run(FrozenConfigDict(config), str(tmp_path))
    final = results["stage2"]
    assert 0.0 <= final["top1"] <= 100.0 and len(final["per_class_acc"]) == 4
    assert final["encoder"] == PIPELINES[name][0]
    records = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    report = json.loads((tmp_path / "stage1" / "init_from.json").read_text())
    assert report["missing"] == [] and report["unexpected"] == [] and report["loaded"]
