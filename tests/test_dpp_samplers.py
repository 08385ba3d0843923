"""Contracts of every IP-DPP selector: sizes, masks, batching, greedy references, large N."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import dpp
from ltr_jax.dpp.alg1 import keep_eigenvectors
from ltr_jax.dpp.kernels import mark_masked


def _confidences(n, seed=0, a=4.0, b=1.5):
    return np.random.default_rng(seed).beta(a, b, n).astype(np.float32)


@pytest.mark.parametrize("method", dpp.METHODS)
def test_exactly_k_valid_items_and_small_classes_kept(method):
    p = jnp.asarray(_confidences(40, seed=1))
    mask = np.ones(40, bool)
    mask[::4] = False  # 30 valid items
    for seed in range(3):
        sel = np.asarray(dpp.sample_ip_dpp(jax.random.key(seed), p, 10, method=method, mask=mask))
        assert sel.dtype == bool and sel.shape == (40,)
        assert sel.sum() == 10 and not sel[~mask].any()
    few = np.arange(40) < 8  # 8 <= k valid items: all of them, nothing else
    sel = dpp.sample_ip_dpp(jax.random.key(0), p, 10, method=method, mask=few)
    np.testing.assert_array_equal(sel, few)
    np.testing.assert_array_equal(
        dpp.sample_ip_dpp(jax.random.key(0), p[:5], 5, method=method), True
    )


@pytest.mark.parametrize("method", dpp.METHODS)
def test_batched_equals_per_class_calls(method):
    sizes = [30, 17, 8]
    padded, valid = dpp.pad_per_class([_confidences(n, seed=n) for n in sizes], multiple=32)
    key = jax.random.key(7)
    batched = np.asarray(dpp.sample_ip_dpp_batched(key, padded, valid, 10, method=method))
    for c in range(len(sizes)):
        one = dpp.sample_ip_dpp(
            jax.random.fold_in(key, c), padded[c], 10, method=method, mask=valid[c]
        )
        np.testing.assert_array_equal(batched[c], one)
    assert batched.sum(1).tolist() == [10, 10, 8]


def _naive_greedy_map(kernel, k):
    chosen = []
    for _ in range(k):
        gains = [
            -np.inf
            if i in chosen
            else np.linalg.slogdet(kernel[np.ix_(chosen + [i], chosen + [i])])[1]
            for i in range(len(kernel))
        ]
        chosen.append(int(np.argmax(gains)))
    return np.isin(np.arange(len(kernel)), chosen)


def test_greedy_map_equals_naive_greedy():
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = rng.normal(size=(12, 12))
        kernel = a @ a.T / 12 + 0.01 * np.eye(12)
        want = _naive_greedy_map(kernel, 6)
        np.testing.assert_array_equal(dpp.greedy_map(jnp.asarray(kernel, jnp.float32), 6), want)
    p = _confidences(15, seed=3)
    want = _naive_greedy_map(np.asarray(dpp.ip_dpp_kernel(p), np.float64), 7)
    np.testing.assert_array_equal(
        dpp.sample_ip_dpp(jax.random.key(0), p, 7, method="greedy_map"), want
    )
    np.testing.assert_array_equal(dpp.greedy_map(dpp.ip_dpp_kernel(p), 7), want)


def _naive_alg1_greedy_phase(basis, k):
    """Paper Alg. 1, step 2, with explicit re-orthonormalisation (QR) after each pick."""
    chosen = []
    for _ in range(k):
        norms = np.sum(basis**2, axis=1)
        norms[chosen] = -np.inf
        i = int(np.argmax(norms))
        chosen.append(i)
        j = int(np.argmax(np.abs(basis[i])))
        basis = basis - np.outer(basis[:, j], basis[i] / basis[i, j])
        basis = np.delete(basis, j, axis=1)
        if basis.shape[1]:
            basis = np.linalg.qr(basis)[0]
    return np.isin(np.arange(len(norms)), chosen)


def test_paper_alg1_matches_explicit_reorthonormalisation():
    with jax.enable_x64(True):
        p = jnp.asarray(_confidences(30, seed=4), jnp.float64)
        key, k = jax.random.key(3), 8
        kernel = dpp.ip_dpp_kernel(p)
        got = dpp.sample_paper_alg1(key, kernel, k)
        lam, vecs = np.linalg.eigh(np.asarray(mark_masked(kernel, jnp.ones(30, bool))[0]))
        lam, vecs = lam[::-1], vecs[:, ::-1]
        keep = jnp.asarray(np.maximum(lam, 0) / (np.maximum(lam, 0) + 1))
        kept = np.asarray(keep_eigenvectors(key, keep, jnp.ones(30, bool), k, jnp.asarray(True)))
        assert kept.sum() == k
        np.testing.assert_array_equal(got, _naive_alg1_greedy_phase(vecs[:, kept], k))


def test_paper_alg1_prefers_low_confidence():
    p = _confidences(200, seed=5, a=2.0, b=2.0)
    for seed in range(3):
        sel = np.asarray(dpp.sample_ip_dpp(jax.random.key(seed), p, 50, method="paper_alg1"))
        assert sel.sum() == 50
        assert p[sel].mean() < p.mean() - 0.05


def test_exact_samplers_agree_at_moderate_size():
    """Mean selected confidence: structured, DP and spectral agree; uniform does not."""
    p = jnp.asarray(_confidences(200, seed=6, a=2.0, b=1.0))
    k, num = 40, 2000
    lam, vecs = jnp.linalg.eigh(dpp.ip_dpp_kernel(p))
    samplers = {
        "structured": lambda key: dpp.sample_ip_dpp(key, p, k),
        "structured_dp": lambda key: dpp.sample_ip_dpp(key, p, k, method="structured_dp"),
        "spectral": lambda key: dpp.sample_k_dpp_eigh(key, lam, vecs, k),
        "uniform": lambda key: dpp.sample_ip_dpp(key, p, k, method="uniform"),
    }
    stats = {}
    for i, (name, fn) in enumerate(samplers.items()):
        sels = jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(i), num))
        means = np.asarray(sels @ p) / k
        stats[name] = (means.mean(), means.var() / num)

    def z(a, b):
        return (stats[a][0] - stats[b][0]) / np.sqrt(stats[a][1] + stats[b][1])

    assert abs(z("structured", "structured_dp")) < 4.5
    assert abs(z("structured", "spectral")) < 4.5
    assert z("uniform", "structured") > 10


def test_log_normalizer_float32_float64_and_spectral_agree():
    p = _confidences(300, seed=7)
    z32 = float(dpp.structured_log_normalizer(jnp.asarray(p), 50))
    with jax.enable_x64(True):
        p64 = jnp.asarray(p, jnp.float64)
        z64 = float(dpp.structured_log_normalizer(p64, 50))
        lam = jnp.linalg.eigvalsh(dpp.ip_dpp_kernel(p64))
        z_spec = float(dpp.log_elementary_symmetric(lam, 50)[50])
    np.testing.assert_allclose(z32, z64, rtol=1e-5)
    np.testing.assert_allclose(z_spec, z64, rtol=1e-10)


@pytest.mark.parametrize("method", ["structured", "structured_dp", "greedy_map", "uniform"])
def test_large_class(method):
    p = _confidences(5000, seed=8)
    sel = dpp.sample_ip_dpp(jax.random.key(0), p, 500, method=method)
    assert int(sel.sum()) == 500
    assert np.isfinite(float(dpp.log_det_selected(p, sel)))


@pytest.mark.parametrize("method", ["spectral", "paper_alg1"])
def test_dense_methods_at_large_k(method):
    p = _confidences(1200, seed=9)
    sel = dpp.sample_ip_dpp(jax.random.key(0), p, 1000, method=method)
    assert int(sel.sum()) == 1000
    assert np.isfinite(float(dpp.log_det_selected(p, sel)))


@pytest.mark.parametrize("method", ["structured", "structured_dp", "spectral"])
def test_extreme_confidences_terminate(method):
    ones = jnp.ones(50, jnp.float32)
    near = jnp.asarray(np.r_[np.full(45, 1 - 1e-7), np.full(5, 0.3)], jnp.float32)
    for p in (ones, near):
        assert int(dpp.sample_ip_dpp(jax.random.key(1), p, 20, method=method).sum()) == 20
