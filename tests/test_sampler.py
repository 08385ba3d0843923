"""The step-indexed sampler: determinism, epochs without replacement, balance, slicing."""

import jax
import numpy as np
import pytest

from ltr_jax.data.input import sampler, sampler_registry


def test_uniform_is_a_pure_function_of_step():
    key = jax.random.key(0)
    a = sampler.uniform_batch(key, 7, 100, 16)
    b = sampler.uniform_batch(key, 7, 100, 16)
    c = sampler.uniform_batch(key, 8, 100, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_uniform_epoch_covers_without_replacement_and_reshuffles():
    key = jax.random.key(1)
    n, bs = 100, 16  # 6 steps per epoch, 4 examples dropped
    epoch0 = np.concatenate([sampler.uniform_batch(key, s, n, bs) for s in range(6)])
    epoch1 = np.concatenate([sampler.uniform_batch(key, s, n, bs) for s in range(6, 12)])
    assert len(set(epoch0.tolist())) == 96 and epoch0.max() < n
    assert not np.array_equal(epoch0, epoch1)


def test_uniform_jits():
    fn = jax.jit(lambda step: sampler.uniform_batch(jax.random.key(0), step, 50, 8))
    np.testing.assert_array_equal(fn(3), sampler.uniform_batch(jax.random.key(0), 3, 50, 8))


def test_class_balanced_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(4), [400, 40, 10, 2])
    key = jax.random.key(2)
    draws = np.concatenate(
        [sampler.class_balanced_batch(key, s, labels, 4, 256) for s in range(20)]
    )
    freq = np.bincount(labels[draws], minlength=4) / len(draws)
    np.testing.assert_allclose(freq, 0.25, atol=0.03)
    assert set(np.flatnonzero(labels == 3)) == set(draws[labels[draws] == 3].tolist())
    np.testing.assert_array_equal(
        sampler.class_balanced_batch(key, 5, labels, 4, 32),
        sampler.class_balanced_batch(key, 5, labels, 4, 32),
    )


def test_unknown_sampler():
    with pytest.raises(ValueError, match="uniform, class_balanced"):
        sampler_registry.make_batch_sampler("nope", jax.random.key(0), np.zeros(4, int), 1, 2)


def test_process_slices_partition_the_global_batch():
    batch = np.arange(24)
    parts = [sampler.process_slice(batch, p, 4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), batch)
    with pytest.raises(ValueError, match="divisible"):
        sampler.process_slice(batch, 0, 5)
