"""SupCon against a naive per-anchor NumPy loop; edge compositions, gradients, 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ltr_jax.losses import supcon

B, D = 16, 8

COMPOSITIONS = {
    "few_classes": np.random.default_rng(0).integers(0, 3, B),
    "singleton_class": np.array([0] * 6 + [1] * 5 + [2] * 4 + [3]),
    "one_class": np.zeros(B, dtype=int),
    "all_distinct": np.arange(B),
}


def _embeddings(seed, batch=B, dim=D):
    z = np.random.default_rng(seed).normal(size=(2, batch, dim))
    return z / np.linalg.norm(z, axis=-1, keepdims=True)  # [2, B, D]


def _naive_supcon(z1, z2, labels, tau):
    z = np.concatenate([z1, z2]).astype(np.float64)
    y = np.concatenate([labels, labels])
    n = len(y)
    total = 0.0
    for a in range(n):
        denom = sum(np.exp(z[a] @ z[b] / tau) for b in range(n) if b != a)
        positives = [p for p in range(n) if p != a and y[p] == y[a]]
        total += -np.mean([np.log(np.exp(z[a] @ z[p] / tau) / denom) for p in positives])
    return total / n


@pytest.mark.parametrize("name", list(COMPOSITIONS))
@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_matches_naive(name, tau):
    labels = COMPOSITIONS[name]
    z1, z2 = _embeddings(1)
    got = supcon.supcon_loss(z1, z2, labels, tau=tau)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, _naive_supcon(z1, z2, labels, tau), rtol=1e-5)


def test_inputs_are_renormalised():
    labels = COMPOSITIONS["few_classes"]
    z1, z2 = _embeddings(2)
    np.testing.assert_allclose(
        supcon.supcon_loss(4.0 * z1, 0.3 * z2, labels),
        supcon.supcon_loss(z1, z2, labels),
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", ["one_class", "singleton_class"])
def test_gradients_finite_near_collapse(name):
    labels = COMPOSITIONS[name]
    rng = np.random.default_rng(3)
    base = rng.normal(size=(1, D))
    z1 = base + 1e-4 * rng.normal(size=(B, D))
    z2 = base + 1e-4 * rng.normal(size=(B, D))
    loss = lambda a, b: supcon.supcon_loss(a, b, labels, tau=0.05)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(z1, z2)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)


def test_clustered_embeddings_have_lower_loss():
    labels = np.repeat(np.arange(4), 4)
    clustered = np.eye(D)[:4][labels] + 0.05 * np.random.default_rng(4).normal(size=(2, B, D))
    z1, z2 = _embeddings(4)
    assert supcon.supcon_loss(*clustered, labels) < supcon.supcon_loss(z1, z2, labels)


def test_data_parallel_matches_single_device():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    labels = jnp.asarray(np.random.default_rng(5).integers(0, 4, 32))
    z1, z2 = (jnp.asarray(z, jnp.float32) for z in _embeddings(5, batch=32))
    value_and_grad = jax.jit(
        jax.value_and_grad(lambda a, b, y: supcon.supcon_loss(a, b, y, 0.1), argnums=(0, 1))
    )
    single = value_and_grad(z1, z2, labels)
    sharded = value_and_grad(*[jax.device_put(x, sharding) for x in (z1, z2, labels)])
    np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(sharded[1], single[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
