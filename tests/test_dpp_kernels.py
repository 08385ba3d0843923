"""Tests for the IP-DPP kernel, its determinant lemma, random bits and padding helpers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import dpp
from ltr_jax.dpp.bits import bernoulli_thresholds, threefry_bits
from ltr_jax.dpp.kernels import sampling_parts


def _confidences(n, seed=0):
    return np.random.default_rng(seed).beta(4.0, 1.5, n)


@pytest.mark.parametrize("scale", dpp.SCALES)
def test_kernel_rows_sum_to_one_and_spectrum(scale):
    with jax.enable_x64(True):
        p = _confidences(40)
        s = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p), scale))
        n = len(p)
        alpha = 1 / n if scale == "paper" else 1 / n**2
        np.testing.assert_allclose(s, s.T)
        np.testing.assert_allclose(s.sum(1), 1.0, atol=1e-12)
        off = ~np.eye(n, dtype=bool)
        np.testing.assert_allclose(s[off], (alpha * np.outer(p, p))[off], rtol=1e-12)
        np.testing.assert_allclose(np.diag(s), 1 - alpha * p * p.sum() + alpha * p**2, rtol=1e-12)
        lam = np.linalg.eigvalsh(s)
        assert lam.min() > -1e-12 and lam.max() < 1 + 1e-12
        np.testing.assert_allclose(s @ np.ones(n), np.ones(n), atol=1e-12)
        np.testing.assert_allclose(lam.max(), 1.0, atol=1e-12)


def test_parts_rebuild_kernel_and_masked_rows_are_zero():
    with jax.enable_x64(True):
        p = _confidences(12, seed=1)
        mask = np.ones(12, bool)
        mask[[2, 7, 11]] = False
        d, alpha, pm = dpp.ip_dpp_parts(jnp.asarray(p), "paper", jnp.asarray(mask))
        s = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p), "paper", jnp.asarray(mask)))
        np.testing.assert_allclose(s, np.diag(d) + alpha * np.outer(pm, pm), atol=1e-15)
        assert np.all(s[~mask] == 0) and np.all(s[:, ~mask] == 0)
        alone = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p[mask])))
        np.testing.assert_allclose(s[np.ix_(mask, mask)], alone, atol=1e-15)
        assert float(alpha) == pytest.approx(1 / mask.sum())


@pytest.mark.parametrize("scale", dpp.SCALES)
def test_log_det_lemma_matches_slogdet(scale):
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        p = _confidences(30, seed=2)
        s = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p), scale))
        sels = np.stack([rng.permutation(30) < size for size in (1, 2, 5, 10, 20, 30)])
        got = jax.vmap(lambda sel: dpp.log_det_selected(jnp.asarray(p), sel, scale))(sels)
        for sel, value in zip(sels, np.asarray(got), strict=True):
            sign, want = np.linalg.slogdet(s[np.ix_(sel, sel)])
            assert sign > 0
            np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-10)
        assert float(dpp.log_det_selected(jnp.asarray(p), np.zeros(30, bool), scale)) == 0.0


def test_log_det_degenerate_kernels():
    with jax.enable_x64(True):
        ones = jnp.ones(5)
        one_item = np.zeros(5, bool)
        one_item[3] = True
        assert float(dpp.log_det_selected(ones, one_item)) == pytest.approx(np.log(1 / 5))
        assert float(dpp.log_det_selected(ones, np.arange(5) < 2)) == -np.inf
        assert float(dpp.log_det_selected(jnp.ones(1), np.ones(1, bool))) == pytest.approx(0.0)
        # Sampling falls back to the uniform limit instead of dividing by d = 0.
        parts = sampling_parts(ones, "paper", jnp.ones(5, bool))
        np.testing.assert_allclose(parts.d, 1.0)


def test_float32_and_float64_kernels_agree():
    p = _confidences(50, seed=3)
    s32 = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p, jnp.float32)))
    ld32 = float(dpp.log_det_selected(jnp.asarray(p, jnp.float32), np.arange(50) < 20))
    with jax.enable_x64(True):
        s64 = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p)))
        ld64 = float(dpp.log_det_selected(jnp.asarray(p), np.arange(50) < 20))
    assert s32.dtype == np.float32 and s64.dtype == np.float64
    np.testing.assert_allclose(s32, s64, atol=1e-6)
    np.testing.assert_allclose(ld32, ld64, rtol=1e-5)


def test_unknown_scale_and_method_fail_loudly():
    with pytest.raises(ValueError, match="paper"):
        dpp.ip_dpp_kernel(jnp.ones(3), "bogus")
    with pytest.raises(ValueError, match="structured"):
        dpp.sample_ip_dpp(jax.random.key(0), jnp.ones(3), 1, method="bogus")


def test_threefry_bits_match_jax_random_bits():
    key_data = jnp.asarray([12345, 678], jnp.uint32)
    want = jax.random.bits(jax.random.wrap_key_data(key_data), (3, 1000))
    np.testing.assert_array_equal(threefry_bits(key_data, (3, 1000)), want)


def test_bernoulli_thresholds():
    t = np.asarray(bernoulli_thresholds(jnp.asarray([0.0, 0.25, 0.5, 1.0, 1.5])), np.float64)
    np.testing.assert_allclose(t / 2**32, [0.0, 0.25, 0.5, 1.0, 1.0], atol=1e-7)


def test_padding_helpers_round_trip():
    values = [np.arange(5.0), np.arange(130.0), np.arange(1.0)]
    padded, valid = dpp.pad_per_class(values)
    assert padded.shape == valid.shape == (3, 256)
    assert valid.sum(1).tolist() == [5, 130, 1]
    assert dpp.bucket_size(130, power_of_two=True) == 256
    assert dpp.bucket_size(100, multiple=128) == 128
    np.testing.assert_array_equal(padded[1, :130], values[1])
    picked = dpp.unpad_selection(valid, [5, 130, 1])
    assert [len(x) for x in picked] == [5, 130, 1]
    sel = np.zeros(8, bool)
    sel[[1, 4]] = True
    assert dpp.selection_indices(sel, 3).tolist() == [1, 4, -1]


def test_brute_force_enumeration_sanity():
    """The lemma holds for every subset of a small kernel (guards the brute-force oracle)."""
    with jax.enable_x64(True):
        p = _confidences(6, seed=4)
        s = np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p)))
        for size in range(1, 7):
            for subset in itertools.combinations(range(6), size):
                sel = np.isin(np.arange(6), subset)
                want = np.log(np.linalg.det(s[np.ix_(subset, subset)]))
                got = float(dpp.log_det_selected(jnp.asarray(p), sel))
                assert got == pytest.approx(want, rel=1e-10, abs=1e-10)
