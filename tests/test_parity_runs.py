"""Parity runs with the paper's released code (the slow half of ``tests/test_parity.py``, a
file of its own so that ``--dist loadfile`` can run it beside the other half): twenty stage-1
training steps replayed against the released side's golden fixture, and one tiny pipeline run
with every reference switch of configs/reference/cifar10_lt.py at once.
"""

import json
import os
import sys

import ml_collections as mlc
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import parity_lib as pl  # noqa: E402

from ltr_jax import config_lib, pipeline  # noqa: E402


def _assert_params_close(ours: dict, ref: dict) -> None:
    """Norms to 1e-4; sampled entries within 1e-5 but for at most 1 % of them: Adam's first
    steps turn gradients at float-noise level into +-lr moves of either sign (bench/parity.py)."""
    assert set(ours) == set(ref)
    apart = total = 0
    for name in ref:
        assert pl.rel_err(ours[name][1], ref[name][1]) <= 1e-4, name
        diff = np.abs(np.subtract(ours[name][2:], ref[name][2:]))
        apart, total = apart + int((diff > 1e-5).sum()), total + diff.size
    assert apart <= 0.01 * total


@pytest.mark.slow  # compiles a ResNet-18 two-view train step: about a minute on 2 cores
def test_twenty_stage1_steps_match_released_training():
    losses, params = pl.stage1_run(*pl.stage1_data())
    ref = pl.load_json("stage1_train.json")
    assert pl.rel_err(losses, ref["losses"]) <= 1e-4
    _assert_params_close(pl.param_digest(params), ref["params"])


@pytest.mark.slow
def test_reference_config_smoke_runs_every_switch(tmp_path):
    """One tiny run of configs/reference/cifar10_lt.py:smoke: every reference switch at once."""
    path = os.path.join(ROOT, "configs", "reference", "cifar10_lt.py") + ":smoke"
    config = mlc.FrozenConfigDict(config_lib.load_config_file(path))
    assert config.model.init == "torch" and config.stage2.fixed_subset
    results = pipeline.run(config, str(tmp_path))
    assert results["stage1"]["views_through_bn"] == "separate"
    assert results["probe"]["augment"] == "simclr"
    assert results["stage2"]["redraw_rule"] == "reference"
    s2 = config.stage2  # drop_last=False: ceil(subset / B) steps an epoch
    steps_per_epoch = -(-results["stage2"]["subset_size"] // s2.batch_size)
    assert results["stage2"]["num_steps"] == s2.epochs * steps_per_epoch
    draws = [json.loads(line) for line in open(tmp_path / "stage2" / "draws.jsonl")]
    assert [d["epoch"] for d in draws] == [0, 1]
    assert len({d["subset_crc32"] for d in draws}) == 1  # fixed subset: the same every draw
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    evals = [r["step"] for r in records if r.get("stage") == "stage2" and "eval_top1" in r]
    assert len(evals) == config.stage2.epochs - 1  # every epoch but the last (evaluated after)
