"""Stage 2: IP-DPP rebalancing and fine-tuning (SPEC §3).

Before epoch 0 and then every ``redraw_every_epochs`` epochs (``redraw_rule="every"``: epochs
0, E, 2E, ...; ``"reference"``: 0, E-1, 2E-1, ... but not the last epoch, as the released code
does) each class with more than k images is cut to k images by a draw from the IP-DPP (an
exact k-DPP whose kernel favours images the current model gets wrong); smaller classes are
kept whole. With ``fixed_subset`` every draw uses the first draw's key (the released code
re-seeds its sampler identically). The draw is part of the train state, so a resumed run
trains on exactly the subset the uninterrupted run used. Encoder from stage 1, head from the
probe; cross-entropy fine-tuning with AdamW.
"""

from __future__ import annotations

import logging
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltr_jax import dpp, runtime, train_lib, validation, writers
from ltr_jax.data.input import augment, augment_registry, sampler
from ltr_jax.dpp import kernels as dpp_kernels
from ltr_jax.dpp import sampling as dpp_sampling
from ltr_jax.losses import classification
from ltr_jax.models import modes, registry
from ltr_jax.stages import common

STAGE = "stage2"


def k_per_class(cfg, class_counts: np.ndarray) -> int:
    """``stage2.k_per_class``, or 10 x the smallest class count when it is 0."""
    return int(cfg.k_per_class) if cfg.k_per_class > 0 else int(10 * np.min(class_counts))


# stage2.redraw_rule: is there a draw before epoch e (of E between draws, of `epochs`)?
REDRAW_RULES = {
    "every": lambda e, every, epochs: e % every == 0,
    "reference": lambda e, every, epochs: e == 0 or ((e + 1) % every == 0 and e + 1 != epochs),
}


def draw_epochs(cfg) -> list[int]:
    """The epochs that start with an IP-DPP draw (``stage2.redraw_rule``), in order."""
    rule = REDRAW_RULES[cfg.redraw_rule]
    return [e for e in range(cfg.epochs) if rule(e, cfg.redraw_every_epochs, cfg.epochs)]


