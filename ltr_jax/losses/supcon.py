"""Supervised contrastive loss (SupCon, Khosla et al. 2020), the stage-1 ablation of BNS.

Over all ``2B`` rows ``a`` of both views (``L_out`` of the paper):
``L = mean_a -1/|P(a)| sum_{p in P(a)} log( exp(s_ap/tau) / sum_{b != a} exp(s_ab/tau) )``,
``P(a)`` = rows ``b != a`` of ``a``'s class, never empty (it holds ``a``'s other view). The
released code's extra factor ``tau / base_tau`` (1 at its default ``tau = base_tau = 0.07``) is
not applied. As in :mod:`ltr_jax.losses.bns`, inputs are cast to float32 and L2-normalised, and
data parallelism needs no collective: call the loss inside a ``jax.jit`` whose inputs are
sharded over ``'data'``; the ``[2B, 2B]`` matrices then span the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltr_jax.losses import bns


def supcon_loss(z1: jax.Array, z2: jax.Array, labels: jax.Array, tau: float = 0.1) -> jax.Array:
    """The SupCon loss of two views, as masked ``[2B, 2B]`` matrix algebra.

    Args:
      z1: view-1 embeddings, ``[B, D]`` (normalised here, computed in float32).
      z2: view-2 embeddings, ``[B, D]``.
      labels: int labels, ``[B]``.
      tau: temperature.

    Returns:
      The scalar float32 loss.
    """
    z = jnp.concatenate([bns.normalise(z1), bns.normalise(z2)], axis=0)  # [2B, D]
    labels = jnp.asarray(labels)
    y = jnp.concatenate([labels, labels], axis=0)  # [2B]
    eye = jnp.eye(z.shape[0], dtype=bool)  # [2B, 2B]
    positives = (y[:, None] == y[None, :]) & ~eye  # [2B, 2B]
    logits = jnp.where(eye, -jnp.inf, z @ z.T / tau)  # [2B, 2B]; a row never sees itself
    log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)  # [2B, 2B]
    pos_sum = jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1)  # [2B]
    return -jnp.mean(pos_sum / jnp.sum(positives, axis=1))
