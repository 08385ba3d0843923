"""The linear probe (SPEC §2): a new linear head on the frozen encoder, in eval mode.

Features of a seeded class-balanced subset of the long-tailed training set and of the test
set are computed once with BatchNorm in eval mode (its statistics never change: the encoder
is not part of the trained state), then the head is trained on them with AdamW and cosine
decay. Reports the last epoch's test metrics, and the maximum over epochs under a clearly
separate name (the reference code's model selection on the test set).

``probe.augment="simclr"`` trains the head as the paper's released code does instead: every
step draws a fresh SimCLR view (strength ``probe.augment_strength``) of the subset's images
and sends it through the frozen encoder, whose BatchNorm runs in ``probe.encoder_bn`` mode
(``train``, as released: batch statistics, running statistics updated; ``eval``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltr_jax import metrics, runtime, train_lib, validation
from ltr_jax.data.input import augment, feature_input
from ltr_jax.losses import classification
from ltr_jax.models import batchnorm, heads, init, modes, registry
from ltr_jax.stages import common

STAGE = "probe"


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted positions of up to ``per_class`` random images of every class (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        chosen.append(idx if len(idx) <= per_class else rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def make_features_fn(encoder: nnx.Module, mesh=None):
    """``features(images_uint8) -> float32 [B, D]`` with the encoder in eval mode, jitted.

    With a ``mesh``, the encoder's variables are replicated on it, to meet batches sharded
    over its ``data`` axis.
    """
    graphdef, state = nnx.split(modes.eval_view(encoder))
    if mesh is not None:
        state = runtime.put_replicated(mesh, state)

    @jax.jit
    def features(state, images):
        return nnx.merge(graphdef, state)(augment.to_float(images))

    return lambda images: features(state, images)


def calibrate_batchnorm(
    encoder: nnx.Module, data, batch_size: int = 256, num_batches: int = 40
) -> nnx.Module:
    """Re-estimates BatchNorm running statistics with train-mode passes over training images.

    An untrained encoder's statistics are the initial (0, 1), under which eval-mode features
    of a deep ResNet blow up; random weights with statistics of the data are the meaningful
    "random features" baseline. Deterministic: batches are taken in order, cycling.
    """
    graphdef, state = nnx.split(encoder)
    state = [runtime.put_replicated(data.mesh, state)]

    @jax.jit
    def update(state, x):
        model = nnx.merge(graphdef, state)
        model(augment.to_float(x))
        return nnx.state(model)

    def step(images, labels, positions):
        state[0] = update(state[0], images)
        return positions

    positions = np.arange(num_batches * batch_size) % len(data.train_labels)
    data.map_split(step, "train", positions, batch_size)
    nnx.update(encoder, jax.tree.map(jnp.asarray, runtime.to_host(state[0])))
    return encoder


def encoder_for_probe(ctx: common.StageContext, key: jax.Array) -> nnx.Module:
    """The stage-1 encoder, or random weights with BatchNorm statistics of the training set
    (``probe.encoder_from='random'``, the baseline a learned representation must beat)."""
    encoder = registry.make_encoder(
        ctx.config.model.encoder, dtype=ctx.config.model.dtype, rngs=nnx.Rngs(key)
    )
    batchnorm.apply_running_var(encoder, ctx.config.model.bn_running_var)  # encoder_bn=train
    if ctx.config.probe.encoder_from == "stage1":
        return common.load_module(ctx, "stage1", "encoder", encoder)
    return calibrate_batchnorm(encoder, ctx.data)


def new_head(ctx: common.StageContext, in_dim: int, key: jax.Array) -> heads.LinearHead:
    """A fresh linear head, initialised by ``model.init``."""
    head = heads.LinearHead(in_dim, ctx.data.num_classes, rngs=nnx.Rngs(key))
    return init.apply_init(head, ctx.config.model.get("init", "flax"), jax.random.fold_in(key, 7))


def head_loss(model, batch, key, view):
    """Cross-entropy of a head's logits over the batch's real rows (``batch["weights"]``: 0
    for the padding rows of a kept last partial batch, ``drop_last=False``)."""
    logits, w = model(view(key, batch)), batch.get("weights")
    return classification.cross_entropy(logits, batch["labels"], row_weights=w), {}


def head_on_features(
    ctx: common.StageContext, stage: str, cfg, features: tuple, sampler_kind: str, key: jax.Array
) -> train_lib.TrainSetup:
    """A fresh linear head trained on precomputed features (the probe and cRT).

    Args:
      ctx: the run context.
      stage: stage name (checkpoints, metrics, the exported WORKDIR/<stage>/head).
      cfg: the stage's section (epochs, batch_size, optim).
      features: (train features [N, D], train labels [N], test features [M, D]).
      sampler_kind: ``uniform`` or ``class_balanced`` over the training features.
      key: the stage's key.

    Returns:
      The setup; it evaluates on the test features every epoch.
    """
    (train_x, train_y, test_x), data, mesh = features, ctx.data, ctx.mesh
    head = new_head(ctx, train_x.shape[1], key)
    graphdef = train_lib.split_model(head)[0]
    drop_last = cfg.get("drop_last", True) or sampler_kind != "uniform"  # crt has no key
    logits_fn = jax.jit(lambda state, x: train_lib.merge_model(graphdef, state)(x))

    def evaluate(state):
        logits = runtime.apply_in_batches(
            lambda x: logits_fn(state, x), (test_x,), ctx.config.train.eval_batch_size, mesh
        )
        return metrics.classification_report(
            logits.argmax(-1), data.test_labels, data.num_classes, data.groups
        )

    return train_lib.TrainSetup(
        stage=stage,
        model=head,
        optim=cfg.optim,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        num_examples=len(train_y),
        input=feature_input.FeatureInput(train_x, train_y, data.num_classes, mesh),
        sampler=sampler_kind,
        loss=head_loss,
        key=key,
        evaluate=evaluate,
        drop_last=drop_last,
        eval_every_epochs=1.0,
    )


def setup_on_features(
    ctx: common.StageContext, encoder: nnx.Module, subset: np.ndarray, key: jax.Array
) -> train_lib.TrainSetup:
    """``probe.augment="none"``: features of the clean images once, then the head on them."""
    cfg, data = ctx.config[STAGE], ctx.data
    features = make_features_fn(encoder, ctx.mesh)
    eval_batch = ctx.config.train.eval_batch_size
    train_x = data.map_split(lambda x, y, i: features(x), "train", subset, eval_batch)
    test_x = data.map_split(lambda x, y, i: features(x), "test", batch_size=eval_batch)
    return head_on_features(
        ctx, STAGE, cfg, (train_x, data.train_labels[subset], test_x), "uniform", key
    )


def setup_through_encoder(
    ctx: common.StageContext, encoder: nnx.Module, subset: np.ndarray, key: jax.Array
) -> train_lib.TrainSetup:
    """``probe.augment="simclr"``: a fresh view per step through the frozen encoder."""
    cfg = ctx.config[STAGE]
    model = heads.Classifier(encoder, new_head(ctx, encoder.feature_dim, key))
    model = modes.frozen_view(model, batch_statistics=cfg.encoder_bn == "train")
    trainable = nnx.All(nnx.Param, nnx.PathContains("head"))
    logits_fn = common.make_logits_fn(common.eval_graphdef(model, trainable))

    return train_lib.TrainSetup(
        stage=STAGE,
        model=model,
        optim=cfg.optim,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        num_examples=len(subset),
        input=ctx.data,
        sampler="uniform",
        loss=head_loss,
        key=key,
        augment="simclr",
        augment_strength=cfg.augment_strength,
        trainable=trainable,
        subset=subset.astype(np.int32),
        evaluate=lambda s: common.evaluate(ctx, logits_fn, s),
        drop_last=cfg.drop_last,
        eval_every_epochs=1.0,
    )


# probe.augment: how the head meets the training images.
MODES = {"none": setup_on_features, "simclr": setup_through_encoder}

# The stage's own keys (relative to its section) and their checks (`ltr_jax.validation`).
CHECKS: dict[str, object] = {
    "encoder_from": validation.choices("stage1", "random"),
    "per_class": validation.POS_INT,
    "augment": lambda: MODES,
    "augment_strength": validation.NON_NEG,
    "encoder_bn": validation.choices("eval", "train"),
    "drop_last": validation.choices(True, False),
}


def make_setup(ctx: common.StageContext) -> train_lib.TrainSetup:
    """A linear head on the frozen encoder over a seeded class-balanced subset."""
    cfg, data = ctx.config[STAGE], ctx.data
    key = common.stage_key(ctx, STAGE)
    encoder = encoder_for_probe(ctx, jax.random.fold_in(key, 0))
    subset = balanced_subset(data.train_labels, cfg.per_class, ctx.config.seed)
    return MODES[cfg.augment](ctx, encoder, subset, key)


def save_head(ctx: common.StageContext, stage: str, graphdef, state) -> None:
    """Exports the trained head (of a head-only model or of a classifier) to WORKDIR/<stage>."""
    model = train_lib.merge_model(graphdef, jax.device_get(state))
    common.save_module(ctx, stage, "head", getattr(model, "head", model))


def run(ctx: common.StageContext) -> dict:
    """Trains and evaluates the linear probe; exports the head to WORKDIR/probe/head."""
    cfg = ctx.config[STAGE]
    setup = make_setup(ctx)
    state, graphdef = common.fit(ctx, setup)
    save_head(ctx, STAGE, graphdef, state)
    results = common.evaluated_results(ctx, setup, state)
    results.update(
        encoder_from=cfg.encoder_from, probe_train_size=int(setup.num_examples), augment=cfg.augment
    )
    return results


DECLARATION = common.Stage(
    STAGE,
    checks=CHECKS,
    run=run,
    make_setup=make_setup,
    needs=lambda config: ("stage1",) if config.probe.encoder_from == "stage1" else (),
    label=lambda config, stages: None if "stage2" in stages else "probe",  # stage 2 names it
)
