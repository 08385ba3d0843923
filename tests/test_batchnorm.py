"""``model.bn_running_var``: the running-variance update against a NumPy reference."""

import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

from ltr_jax.models import batchnorm, registry


def _reference_step(x, mean, var, scale, bias, unbiased, momentum=0.9, eps=1e-5):
    """One train-mode BatchNorm step in NumPy: (output, running mean, running variance)."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    n = flat.shape[0]
    mu, var_b = flat.mean(0), flat.var(0)  # normalisation: the biased batch variance
    y = (x - mu) / np.sqrt(var_b + eps) * scale + bias
    folded = var_b * n / (n - 1) if unbiased else var_b
    return y, momentum * mean + (1 - momentum) * mu, momentum * var + (1 - momentum) * folded


@pytest.mark.parametrize("rule", ["biased", "unbiased"])
def test_train_step_matches_numpy_reference(rule):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, 3, 3, 4)).astype(np.float32)  # n = 18 values per channel
    bn = batchnorm.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    mean, var = rng.uniform(-1, 1, 4), rng.uniform(0.5, 2, 4)
    scale, bias = rng.uniform(0.5, 1.5, 4), rng.uniform(-1, 1, 4)
    for variable, value in ((bn.mean, mean), (bn.var, var), (bn.scale, scale), (bn.bias, bias)):
        variable[...] = jnp.asarray(value, jnp.float32)
    batchnorm.apply_running_var(bn, rule)
    y = bn(jnp.asarray(x))
    ref_y, ref_mean, ref_var = _reference_step(x, mean, var, scale, bias, rule == "unbiased")
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.mean[...], ref_mean, rtol=1e-6)
    np.testing.assert_allclose(bn.var[...], ref_var, rtol=1e-6)
    bn.eval()  # eval mode reads the statistics and leaves them alone
    np.testing.assert_allclose(
        bn(jnp.asarray(x)),
        (x - ref_mean) / np.sqrt(ref_var + 1e-5) * scale + bias,
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(bn.var[...], ref_var, rtol=1e-6)


def test_registry_sets_the_rule_on_every_batchnorm_and_rejects_unknown_names():
    config = mlc.ConfigDict(
        dict(
            encoder="cifar_resnet8",
            dtype="float32",
            proj_hidden=8,
            proj_dim=4,
            init="flax",
            bn_running_var="unbiased",
        )
    )
    model = registry.make_classifier(config, 3, rngs=nnx.Rngs(0))
    layers = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert layers and all(isinstance(m, batchnorm.BatchNorm) for m in layers)
    assert all(m.unbiased_running_var for m in layers)
    merged = nnx.merge(*nnx.split(model))  # the rule is static: it survives split / merge (jit)
    assert all(
        m.unbiased_running_var
        for _, m in nnx.iter_modules(merged)
        if isinstance(m, batchnorm.BatchNorm)
    )
    config.bn_running_var = "biased"
    model = registry.make_contrastive(config, rngs=nnx.Rngs(0))
    assert not any(
        m.unbiased_running_var
        for _, m in nnx.iter_modules(model)
        if isinstance(m, batchnorm.BatchNorm)
    )
    with pytest.raises(ValueError, match="valid: biased, unbiased"):
        batchnorm.apply_running_var(model, "pytorch")


def test_batch_variance_is_two_pass_in_float32():
    """A channel whose mean is 1000 standard deviations: the two-pass variance (PyTorch's) keeps
    float32's precision; Flax's one-pass E[x^2] - E[x]^2 loses mean^2 / var = 1e6 of it."""
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.normal(size=(4, 4, 4, 2))).astype(np.float32)
    bn = batchnorm.BatchNorm(2, rngs=nnx.Rngs(0))
    y = np.asarray(bn(jnp.asarray(x)), np.float64)
    flat = x.reshape(-1, 2).astype(np.float64)
    ref = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)
    assert np.abs(y.reshape(-1, 2) - ref).max() < 1e-3
