"""Stateless, step-indexed sampling of training batches.

The batch at a step is a pure function of (key, step): a resumed run sees exactly the batches
an uninterrupted run would have seen, and there is no sampler state to checkpoint. Every
function here is jittable so the sampler can run inside the training step on device. The
registry of named samplers (with their host twins) is `ltr_jax.data.input.sampler_registry`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def uniform_batch(key: jax.Array, step: jax.Array, num_examples: int, batch_size: int):
    """Positions for one step of epoch-wise shuffling without replacement.

    Epoch e = step // steps_per_epoch uses the permutation drawn from fold_in(key, e); the
    last partial batch of every epoch is dropped.

    Returns:
      int32 [batch_size] positions into the training set.
    """
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples.")
    epoch, offset = jnp.divmod(step, steps_per_epoch)
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    return jax.lax.dynamic_slice(perm, (offset * batch_size,), (batch_size,)).astype(jnp.int32)


def steps_per_epoch(num_examples: int, batch_size: int, drop_last: bool = True) -> int:
    """Steps of one epoch: the last partial batch dropped, or kept (``drop_last=False``)."""
    if num_examples < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples.")
    return num_examples // batch_size if drop_last else -(-num_examples // batch_size)


def epoch_batch(
    key: jax.Array, step: jax.Array, num_examples: int, batch_size: int, drop_last: bool = True
) -> tuple[jax.Array, jax.Array]:
    """:func:`uniform_batch` with the choice of keeping each epoch's last partial batch.

    ``drop_last=True`` is :func:`uniform_batch` (every row weighted 1). ``drop_last=False``
    (PyTorch's ``DataLoader(drop_last=False)``, the released probe and stage 2) has
    ceil(N / B) steps per epoch, so every example is seen once an epoch; the last step keeps
    its fixed shape [B], its rows past the N-th repeat the last position with weight 0 (the
    loss is the mean over real rows).

    Returns:
      (int32 [batch_size] positions, float32 [batch_size] row weights, 1 real / 0 padding).
    """
    if drop_last:
        positions = uniform_batch(key, step, num_examples, batch_size)
        return positions, jnp.ones(batch_size, jnp.float32)
    epoch, offset = jnp.divmod(step, steps_per_epoch(num_examples, batch_size, False))
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    rows = offset * batch_size + jnp.arange(batch_size)  # [B] rows of the epoch's order
    positions = perm[jnp.minimum(rows, num_examples - 1)].astype(jnp.int32)
    return positions, (rows < num_examples).astype(jnp.float32)


def class_balanced_batch(
    key: jax.Array, step: jax.Array, labels: np.ndarray, num_classes: int, batch_size: int
):
    """Positions for one step of class-balanced sampling (class uniform, then image uniform).

    ``labels`` must be a concrete (host) array: the per-class tables are built once at trace
    time and become constants of the compiled step.

    Returns:
      int32 [batch_size] positions into the training set.
    """
    labels = np.asarray(labels)
    by_class = np.argsort(labels, kind="stable").astype(np.int32)  # positions grouped by class
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError("class_balanced sampling needs at least one image per class.")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    key_c, key_i = jax.random.split(jax.random.fold_in(key, step))
    cls = jax.random.randint(key_c, (batch_size,), 0, num_classes)
    within = jax.random.randint(key_i, (batch_size,), 0, jnp.asarray(counts)[cls])
    return jnp.asarray(by_class)[jnp.asarray(starts)[cls] + within]


def process_slice(global_batch: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """The contiguous share of a global batch that one process loads (host pipelines)."""
    n = len(global_batch)
    if n % process_count:
        raise ValueError(f"Global batch {n} is not divisible by {process_count} processes.")
    per = n // process_count
    return global_batch[process_index * per : (process_index + 1) * per]


def pad_to_batches(n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions covering ``n`` rows in whole batches (last row repeated) and the real-row mask."""
    total = -(-n // batch_size) * batch_size
    positions = np.minimum(np.arange(total), n - 1)
    return positions, np.arange(total) < n
