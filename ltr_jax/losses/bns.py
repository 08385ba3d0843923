"""Balanced Negative Sampling (BNS): the stage-1 supervised sigmoid contrastive loss.

Two forms (SPEC section 2), both pure functions of global arrays:

* ``"paper"``: Eq. 12 of Lin & Yuan (NeurIPS 2025). Each anchor is averaged with up to ``m``
  random same-class anchors; each is scored with ``log sig`` against the positive (the other
  view of the anchor image) and the MEAN ``log sig(-.)`` over different-class negatives (the
  paper sums negatives; the mean keeps both terms on one scale for any batch size).
* ``"reference"``: the loss the released PyTorch code optimises, over all ``2B`` rows.

Conventions shared by both forms:

* Inputs ``z1``, ``z2`` are ``[B, D]`` projections of view 1 and view 2, any float dtype. They
  are cast to float32 and L2-normalised here. This is a no-op in value for unit-norm inputs
  (the projection head's output), bounds every similarity by ``1 / tau`` whatever the caller
  passes, and leaves the gradient reaching a caller-side normalisation unchanged (the tangent
  projection is idempotent). The loss is always computed and returned in float32.
* Data parallelism needs no collective here: call the loss inside a ``jax.jit`` whose inputs are
  sharded over the mesh axis ``'data'``; the ``[B, B]`` similarity matrices then span the
  global batch and XLA inserts the communication.

Edge cases of ``"paper"``: an anchor with no different-class image in the batch (a one-class
batch) has a negative term of 0 (the mean over an empty set is defined as 0), so the loss stays
finite; an image alone in its class has ``A_i = {q_i}``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ltr_jax.registry import Registry

_EPS = 1e-12


def normalise(z: jax.Array) -> jax.Array:
    """Casts to float32 and L2-normalises the rows of ``z`` ([B, D])."""
    z = z.astype(jnp.float32)
    sq_norm = jnp.sum(z * z, axis=-1, keepdims=True)  # [B, 1]
    return z * jax.lax.rsqrt(jnp.maximum(sq_norm, _EPS))


def _same_class(labels: jax.Array) -> jax.Array:
    """Returns the [B, B] boolean matrix ``labels[i] == labels[j]``."""
    labels = jnp.asarray(labels)
    return labels[:, None] == labels[None, :]


def paper_anchor_mask(key: jax.Array, labels: jax.Array, m: int) -> jax.Array:
    """Draws the anchor sets ``A_i`` of the paper form as a boolean matrix.

    Row ``i`` holds ``A_i``: the diagonal entry (``q_i`` itself) is always True, plus
    ``min(m, n_i - 1)`` other indices of ``i``'s class, ``n_i`` being the class count in the
    batch, chosen uniformly at random without replacement, independently per row. Entries of a
    different class are never True.

    Args:
      key: a ``jax.random`` key.
      labels: int labels, ``[B]``.
      m: the maximum number of extra same-class anchors (a static Python int, ``>= 0``).

    Returns:
      A ``[B, B]`` bool array; ``mask[i, k]`` is True when anchor ``k`` belongs to ``A_i``.
    """
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    labels = jnp.asarray(labels)
    batch = labels.shape[0]
    eye = jnp.eye(batch, dtype=bool)  # [B, B]
    k = min(m, batch - 1)
    if k == 0:
        return eye
    eligible = _same_class(labels) & ~eye  # [B, B]
    # The top-k of i.i.d. uniform scores over the eligible entries is a uniform k-subset;
    # ineligible entries score -1 and are dropped again when a class has fewer than k others.
    scores = jnp.where(eligible, jax.random.uniform(key, (batch, batch)), -1.0)  # [B, B]
    _, top = jax.lax.top_k(scores, k)  # [B, k]
    chosen = jnp.any(top[:, :, None] == jnp.arange(batch)[None, None, :], axis=1)  # [B, B]
    return eye | (chosen & eligible)


def _paper_one_direction(
    anchors: jax.Array, others: jax.Array, labels: jax.Array, mask: jax.Array, tau: float
) -> jax.Array:
    """Mean over ``i`` of ``L_i`` with anchors from one view and positives/negatives from the other.

    Args:
      anchors: normalised float32 embeddings of the anchor view, ``[B, D]``.
      others: normalised float32 embeddings of the other view, ``[B, D]``.
      labels: int labels, ``[B]``.
      mask: ``[B, B]`` bool anchor sets from :func:`paper_anchor_mask` (diagonal True).
      tau: temperature.

    Returns:
      The scalar float32 loss of this direction.
    """
    logits = anchors @ others.T / tau  # [B, B]: anchor k against other-view image j
    negatives = ~_same_class(labels)  # [B, B]
    # Anchor k and image i share a class whenever mask[i, k], so N(i) = N(k): the negative
    # term depends on the anchor only and is a row mean.
    neg_log = jnp.where(negatives, jax.nn.log_sigmoid(-logits), 0.0)  # [B, B]
    n_neg = jnp.sum(negatives, axis=1)  # [B]
    neg_term = jnp.sum(neg_log, axis=1) / jnp.maximum(n_neg, 1)  # [B]; 0 without negatives
    pos_log = jax.nn.log_sigmoid(logits).T  # [B, B]: pos_log[i, k] = log sig(q_k . v_i / tau)
    weights = mask.astype(jnp.float32)  # [B, B]
    total = jnp.sum(weights * pos_log, axis=1) + weights @ neg_term  # [B]
    per_anchor = -total / jnp.sum(weights, axis=1)  # [B]
    return jnp.mean(per_anchor)


def bns_paper_from_masks(
    z1: jax.Array,
    z2: jax.Array,
    labels: jax.Array,
    mask1: jax.Array,
    mask2: jax.Array,
    *,
    tau: float = 0.5,
) -> jax.Array:
    """The paper form of BNS with given anchor sets (see :func:`bns_paper`).

    Args:
      z1: view-1 embeddings, ``[B, D]``.
      z2: view-2 embeddings, ``[B, D]``.
      labels: int labels, ``[B]``.
      mask1: ``[B, B]`` bool anchor sets for view-1 anchors (row ``i`` = ``A_i``, with ``i``).
      mask2: ``[B, B]`` bool anchor sets for view-2 anchors.
      tau: temperature.

    Returns:
      The scalar float32 loss, the average of the two directions.
    """
    z1, z2 = normalise(z1), normalise(z2)
    loss_12 = _paper_one_direction(z1, z2, labels, mask1, tau)
    loss_21 = _paper_one_direction(z2, z1, labels, mask2, tau)
    return 0.5 * (loss_12 + loss_21)


def bns_paper(
    z1: jax.Array,
    z2: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    tau: float = 0.5,
    m: int = 4,
) -> jax.Array:
    """BNS as in the paper (Eq. 12), with negatives averaged and both views as anchors.

    For anchor ``q_i`` of one view: ``L_i = -1/|A_i| sum_{q in A_i} [log sig(q.v_i+/tau) +
    mean_{j in N(i)} log sig(-q.v_j/tau)]``, with ``v`` the other view, ``N(i)`` its
    different-class images and ``A_i`` drawn by :func:`paper_anchor_mask`. The loss is the mean
    over ``i``, averaged over the two directions. ``key`` is split into two; the first half draws
    the view-1 anchor sets, the second the view-2 ones.

    Args:
      z1: view-1 embeddings, ``[B, D]`` (normalised here, computed in float32).
      z2: view-2 embeddings, ``[B, D]``.
      labels: int labels, ``[B]``.
      key: a ``jax.random`` key.
      tau: temperature.
      m: the maximum number of extra same-class anchors (static).

    Returns:
      The scalar float32 loss.
    """
    key1, key2 = jax.random.split(key)
    mask1 = paper_anchor_mask(key1, labels, m)
    mask2 = paper_anchor_mask(key2, labels, m)
    return bns_paper_from_masks(z1, z2, labels, mask1, mask2, tau=tau)


def bns_reference(
    z1: jax.Array, z2: jax.Array, labels: jax.Array, *, tau: float = 0.5
) -> jax.Array:
    """BNS as the reference code computes it, over all ``2B`` rows of both views.

    ``P(a)`` = rows ``b != a`` of ``a``'s class (never empty: it holds ``a``'s other view),
    ``N(a)`` = rows of other classes; ``pos_a = mean_{P(a)} exp(s_ab/tau)``,
    ``neg_a = 1/(2B) sum_{N(a)} exp(s_ab/tau)``, ``L = -mean_a [log sig(pos_a) +
    log sig(-neg_a)]``. The exponentials are evaluated directly: similarities are bounded by
    ``1/tau`` after normalisation, so they stay finite in float32 for ``tau > ~0.0113``; below
    that the loss value itself (about ``neg_a``) is not representable in float32, whatever the
    arithmetic. ``log sig`` uses ``jax.nn.log_sigmoid``, exact for large ``neg_a``.

    Args:
      z1: view-1 embeddings, ``[B, D]`` (normalised here, computed in float32).
      z2: view-2 embeddings, ``[B, D]``.
      labels: int labels, ``[B]``.
      tau: temperature.

    Returns:
      The scalar float32 loss.
    """
    z = jnp.concatenate([normalise(z1), normalise(z2)], axis=0)  # [2B, D]
    labels = jnp.asarray(labels)
    same = _same_class(jnp.concatenate([labels, labels], axis=0))  # [2B, 2B]
    rows = z.shape[0]
    positives = same & ~jnp.eye(rows, dtype=bool)  # [2B, 2B]
    exp_sim = jnp.exp(z @ z.T / tau)  # [2B, 2B]
    pos = jnp.sum(jnp.where(positives, exp_sim, 0.0), axis=1) / jnp.sum(positives, axis=1)
    neg = jnp.sum(jnp.where(same, 0.0, exp_sim), axis=1) / rows  # [2B]
    return -jnp.mean(jax.nn.log_sigmoid(pos) + jax.nn.log_sigmoid(-neg))


def _paper_form(z1, z2, labels, key, tau: float, m: int) -> jax.Array:
    if key is None:
        raise ValueError('bns form "paper" needs a PRNG key to draw its anchor sets')
    return bns_paper(z1, z2, labels, key, tau=tau, m=m)


def _reference_form(z1, z2, labels, key, tau: float, m: int) -> jax.Array:
    del key, m  # deterministic, over every same-class row
    return bns_reference(z1, z2, labels, tau=tau)


# ``stage1.bns.form`` -> ``fn(z1, z2, labels, key, tau, m) -> scalar float32 loss``.
FORMS: Registry[Callable[..., jax.Array]] = Registry(
    "stage1.bns.form", {"paper": _paper_form, "reference": _reference_form}
)


def bns_loss(
    z1: jax.Array,
    z2: jax.Array,
    labels: jax.Array,
    key: jax.Array | None,
    *,
    tau: float = 0.5,
    m: int = 4,
    form: str = "reference",
) -> jax.Array:
    """The BNS loss in the chosen form.

    Args:
      z1: view-1 embeddings, ``[B, D]`` (normalised here, computed in float32).
      z2: view-2 embeddings, ``[B, D]``.
      labels: int labels, ``[B]``.
      key: a ``jax.random`` key; used by ``"paper"`` only (may be None for ``"reference"``).
      tau: temperature.
      m: the maximum number of extra same-class anchors of ``"paper"`` (static).
      form: ``"paper"`` or ``"reference"`` (the default, as in the CIFAR configs per SPEC).

    Returns:
      The scalar float32 loss.

    Raises:
      ValueError: for an unknown ``form``, or ``"paper"`` without a key.
    """
    return FORMS[form](z1, z2, labels, key, tau, m)
