"""Model shapes, parameter counts and the registry."""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

from ltr_jax.models import registry


def _num_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize(
    "name, expected, dim",
    [
        ("cifar_resnet18", 11.17e6, 512),  # CIFAR ResNet-18 without fc: 11,168,832
        ("cifar_resnet34", 21.28e6, 512),
        ("cifar_resnet32", 0.4635e6, 64),  # LDAM ResNet-32 without fc
    ],
)
def test_parameter_counts(name, expected, dim):
    encoder = nnx.eval_shape(lambda: registry.make_encoder(name, rngs=nnx.Rngs(0)))
    assert encoder.feature_dim == dim
    assert abs(_num_params(encoder) - expected) / expected < 0.002


def test_resnet32_with_head_is_ldam_size():
    config = mlc.ConfigDict(dict(encoder="cifar_resnet32", dtype="float32"))
    model = registry.make_classifier(config, 10, rngs=nnx.Rngs(0))
    assert _num_params(model) == 464154  # 0.46M, as in the LDAM paper


def test_resnet18_feature_shape():
    encoder = nnx.eval_shape(lambda: registry.make_encoder("cifar_resnet18", rngs=nnx.Rngs(0)))
    out = jax.eval_shape(
        lambda m, x: m(x), encoder, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    )
    assert out.shape == (2, 512)


def test_shapes_and_modes(name="cifar_resnet8"):
    config = mlc.ConfigDict(dict(encoder=name, dtype="float32", proj_hidden=32, proj_dim=16))
    model = registry.make_classifier(config, 7, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    assert model(x).shape == (4, 7)
    stats_before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    model.eval()
    model(x)
    after = nnx.state(model, nnx.BatchStat)
    assert all(
        jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), stats_before, after))
    )
    net = registry.make_contrastive(config, rngs=nnx.Rngs(0))
    z = net(x)
    assert z.shape == (4, 16)
    assert jnp.allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
    config = mlc.ConfigDict(dict(encoder="cifar_resnet8", dtype="bfloat16"))
    model = registry.make_classifier(config, 3, rngs=nnx.Rngs(0))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
    assert model(jnp.ones((2, 32, 32, 3))).dtype == jnp.float32


def test_registry_errors_name_valid_choices():
    with pytest.raises(ValueError, match="cifar_resnet18"):
        registry.make_encoder("resnet1000", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="bfloat16"):
        registry.compute_dtype("float8")


@pytest.mark.parametrize("name", ["vit_smoke", "deit_smoke", "swin_smoke"])
def test_every_layer_norm_is_two_pass_and_exact_on_offset_tokens(name):
    """Tokens far from zero (mean 300, spread 0.05): the one-pass variance E[x^2] - E[x]^2 is
    wrong by over 100 in the output in float32; the two-pass one is within 1e-3 of NumPy's
    float64 LayerNorm. Every LayerNorm of the encoder must be the two-pass kind."""
    encoder = registry.make_encoder(name, rngs=nnx.Rngs(0))
    norms = [m for _, m in nnx.iter_modules(encoder) if isinstance(m, nnx.LayerNorm)]
    assert norms and all(not m.use_fast_variance for m in norms)
    norm = norms[0]
    dim = norm.num_features
    x = 300.0 + np.random.default_rng(0).normal(0.0, 0.05, (4, dim))
    x = x.astype(np.float32).astype(np.float64)  # the input as the module sees it
    centred = x - x.mean(-1, keepdims=True)
    ref = centred / np.sqrt(centred.var(-1, keepdims=True) + norm.epsilon)
    ref = ref * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...])
    out = norm(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, atol=1e-3)
