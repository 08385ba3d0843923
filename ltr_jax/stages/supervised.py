"""Supervised training from scratch with a classification loss: the ``ce`` baseline family.

Section ``config.<stage>`` chooses the loss (ce, balanced softmax, logit adjustment, LDAM),
deferred re-weighting (DRW), the head (linear or cosine), the sampler (uniform or
class-balanced) and the augmentation. The trained encoder and head are exported to
WORKDIR/<stage>/encoder and WORKDIR/<stage>/head (cRT re-trains a head on that encoder).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from flax import nnx

from ltr_jax import runtime, train_lib
from ltr_jax.data import inputs
from ltr_jax.losses import classification
from ltr_jax.models import registry
from ltr_jax.stages import common


def make_loss(cfg, class_counts, steps_per_epoch: int):
    """``loss(logits, labels, step)`` of a supervised section, with DRW weights when enabled."""
    loss = classification.make_classification_loss(cfg.loss, class_counts, cfg.get(cfg.loss))
    if cfg.drw_start_epoch < 0:
        return lambda logits, labels, step: loss(logits, labels)
    weights = classification.make_drw_weights(
        class_counts, cfg.drw_beta, cfg.drw_start_epoch * steps_per_epoch
    )
    return lambda logits, labels, step: loss(logits, labels, weights(step))


def run(ctx: common.StageContext, stage: str = "ce") -> dict:
    """Trains encoder + head on the long-tailed set, exports both; returns the test metrics."""
    cfg, data, mesh = ctx.config[stage], ctx.data, ctx.mesh
    runtime.check_batch_size(cfg.batch_size, mesh, f"{stage}.batch_size")
    key = common.stage_key(ctx, stage)
    model = registry.make_classifier(
        ctx.config.model, data.num_classes, rngs=nnx.Rngs(key), head=cfg.head
    )
    model = common.init_from_pretrained(ctx, stage, model)
    spe = train_lib.steps_per_epoch(len(data.train_labels), cfg.batch_size)
    num_steps = cfg.epochs * spe
    tx, schedule = train_lib.make_optimizer(
        cfg.optim, batch_size=cfg.batch_size, num_steps=num_steps, steps_per_epoch=spe
    )
    graphdef, state = train_lib.init_train_state(model, tx)
    logits_fn = common.make_logits_fn(common.eval_graphdef(model))
    sampling = inputs.Sampling(cfg.sampler, jax.random.fold_in(key, 1), cfg.batch_size)
    feed = data.train_feed(sampling, augment=cfg.augment, strength=cfg.augment_strength)
    loss = make_loss(cfg, data.class_counts, spe)

    def batch_fn(feed_data, state):
        return dict(feed.batch_fn(feed_data, state), step=state.step)

    def loss_fn(model, batch, key):
        logits = model(feed.view(key, batch))
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
        return loss(logits, batch["labels"], batch["step"]), {"train_acc": acc}

    train_step = train_lib.make_train_step(graphdef, tx, batch_fn, loss_fn, mesh)
    logging.info("%s: %d epochs x %d steps of batch %d.", stage, cfg.epochs, spe, cfg.batch_size)
    try:  # a clean stop (stopping.Stopped) must stop the decoding workers too
        state = train_lib.run_loop(
            stage=stage, workdir=ctx.workdir, state=runtime.put_replicated(mesh, state),
            train_step=train_step, data=feed.data,
            root_key=jax.random.fold_in(key, 2), num_steps=num_steps, steps_per_epoch=spe,
            images_per_step=cfg.batch_size, train_config=ctx.config.train, schedule=schedule,
            evaluate=lambda s: common.evaluate(ctx, logits_fn, s),
        )  # fmt: skip
    finally:
        feed.close()
    trained = train_lib.merge_model(graphdef, jax.device_get(state))
    common.save_module(ctx, stage, "encoder", trained.encoder)
    common.save_module(ctx, stage, "head", trained.head)
    report = common.evaluate(ctx, logits_fn, state)
    results = common.final_results(ctx, report, epochs=cfg.epochs, num_steps=num_steps)
    results.update(loss=cfg.loss, sampler=cfg.sampler, head=cfg.head,
                   drw_start_epoch=cfg.drw_start_epoch)  # fmt: skip
    return results
