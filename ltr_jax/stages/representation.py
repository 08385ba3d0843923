"""Stage 1: BNS representation learning (SPEC §2), or SupCon as an ablation (``stage1.loss``).

Two SimCLR views of every image go through encoder + projection head, in one forward pass
(``stage1.views_through_bn="joint"``: BatchNorm normalises with statistics of both views) or
in one pass per view (``"separate"``, as the paper's released code does: statistics per view,
running statistics updated twice per step), and the BNS loss compares them over the global
batch. The trained encoder is exported to WORKDIR/stage1/encoder for the probe and stage 2.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from flax import nnx

from ltr_jax import runtime, train_lib, validation
from ltr_jax.data import augment, inputs
from ltr_jax.losses import stage1
from ltr_jax.models import registry
from ltr_jax.stages import common

STAGE = "stage1"


def _joint(model, v1: jax.Array, v2: jax.Array) -> tuple[jax.Array, jax.Array]:
    return tuple(jnp.split(model(jnp.concatenate([v1, v2])), 2))


def _separate(model, v1: jax.Array, v2: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model(v1), model(v2)


# stage1.views_through_bn: how the two views meet BatchNorm.
VIEWS_THROUGH_BN = {"joint": _joint, "separate": _separate}


def make_loss_fn(cfg, feed=None):
    """``loss_fn(model, batch, key)``: two views, the ``stage1.loss`` of `losses.stage1`.

    ``feed`` (a ``train_feed``) makes the views; without one, both are on-device SimCLR views
    of in-memory images.
    """
    if feed is None:
        aug = inputs.device_augment("simclr", cfg.augment_strength)
        view = lambda key, batch, v: aug(key, augment.to_float(batch["images"]))
    else:
        view = feed.view

    loss_of = stage1.lookup(cfg.loss).loss

    def loss_fn(model, batch, key):
        key_v1, key_v2, key_loss = jax.random.split(key, 3)
        forward = VIEWS_THROUGH_BN[cfg.views_through_bn]
        z1, z2 = forward(model, view(key_v1, batch, 0), view(key_v2, batch, 1))  # [B, D] each
        loss = loss_of(z1, z2, batch["labels"], key_loss, cfg)
        return loss, {"pos_sim": jnp.mean(jnp.sum(z1 * z2, -1))}

    return loss_fn


def run(ctx: common.StageContext) -> dict:
    """Trains encoder + projection head with BNS (or SupCon); exports the encoder."""
    cfg, data, mesh = ctx.config[STAGE], ctx.data, ctx.mesh
    runtime.check_batch_size(cfg.batch_size, mesh, f"{STAGE}.batch_size")
    validation.check_section(ctx.config, STAGE)  # the same checks as pipeline.run's
    key = common.stage_key(ctx, STAGE)
    model = registry.make_contrastive(ctx.config.model, rngs=nnx.Rngs(key))
    model = common.init_from_pretrained(ctx, STAGE, model)
    spe = train_lib.steps_per_epoch(len(data.train_labels), cfg.batch_size)
    num_steps = cfg.epochs * spe
    tx, schedule = train_lib.make_optimizer(
        cfg.optim, batch_size=cfg.batch_size, num_steps=num_steps, steps_per_epoch=spe
    )
    graphdef, state = train_lib.init_train_state(model, tx)
    sampling = inputs.Sampling("uniform", jax.random.fold_in(key, 1), cfg.batch_size)
    feed = data.train_feed(sampling, augment="simclr", strength=cfg.augment_strength,
                           num_views=2)  # fmt: skip
    train_step = train_lib.make_train_step(graphdef, tx, feed.batch_fn, make_loss_fn(cfg, feed),
                                           mesh)  # fmt: skip
    logging.info("%s: %d epochs x %d steps of batch %d (2 views).", STAGE, cfg.epochs, spe,
                 cfg.batch_size)  # fmt: skip
    try:  # a clean stop (stopping.Stopped) must stop the decoding workers too
        state = train_lib.run_loop(
            stage=STAGE, workdir=ctx.workdir, state=runtime.put_replicated(mesh, state),
            train_step=train_step, data=feed.data,
            root_key=jax.random.fold_in(key, 2), num_steps=num_steps, steps_per_epoch=spe,
            images_per_step=cfg.batch_size, train_config=ctx.config.train, schedule=schedule,
        )  # fmt: skip
    finally:
        feed.close()
    model = train_lib.merge_model(graphdef, jax.device_get(state))
    common.save_module(ctx, STAGE, "encoder", model.encoder)
    return {"epoch": cfg.epochs, "num_steps": num_steps, "loss": cfg.loss,
            "bns_form": cfg.bns.form, "encoder": ctx.config.model.encoder,
            "views_through_bn": cfg.views_through_bn, **common.dataset_facts(ctx)}  # fmt: skip
