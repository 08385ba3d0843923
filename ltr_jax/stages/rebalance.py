"""Stage 2: IP-DPP rebalancing and fine-tuning (SPEC §3).

Before epoch 0 and then every ``redraw_every_epochs`` epochs (``redraw_rule="every"``: epochs
0, E, 2E, ...; ``"reference"``: 0, E-1, 2E-1, ... but not the last epoch, as the released code
does) each class with more than k images is cut to k images by a draw from the IP-DPP (an
exact k-DPP whose kernel favours images the current model gets wrong); smaller classes are
kept whole. With ``fixed_subset`` every draw uses the first draw's key (the released code
re-seeds its sampler identically). The draw is part of the train state, so a resumed run
trains on exactly the subset the uninterrupted run used. Encoder from stage 1, head from the
probe; cross-entropy fine-tuning with AdamW.

Beyond the paper (named options; the defaults are the paper's stage 2):

- ``stage2.subset``: how many images each class has in a draw (`SUBSETS`). ``paper``: classes
  over k cut to k by the sampler, the others whole (a 10:1 subset on CIFAR-10-LT IF 100);
  ``balanced``: every class exactly k (classes under k repeated); ``sqrt``: a class under k
  gets ``sqrt(n_c k)`` images, the geometric mean of the paper's count and the balanced one
  (the paper subset's imbalance ratio square-rooted). The images a class is filled up with are
  its whole class repeated, then a seeded draw without replacement (`fill_subset`).
- ``stage2.loss``: any loss of the classification registry; a prior or margins
  (``balanced_softmax``, ``logit_adjust``, ``ldam``) come from the class counts of the
  CURRENT subset (`TrainState.subset`), counted inside the training step, so each draw's
  prior is that draw's counts.
- ``stage2.seed``: the stage's own seed (-1: ``config.seed``), so that several stage-2 seeds
  can continue copies of one finished stage 1 and probe.
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


def _paper_counts(counts: np.ndarray, k: int) -> np.ndarray:
    return np.minimum(counts, k)


def _balanced_counts(counts: np.ndarray, k: int) -> np.ndarray:
    return np.where(counts > 0, k, 0)


def _sqrt_counts(counts: np.ndarray, k: int) -> np.ndarray:
    small = np.rint(np.sqrt(counts.astype(np.float64) * k)).astype(np.int64)
    return np.where(counts >= k, k, small)


# stage2.subset: images of each class in a draw, ``fn(class counts [C], k) -> int [C]``; every
# rule gives k to a class of more than k images (cut by the IP-DPP) and at least n_c to the
# others (kept whole, then filled up by `fill_subset`).
SUBSETS = {"paper": _paper_counts, "balanced": _balanced_counts, "sqrt": _sqrt_counts}


def subset_counts(cfg, class_counts: np.ndarray) -> np.ndarray:
    """int64 [C]: the images of each class in every draw (``stage2.subset``, ``k_per_class``)."""
    counts = np.asarray(class_counts, np.int64)
    return SUBSETS[cfg.subset](counts, k_per_class(cfg, counts)).astype(np.int64)


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


def fill_subset(key, table, sel, targets: np.ndarray) -> np.ndarray:
    """The training subset of one draw: each class's drawn (or whole) images, repeated to its
    ``targets`` count: ``t // n`` whole copies, then ``t % n`` of them drawn without replacement
    by a numpy generator seeded from ``key`` (one stream, class by class).

    Args:
      key: the fill's key (a function of the draw's key only: a resume refills identically).
      table, sel: the :func:`class_table` positions and the draw's bool [C, Nmax] selection.
      targets: int [C] images per class, at least the selected count of every class.

    Returns:
      sorted int32 [sum(targets)] positions (repeats included).
    """
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).ravel())
    parts = []
    for c in range(table.shape[0]):
        chosen = table[c][sel[c]]
        copies, extra = divmod(int(targets[c]), max(len(chosen), 1))
        parts += [np.tile(chosen, copies), rng.choice(chosen, extra, replace=False)]
    return np.sort(np.concatenate(parts)).astype(np.int32)


def subset_class_counts(labels: jax.Array, subset: jax.Array, num_classes: int) -> jax.Array:
    """float32 [C]: images of each class in ``subset`` (positions into ``labels``), on device."""
    return jnp.zeros(num_classes, jnp.float32).at[labels[subset]].add(1.0)


def make_stage2_loss(cfg, labels: jax.Array, num_classes: int):
    """``loss(logits, batch)`` of ``stage2.loss``: a registered classification loss whose class
    counts are those of ``batch["subset"]`` (the state's current draw), so a prior (balanced
    softmax, logit adjustment) or margins (LDAM) follow every draw; ``ce`` needs no counts and
    is the paper's cross-entropy unchanged."""
    params = cfg.get(cfg.loss)

    def loss(logits, batch):
        counts = None
        if cfg.loss != "ce":
            counts = subset_class_counts(labels, batch["subset"], num_classes)
        fn = classification.make_classification_loss(cfg.loss, counts, params)
        return fn(logits, batch["labels"], row_weights=batch.get("weights"))

    return loss


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


