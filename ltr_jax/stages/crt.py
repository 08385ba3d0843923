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

from ltr_jax import runtime
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


def run(ctx: common.StageContext) -> dict:
    """Re-trains a new linear head on the frozen ``ce`` encoder; exports it to WORKDIR/crt/head."""
    cfg, data, mesh = ctx.config[STAGE], ctx.data, ctx.mesh
    runtime.check_batch_size(cfg.batch_size, mesh, f"{STAGE}.batch_size")
    key = common.stage_key(ctx, STAGE)
    train_x, test_x = frozen_features(ctx, jax.random.fold_in(key, 0))
    logging.info("%s: %d epochs of batch %d, %s sampling, on frozen %s features.", STAGE,
                 cfg.epochs, cfg.batch_size, cfg.sampler, ENCODER_FROM)  # fmt: skip
    features = (train_x, data.train_labels, test_x)
    results = probe.train_head(ctx, STAGE, cfg, features, cfg.sampler, key)
    results.update(encoder_from=ENCODER_FROM, sampler=cfg.sampler)
    return results
