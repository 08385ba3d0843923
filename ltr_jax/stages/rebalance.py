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

from ltr_jax import dpp, runtime, train_lib, writers
from ltr_jax.data import augment, inputs, sampler
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
    if cfg.redraw_rule not in REDRAW_RULES:
        raise ValueError(f"Unknown stage2.redraw_rule {cfg.redraw_rule!r}; valid: "
                         f"{', '.join(REDRAW_RULES)}.")  # fmt: skip
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


def make_confidence_fn(graphdef_eval, p_source: str, strength: float):
    """``conf(state, images, positions, key) -> p(y | x)`` in eval mode, clean or augmented."""
    if p_source not in ("clean", "augmented"):
        raise ValueError(f"Unknown stage2.p_source {p_source!r}; valid: clean, augmented.")

    @jax.jit
    def conf(state, images, labels, positions, key):
        x = augment.to_float(images)
        if p_source == "augmented":  # per-image keys: independent of how batches are cut
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(positions)
            x = jax.vmap(lambda k_, im: augment.simclr_image(k_, im, strength))(keys, x)
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
    elif cfg.head_init != "random":
        raise ValueError(f"Unknown stage2.head_init {cfg.head_init!r}; valid: probe, random.")
    return model


def trainable_filter(train: str):
    if train == "all":
        return nnx.Param
    if train == "head":
        return nnx.All(nnx.Param, nnx.PathContains("head"))
    raise ValueError(f"Unknown stage2.train {train!r}; valid: all, head.")


def _append_draw(path: str, record: dict) -> None:
    """Appends a draw record, first dropping records of this draw or later (a resumed run)."""
    kept = [r for r in writers.read_jsonl(path) if r["draw"] < record["draw"]]
    writers.write_jsonl(path, kept + [record])


def make_redraw(ctx, cfg, conf_fn, table, valid, k: int, steps_per_epoch: int, key, feed):
    """``before_step(step, state)``: a new IP-DPP draw at the start of every epoch of
    :func:`draw_epochs`."""
    data, mesh = ctx.data, ctx.mesh
    draw_index = {e * steps_per_epoch: n for n, e in enumerate(draw_epochs(cfg))}  # step -> n
    draws_path = os.path.join(ctx.workdir, STAGE, "draws.jsonl")
    summary = writers.MetricWriter(ctx.workdir, f"{STAGE}_draw", tensorboard=False)

    def before_step(step: int, state: train_lib.TrainState) -> train_lib.TrainState:
        if step not in draw_index:
            return state
        n = draw_index[step]
        draw_key = jax.random.fold_in(key, 0 if cfg.fixed_subset else n)
        p = data.map_split(lambda *a: conf_fn(state, *a, draw_key), "train",
                           batch_size=ctx.config.train.eval_batch_size)  # fmt: skip
        positions, sel = draw_subset(draw_key, p, table, valid, k, cfg)
        # Every process draws from the same gathered p and key; a mismatch would silently
        # train each process on a different subset.
        runtime.check_same_on_all_processes(positions, f"{STAGE} draw {n}")
        log = draw_log(p, table, valid, sel, cfg)
        if jax.process_index() == 0:
            _append_draw(draws_path, {"draw": n, "step": step, "epoch": step // steps_per_epoch,
                                      "subset_crc32": zlib.crc32(positions.tobytes()),
                                      **log})  # fmt: skip
            summary.truncate_after(step - 1)
            summary.write(step, {
                "mean_p_drawn": float(np.mean(log["mean_p_drawn"])),
                "mean_p_class": float(np.mean(log["mean_p_class"])),
                "log_det_sum": float(np.sum(log["log_det"])),
            })  # fmt: skip
        logging.info("%s: draw %d at step %d, %d images, mean p drawn %.3f vs class %.3f.",
                     STAGE, n, step, len(positions), np.mean(log["mean_p_drawn"]),
                     np.mean(log["mean_p_class"]))  # fmt: skip
        feed.set_population(positions, step)
        return state.replace(extra=runtime.put_replicated(mesh, positions))

    return before_step