def class_table(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions grouped by class, padded: int32 [C, Nmax] (0 where padded) and valid [C, Nmax]."""
    per_class = [np.flatnonzero(labels == c).astype(np.int32) for c in range(num_classes)]
    return dpp.pad_per_class(per_class)


def draw_subset(key, p, table, valid, k: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    """One IP-DPP draw over every class.

    Args:
      key: this draw's key.
      p: float [N] confidence p(y_i | x_i) of every training image.
      table, valid: the :func:`class_table` of the training labels.
      k: images per class.
      cfg: the ``stage2`` config (sampler, kernel_scale).

    Returns:
      (sorted int32 [M] positions of the drawn subset, bool [C, Nmax] selection).
    """
    p_table = np.where(valid, p[table], 0.0).astype(np.float32)  # [C, Nmax]
    # Classes with at most k images are kept whole; the others are drawn on device, grouped
    # by padded size (a few compiled calls for thousands of classes), class c with key
    # fold_in(key, c).
    sel = dpp.sample_ip_dpp_grouped(key, p_table, valid, k, cfg.kernel_scale, cfg.sampler)
    return np.sort(table[sel]).astype(np.int32), sel


def draw_log(p, table, valid, sel, cfg) -> dict:
    """Per-class counts, mean p of drawn vs whole class, and log det(S_Y) of one draw."""
    p_table = np.where(valid, p[table], 0.0).astype(np.float32)
    log_det = jax.vmap(lambda q, s, v: dpp.log_det_selected(q, s, cfg.kernel_scale, v))(
        p_table, sel, valid
    )
    mean = lambda m: (p_table * m).sum(1) / np.maximum(m.sum(1), 1)
    return {
        "counts": sel.sum(1).tolist(),
        "mean_p_drawn": mean(sel).tolist(),
        "mean_p_class": mean(valid).tolist(),
        "log_det": np.asarray(log_det, np.float64).tolist(),
    }


def _clean(key, images, positions, strength):
    del key, positions, strength
    return images


def _augmented(key, images, positions, strength):
    # Per-image keys: independent of how batches are cut.
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(positions)
    return jax.vmap(lambda k_, im: augment.simclr_image(k_, im, strength))(keys, images)


# stage2.p_source: the images whose confidences p(y | x) weight the IP-DPP kernel.
P_SOURCES = {"clean": _clean, "augmented": _augmented}


def make_confidence_fn(graphdef_eval, p_source: str, strength: float):
    """``conf(state, images, positions, key) -> p(y | x)`` in eval mode, clean or augmented."""
    view = P_SOURCES[p_source]

    @jax.jit
    def conf(state, images, labels, positions, key):
        x = view(key, augment.to_float(images), positions, strength)
        logits = train_lib.merge_model(graphdef_eval, state)(x)
        probs = jax.nn.softmax(logits.astype(jnp.float32))
        return jnp.take_along_axis(probs, labels[:, None], 1)[:, 0]

    return conf


def build_model(ctx: common.StageContext, key: jax.Array) -> nnx.Module:
    """Classifier with the stage-1 encoder and the probe's head (or a fresh head)."""
    cfg, data = ctx.config[STAGE], ctx.data
    model = registry.make_classifier(ctx.config.model, data.num_classes, rngs=nnx.Rngs(key))
    common.load_module(ctx, "stage1", "encoder", model.encoder)
    if cfg.head_init == "probe":
        common.load_module(ctx, "probe", "head", model.head)
    return model


# stage2.train: the variables fine-tuned.
TRAINABLE = {"all": nnx.Param, "head": nnx.All(nnx.Param, nnx.PathContains("head"))}


def _append_draw(path: str, record: dict) -> None:
    """Appends a draw record, first dropping records of this draw or later (a resumed run)."""
    kept = [r for r in writers.read_jsonl(path) if r["draw"] < record["draw"]]
    writers.write_jsonl(path, kept + [record])


def make_redraw(ctx, cfg, conf_fn, table, valid, k: int, steps_per_epoch: int, key):
    """The before-step hook of a new IP-DPP draw at the start of every epoch of
    :func:`draw_epochs`: it replaces ``state.subset`` (the training subset), which the feed
    follows from that step on."""
    data, mesh = ctx.data, ctx.mesh
    draw_index = {e * steps_per_epoch: n for n, e in enumerate(draw_epochs(cfg))}  # step -> n
    draws_path = os.path.join(ctx.workdir, STAGE, "draws.jsonl")
    summary = writers.MetricWriter(ctx.workdir, f"{STAGE}_draw", tensorboard=False)

    def redraw(step: int, state: train_lib.TrainState) -> train_lib.TrainState:
        n = draw_index[step]
        draw_key = jax.random.fold_in(key, 0 if cfg.fixed_subset else n)
        p = data.map_split(
            lambda *a: conf_fn(state, *a, draw_key),
            "train",
            batch_size=ctx.config.train.eval_batch_size,
        )
        positions, sel = draw_subset(draw_key, p, table, valid, k, cfg)
        # Every process draws from the same gathered p and key; a mismatch would silently
        # train each process on a different subset.
        runtime.check_same_on_all_processes(positions, f"{STAGE} draw {n}")
        log = draw_log(p, table, valid, sel, cfg)
        if jax.process_index() == 0:
            _append_draw(
                draws_path,
                {
                    "draw": n,
                    "step": step,
                    "epoch": step // steps_per_epoch,
                    "subset_crc32": zlib.crc32(positions.tobytes()),
                    **log,
                },
            )
            summary.truncate_after(step - 1)
            summary.write(
                step,
                {
                    "mean_p_drawn": float(np.mean(log["mean_p_drawn"])),
                    "mean_p_class": float(np.mean(log["mean_p_class"])),
                    "log_det_sum": float(np.sum(log["log_det"])),
                },
            )
        logging.info(
            "%s: draw %d at step %d, %d images, mean p drawn %.3f vs class %.3f.",
            STAGE,
            n,
            step,
            len(positions),
            np.mean(log["mean_p_drawn"]),
            np.mean(log["mean_p_class"]),
        )
        return state.replace(subset=runtime.put_replicated(mesh, positions))

    return train_lib.at_steps(draw_index, redraw)


# The stage's own keys (relative to its section) and their checks (`ltr_jax.validation`).
CHECKS: dict[str, object] = {
    "head_init": validation.choices("probe", "random"),
    "train": lambda: TRAINABLE,
    "p_source": lambda: P_SOURCES,
    "sampler": lambda: dpp_sampling.METHODS,
    "kernel_scale": lambda: dpp_kernels.SCALES,
    "k_per_class": (validation.at_least(0), "an integer >= 0 (0: 10 x the smallest class)"),
    "redraw_every_epochs": validation.POS_INT,
    "redraw_rule": lambda: REDRAW_RULES,
    "fixed_subset": validation.choices(True, False),
    "augment": lambda: augment_registry.AUGMENTS,
    "augment_strength": validation.NON_NEG,
    "drop_last": validation.choices(True, False),
}


def make_setup(ctx: common.StageContext) -> train_lib.TrainSetup:
    """Encoder from stage 1, head from the probe; cross-entropy on the current IP-DPP draw,
    re-drawn by a before-step hook."""
    cfg, data = ctx.config[STAGE], ctx.data
    key = common.stage_key(ctx, STAGE)
    trainable = TRAINABLE[cfg.train]
    model = build_model(ctx, jax.random.fold_in(key, 0))
    if cfg.train == "head":  # frozen encoder in eval mode: BatchNorm statistics stay as stage 1
        model = modes.eval_view(model)  # left them, no dropout or stochastic depth
    k = k_per_class(cfg, data.class_counts)
    table, valid = class_table(data.train_labels, data.num_classes)
    subset_size = int(np.minimum(data.class_counts, k).sum())
    spe = sampler.steps_per_epoch(subset_size, cfg.batch_size, cfg.drop_last)
    graphdef_eval = common.eval_graphdef(model, trainable)
    conf_fn = make_confidence_fn(graphdef_eval, cfg.p_source, cfg.augment_strength)
    logits_fn = common.make_logits_fn(graphdef_eval)

    def loss_fn(model, batch, key, view):
        logits = model(view(key, batch))
        hit, w = jnp.argmax(logits, -1) == batch["labels"], batch.get("weights")  # w 0: padding
        acc = jnp.mean(hit) if w is None else jnp.sum(w * hit) / jnp.sum(w)
        loss = classification.cross_entropy(logits, batch["labels"], row_weights=w)
        return loss, {"train_acc": acc}

    redraw = make_redraw(ctx, cfg, conf_fn, table, valid, k, spe, jax.random.fold_in(key, 3))
    return train_lib.TrainSetup(
        stage=STAGE,
        model=model,
        optim=cfg.optim,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        num_examples=subset_size,
        input=data,
        sampler="uniform",
        loss=loss_fn,
        key=key,
        augment=cfg.augment,
        augment_strength=cfg.augment_strength,
        trainable=trainable,
        subset=np.zeros(subset_size, np.int32),  # replaced by the draw before step 0
        drop_last=cfg.drop_last,
        evaluate=lambda s: common.evaluate(ctx, logits_fn, s),
        hooks=(redraw,),
    )


def run(ctx: common.StageContext) -> dict:
    """IP-DPP re-draws + fine-tuning; returns the final test metrics and draw summary."""
    cfg = ctx.config[STAGE]
    setup = make_setup(ctx)
    k = k_per_class(cfg, ctx.data.class_counts)
    logging.info(
        "%s: k=%d per class, %d images per draw, %d epochs x %d steps.",
        STAGE,
        k,
        setup.num_examples,
        cfg.epochs,
        setup.steps_per_epoch,
    )
    state, _ = common.fit(ctx, setup)
    results = common.evaluated_results(ctx, setup, state)
    results.update(
        k_per_class=k,
        subset_size=setup.num_examples,
        sampler=cfg.sampler,
        kernel_scale=cfg.kernel_scale,
        head_init=cfg.head_init,
        train=cfg.train,
        p_source=cfg.p_source,
        redraw_rule=cfg.redraw_rule,
        fixed_subset=cfg.fixed_subset,
    )
    return results


DECLARATION = common.Stage(
    STAGE,
    checks=CHECKS,
    run=run,
    make_setup=make_setup,
    needs=lambda c: ("stage1", "probe") if c.stage2.head_init == "probe" else ("stage1",),
    label=lambda config, stages: dpp_sampling.report_label(config["stage2"]["sampler"]),
)
