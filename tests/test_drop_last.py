"""``probe.drop_last`` / ``stage2.drop_last``: the kept last partial batch against NumPy."""

import jax
import numpy as np
import pytest

from ltr_jax import config_lib, validation
from ltr_jax.data.input import sampler
from ltr_jax.losses import classification


def test_kept_partial_batch_sees_every_example_once_per_epoch():
    key, n, b = jax.random.key(3), 10, 4  # 3 steps an epoch: 4 + 4 + 2 real rows
    spe = sampler.steps_per_epoch(n, b, drop_last=False)
    assert spe == 3 and sampler.steps_per_epoch(n, b) == 2
    for epoch in range(2):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        seen, weights = [], []
        for step in range(epoch * spe, (epoch + 1) * spe):  # resumable: a pure fn of the step
            pos, w = jax.jit(sampler.epoch_batch, static_argnums=(2, 3, 4))(key, step, n, b, False)
            seen.append(np.asarray(pos)[np.asarray(w) > 0])
            weights.append(np.asarray(w))
            assert np.asarray(pos).shape == (b,)
        np.testing.assert_array_equal(np.concatenate(seen), order)  # each example once, in order
        np.testing.assert_array_equal(np.concatenate(weights), [1] * 10 + [0] * 2)


@pytest.mark.parametrize("step", [0, 1, 5])
def test_dropping_the_last_batch_is_uniform_batch(step):
    key = jax.random.key(4)
    pos, w = sampler.epoch_batch(key, step, 10, 4, True)
    np.testing.assert_array_equal(pos, sampler.uniform_batch(key, step, 10, 4))
    assert np.all(np.asarray(w) == 1)


def test_row_weighted_cross_entropy_is_the_mean_over_real_rows():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(4, 3)).astype(np.float32), np.array([0, 2, 1, 1])
    w = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    per_row = -log_p[np.arange(4), labels]
    got = classification.cross_entropy(logits, labels, row_weights=w)
    np.testing.assert_allclose(got, per_row[:2].mean(), rtol=1e-6)
    cw = np.array([1.0, 2.0, 3.0], np.float32)  # with class weights: both multiply
    got = classification.cross_entropy(logits, labels, class_weights=cw, row_weights=w)
    ref = (cw[labels] * w * per_row).sum() / (cw[labels] * w).sum()
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_kept_partial_batch_on_streamed_data_fails_before_training():
    config = config_lib.base_config()
    config.data.name = "imagenet_lt"
    config.stage2.drop_last = False
    with pytest.raises(validation.ConfigError, match="stage2.drop_last=False needs in-memory"):
        validation.validate(config, ["stage2"], 1)
