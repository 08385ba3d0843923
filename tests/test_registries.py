"""The registries of string switches: one entry makes a name valid, usable and labelled.

Each test registers (with ``monkeypatch``, so the registry is restored) or looks up entries and
checks the three places a switch is used: config validation, the stage or data code that calls
it, and the report. All unit-sized: no model training, no data loading.
"""

import dataclasses
import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import config_lib, pipeline, report, runtime, train_lib, validation
from ltr_jax.data.datasets import long_tail, records, synthetic
from ltr_jax.data.input import (
    augment,
    augment_registry,
    decoded,
    grain_pipeline,
    in_memory,
    protocols,
    sampler,
    sampler_registry,
)
from ltr_jax.data.input import streamed as streamed_input
from ltr_jax.dpp import kernels as dpp_kernels
from ltr_jax.dpp import sampling as dpp_sampling
from ltr_jax.losses import bns, classification, stage1, supcon
from ltr_jax.stages import rebalance, representation, supervised

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
    np.testing.assert_allclose(stage1.STAGE1_LOSSES["bns"].loss(z1, z2, LABELS, key, section), want)
    want = supcon.supcon_loss(z1, z2, LABELS, tau=0.1)
    np.testing.assert_allclose(
        stage1.STAGE1_LOSSES["supcon"].loss(z1, z2, LABELS, key, section), want
    )
    assert report.method_label({"stage1": section.to_dict()}, ["stage1"]) == "BNS(reference)"
    with pytest.raises(ValueError, match="Unknown stage1.loss 'nope'; valid: bns, supcon"):
        stage1.STAGE1_LOSSES["nope"]


def _dummy_loss(z1, z2, labels, key, section):
    del labels, key, section
    return jnp.mean((z1 - z2) ** 2)


def test_a_registered_stage1_loss_is_valid_used_and_labelled(monkeypatch):
    entry = stage1.Stage1Loss(loss=_dummy_loss, label=lambda section: "Dummy")
    monkeypatch.setitem(stage1.STAGE1_LOSSES, "dummy", entry)
    config = _stage1_config(loss="dummy")
    pipeline.STAGES["stage1"].validate(config)  # valid once registered
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
        pipeline.STAGES["stage1"].validate(config)


# --------------------------------------------------------------------------------------------
# Classification losses, each built from its own nested section.

COUNTS = np.array([40, 20, 10, 5])


def test_classification_losses_read_their_own_section_and_label_it():
    config = config_lib.base_config()
    config.ce.update(loss="logit_adjust", logit_adjust=dict(tau=2.5))
    section = config.ce.to_dict()
    assert report.method_label({"ce": section}, ["ce"]) == "logit_adjust(tau=2.5)"
    section.update(loss="ldam", drw_start_epoch=3, sampler="class_balanced")
    assert report.method_label({"ce": section}, ["ce"]) == "ldam-DRW+cb_resample"
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
    pipeline.STAGES["ce"].validate(config)
    logits = jax.random.normal(jax.random.key(1), (6, 4))
    labels = jnp.array([0, 1, 2, 3, 3, 2])
    loss = supervised.make_loss(config.ce, COUNTS, steps_per_epoch=10)  # no ce.scaled: defaults
    np.testing.assert_allclose(
        loss(logits, labels, 0), classification.cross_entropy(2.0 * logits, labels), rtol=1e-6
    )
    section = dict(config.ce.to_dict(), scaled={"scale": 3.0})
    assert report.method_label({"ce": section}, ["ce", "crt"]) == "scaled(x3) + cRT"


# --------------------------------------------------------------------------------------------
# Augmentations: one entry, a half for every input kind.


def _jpegs(n, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 24, 20, 3), dtype=np.uint8)
    return synthetic.encode_jpegs(pixels, (20, 28), seed)


def _tiny_streamed(n=16):
    """A streamed input of ``n`` JPEGs, image ``i`` alone in class ``i`` (labels name images)."""
    split = synthetic.EncodedSplit(_jpegs(n), np.arange(n, dtype=np.int32))
    groups = long_tail.shot_groups(np.ones(n), 10, 0)
    options = streamed_input.StreamOptions(image_size=8, num_workers=0, prefetch_steps=1)
    return streamed_input.StreamingInput(split, split, n, groups, runtime.make_mesh(1), options)


