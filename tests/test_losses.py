"""Classification losses against naive per-example NumPy loops: CE, Balanced Softmax, logit
adjustment, LDAM, each with and without (DRW) class weights; DRW's schedule; the cosine head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ltr_jax.losses import classification
from ltr_jax.models import heads

COUNTS = np.array([500, 120, 40, 9, 3])
C, B = len(COUNTS), 12


def _batch(seed, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = scale * rng.normal(size=(B, C)).astype(np.float32)
    labels = rng.integers(0, C, B)
    labels[:C] = np.arange(C)  # every class present
    return logits, labels


def _naive_ce_one(row, y):
    row = np.asarray(row, np.float64)
    return np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[y]


def _naive_weighted_mean(losses, labels, weights):
    if weights is None:
        return np.mean(losses)
    w = [weights[y] for y in labels]
    return sum(wi * li for wi, li in zip(w, losses, strict=True)) / sum(w)


def _naive_loss(name, logits, labels, weights=None, tau=1.0, max_m=0.5, s=30.0):
    prior = COUNTS / COUNTS.sum()
    losses = []
    for i, y in enumerate(labels):
        row = np.array(logits[i], np.float64)
        if name in ("balanced_softmax", "logit_adjust"):
            t = 1.0 if name == "balanced_softmax" else tau
            row = np.array([row[c] + t * np.log(prior[c]) for c in range(C)])
        elif name == "ldam":
            margins = [1.0 / COUNTS[c] ** 0.25 for c in range(C)]
            row[y] -= max_m * margins[y] / max(margins)
            row = s * row
        losses.append(_naive_ce_one(row, y))
    return _naive_weighted_mean(losses, labels, weights)


def _naive_cb_weights(beta):
    w = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    return [wi * C / sum(w) for wi in w]


@pytest.mark.parametrize("name", classification.LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_losses_match_naive_loops(name, weighted):
    logits, labels = _batch(0, scale=0.5 if name == "ldam" else 3.0)  # LDAM: cosine-like logits
    weights = np.asarray(_naive_cb_weights(0.9999), np.float32) if weighted else None
    loss = classification.make_classification_loss(name, COUNTS)
    got = loss(jnp.asarray(logits), jnp.asarray(labels), weights)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, _naive_loss(name, logits, labels, weights), rtol=2e-5)


def test_logit_adjust_tau_and_ldam_options():
    logits, labels = _batch(1, scale=0.5)
    la = classification.make_classification_loss("logit_adjust", COUNTS, {"tau": 2.0})
    np.testing.assert_allclose(
        la(logits, labels), _naive_loss("logit_adjust", logits, labels, tau=2.0), rtol=2e-5
    )
    ldam = classification.make_classification_loss(
        "ldam", COUNTS, {"max_margin": 0.3, "scale": 10.0}
    )
    want = _naive_loss("ldam", logits, labels, max_m=0.3, s=10.0)
    np.testing.assert_allclose(ldam(logits, labels), want, rtol=2e-5)


def test_ldam_margins_and_class_balanced_weights():
    margins = classification.ldam_margins(COUNTS, 0.5)
    np.testing.assert_allclose(margins, 0.5 * (COUNTS.min() / COUNTS) ** 0.25, rtol=1e-6)
    assert margins.argmax() == C - 1 and np.isclose(margins.max(), 0.5)
    weights = classification.class_balanced_weights(COUNTS, 0.9999)
    np.testing.assert_allclose(weights, _naive_cb_weights(0.9999), rtol=1e-5)
    np.testing.assert_allclose(weights.sum(), C, rtol=1e-6)
    assert np.all(np.diff(weights) > 0)  # rarer classes weigh more


def test_drw_weights_switch_on_at_start_step_under_jit():
    weights_at = jax.jit(classification.make_drw_weights(COUNTS, 0.9999, start_step=30))
    np.testing.assert_array_equal(weights_at(jnp.int32(0)), np.ones(C))
    np.testing.assert_array_equal(weights_at(jnp.int32(29)), np.ones(C))
    np.testing.assert_allclose(weights_at(jnp.int32(30)), _naive_cb_weights(0.9999), rtol=1e-5)
    assert weights_at._cache_size() == 1  # one compiled function for both phases


def test_unit_weights_equal_unweighted_and_unknown_loss():
    logits, labels = _batch(2)
    for name in classification.LOSSES:
        loss = classification.make_classification_loss(name, COUNTS)
        np.testing.assert_allclose(
            loss(logits, labels, np.ones(C)), loss(logits, labels), rtol=1e-6
        )
    with pytest.raises(ValueError, match="ce, balanced_softmax, logit_adjust, ldam"):
        classification.make_classification_loss("focal", COUNTS)


def test_cosine_head_outputs_cosines():
    head = heads.CosineHead(8, C, rngs=nnx.Rngs(0))
    x = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    w = np.asarray(head.kernel[...])
    want = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    np.testing.assert_allclose(head(jnp.asarray(3.0 * x)), want, rtol=1e-5, atol=1e-6)
