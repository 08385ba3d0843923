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

from ltr_jax import train_lib
from ltr_jax.data.input import sampler_registry
from ltr_jax.models import registry
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
    train_x = ctx.data.map_split(lambda x, y, i: features(x), "train", batch_size=eval_batch)
    test_x = ctx.data.map_split(lambda x, y, i: features(x), "test", batch_size=eval_batch)
    return train_x, test_x


# The stage's own keys (relative to its section) and their checks (`ltr_jax.validation`).
CHECKS: dict[str, object] = {"sampler": lambda: sampler_registry.SAMPLERS}


def make_setup(ctx: common.StageContext) -> train_lib.TrainSetup:
    """A new linear head on the frozen ``ce`` encoder's features, with the section's sampler."""
    cfg, data = ctx.config[STAGE], ctx.data
    key = common.stage_key(ctx, STAGE)
    train_x, test_x = frozen_features(ctx, jax.random.fold_in(key, 0))
    features = (train_x, data.train_labels, test_x)
    return probe.head_on_features(ctx, STAGE, cfg, features, cfg.sampler, key)


def run(ctx: common.StageContext) -> dict:
    """Re-trains a new linear head on the frozen ``ce`` encoder; exports it to WORKDIR/crt/head."""
    cfg = ctx.config[STAGE]
    setup = make_setup(ctx)
    logging.info(
        "%s: %d epochs of batch %d, %s sampling, on frozen %s features.",
        STAGE,
        cfg.epochs,
        cfg.batch_size,
        cfg.sampler,
        ENCODER_FROM,
    )
    state, graphdef = common.fit(ctx, setup)
    probe.save_head(ctx, STAGE, graphdef, state)
    results = common.evaluated_results(ctx, setup, state)
    results.update(encoder_from=ENCODER_FROM, sampler=cfg.sampler)
    return results


DECLARATION = common.Stage(
    STAGE,
    checks=CHECKS,
    run=run,
    make_setup=make_setup,
    needs=lambda config: (ENCODER_FROM,),
    label=lambda config, stages: "cRT",
)