def test_a_registered_augmentation_serves_every_input_kind(monkeypatch):
    entry = augment_registry.Augmentation(
        device=lambda s: lambda key, x: x + s,
        host_crop="eval",  # the host's centre crop, then the device half
        after_host_crop=lambda s: lambda key, x: 1.0 - x,
        from_store=lambda s, size, eval_side: lambda key, x: x[:, :size, :size] * s,
    )
    monkeypatch.setitem(augment_registry.AUGMENTS, "mark", entry)
    config = config_lib.base_config()
    config.ce.augment = config.stage2.augment = "mark"
    pipeline.STAGES["ce"].validate(config)
    pipeline.STAGES["stage2"].validate(config)
    x = jnp.full((2, 6, 6, 3), 0.25)
    key = jax.random.key(0)
    np.testing.assert_allclose(in_memory.device_augment("mark", 0.5)(key, x), 0.75)
    assert decoded.store_augment("mark", 2.0, 4, 6)(key, x).shape == (2, 4, 4, 3)
    streamed = _tiny_streamed()
    sampling = sampler_registry.Sampling("uniform", key, 4)
    feed = streamed.train_feed(sampling, augment="mark", num_views=2)
    batch = feed.data(0, None)
    assert batch["images"].shape == (4, 8, 8, 3)  # "eval": one centre crop, not 2 views
    for image, label in zip(np.asarray(batch["images"]), np.asarray(batch["labels"])):
        want = grain_pipeline.center_crop_image(streamed.train.source[int(label)]["image"], 8)
        np.testing.assert_array_equal(image, want)
    view = feed.view(key, batch)
    np.testing.assert_allclose(view, 1.0 - augment.to_float(batch["images"]), atol=1e-6)
    feed.close()
    with pytest.raises(ValueError, match="Unknown augment 'mix'; valid: crop_flip, simclr, none"):
        streamed_input.host_augment("mix", 1.0)


def test_builtin_augmentations_keep_their_halves():
    x = jax.random.uniform(jax.random.key(1), (2, 12, 12, 3))
    key = jax.random.key(2)
    simclr = augment_registry.AUGMENTS["simclr"]
    same = lambda f, g: str(jax.make_jaxpr(f)(key, x)) == str(jax.make_jaxpr(g)(key, x))
    assert same(simclr.device(0.5), lambda k, v: augment.simclr(k, v, strength=0.5))
    assert same(simclr.after_host_crop(0.5), lambda k, v: augment.simclr_colour(k, v, strength=0.5))
    assert not same(simclr.device(0.5), lambda k, v: augment.simclr(k, v, strength=1.0))
    np.testing.assert_array_equal(
        augment_registry.AUGMENTS["crop_flip"].device(1.0)(key, x), augment.crop_flip(key, x)
    )
    side = 12 * 8 / grain_pipeline.eval_resize(8)
    np.testing.assert_array_equal(
        decoded.store_augment("none", 1.0, 8, 12)(key, x), augment.centre_crop_resize(x, side, 8)
    )
    hosts = {name: a.host_crop for name, a in augment_registry.AUGMENTS.items()}
    assert hosts == {"crop_flip": "train", "simclr": "train", "none": "eval"}


# --------------------------------------------------------------------------------------------
# Samplers: one entry, a device sampler and a host plan.


def _reverse_positions(step, n, batch_size):  # the batch at step s: n-1-sB, n-2-sB, ...
    return (n - 1 - step * batch_size - np.arange(batch_size)) % n


