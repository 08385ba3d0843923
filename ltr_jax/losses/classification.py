"""Classification losses: cross-entropy and the long-tailed baselines' losses.

The registry `LOSSES` maps ``<section>.loss`` to its `ClassificationLoss` (builder from the
loss's own config section ``<section>.<name>``, report label, defaults). Every loss made by
:func:`make_classification_loss` has the signature
``loss(logits, labels, class_weights=None, row_weights=None) -> scalar float32``.
``class_weights`` ([C] or None) re-weights the examples by their class, normalised like PyTorch's
``cross_entropy(weight=)``: ``sum_i w_{y_i} l_i / sum_i w_{y_i}``; ``row_weights`` ([B] or None)
multiplies them per row (0: the padding of an epoch's last partial batch). The class counts a
loss is made from may be a host array (a fixed prior: the supervised stages) or a device array
traced inside the training step (stage 2's prior of its current subset, re-counted per draw).
Deferred re-weighting (DRW, Cao et al. 2019) is such a weight vector that switches on at a given
step: :func:`make_drw_weights` builds it as a jittable function of the step, so one compiled
training step serves both phases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltr_jax.registry import Registry

Loss = Callable[..., jax.Array]


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    class_weights: jax.Array | None = None,
    row_weights: jax.Array | None = None,
) -> jax.Array:
    """Softmax cross-entropy over the batch, computed in float32 (float64 for float64 logits).

    Args:
      logits: ``[B, C]`` logits, any float dtype.
      labels: int ``[B]`` labels.
      class_weights: optional float ``[C]`` per-class weights; the loss is then the weighted
        mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``.
      row_weights: optional float ``[B]`` weights of the rows, e.g. 0 for the padding of an
        epoch's last partial batch (``sampler.epoch_batch``); multiplies ``class_weights``.

    Returns:
      The scalar float32 loss (float64 for float64 logits).
    """
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels
    )  # [B]
    if class_weights is None and row_weights is None:
        return per_example.mean()
    w = jnp.ones_like(per_example)
    if class_weights is not None:
        w = w * jnp.asarray(class_weights, jnp.float32)[labels]  # [B]
    if row_weights is not None:
        w = w * jnp.asarray(row_weights, jnp.float32)
    return jnp.sum(w * per_example) / jnp.sum(w)


def log_prior(class_counts):
    """log of the training class frequencies, float32 [C]: a numpy array for host counts
    (computed in float64), a jax array for device counts (e.g. traced in a training step)."""
    if isinstance(class_counts, jax.Array):
        counts = class_counts.astype(jnp.float32)
        return jnp.log(counts / counts.sum())
    counts = np.asarray(class_counts, np.float64)
    return np.log(counts / counts.sum()).astype(np.float32)


def ldam_margins(class_counts, max_margin: float = 0.5):
    """LDAM margins ``m_c ~ n_c^(-1/4)``, scaled so the largest (rarest class) is ``max_margin``.

    Returns:
      float32 [C] margins (numpy for host counts, jax for device counts, as `log_prior`).
    """
    if isinstance(class_counts, jax.Array):
        m = class_counts.astype(jnp.float32) ** -0.25
        return m * (max_margin / m.max())
    m = np.asarray(class_counts, np.float64) ** -0.25
    return (m * (max_margin / m.max())).astype(np.float32)


def class_balanced_weights(class_counts: np.ndarray, beta: float = 0.9999) -> np.ndarray:
    """Class-balanced weights ``(1 - beta) / (1 - beta^n_c)`` (Cui et al. 2019), summing to C.

    Returns:
      float32 [C] weights.
    """
    counts = np.asarray(class_counts, np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return (w * len(counts) / w.sum()).astype(np.float32)


def make_drw_weights(
    class_counts: np.ndarray, beta: float, start_step: int
) -> Callable[[jax.Array], jax.Array]:
    """Deferred re-weighting: ``weights(step)`` is 1 before ``start_step``, class-balanced after.

    Jittable in ``step`` (a traced int): both phases share one compiled function.

    Returns:
      ``fn(step) -> float32 [C]`` class weights.
    """
    balanced = jnp.asarray(class_balanced_weights(class_counts, beta))  # [C]
    return lambda step: jnp.where(step >= start_step, balanced, jnp.ones_like(balanced))


def ldam_loss(
    logits: jax.Array,
    labels: jax.Array,
    margins: jax.Array,
    scale: float = 30.0,
    class_weights: jax.Array | None = None,
    row_weights: jax.Array | None = None,
) -> jax.Array:
    """LDAM (Cao et al. 2019): CE on ``scale * (logits - margin_y * onehot_y)``.

    Meant for cosine logits (in [-1, 1], ``ce.head = "cosine"``), as in the LDAM code.

    Args:
      logits: ``[B, C]`` logits.
      labels: int ``[B]`` labels.
      margins: float ``[C]`` per-class margins (see :func:`ldam_margins`).
      scale: the logit scale ``s``.
      class_weights: optional ``[C]`` weights (DRW), as in :func:`cross_entropy`.
      row_weights: optional ``[B]`` row weights, as in :func:`cross_entropy`.

    Returns:
      The scalar float32 loss.
    """
    logits = logits.astype(jnp.float32)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)  # [B, C]
    shifted = logits - onehot * jnp.asarray(margins, jnp.float32)[labels][:, None]
    return cross_entropy(scale * shifted, labels, class_weights, row_weights)


def _shifted_by_prior(class_counts, tau: float) -> Loss:
    """CE on ``logits + tau * log prior`` (the prior shift is a training-time device only)."""
    shift = jnp.asarray(tau * log_prior(class_counts))  # [C]

    def adjusted(logits, labels, class_weights=None, row_weights=None):
        shifted = logits.astype(jnp.float32) + shift
        return cross_entropy(shifted, labels, class_weights, row_weights)

    return adjusted


def _ldam(class_counts, params: Mapping) -> Loss:
    margins = jnp.asarray(ldam_margins(class_counts, params["max_margin"]))  # [C]

    def ldam(logits, labels, class_weights=None, row_weights=None):
        return ldam_loss(logits, labels, margins, params["scale"], class_weights, row_weights)

    return ldam


@dataclasses.dataclass(frozen=True)
class ClassificationLoss:
    """One classification loss of the registry.

    Attributes:
      make: ``make(class_counts [C], params) -> loss(logits, labels, class_weights=None,
        row_weights=None)``;
        ``params`` is the loss's own config section (``<section>.<name>``, e.g.
        ``ce.ldam``), with every key of ``defaults``.
      label: ``label(params) -> str``, the loss's name in reports.
      defaults: the keys of its section and their defaults (empty: it has no section).
    """

    make: Callable[[np.ndarray, Mapping], Loss]
    label: Callable[[Mapping], str]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ``<section>.loss`` -> its loss. Adding one here makes it valid in the config, usable by the
# supervised stages and labelled in reports; its parameters go in ``<section>.<name>``.
LOSSES: Registry[ClassificationLoss] = Registry(
    "loss",
    {
        "ce": ClassificationLoss(make=lambda counts, params: cross_entropy, label=lambda p: "ce"),
        "balanced_softmax": ClassificationLoss(
            make=lambda counts, params: _shifted_by_prior(counts, 1.0),
            label=lambda p: "balanced_softmax",
        ),
        "logit_adjust": ClassificationLoss(
            make=lambda counts, params: _shifted_by_prior(counts, params["tau"]),
            label=lambda p: f"logit_adjust(tau={p['tau']:g})",
            defaults={"tau": 1.0},
        ),
        "ldam": ClassificationLoss(
            make=_ldam, label=lambda p: "ldam", defaults={"max_margin": 0.5, "scale": 30.0}
        ),
    },
)


def make_classification_loss(name: str, class_counts, params: Mapping | None = None) -> Loss:
    """Returns ``loss(logits, labels, class_weights=None, row_weights=None) -> scalar`` for a
    registered loss.

    - ``ce``: plain cross-entropy.
    - ``balanced_softmax`` (Ren et al. 2020): CE on logits + log prior.
    - ``logit_adjust`` (Menon et al. 2021): CE on logits + ``tau`` * log prior.
    - ``ldam`` (Cao et al. 2019): margin ``max_margin * (n_min / n_c)^(1/4)`` subtracted
      from the true-class logit, logits scaled by ``scale``.

    All leave the logits used at test time unadjusted.

    Args:
      name: a key of `LOSSES`.
      class_counts: training images per class, ``[C]``: a host array, or a device array
        (traced inside a jitted step: the prior then follows the counts it is given).
      params: the loss's own config section (e.g. ``config.ce.ldam``); missing keys take the
        entry's defaults.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    entry = LOSSES[name]
    return entry.make(class_counts, {**entry.defaults, **dict(params or {})})


def report_label(section: Mapping) -> str:
    """The loss's report label from a supervised config section (a ConfigDict or the dict of
    ``config.json``); a loss not registered in this process is labelled by its name."""
    name = section["loss"]
    if name not in LOSSES:
        return name
    entry = LOSSES[name]
    params = section.get(name) or {}
    return entry.label({**entry.defaults, **dict(params)})
