"""The one training driver: `TrainSetup` -> `train_lib.fit`, its hooks, and stage declarations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import FrozenConfigDict

from ltr_jax import config_lib, pipeline, runtime, train_lib, validation, writers
from ltr_jax.data.input import feature_input
from ltr_jax.losses import classification
from ltr_jax.models import heads

NUM_CLASSES, DIM = 4, 8


def _features(n=256, seed=0):
    """Linearly separable features: class c is a Gaussian blob around 3 x e_c."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % NUM_CLASSES).astype(np.int32)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x[np.arange(n), labels] += 3.0
    return x, labels


def _ce(model, batch, key, view):
    logits = model(view(key, batch))
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return classification.cross_entropy(logits, batch["labels"]), {"train_acc": acc}


def _setup(mesh, hooks=(), epochs=4, evaluate=None, eval_every_epochs=None):
    x, y = _features()
    optim = config_lib.optim("adamw", lr=0.05, lr_base_batch=32, warmup_epochs=0.0)
    return train_lib.TrainSetup(
        stage="head",
        model=heads.LinearHead(DIM, NUM_CLASSES, rngs=nnx.Rngs(0)),
        optim=optim,
        batch_size=32,
        epochs=epochs,
        num_examples=len(y),
        input=feature_input.FeatureInput(x, y, NUM_CLASSES, mesh),
        sampler="uniform",
        loss=_ce,
        key=jax.random.key(0),
        hooks=tuple(hooks),
        evaluate=evaluate,
        eval_every_epochs=eval_every_epochs,
    )


def _train_config(**overrides):
    config = config_lib.base_config().train
    config.update(log_every_steps=4, **overrides)
    return FrozenConfigDict(config)


def test_fit_learns_and_logs_hooks(tmp_path):
    """A head on separable features goes from chance to > 90 % train accuracy; an ``every``
    hook logs at its steps (not at the skipped last one), a before-step hook sees each step."""
    mesh = runtime.make_mesh()
    seen = []
    hooks = [
        train_lib.every(8, lambda done, state: {"probe_value": float(done)}, skip=32),
        train_lib.at_steps([0, 16], lambda step, state: seen.append(step) or state),
    ]
    setup = _setup(mesh, hooks)
    assert (setup.steps_per_epoch, setup.num_steps) == (8, 32)
    state, graphdef = train_lib.fit(
        setup, workdir=str(tmp_path), mesh=mesh, train_config=_train_config()
    )
    assert int(state.step) == 32 and seen == [0, 16]
    records = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
    logged = [r["step"] for r in records if "probe_value" in r]
    assert logged == [8, 16, 24]
    accs = [r["train_acc"] for r in records if "train_acc" in r]
    assert accs[0] < 0.6 and accs[-1] > 0.9, accs  # chance is 0.25
    x, y = _features(seed=1)  # held-out points of the same blobs
    head = train_lib.merge_model(graphdef, jax.device_get(state))
    assert np.mean(np.argmax(head(x), -1) == y) > 0.9


def test_fit_resumes_exactly(tmp_path):
    """Stopped after 16 of 32 steps (a checkpoint every 8), fit resumes to the same state."""
    mesh = runtime.make_mesh()
    config = _train_config(checkpoint_every_steps=8, checkpoint_every_minutes=0)
    whole, _ = train_lib.fit(
        _setup(mesh), workdir=str(tmp_path / "a"), mesh=mesh, train_config=config
    )
    partial = _setup(mesh, hooks=[train_lib.at_steps([16], _stop)])
    with pytest.raises(_Stop):
        train_lib.fit(partial, workdir=str(tmp_path / "c"), mesh=mesh, train_config=config)
    resumed, _ = train_lib.fit(
        _setup(mesh), workdir=str(tmp_path / "c"), mesh=mesh, train_config=config
    )
    assert int(resumed.step) == 32
    for a, b in zip(jax.tree.leaves(jax.device_get(whole)), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, jax.device_get(b))


class _Stop(Exception):
    pass


def _stop(step, state):
    raise _Stop


def test_before_step_hook_that_replaces_the_subset_moves_the_feed(tmp_path):
    """A hook that replaces ``state.subset`` tells the feed at that step (stage 2's re-draws)."""
    mesh = runtime.make_mesh()
    calls = []

    class Input:
        def train_feed(self, sampling, **kwargs):
            return Feed()

    class Feed:
        def data(self, step, state):
            return {"images": jnp.zeros((32, DIM)), "labels": jnp.zeros((32,), jnp.int32)}

        def batch_fn(self, data, state):
            return data

        def view(self, key, batch, v=0):
            return batch["images"]

        def set_population(self, positions, step):
            calls.append((step, positions.tolist()))

        def close(self):
            calls.append("closed")

    redraw = lambda step, state: state.replace(subset=jnp.full((4,), step, jnp.int32))
    setup = _setup(mesh, hooks=[train_lib.at_steps([0, 5], redraw)], epochs=1)
    setup = setup.__class__(
        **{
            **setup.__dict__,
            "input": Input(),
            "num_examples": 256,
            "subset": np.zeros(256, np.int32),
        }
    )
    train_lib.fit(setup, workdir=str(tmp_path), mesh=mesh, train_config=_train_config())
    assert calls == [(0, [0] * 4), (5, [5] * 4), "closed"]


def test_feature_input_refuses_augmentation():
    x, y = _features()
    data = feature_input.FeatureInput(x, y, NUM_CLASSES, runtime.make_mesh())
    with pytest.raises(ValueError, match="cannot be augmented"):
        data.train_feed(None, augment="simclr")


@pytest.mark.parametrize(
    "stage,key,value",
    [
        ("ce", "loss", "focal"),
        ("ce", "drw_start_epoch", 99),
        ("stage1", "views_through_bn", "x"),
        ("probe", "augment", "mixup"),
        ("stage2", "p_source", "noisy"),
        ("stage2", "train", "half"),
        ("crt", "sampler", "square_root"),
        ("stage2", "optim.name", "adam"),
        ("stage1", "epochs", 0),
    ],
)
def test_each_stage_validates_its_own_section(stage, key, value):
    """Every declared stage refuses a bad value of its section in one line naming key and value."""
    config = config_lib.load_config_file("configs/cifar10_lt.py:smoke")
    node = config[stage]
    *path, leaf = key.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value
    with pytest.raises(validation.ConfigError, match=rf"config\.{stage}\.{key}") as e:
        pipeline.STAGES[stage].validate(FrozenConfigDict(config))
    assert "\n" not in str(e.value) and str(value) in str(e.value)
    pipeline.STAGES[stage].validate(
        FrozenConfigDict(config_lib.load_config_file("configs/cifar10_lt.py:smoke"))
    )