def _in_memory(n=16):
    """In-memory data whose image ``i`` has every pixel ``i`` (images name their position)."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3))
    labels = np.arange(n, dtype=np.int32) % 4
    counts = np.bincount(labels)
    split = records.Split(images, labels, np.arange(n))
    groups = long_tail.shot_groups(counts, 10, 0)
    lt = records.LongTail("test", split, split, 4, (), counts, groups, streamed=False)
    return in_memory.InMemoryInput(lt, runtime.make_mesh(1))


def test_a_registered_sampler_serves_device_and_host(monkeypatch):
    entry = sampler_registry.Sampler(
        device=lambda key, labels, num_classes, b: (
            lambda step: jnp.asarray(_reverse_positions(step, len(labels), b), jnp.int32)
        ),
        host_plan=lambda labels, num_classes, b, seed, pi, pc: grain_pipeline.StepPlan(
            lambda step: _reverse_positions(step, len(labels), b), b, seed, pi, pc
        ),
    )
    monkeypatch.setitem(sampler_registry.SAMPLERS, "reverse", entry)
    config = config_lib.base_config()
    config.ce.sampler = config.crt.sampler = "reverse"
    pipeline.STAGES["ce"].validate(config)
    pipeline.STAGES["crt"].validate(config)
    sampling = sampler_registry.Sampling("reverse", jax.random.key(0), 4)
    memory = _in_memory()
    feed = memory.train_feed(sampling)
    state = types.SimpleNamespace(step=jnp.int32(1))
    batch = feed.batch_fn(feed.data(1, state), state)
    np.testing.assert_array_equal(batch["images"][:, 0, 0, 0], [11, 10, 9, 8])
    streamed = _tiny_streamed()  # labels name the images
    feed = streamed.train_feed(sampling)
    np.testing.assert_array_equal(feed.data(1, None)["labels"], [11, 10, 9, 8])
    feed.close()
    with pytest.raises(ValueError, match="Unknown sampler 'nope'; valid: uniform, class_bal"):
        memory.train_feed(sampler_registry.Sampling("nope", jax.random.key(0), 4))


def test_builtin_samplers_device_and_host_agree_on_their_contract():
    labels = np.repeat(np.arange(4), [9, 4, 2, 1]).astype(np.int32)
    key = jax.random.key(5)
    uniform = sampler_registry.SAMPLERS["uniform"]
    sample = jax.jit(uniform.device(key, labels, 4, 4))
    epoch = np.concatenate([sample(s) for s in range(4)])
    assert sorted(epoch) == list(range(16))  # one epoch: every position once
    plan = uniform.host_plan(labels, 4, 4, [5], 0, 1)
    assert sorted(np.concatenate([plan.global_positions(s) for s in range(4)])) == list(range(16))
    balanced = sampler_registry.SAMPLERS["class_balanced"]
    np.testing.assert_array_equal(
        balanced.device(key, labels, 4, 8)(3), sampler.class_balanced_batch(key, 3, labels, 4, 8)
    )
    plan = balanced.host_plan(labels, 4, 400, [5], 0, 1)
    freq = np.bincount(labels[plan.global_positions(0)], minlength=4) / 400
    np.testing.assert_allclose(freq, 0.25, atol=0.07)  # classes equally likely, not 9:4:2:1


# --------------------------------------------------------------------------------------------
# Sampling over the named subset of the train state.


def test_sampling_over_the_train_state_subset():
    subset = np.array([2, 3, 5, 7, 11, 13], np.int32)
    sampling = sampler_registry.Sampling("uniform", jax.random.key(0), 3, subset_size=len(subset))
    assert (
        sampling.over_subset
        and not sampler_registry.Sampling("uniform", sampling.key, 3).over_subset
    )
    memory = _in_memory()
    feed = memory.train_feed(sampling)
    feed.set_population(subset, 0)  # read from the state in memory: nothing to do
    state = train_lib.TrainState(jnp.int32(0), {}, {}, {}, (), subset=jnp.asarray(subset))
    seen = []
    for step in range(2):  # one epoch of the subset: each of its positions once
        state = state.replace(step=jnp.int32(step))
        images = feed.batch_fn(feed.data(step, state), state)["images"]
        seen.extend(np.asarray(images)[:, 0, 0, 0].tolist())
    assert sorted(seen) == subset.tolist()
    with pytest.raises(ValueError, match="subset supports only the uniform sampler"):
        memory.train_feed(dataclasses.replace(sampling, kind="class_balanced"))


# --------------------------------------------------------------------------------------------
# The typed interfaces of the data input and feed.


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_every_input_and_feed_satisfies_its_protocol():
    memory, streamed = _in_memory(), _tiny_streamed()
    store = decoded.DecodedInput(
        streamed.train, streamed.test, 16, streamed.groups, streamed.mesh, streamed.options
    )
    sampling = sampler_registry.Sampling("uniform", jax.random.key(0), 4)
    feeds = [memory.train_feed(sampling), streamed.train_feed(sampling)]
    for data in (memory, streamed, store):
        assert isinstance(data, protocols.DataInput), type(data).__name__
        for method in ("train_feed", "map_split"):
            want = _params(getattr(protocols.DataInput, method))
            assert _params(getattr(type(data), method)) == want, (type(data).__name__, method)
    for feed in feeds:
        assert isinstance(feed, protocols.Feed), type(feed).__name__
        for method in ("data", "batch_fn", "view", "set_population", "close"):
            # called positionally: the number of parameters and their defaults must agree
            shape = lambda fn: [(kind, default) for _, kind, default in _params(fn)]
            want = shape(getattr(protocols.Feed, method))
            assert shape(getattr(type(feed), method)) == want, (type(feed).__name__, method)
        feed.close()
    incomplete = types.SimpleNamespace(**{k: getattr(memory, k) for k in ("num_classes", "mesh")})
    assert not isinstance(incomplete, protocols.DataInput)
    assert not isinstance(memory, protocols.Feed)


# --------------------------------------------------------------------------------------------
# IP-DPP methods (stage2.sampler) and BNS forms.


def _first_k(key, p, valid, k, scale):
    del key, p, scale
    return valid & (jnp.cumsum(valid) <= k)


def test_a_registered_ipdpp_method_is_valid_used_and_labelled(monkeypatch):
    monkeypatch.setitem(dpp_sampling.METHODS, "first_k", dpp_sampling.Method(_first_k, "first-k"))
    config = config_lib.base_config()
    config.stage2.sampler = "first_k"
    pipeline.STAGES["stage2"].validate(config)
    p = jnp.linspace(0.1, 0.9, 6)
    mask = dpp_sampling.sample_ip_dpp(jax.random.key(0), p, 2, method="first_k")
    np.testing.assert_array_equal(mask, [True, True, False, False, False, False])
    labels = {"stage1": {"loss": "supcon"}, "stage2": {"sampler": "first_k"}}
    assert report.method_label(labels, ["stage1", "probe", "stage2"]) == "SupCon + first-k"
    labels["stage2"]["sampler"] = "structured"
    assert report.method_label(labels, ["stage2"]) == "IP-DPP(structured)"


def test_bns_forms_and_kernel_scales_are_registries(monkeypatch):
    assert tuple(bns.FORMS) == tuple(representation.CHECKS["bns.form"]()) == ("paper", "reference")
    scales = tuple(rebalance.CHECKS["kernel_scale"]())
    assert tuple(dpp_kernels.SCALES) == scales == ("paper", "reference")
    half = lambda p, valid, n: (0.5 / n, 1.0 - 0.5 / n * jnp.sum(p))  # alpha = 1 / (2N)
    monkeypatch.setitem(dpp_kernels.SCALES, "half", half)
    config = config_lib.base_config()
    config.stage2.kernel_scale = "half"
    pipeline.STAGES["stage2"].validate(config)
    p = np.array([0.2, 0.9, 0.5])
    kernel = np.asarray(dpp_kernels.ip_dpp_kernel(p, "half"))
    want = np.diag(1 - p * p.sum() / 6) + np.outer(p, p) / 6  # S = diag(1 - alpha p s) + alpha pp^T
    np.testing.assert_allclose(kernel, want, rtol=1e-6)
    z1, z2 = _views(1)
    np.testing.assert_allclose(
        bns.FORMS["reference"](z1, z2, LABELS, None, 0.3, 4),
        bns.bns_reference(z1, z2, LABELS, tau=0.3),
    )


# --------------------------------------------------------------------------------------------
# One registry type.


def test_every_registry_is_the_one_registry_type():
    from ltr_jax import registry as generic
    from ltr_jax.data.datasets import registry as datasets_registry
    from ltr_jax.errors import UserError
    from ltr_jax.models import registry

    every = {
        "dataset name": datasets_registry.DATASETS,
        "sampler": sampler_registry.SAMPLERS,
        "augment": augment_registry.AUGMENTS,
        "loss": classification.LOSSES,
        "stage1.loss": stage1.STAGE1_LOSSES,
        "stage1.bns.form": bns.FORMS,
        "stage2.sampler": dpp_sampling.METHODS,
        "stage2.kernel_scale": dpp_kernels.SCALES,
        "model.encoder": registry.ENCODERS,
        "head": registry.HEADS,
        "model.dtype": registry.DTYPES,
        "optim.name": train_lib.OPTIMIZERS,
    }
    for what, reg in every.items():
        assert isinstance(reg, generic.Registry) and reg.what == what
        with pytest.raises(generic.UnknownNameError, match=f"Unknown {what} 'nope'; valid: "):
            reg["nope"]
    assert issubclass(generic.UnknownNameError, UserError)
    assert "tfds:<name>" in datasets_registry.DATASETS.names()
    assert datasets_registry.DATASETS["tfds:mnist"].kind == "in_memory"  # a prefix family
    assert (
        not datasets_registry.DATASETS.valid("tfds:") and "tfds:x" not in datasets_registry.DATASETS
    )
    assert stage1.STAGE1_LOSSES.label("not_here", {}) == "not_here"  # another process's entry