def run(ctx: common.StageContext) -> dict:
    """IP-DPP re-draws + fine-tuning; returns the final test metrics and draw summary."""
    cfg, data, mesh = ctx.config[STAGE], ctx.data, ctx.mesh
    runtime.check_batch_size(cfg.batch_size, mesh, f"{STAGE}.batch_size")
    key = common.stage_key(ctx, STAGE)
    trainable = trainable_filter(cfg.train)
    model = build_model(ctx, jax.random.fold_in(key, 0))
    if cfg.train == "head":  # frozen encoder in eval mode: BatchNorm statistics stay as stage 1
        model = modes.eval_view(model)  # left them, no dropout or stochastic depth
    k = k_per_class(cfg, data.class_counts)
    table, valid = class_table(data.train_labels, data.num_classes)
    subset_size = int(np.minimum(data.class_counts, k).sum())
    spe = sampler.steps_per_epoch(subset_size, cfg.batch_size, cfg.drop_last)
    num_steps = cfg.epochs * spe
    tx, schedule = train_lib.make_optimizer(
        cfg.optim, batch_size=cfg.batch_size, num_steps=num_steps, steps_per_epoch=spe
    )
    graphdef, state = train_lib.init_train_state(
        model, tx, trainable, extra=np.zeros(subset_size, np.int32)
    )
    graphdef_eval = common.eval_graphdef(model, trainable)
    conf_fn = make_confidence_fn(graphdef_eval, cfg.p_source, cfg.augment_strength)
    logits_fn = common.make_logits_fn(graphdef_eval)
    sampling = inputs.Sampling("uniform", jax.random.fold_in(key, 1), cfg.batch_size,
                               population="extra", population_size=subset_size,
                               drop_last=cfg.drop_last)  # fmt: skip
    feed = data.train_feed(sampling, augment=cfg.augment, strength=cfg.augment_strength)

    def loss_fn(model, batch, key):
        logits = model(feed.view(key, batch))
        hit, w = jnp.argmax(logits, -1) == batch["labels"], batch.get("weights")  # w 0: padding
        acc = jnp.mean(hit) if w is None else jnp.sum(w * hit) / jnp.sum(w)
        return classification.cross_entropy(logits, batch["labels"], row_weights=w), {
            "train_acc": acc
        }

    redraw = make_redraw(ctx, cfg, conf_fn, table, valid, k, spe, jax.random.fold_in(key, 3),
                         feed)  # fmt: skip
    logging.info("%s: k=%d per class, %d images per draw, %d epochs x %d steps.", STAGE, k,
                 subset_size, cfg.epochs, spe)  # fmt: skip
    try:  # a clean stop (stopping.Stopped) must stop the decoding workers too
        state = train_lib.run_loop(
            stage=STAGE, workdir=ctx.workdir, state=runtime.put_replicated(mesh, state),
            train_step=train_lib.make_train_step(graphdef, tx, feed.batch_fn, loss_fn, mesh),
            data=feed.data, root_key=jax.random.fold_in(key, 2),
            num_steps=num_steps, steps_per_epoch=spe, images_per_step=cfg.batch_size,
            train_config=ctx.config.train, schedule=schedule,
            evaluate=lambda s: common.evaluate(ctx, logits_fn, s), before_step=redraw,
        )  # fmt: skip
    finally:
        feed.close()
    report = common.evaluate(ctx, logits_fn, state)
    results = common.final_results(ctx, report, epochs=cfg.epochs, num_steps=num_steps)
    results.update(
        max_over_epochs_top1=common.max_over_epochs_top1(ctx, STAGE, report["top1"]), k_per_class=k,
        subset_size=subset_size, sampler=cfg.sampler, kernel_scale=cfg.kernel_scale,
        head_init=cfg.head_init, train=cfg.train, p_source=cfg.p_source,
        redraw_rule=cfg.redraw_rule, fixed_subset=cfg.fixed_subset,
    )  # fmt: skip
    return results
