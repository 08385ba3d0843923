"""Tests for ltr_jax.losses.bns against naive per-anchor NumPy loops.

Permutation invariance: "reference" is tested exactly; "paper" exactly once the drawn anchor
masks are permuted with the batch (``bns_paper_from_masks``), and in expectation over keys.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ltr_jax.losses import bns

B, D = 16, 8

COMPOSITIONS = {
    "few_classes": np.random.default_rng(0).integers(0, 3, B),
    "singleton_class": np.array([0] * 6 + [1] * 5 + [2] * 4 + [3]),
    "one_class": np.zeros(B, dtype=int),
    "all_distinct": np.arange(B),
}


def _embeddings(seed, batch=B, dim=D):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2, batch, dim))
    return z / np.linalg.norm(z, axis=-1, keepdims=True)  # [2, B, D]


def _log_sig(x):
    return -np.logaddexp(0.0, -x)


def _naive_paper_direction(anchors, others, labels, mask, tau):
    losses = []
    for i in range(len(labels)):
        negs = [j for j in range(len(labels)) if labels[j] != labels[i]]
        terms = []
        for k in np.flatnonzero(mask[i]):
            q = anchors[k]
            pos = _log_sig(q @ others[i] / tau)
            neg = np.mean([_log_sig(-q @ others[j] / tau) for j in negs]) if negs else 0.0
            terms.append(pos + neg)
        losses.append(-np.mean(terms))
    return np.mean(losses)


def _naive_paper(z1, z2, labels, key, tau, m):
    key1, key2 = jax.random.split(key)
    mask1 = np.asarray(bns.paper_anchor_mask(key1, labels, m))
    mask2 = np.asarray(bns.paper_anchor_mask(key2, labels, m))
    return 0.5 * (
        _naive_paper_direction(z1, z2, labels, mask1, tau)
        + _naive_paper_direction(z2, z1, labels, mask2, tau)
    )


def _naive_reference(z1, z2, labels, tau):
    z = np.concatenate([z1, z2]).astype(np.float64)
    y = np.concatenate([labels, labels])
    total = 0.0
    for a in range(len(y)):
        pos = [np.exp(z[a] @ z[b] / tau) for b in range(len(y)) if b != a and y[b] == y[a]]
        neg = sum(np.exp(z[a] @ z[b] / tau) for b in range(len(y)) if y[b] != y[a])
        total += _log_sig(np.mean(pos)) + _log_sig(-neg / len(y))
    return -total / len(y)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
@pytest.mark.parametrize("m", [0, 2, 4, 20])
def test_anchor_mask_structure(name, m):
    labels = COMPOSITIONS[name]
    mask = np.asarray(bns.paper_anchor_mask(jax.random.key(3), labels, m))
    same = labels[:, None] == labels[None, :]
    counts = same.sum(1)
    assert mask.dtype == bool and mask.shape == (B, B)
    assert mask.diagonal().all()
    assert not (mask & ~same).any()
    np.testing.assert_array_equal(mask.sum(1), 1 + np.minimum(m, counts - 1))


def test_anchor_mask_uniform_over_keys():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    keys = jax.random.split(jax.random.key(0), 4000)
    masks = np.asarray(jax.vmap(lambda k: bns.paper_anchor_mask(k, labels, 2))(keys))
    freq = masks.mean(0)  # [B, B]
    # Class 0: 2 of 5 others each time -> 0.4 (std ~0.008); class 1 takes both others.
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(freq[:6, :6][off], 0.4, atol=0.04)
    np.testing.assert_allclose(freq[6:9, 6:9], 1.0)
    # Pairs are uniform too: each of the 10 pairs of row 0's others about 1/10.
    pairs = masks[:, 0, 1:6]
    codes = pairs @ (2 ** np.arange(5))
    _, pair_counts = np.unique(codes, return_counts=True)
    assert len(pair_counts) == 10
    np.testing.assert_allclose(pair_counts / len(keys), 0.1, atol=0.025)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_paper_matches_naive(name, tau):
    labels = COMPOSITIONS[name]
    z1, z2 = _embeddings(1)
    key = jax.random.key(7)
    got = bns.bns_paper(z1, z2, labels, key, tau=tau, m=4)
    want = _naive_paper(z1, z2, labels, key, tau, 4)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_reference_matches_naive(name, tau):
    labels = COMPOSITIONS[name]
    z1, z2 = _embeddings(2)
    got = bns.bns_reference(z1, z2, labels, tau=tau)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, _naive_reference(z1, z2, labels, tau), rtol=1e-5)


def test_one_class_batch_paper_has_no_negative_term():
    labels = COMPOSITIONS["one_class"]
    z1, z2 = _embeddings(4)
    got = bns.bns_paper(z1, z2, labels, jax.random.key(0), tau=0.5, m=B)
    # Every anchor set is the whole view: only the positive terms remain.
    want = -0.5 * (np.mean(_log_sig(z1 @ z2.T / 0.5)) + np.mean(_log_sig(z2 @ z1.T / 0.5)))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_dispatch_and_unknown_form():
    labels = COMPOSITIONS["few_classes"]
    z1, z2 = _embeddings(5)
    key = jax.random.key(1)
    np.testing.assert_allclose(
        bns.bns_loss(z1, z2, labels, key, form="paper", m=3),
        bns.bns_paper(z1, z2, labels, key, m=3),
    )
    np.testing.assert_allclose(
        bns.bns_loss(z1, z2, labels, None, form="reference", tau=0.2),
        bns.bns_reference(z1, z2, labels, tau=0.2),
    )
    with pytest.raises(ValueError, match="paper, reference"):
        bns.bns_loss(z1, z2, labels, key, form="sum")
    with pytest.raises(ValueError, match="key"):
        bns.bns_loss(z1, z2, labels, None, form="paper")


@pytest.mark.parametrize("form", bns.FORMS)
def test_inputs_are_renormalised_and_bf16_is_computed_in_f32(form):
    labels = COMPOSITIONS["few_classes"]
    z1, z2 = _embeddings(6)
    loss = functools.partial(bns.bns_loss, key=jax.random.key(2), tau=0.1, form=form)
    base = loss(z1, z2, labels)
    np.testing.assert_allclose(loss(3.0 * z1, 0.5 * z2, labels), base, rtol=1e-5)
    low = loss(jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16), labels)
    assert low.dtype == jnp.float32 and np.isfinite(low)
    np.testing.assert_allclose(low, base, rtol=2e-2)


@pytest.mark.parametrize("form", bns.FORMS)
@pytest.mark.parametrize("name", ["one_class", "few_classes"])
def test_gradients_finite_near_collapse(form, name):
    labels = COMPOSITIONS[name]
    rng = np.random.default_rng(8)
    base = rng.normal(size=(1, D))
    z1 = base + 1e-4 * rng.normal(size=(B, D))
    z2 = base + 1e-4 * rng.normal(size=(B, D))
    loss = functools.partial(bns.bns_loss, key=jax.random.key(3), tau=0.1, form=form)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(z1, z2, labels)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in grads)


def test_reference_permutation_invariant():
    labels = COMPOSITIONS["few_classes"]
    z1, z2 = _embeddings(9)
    perm = np.random.default_rng(9).permutation(B)
    np.testing.assert_allclose(
        bns.bns_reference(z1[perm], z2[perm], labels[perm]),
        bns.bns_reference(z1, z2, labels),
        rtol=1e-6,
    )


def test_paper_permutation_invariant_with_permuted_masks():
    labels = COMPOSITIONS["singleton_class"]
    z1, z2 = _embeddings(10)
    key1, key2 = jax.random.split(jax.random.key(4))
    mask1 = np.asarray(bns.paper_anchor_mask(key1, labels, 2))
    mask2 = np.asarray(bns.paper_anchor_mask(key2, labels, 2))
    perm = np.random.default_rng(10).permutation(B)
    ix = np.ix_(perm, perm)
    np.testing.assert_allclose(
        bns.bns_paper_from_masks(z1[perm], z2[perm], labels[perm], mask1[ix], mask2[ix]),
        bns.bns_paper_from_masks(z1, z2, labels, mask1, mask2),
        rtol=1e-6,
    )


def test_paper_permutation_invariant_in_expectation():
    labels = COMPOSITIONS["singleton_class"]
    z1, z2 = _embeddings(11)
    perm = np.random.default_rng(11).permutation(B)
    many = jax.vmap(
        lambda k, a, b, y: bns.bns_paper(a, b, y, k, m=2), in_axes=(0, None, None, None)
    )
    orig = np.asarray(many(jax.random.split(jax.random.key(5), 2000), z1, z2, labels))
    permuted = np.asarray(
        many(jax.random.split(jax.random.key(6), 2000), z1[perm], z2[perm], labels[perm])
    )
    stderr = np.sqrt((orig.var() + permuted.var()) / 2000)
    assert abs(orig.mean() - permuted.mean()) < 5 * stderr + 1e-6


@pytest.mark.parametrize("form", bns.FORMS)
def test_data_parallel_matches_single_device(form):
    devices = jax.devices()
    assert len(devices) == 8
    mesh = Mesh(np.array(devices), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    labels = np.random.default_rng(12).integers(0, 4, 32)
    z1, z2 = (jnp.asarray(z, jnp.float32) for z in _embeddings(12, batch=32))
    key = jax.random.key(7)

    def loss(a, b, y):
        return bns.bns_loss(a, b, y, key, tau=0.1, m=3, form=form)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    single = value_and_grad(z1, z2, jnp.asarray(labels))
    sharded_args = [jax.device_put(x, sharding) for x in (z1, z2, jnp.asarray(labels))]
    assert len(sharded_args[0].sharding.device_set) == 8
    sharded = value_and_grad(*sharded_args)
    np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(sharded[1], single[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", bns.FORMS)
def test_clustered_embeddings_have_lower_loss(form):
    labels = np.repeat(np.arange(4), 4)
    centres = np.eye(D)[:4]  # [4, D]: orthogonal class centres
    rng = np.random.default_rng(13)
    clustered = centres[labels] + 0.05 * rng.normal(size=(2, B, D))
    random_z1, random_z2 = _embeddings(13)
    loss = functools.partial(bns.bns_loss, key=jax.random.key(8), tau=0.5, form=form)
    assert loss(clustered[0], clustered[1], labels) < loss(random_z1, random_z2, labels)
