"""Classification losses: cross-entropy and the logit-adjusted family of the baselines."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

LOSSES = ("ce", "balanced_softmax", "logit_adjust")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch, computed in float32."""
    logits = logits.astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def log_prior(class_counts: np.ndarray) -> np.ndarray:
    """log of the training class frequencies, float32 [C]."""
    counts = np.asarray(class_counts, np.float64)
    return np.log(counts / counts.sum()).astype(np.float32)


def make_classification_loss(name: str, class_counts: np.ndarray, tau: float = 1.0):
    """Returns ``loss(logits, labels) -> scalar`` for a named loss.

    - ``ce``: plain cross-entropy.
    - ``balanced_softmax`` (Ren et al. 2020): CE on logits + log prior.
    - ``logit_adjust`` (Menon et al. 2021): CE on logits + tau * log prior.
    Both adjusted losses leave the logits used at test time unadjusted.
    """
    if name == "ce":
        return cross_entropy
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid: {', '.join(LOSSES)}.")
    scale = 1.0 if name == "balanced_softmax" else tau
    shift = jnp.asarray(scale * log_prior(class_counts))  # [C]
    return lambda logits, labels: cross_entropy(logits.astype(jnp.float32) + shift, labels)
