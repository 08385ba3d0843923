"""Supervised training from scratch with a classification loss: the ``ce`` baseline family.

Section ``config.<stage>`` chooses the loss (ce, balanced softmax, logit adjustment, LDAM),
deferred re-weighting (DRW), the head (linear or cosine), the sampler (uniform or
class-balanced) and the augmentation. The trained encoder and head are exported to
WORKDIR/<stage>/encoder and WORKDIR/<stage>/head (cRT re-trains a head on that encoder).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ltr_jax import train_lib, validation
from ltr_jax.data.input import augment_registry, sampler, sampler_registry
from ltr_jax.losses import classification
from ltr_jax.models import pretrained, registry
from ltr_jax.stages import common

# The stage's own keys (relative to its section) and their checks (`ltr_jax.validation`).
CHECKS: dict[str, object] = {
    "sampler": lambda: sampler_registry.SAMPLERS,
    "augment": lambda: augment_registry.AUGMENTS,
    "loss": lambda: classification.LOSSES,
    "head": lambda: registry.HEADS,
    "augment_strength": validation.NON_NEG,
    "logit_adjust.tau": validation.NON_NEG,
    "ldam.max_margin": validation.POSITIVE,
    "ldam.scale": validation.POSITIVE,
    "drw_start_epoch": (validation.at_least(-1), "an integer >= -1 (-1: no DRW)"),
    "drw_beta": ((lambda x: 0 <= x < 1), "in [0, 1)"),
}


def make_loss(cfg, class_counts, steps_per_epoch: int):
    """``loss(logits, labels, step)`` of a supervised section, with DRW weights when enabled."""
    loss = classification.make_classification_loss(cfg.loss, class_counts, cfg.get(cfg.loss))
    if cfg.drw_start_epoch < 0:
        return lambda logits, labels, step: loss(logits, labels)
    weights = classification.make_drw_weights(
        class_counts, cfg.drw_beta, cfg.drw_start_epoch * steps_per_epoch
    )
    return lambda logits, labels, step: loss(logits, labels, weights(step))


def invariants(config, stage: str = "ce") -> None:
    """Checks across keys of the stage's section (`CHECKS` covers each key alone).

    Raises:
      validation.ConfigError: in one line.
    """
    cfg = config[stage]
    if cfg.drw_start_epoch >= cfg.epochs:
        raise validation.ConfigError(
            f"config.{stage}.drw_start_epoch={cfg.drw_start_epoch} is not below "
            f"config.{stage}.epochs={cfg.epochs}: re-weighting would never start (-1: no DRW)."
        )


def make_setup(ctx: common.StageContext, stage: str = "ce") -> train_lib.TrainSetup:
    """Encoder + head trained on the long-tailed set with the section's loss and sampler."""
    cfg, data = ctx.config[stage], ctx.data
    key = common.stage_key(ctx, stage)
    model = registry.make_classifier(
        ctx.config.model, data.num_classes, rngs=nnx.Rngs(key), head=cfg.head
    )
    model = common.init_from_pretrained(ctx, stage, model)
    spe = sampler.steps_per_epoch(len(data.train_labels), cfg.batch_size)
    loss = make_loss(cfg, data.class_counts, spe)
    logits_fn = common.make_logits_fn(common.eval_graphdef(model))

    def loss_fn(model, batch, key, view):
        logits = model(view(key, batch))
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
        return loss(logits, batch["labels"], batch["step"]), {"train_acc": acc}

    return train_lib.TrainSetup(
        stage=stage,
        model=model,
        optim=cfg.optim,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        num_examples=len(data.train_labels),
        input=data,
        sampler=cfg.sampler,
        loss=loss_fn,
        key=key,
        augment=cfg.augment,
        augment_strength=cfg.augment_strength,
        evaluate=lambda s: common.evaluate(ctx, logits_fn, s),
    )


def run(ctx: common.StageContext, stage: str = "ce") -> dict:
    """Trains encoder + head on the long-tailed set, exports both; returns the test metrics."""
    cfg = ctx.config[stage]
    setup = make_setup(ctx, stage)
    logging.info(
        "%s: %d epochs x %d steps of batch %d.",
        stage,
        cfg.epochs,
        setup.steps_per_epoch,
        cfg.batch_size,
    )
    state, graphdef = common.fit(ctx, setup)
    trained = train_lib.merge_model(graphdef, jax.device_get(state))
    common.save_module(ctx, stage, "encoder", trained.encoder)
    common.save_module(ctx, stage, "head", trained.head)
    results = common.evaluated_results(ctx, setup, state)
    results.update(
        loss=cfg.loss, sampler=cfg.sampler, head=cfg.head, drw_start_epoch=cfg.drw_start_epoch
    )
    return results


def check_inputs(config, data, stage: str = "ce") -> None:
    """Refuses a ``model.init_from`` file that cannot initialise the model (before writing)."""
    make = lambda: registry.make_classifier(
        config.model, data.num_classes, rngs=nnx.Rngs(0), head=config[stage].head
    )
    pretrained.check_init_from(make, config.model)


def declare(name: str = "ce") -> common.Stage:
    """The declaration of a supervised stage whose section is ``config.<name>``."""
    bound = lambda fn: functools.partial(fn, stage=name)
    return common.Stage(
        name,
        run=bound(run),
        make_setup=bound(make_setup),
        checks=CHECKS,
        invariants=bound(invariants),
        label=lambda config, stages: report_label(config[name]),
        check_inputs=bound(check_inputs),
    )


# A supervised stage's sampler -> the name of the method it makes (Kang et al. 2020).
SAMPLER_LABELS = {"class_balanced": "cb_resample"}


def report_label(section: Mapping) -> str:
    """The method's name in reports from a supervised section of ``config.json``: its loss,
    ``-DRW`` with deferred re-weighting, and a sampler other than uniform."""
    label = classification.report_label(section)
    if section.get("drw_start_epoch", -1) >= 0:
        label += "-DRW"
    if section["sampler"] != "uniform":  # class-balanced sampling is a method of its own
        sampler = SAMPLER_LABELS.get(section["sampler"], section["sampler"])
        label = sampler if label == "ce" else f"{label}+{sampler}"
    return label
