"""Exact k-DPP of the IP-DPP kernel by a two-state dynamic programme (the oracle).

For S = diag(d) + alpha p p^T, det(S_Y) = prod_{Y} d_i + sum_{j in Y} q_j prod_{Y \\ j} d_i with
q_j = alpha p_j^2: a subset either has no "marked" item (weight prod d) or exactly one marked
item j (weight q_j prod_{others} d). Over items n = 1..N and sizes l = 0..k,
  A[n, l] = A[n-1, l] + d_n A[n-1, l-1]                      (no marked item yet)
  B[n, l] = B[n-1, l] + d_n B[n-1, l-1] + q_n A[n-1, l-1]    (one marked item)
and the normaliser is A[N, k] + B[N, k], the x^k coefficient of
prod_i (1 + d_i x) + alpha x sum_j p_j^2 prod_{i != j} (1 + d_i x). A backward pass over the
table draws an exact sample. All tables are in log space; O(N k) time and memory, sequential.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltr_jax.dpp.kernels import (
    IPKernelParts,
    as_float,
    ip_dpp_parts,
    keep_small_classes,
    log_det_selected,
    sampling_parts,
    valid_mask,
)
from ltr_jax.dpp.spectral import shift_up


def _log_weights(parts: IPKernelParts) -> tuple[jax.Array, jax.Array]:
    """log d_i and log q_i = log(alpha p_i^2), -inf where zero (masked items)."""
    d, alpha, p = parts
    return jnp.log(d), jnp.log(alpha * p * p)


def structured_tables(
    log_d: jax.Array, log_q: jax.Array, k: int
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Forward pass of the two-state DP.

    Args:
      log_d: [N] log d_i.
      log_q: [N] log(alpha p_i^2).
      k: subset size (static).

    Returns:
      (prev_a, prev_b), each [N, k+1], the rows BEFORE item n, and (last_a, last_b), each [k+1].
    """
    init_a = jnp.full((k + 1,), -jnp.inf, log_d.dtype).at[0].set(0.0)
    init_b = jnp.full((k + 1,), -jnp.inf, log_d.dtype)

    def step(carry, x):
        a, b = carry
        ld, lq = x
        a_up = shift_up(a)
        new_a = jnp.logaddexp(a, ld + a_up)
        new_b = jnp.logaddexp(jnp.logaddexp(b, ld + shift_up(b)), lq + a_up)
        return (new_a, new_b), (a, b)

    last, prev = jax.lax.scan(step, (init_a, init_b), (log_d, log_q))
    return prev, last


@partial(jax.jit, static_argnames=("k", "scale"))
def structured_log_normalizer(
    p: ArrayLike, k: int, scale: str = "paper", mask: ArrayLike | None = None
) -> jax.Array:
    """log sum_{|Y| = k} det(S_Y) for the IP-DPP kernel, by the O(N k) dynamic programme.

    Args:
      p: [N] confidences.
      k: subset size (static).
      scale: "paper" or "reference".
      mask: optional [N] bool validity mask.

    Returns:
      Scalar log normaliser (-inf when every k-subset has zero determinant).
    """
    log_d, log_q = _log_weights(ip_dpp_parts(p, scale, mask))
    _, (last_a, last_b) = structured_tables(log_d, log_q, k)
    return jnp.logaddexp(last_a[k], last_b[k])


@partial(jax.jit, static_argnames=("k", "scale"))
def structured_log_prob(
    p: ArrayLike, sel: ArrayLike, k: int, scale: str = "paper", mask: ArrayLike | None = None
) -> jax.Array:
    """log P(Y) = log det(S_Y) - log Z_k under the k-DPP of the IP-DPP kernel.

    Args:
      p: [N] confidences.
      sel: [N] bool selection with k True (valid) entries.
      k: subset size (static).
      scale: "paper" or "reference".
      mask: optional [N] bool validity mask.

    Returns:
      Scalar log-probability.
    """
    log_det = log_det_selected(p, sel, scale, mask)
    return log_det - structured_log_normalizer(p, k, scale, mask)


def _backward_sample(key, prev, log_d, log_q, k, start_marked):
    """Backward pass: at each item choose exclude / include / include-as-marked item."""
    prev_a, prev_b = prev
    gumbel = jax.random.gumbel(key, (log_d.shape[0], 3), log_d.dtype)  # [N, 3]

    def step(carry, x):
        left, marked = carry
        a, b, ld, lq, g = x
        lower = left > 0
        a_lo = jnp.where(lower, a[jnp.maximum(left - 1, 0)], -jnp.inf)
        b_lo = jnp.where(lower, b[jnp.maximum(left - 1, 0)], -jnp.inf)
        no_mark = jnp.stack([a[left], ld + a_lo, jnp.asarray(-jnp.inf, ld.dtype)])
        with_mark = jnp.stack([b[left], ld + b_lo, lq + a_lo])
        choice = jnp.argmax(jnp.where(marked, with_mark, no_mark) + g)
        take = choice > 0
        return (left - take.astype(left.dtype), marked & (choice != 2)), take

    init = (jnp.asarray(k, jnp.int32), start_marked)
    _, take = jax.lax.scan(step, init, (prev_a, prev_b, log_d, log_q, gumbel), reverse=True)
    return take


def sample_structured_dp_core(key: jax.Array, parts: IPKernelParts, valid: jax.Array, k: int):
    """Exact DP draw from kernel parts (no small-class handling); returns an [N] bool mask."""
    log_d, log_q = _log_weights(parts)
    prev, (last_a, last_b) = structured_tables(log_d, log_q, k)
    key_start, key_pass = jax.random.split(key)
    log_u = jnp.log(jax.random.uniform(key_start, (), log_d.dtype))
    start_marked = log_u < last_b[k] - jnp.logaddexp(last_a[k], last_b[k])
    return _backward_sample(key_pass, prev, log_d, log_q, k, start_marked) & valid


@partial(jax.jit, static_argnames=("k", "scale"))
def sample_structured_dp(
    key: jax.Array, p: ArrayLike, k: int, scale: str = "paper", mask: ArrayLike | None = None
) -> jax.Array:
    """Exact k-DPP draw for the IP-DPP kernel by the dynamic programme (sequential, O(N k)).

    Args:
      key: PRNG key.
      p: [N] confidences.
      k: subset size (static).
      scale: "paper" or "reference".
      mask: optional [N] bool; masked items are never drawn.

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    p = as_float(p)
    valid = valid_mask(p, mask)
    if k >= p.shape[0]:
        return valid
    parts = sampling_parts(p, scale, valid)
    return keep_small_classes(sample_structured_dp_core(key, parts, valid, k), valid, k)
