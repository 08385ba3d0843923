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

from ltr_jax import train_lib, validation
from ltr_jax.data.input import augment, in_memory
from ltr_jax.losses import bns, stage1
from ltr_jax.models import pretrained, registry
from ltr_jax.stages import common

STAGE = "stage1"


def _joint(model, v1: jax.Array, v2: jax.Array) -> tuple[jax.Array, jax.Array]:
    return tuple(jnp.split(model(jnp.concatenate([v1, v2])), 2))


def _separate(model, v1: jax.Array, v2: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model(v1), model(v2)


# stage1.views_through_bn: how the two views meet BatchNorm.
VIEWS_THROUGH_BN = {"joint": _joint, "separate": _separate}

# The stage's own keys (relative to its section) and their checks (`ltr_jax.validation`).
CHECKS: dict[str, object] = {
    "loss": lambda: stage1.STAGE1_LOSSES,
    "bns.form": lambda: bns.FORMS,
    "bns.tau": validation.POSITIVE,
    "bns.m": validation.POSITIVE,
    "supcon.tau": validation.POSITIVE,
    "views_through_bn": lambda: VIEWS_THROUGH_BN,
    "augment_strength": validation.NON_NEG,
}


def make_loss(cfg):
    """``loss(model, batch, key, view)``: two views, the ``stage1.loss`` of `losses.stage1`
    (BNS, SupCon, ...), over the batch."""
    loss_of = stage1.STAGE1_LOSSES[cfg.loss].loss

    def loss(model, batch, key, view):
        key_v1, key_v2, key_loss = jax.random.split(key, 3)
        forward = VIEWS_THROUGH_BN[cfg.views_through_bn]
        z1, z2 = forward(model, view(key_v1, batch, 0), view(key_v2, batch, 1))  # [B, D] each
        value = loss_of(z1, z2, batch["labels"], key_loss, cfg)
        return value, {"pos_sim": jnp.mean(jnp.sum(z1 * z2, -1))}

    return loss


def make_loss_fn(cfg, feed=None):
    """``loss_fn(model, batch, key)`` of :func:`make_loss` for a step built by hand (tests,
    the parity harness): views from ``feed.view``, or on-device SimCLR views of in-memory
    images without a feed."""
    if feed is None:
        aug = in_memory.device_augment("simclr", cfg.augment_strength)
        view = lambda key, batch, v: aug(key, augment.to_float(batch["images"]))
    else:
        view = feed.view
    loss = make_loss(cfg)
    return lambda model, batch, key: loss(model, batch, key, view)


def make_setup(ctx: common.StageContext) -> train_lib.TrainSetup:
    """Encoder + projection head, two SimCLR views of every image, the BNS (or SupCon) loss."""
    cfg, data = ctx.config[STAGE], ctx.data
    key = common.stage_key(ctx, STAGE)
    model = registry.make_contrastive(ctx.config.model, rngs=nnx.Rngs(key))
    model = common.init_from_pretrained(ctx, STAGE, model)
    return train_lib.TrainSetup(
        stage=STAGE,
        model=model,
        optim=cfg.optim,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        num_examples=len(data.train_labels),
        input=data,
        sampler="uniform",
        loss=make_loss(cfg),
        key=key,
        augment="simclr",
        augment_strength=cfg.augment_strength,
        num_views=2,
    )


def run(ctx: common.StageContext) -> dict:
    """Trains encoder + projection head with BNS (or SupCon); exports the encoder."""
    cfg = ctx.config[STAGE]
    setup = make_setup(ctx)
    logging.info(
        "%s: %d epochs x %d steps of batch %d (2 views).",
        STAGE,
        cfg.epochs,
        setup.steps_per_epoch,
        cfg.batch_size,
    )
    state, graphdef = common.fit(ctx, setup)
    model = train_lib.merge_model(graphdef, jax.device_get(state))
    common.save_module(ctx, STAGE, "encoder", model.encoder)
    return {
        "epoch": cfg.epochs,
        "num_steps": setup.num_steps,
        "loss": cfg.loss,
        "bns_form": cfg.bns.form,
        "encoder": ctx.config.model.encoder,
        "views_through_bn": cfg.views_through_bn,
        **common.dataset_facts(ctx),
    }


def check_inputs(config, data) -> None:
    """Refuses a ``model.init_from`` file that cannot initialise the encoder (before writing)."""
    del data
    make = lambda: registry.make_contrastive(config.model, rngs=nnx.Rngs(0))
    pretrained.check_init_from(make, config.model)


DECLARATION = common.Stage(
    STAGE,
    checks=CHECKS,
    run=run,
    make_setup=make_setup,
    check_inputs=check_inputs,
    label=lambda config, stages: stage1.report_label(config["stage1"]),
)
