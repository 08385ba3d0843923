"""cRT: classifier re-training on a frozen encoder (Kang et al., ICLR 2020, "Decoupling").

The encoder of the ``ce`` stage (exported to WORKDIR/ce/encoder) is frozen in eval mode; a new
linear head is trained on it with class-balanced sampling over the whole long-tailed training
set. Features of the training and test images are computed once, without augmentation (as in
the linear probe), so an epoch costs only head updates. Reports the last epoch's test
metrics, and the maximum over epochs under a separate name (test-set model selection).
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from flax import nnx

from ltr_jax import metrics, runtime, train_lib
from ltr_jax.data import batches, sampler
from ltr_jax.losses import classification
from ltr_jax.models import heads, registry
from ltr_jax.stages import common, probe

STAGE = "crt"
ENCODER_FROM = "ce"


def frozen_features(ctx: common.StageContext, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode features of the whole training set and the test set: ([N, D], [M, D])."""
    encoder = registry.make_encoder(
        ctx.config.model.encoder, dtype=ctx.config.model.dtype, rngs=nnx.Rngs(key)
    )
    eval_batch, mesh = ctx.config.train.eval_batch_size, ctx.mesh
    encoder = common.load_module(ctx, ENCODER_FROM, "encoder", encoder)
    features = probe.make_features_fn(encoder, mesh)  # variables replicated on the mesh
    train_x = train_lib.apply_in_batches(features, (ctx.data.train_images,), eval_batch, mesh)
    test_x = train_lib.apply_in_batches(features, (ctx.data.test_images,), eval_batch, mesh)
    return train_x, test_x


def make_evaluate(ctx: common.StageContext, graphdef, test_x: np.ndarray):
    """``evaluate(state) -> report`` of a head on precomputed test features."""
    logits_fn = jax.jit(lambda state, x: train_lib.merge_model(graphdef, state)(x))
    data = ctx.data

    def evaluate(state: train_lib.TrainState) -> dict:
        logits = train_lib.apply_in_batches(
            lambda x: logits_fn(state, x), (test_x,), ctx.config.train.eval_batch_size, ctx.mesh
        )
        return metrics.classification_report(
            logits.argmax(-1), data.test_labels, data.num_classes, data.groups
        )

    return evaluate


def run(ctx: common.StageContext) -> dict:
    """Re-trains a new linear head on the frozen ``ce`` encoder; exports it to WORKDIR/crt/head."""
    cfg, data, mesh = ctx.config[STAGE], ctx.data, ctx.mesh
    runtime.check_batch_size(cfg.batch_size, mesh, f"{STAGE}.batch_size")
    key = common.stage_key(ctx, STAGE)
    train_x, test_x = frozen_features(ctx, jax.random.fold_in(key, 0))
    head = heads.LinearHead(train_x.shape[1], data.num_classes, rngs=nnx.Rngs(key))
    spe = train_lib.steps_per_epoch(len(data.train_labels), cfg.batch_size)
    num_steps = cfg.epochs * spe
    tx, schedule = train_lib.make_optimizer(
        cfg.optim, batch_size=cfg.batch_size, num_steps=num_steps, steps_per_epoch=spe
    )
    graphdef, state = train_lib.init_train_state(head, tx)
    sample = sampler.make_batch_sampler(
        cfg.sampler, jax.random.fold_in(key, 1), data.train_labels, data.num_classes,
        cfg.batch_size,
    )  # fmt: skip

    def batch_fn(device_data, state):
        return batches.gather(device_data, sample(state.step), mesh)

    def loss_fn(model, batch, key):
        return classification.cross_entropy(model(batch["images"]), batch["labels"]), {}

    evaluate = make_evaluate(ctx, graphdef, test_x)
    logging.info("%s: %d epochs x %d steps of batch %d, %s sampling.", STAGE, cfg.epochs, spe,
                 cfg.batch_size, cfg.sampler)  # fmt: skip
    state = train_lib.run_loop(
        stage=STAGE, workdir=ctx.workdir, state=runtime.put_replicated(mesh, state),
        train_step=train_lib.make_train_step(graphdef, tx, batch_fn, loss_fn, mesh),
        data=runtime.put_replicated(mesh, {"images": train_x, "labels": data.train_labels}),
        root_key=jax.random.fold_in(key, 2), num_steps=num_steps, steps_per_epoch=spe,
        images_per_step=cfg.batch_size, train_config=ctx.config.train, schedule=schedule,
        evaluate=evaluate, eval_every_steps=spe,
    )  # fmt: skip
    common.save_module(ctx, STAGE, "head", train_lib.merge_model(graphdef, state))
    report = evaluate(state)
    results = common.final_results(ctx, report, epochs=cfg.epochs, num_steps=num_steps)
    results.update(max_over_epochs_top1=common.max_over_epochs_top1(ctx, STAGE, report["top1"]),
                   encoder_from=ENCODER_FROM, sampler=cfg.sampler)  # fmt: skip
    return results
