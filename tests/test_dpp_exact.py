"""Exactness of the k-DPP samplers against brute-force enumeration of every k-subset.

Normalisers and log-probabilities are compared to float64 enumeration to ~1e-10; samplers are
compared with a chi-square test on 20k vmapped draws, and the same test must reject wrong
samplers (uniform, the proposal without its acceptance step, a k-DPP of another kernel).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ltr_jax import dpp

NUM_DRAWS = 20_000
# A spread of confidences: d_i and r_i = alpha p_i^2 / d_i both vary, so the det(S_Y) law
# differs clearly from uniform and from prod_{Y} d_i alone.
P6 = np.array([0.05, 0.3, 0.6, 0.9, 0.97, 0.995])


def _subsets(n, k):
    return [np.isin(np.arange(n), c) for c in itertools.combinations(range(n), k)]


def _brute_log_dets(kernel, k):
    kernel = np.asarray(kernel, np.float64)
    return np.array([np.log(np.linalg.det(kernel[np.ix_(s, s)])) for s in _subsets(len(kernel), k)])


def _brute_probs(kernel, k):
    log_dets = _brute_log_dets(kernel, k)
    w = np.exp(log_dets - log_dets.max())
    return w / w.sum()


def _ip_kernel64(p, scale="paper"):
    with jax.enable_x64(True):
        return np.asarray(dpp.ip_dpp_kernel(jnp.asarray(p, jnp.float64), scale))


def _counts(sels, n, k):
    """Histogram of drawn subsets in `_subsets(n, k)` order (all draws must have size k)."""
    sels = np.asarray(sels)
    assert np.all(sels.sum(1) == k)
    index = {tuple(s): i for i, s in enumerate(_subsets(n, k))}
    counts = np.zeros(len(index))
    for row in sels:
        counts[index[tuple(row)]] += 1
    return counts


def _chi2_pvalue(counts, probs):
    expected = probs * counts.sum()
    return stats.chi2.sf(np.sum((counts - expected) ** 2 / expected), len(probs) - 1)


def _draw_many(fn, seed=0, num=NUM_DRAWS):
    keys = jax.random.split(jax.random.key(seed), num)
    return np.asarray(jax.jit(jax.vmap(fn))(keys))


@pytest.mark.parametrize("n", [3, 6, 8])
@pytest.mark.parametrize("scale", dpp.SCALES)
def test_log_normalizers_match_brute_force(n, scale):
    p = np.random.default_rng(n).beta(2.0, 1.0, n)
    kernel = _ip_kernel64(p, scale)
    with jax.enable_x64(True):
        log_esp = dpp.log_elementary_symmetric(np.linalg.eigvalsh(kernel), n)
        for k in range(1, n + 1):
            want = np.log(np.sum(np.exp(_brute_log_dets(kernel, k))))
            got = dpp.structured_log_normalizer(jnp.asarray(p), k, scale)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(log_esp[k], want, rtol=1e-9, atol=1e-9)


def test_log_prob_of_every_subset_matches_brute_force():
    kernel = _ip_kernel64(P6)
    with jax.enable_x64(True):
        sels = np.stack(_subsets(6, 3))
        got = jax.vmap(lambda s: dpp.structured_log_prob(jnp.asarray(P6), s, 3))(sels)
    np.testing.assert_allclose(np.exp(got), _brute_probs(kernel, 3), rtol=1e-10)


def test_masked_normalizer_equals_the_unpadded_class():
    p = np.array([0.2, 0.0, 0.7, 0.9, 1.0, 0.4, 0.55, 0.3])
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    with jax.enable_x64(True):
        got = dpp.structured_log_normalizer(jnp.asarray(p), 3, mask=jnp.asarray(mask))
        want = dpp.structured_log_normalizer(jnp.asarray(p[mask]), 3)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _masked_problem():
    """P6 padded to 8 items; the padding holds the extreme values 1.0 and 0.0."""
    p = np.array([0.05, 1.0, 0.3, 0.6, 0.0, 0.9, 0.97, 0.995])
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    return p, mask


@pytest.mark.parametrize("method", ["structured", "structured_dp", "spectral"])
@pytest.mark.parametrize("masked", [False, True])
def test_exact_samplers_match_brute_force(method, masked):
    p, mask = _masked_problem() if masked else (P6, np.ones(6, bool))
    p32, m = jnp.asarray(p, jnp.float32), jnp.asarray(mask)
    sels = _draw_many(lambda key: dpp.sample_ip_dpp(key, p32, 3, method=method, mask=m), seed=1)
    assert not sels[:, ~mask].any()
    counts = _counts(sels[:, mask], 6, 3)
    assert _chi2_pvalue(counts, _brute_probs(_ip_kernel64(P6), 3)) > 1e-4


def test_negative_controls_are_rejected():
    """The chi-square test has the power to catch plausible sampler bugs."""
    target = _brute_probs(_ip_kernel64(P6), 3)
    p32 = jnp.asarray(P6, jnp.float32)
    wrong = {
        "uniform": lambda key: dpp.sample_ip_dpp(key, p32, 3, method="uniform"),
        # The rejection sampler without its acceptance step: P(Y) ~ prod_Y d_i.
        "proposal_only": lambda key: dpp.sample_conditional_bernoulli(
            key, dpp.ip_dpp_parts(p32).d, 3
        ),
        # An exact k-DPP of the "reference" (alpha = 1/N^2) kernel.
        "other_kernel": lambda key: dpp.sample_ip_dpp(key, p32, 3, scale="reference"),
    }
    for name, fn in wrong.items():
        counts = _counts(_draw_many(fn, seed=2), 6, 3)
        assert _chi2_pvalue(counts, target) < 1e-12, name


@pytest.mark.parametrize(("num_proposals", "num_candidates"), [(16, 1), (3, 2)])
def test_rejection_batch_sizes_keep_exactness(num_proposals, num_candidates):
    """Dropping the untested trials of a batch must not bias the draw."""
    p32 = jnp.asarray(P6, jnp.float32)

    def draw(key):
        return dpp.sample_structured(
            key, p32, 3, num_proposals=num_proposals, num_candidates=num_candidates
        )

    sels = _draw_many(draw, seed=7)
    assert _chi2_pvalue(_counts(sels, 6, 3), _brute_probs(_ip_kernel64(P6), 3)) > 1e-4


def test_conditional_bernoulli_is_exact_for_its_own_law():
    w = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])
    probs = np.array([np.prod(w[s]) for s in _subsets(6, 3)])
    sels = _draw_many(lambda key: dpp.sample_conditional_bernoulli(key, jnp.asarray(w), 3), seed=3)
    assert _chi2_pvalue(_counts(sels, 6, 3), probs / probs.sum()) > 1e-4


@pytest.mark.parametrize("k", [2, 4])
def test_spectral_sampler_on_a_general_psd_kernel(k):
    rng = np.random.default_rng(k)
    a = rng.normal(size=(7, 7))
    kernel = a @ a.T / 7 + 0.05 * np.eye(7)
    mask = np.array([1, 1, 0, 1, 1, 1, 1], bool)
    probs = _brute_probs(kernel[np.ix_(mask, mask)], k)
    kern32, m = jnp.asarray(kernel, jnp.float32), jnp.asarray(mask)
    sels = _draw_many(lambda key: dpp.sample_k_dpp(key, kern32, k, mask=m), seed=4)
    assert not sels[:, ~mask].any()
    assert _chi2_pvalue(_counts(sels[:, mask], 6, k), probs) > 1e-4
    # The same draws fail against the k-DPP of a different kernel (the identity: uniform).
    assert _chi2_pvalue(_counts(sels[:, mask], 6, k), np.full(len(probs), 1 / len(probs))) < 1e-12


def test_sample_k_dpp_eigh_reuses_a_decomposition():
    kernel = _ip_kernel64(P6)
    lam, vecs = np.linalg.eigh(kernel)
    lam, vecs = jnp.asarray(lam, jnp.float32), jnp.asarray(vecs, jnp.float32)
    sels = _draw_many(lambda key: dpp.sample_k_dpp_eigh(key, lam, vecs, 3), seed=5)
    assert _chi2_pvalue(_counts(sels, 6, 3), _brute_probs(kernel, 3)) > 1e-4


def test_float64_structured_sampler_matches_brute_force():
    with jax.enable_x64(True):
        p64 = jnp.asarray(P6)
        sels = _draw_many(lambda key: dpp.sample_ip_dpp(key, p64, 3), seed=6, num=10_000)
    assert _chi2_pvalue(_counts(sels, 6, 3), _brute_probs(_ip_kernel64(P6), 3)) > 1e-4