def make_redraw(ctx, cfg, conf_fn, table, valid, k: int, steps_per_epoch: int, key, fill_key):
    """The before-step hook of a new IP-DPP draw at the start of every epoch of
    :func:`draw_epochs`: it replaces ``state.subset`` (the training subset, filled up to
    ``stage2.subset``'s counts), which the feed and the loss's prior follow from that step on."""
    data, mesh = ctx.data, ctx.mesh
    targets = subset_counts(cfg, data.class_counts)
    draw_index = {e * steps_per_epoch: n for n, e in enumerate(draw_epochs(cfg))}  # step -> n
    draws_path = os.path.join(ctx.workdir, STAGE, "draws.jsonl")
    summary = writers.MetricWriter(ctx.workdir, f"{STAGE}_draw", tensorboard=False)

    def redraw(step: int, state: train_lib.TrainState) -> train_lib.TrainState:
        n = draw_index[step]
        index = 0 if cfg.fixed_subset else n
        draw_key = jax.random.fold_in(key, index)
        p = data.map_split(
            lambda *a: conf_fn(state, *a, draw_key),
            "train",
            batch_size=ctx.config.train.eval_batch_size,
        )
        positions, sel = draw_subset(draw_key, p, table, valid, k, cfg)
        if cfg.subset != "paper":  # classes under k filled up (repeats)
            positions = fill_subset(jax.random.fold_in(fill_key, index), table, sel, targets)
        # Every process draws from the same gathered p and key; a mismatch would silently
        # train each process on a different subset.
        runtime.check_same_on_all_processes(positions, f"{STAGE} draw {n}")
        log = draw_log(p, table, valid, sel, cfg)
        # The images of each class in the training subset (repeats included): the class
        # counts of the loss's prior until the next draw.
        log["counts"] = np.bincount(data.train_labels[positions], minlength=len(targets)).tolist()
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
    "subset": lambda: SUBSETS,
    "loss": lambda: classification.LOSSES,
    "logit_adjust.tau": validation.NON_NEG,
    "ldam.max_margin": validation.POSITIVE,
    "ldam.scale": validation.POSITIVE,
    "seed": (lambda x: x >= -1 and float(x).is_integer(), "an integer >= -1 (-1: config.seed)"),
    "augment": lambda: augment_registry.AUGMENTS,
    "augment_strength": validation.NON_NEG,
    "drop_last": validation.choices(True, False),
}


def make_setup(ctx: common.StageContext) -> train_lib.TrainSetup:
    """Encoder from stage 1, head from the probe; ``stage2.loss`` (cross-entropy: the paper)
    on the current IP-DPP draw (filled up to ``stage2.subset``'s counts), re-drawn by a
    before-step hook."""
    cfg, data = ctx.config[STAGE], ctx.data
    key = common.stage_key(ctx, STAGE, cfg.seed)
    trainable = TRAINABLE[cfg.train]
    model = build_model(ctx, jax.random.fold_in(key, 0))
    if cfg.train == "head":  # frozen encoder in eval mode: BatchNorm statistics stay as stage 1
        model = modes.eval_view(model)  # left them, no dropout or stochastic depth
    k = k_per_class(cfg, data.class_counts)
    table, valid = class_table(data.train_labels, data.num_classes)
    subset_size = int(subset_counts(cfg, data.class_counts).sum())
    spe = sampler.steps_per_epoch(subset_size, cfg.batch_size, cfg.drop_last)
    graphdef_eval = common.eval_graphdef(model, trainable)
    conf_fn = make_confidence_fn(graphdef_eval, cfg.p_source, cfg.augment_strength)
    logits_fn = common.make_logits_fn(graphdef_eval)

    loss = make_stage2_loss(cfg, runtime.put_replicated(ctx.mesh, data.train_labels), len(table))

    def loss_fn(model, batch, key, view):
        logits = model(view(key, batch))
        hit, w = jnp.argmax(logits, -1) == batch["labels"], batch.get("weights")  # w 0: padding
        acc = jnp.mean(hit) if w is None else jnp.sum(w * hit) / jnp.sum(w)
        return loss(logits, batch), {"train_acc": acc}

    redraw = make_redraw(
        ctx, cfg, conf_fn, table, valid, k, spe, *(jax.random.fold_in(key, i) for i in (3, 4))
    )
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
        subset=cfg.subset,
        loss=classification.report_label(cfg),
        seed=cfg.seed if cfg.seed >= 0 else ctx.config.seed,
    )
    return results


DECLARATION = common.Stage(
    STAGE,
    checks=CHECKS,
    run=run,
    make_setup=make_setup,
    needs=lambda c: ("stage1", "probe") if c.stage2.head_init == "probe" else ("stage1",),
    label=lambda config, stages: report_label(config["stage2"]),
)


def report_label(section: dict) -> str:
    """The method's part in reports from ``config.json``'s stage-2 section: its IP-DPP
    sampler, then `` [balanced_softmax, balanced subset]`` where the loss and subset are not
    the paper's (recorded configs of runs made before these keys existed are the paper's)."""
    parts = []
    if section.get("loss", "ce") != "ce":
        parts.append(classification.report_label(section))
    if section.get("subset", "paper") != "paper":
        parts.append(f"{section['subset']} subset")
    suffix = f" [{', '.join(parts)}]" if parts else ""
    return dpp_sampling.report_label(section["sampler"]) + suffix
