"""The registries of string switches: one entry makes a name valid, usable and labelled.

Each test registers (with ``monkeypatch``, so the registry is restored) or looks up entries and
checks the three places a switch is used: config validation, the stage or data code that calls
it, and the report. All unit-sized: no model training, no data loading.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import config_lib, report, validation
from ltr_jax.losses import bns, classification, stage1, supcon
from ltr_jax.stages import representation, supervised

B, D = 8, 4
LABELS = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)


def _views(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (B, D)), jax.random.normal(k2, (B, D))


def _stage1_config(**kw):
    config = config_lib.base_config()
    config.stage1.update(kw)
    return config


# --------------------------------------------------------------------------------------------
# Stage-1 losses.


def test_stage1_builtin_losses_match_their_functions():
    z1, z2 = _views()
    section = _stage1_config().stage1
    key = jax.random.key(3)
    want = bns.bns_loss(z1, z2, LABELS, key, tau=0.5, m=4, form="reference")
    np.testing.assert_allclose(stage1.lookup("bns").loss(z1, z2, LABELS, key, section), want)
    want = supcon.supcon_loss(z1, z2, LABELS, tau=0.1)
    np.testing.assert_allclose(stage1.lookup("supcon").loss(z1, z2, LABELS, key, section), want)
    assert report.method_label({"stage1": section.to_dict()}, ["stage1"]) == "BNS(reference)"
    with pytest.raises(ValueError, match="Unknown stage1.loss 'nope'; valid: bns, supcon"):
        stage1.lookup("nope")


def _dummy_loss(z1, z2, labels, key, section):
    del labels, key, section
    return jnp.mean((z1 - z2) ** 2)


def test_a_registered_stage1_loss_is_valid_used_and_labelled(monkeypatch):
    entry = stage1.Stage1Loss(loss=_dummy_loss, label=lambda section: "Dummy")
    monkeypatch.setitem(stage1.STAGE1_LOSSES, "dummy", entry)
    config = _stage1_config(loss="dummy")
    validation.check_section(config, "stage1")  # valid once registered
    identity = lambda x: x.reshape(x.shape[0], -1)[:, :D]  # a "model": the first D pixels
    images = jax.random.randint(jax.random.key(1), (B, 4, 4, 3), 0, 256, jnp.int32)
    batch = {"images": images.astype(jnp.uint8), "labels": LABELS}
    views = []
    view = lambda key, b, v: views.append(v) or (b["images"][..., :1] / 255.0 + v)
    feed = types.SimpleNamespace(view=view)
    loss, aux = representation.make_loss_fn(config.stage1, feed)(identity, batch, jax.random.key(0))
    assert views == [0, 1]
    np.testing.assert_allclose(loss, 1.0, rtol=1e-6)  # the two views differ by exactly 1
    assert "pos_sim" in aux
    labels = report.method_label({"stage1": config.stage1.to_dict()}, ["stage1", "probe"])
    assert labels == "Dummy + probe"  # not "BNS(...)"
    monkeypatch.delitem(stage1.STAGE1_LOSSES, "dummy")
    with pytest.raises(validation.ConfigError, match="Unknown config.stage1.loss 'dummy'"):
        validation.check_section(config, "stage1")


# --------------------------------------------------------------------------------------------
# Classification losses, each built from its own nested section.

COUNTS = np.array([40, 20, 10, 5])


def test_classification_losses_read_their_own_section_and_label_it():
    config = config_lib.base_config()
    config.ce.update(loss="logit_adjust", logit_adjust=dict(tau=2.5))
    section = config.ce.to_dict()
    assert report.method_label({"ce": section}, ["ce"]) == "logit_adjust(tau=2.5)"
    section.update(loss="ldam", drw_start_epoch=3, sampler="class_balanced")
    assert report.method_label({"ce": section}, ["ce"]) == "ldam-DRW [class_balanced]"
    logits = jax.random.normal(jax.random.key(0), (6, 4))
    labels = jnp.array([0, 1, 2, 3, 3, 2])
    loss = supervised.make_loss(config.ce, COUNTS, steps_per_epoch=10)
    want = classification.make_classification_loss("logit_adjust", COUNTS, {"tau": 2.5})
    np.testing.assert_allclose(loss(logits, labels, 0), want(logits, labels))
    assert not np.isclose(loss(logits, labels, 0), classification.cross_entropy(logits, labels))


def test_a_registered_classification_loss_is_valid_used_and_labelled(monkeypatch):
    def make(counts, params):  # CE on logits scaled by the section's "scale"
        return lambda logits, labels, w=None: classification.cross_entropy(
            params["scale"] * logits, labels, w
        )

    entry = classification.ClassificationLoss(
        make=make, label=lambda p: f"scaled(x{p['scale']:g})", defaults={"scale": 2.0}
    )
    monkeypatch.setitem(classification.LOSSES, "scaled", entry)
    config = config_lib.base_config()
    config.ce.loss = "scaled"
    validation.check_section(config, "ce")
    logits = jax.random.normal(jax.random.key(1), (6, 4))
    labels = jnp.array([0, 1, 2, 3, 3, 2])
    loss = supervised.make_loss(config.ce, COUNTS, steps_per_epoch=10)  # no ce.scaled: defaults
    np.testing.assert_allclose(
        loss(logits, labels, 0), classification.cross_entropy(2.0 * logits, labels), rtol=1e-6
    )
    section = dict(config.ce.to_dict(), scaled={"scale": 3.0})
    assert report.method_label({"ce": section}, ["ce", "crt"]) == "scaled(x3) + cRT"
