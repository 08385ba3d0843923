"""Incremental-Cholesky item selection: greedy MAP and the chain-rule projection phase.

Both the fast greedy MAP of Chen, Zhang & Zhou (NeurIPS 2018) and the sequential phase of the
spectral k-DPP sampler walk the same recursion: with rows c_1..c_t of the partial Cholesky
factor, the conditional diagonal after choosing items j_1..j_t is
resid_i = K_ii - sum_m c_m[i]^2, and choosing j appends c = (K[:, j] - C^T C[:, j]) / sqrt(resid_j).
Greedy MAP takes j = argmax resid (the largest log-det increment); the projection-DPP chain
rule draws j with probability proportional to resid. Each step costs O(N k).
"""

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltr_jax.dpp.kernels import as_float, keep_small_classes, valid_mask


def chain_rule_select(
    key: jax.Array | None,
    column_fn: Callable[[jax.Array], jax.Array],
    diag: jax.Array,
    available: jax.Array,
    k: int,
    greedy: bool,
) -> jax.Array:
    """Selects k distinct available items by incremental Cholesky of a PSD kernel K.

    Args:
      key: PRNG key (unused when greedy).
      column_fn: j -> K[:, j], an [N] column of the kernel.
      diag: [N] diagonal of K.
      available: [N] bool, items that may be chosen.
      k: number of items (static); must not exceed the number of available items.
      greedy: argmax of the conditional diagonal (greedy MAP / paper Alg. 1) instead of a draw.

    Returns:
      [N] bool selection mask.
    """
    n = diag.shape[0]
    tiny = jnp.finfo(diag.dtype).tiny

    def pick(it, resid, free):
        if greedy:
            return jnp.argmax(jnp.where(free, resid, -jnp.inf))
        # The floor keeps every free item drawable, so k distinct items come out even when
        # rounding leaves the residuals of a rank-k projection slightly off.
        logits = jnp.where(free, jnp.log(jnp.maximum(resid, tiny)), -jnp.inf)
        return jax.random.categorical(jax.random.fold_in(key, it), logits)

    def body(it, carry):
        rows, resid, sel = carry  # [k, N], [N], [N]
        j = pick(it, resid, available & ~sel)
        col = column_fn(j) - rows.T @ rows[:, j]  # [N]
        row = col / jnp.sqrt(jnp.maximum(resid[j], tiny))
        return rows.at[it].set(row), resid - row * row, sel.at[j].set(True)

    init = (jnp.zeros((k, n), diag.dtype), diag, jnp.zeros((n,), bool))
    return jax.lax.fori_loop(0, k, body, init)[2]


@partial(jax.jit, static_argnames=("k",))
def greedy_map(kernel: ArrayLike, k: int, mask: ArrayLike | None = None) -> jax.Array:
    """Fast greedy MAP inference for a DPP (Chen, Zhang & Zhou, NeurIPS 2018).

    Adds, k times, the item with the largest increase of log det(L_Y). Unlike the paper's
    stopping rule it always returns k items (zero increments are allowed).

    Args:
      kernel: [N, N] PSD kernel L.
      k: number of items (static).
      mask: optional [N] bool; masked items are never chosen.

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    kernel = as_float(kernel)
    n = kernel.shape[0]
    valid = valid_mask(kernel[0], mask)
    if k >= n:
        return valid
    kernel = jnp.where(valid[:, None] & valid[None, :], kernel, 0.0)
    sel = chain_rule_select(None, lambda j: kernel[:, j], jnp.diag(kernel), valid, k, True)
    return keep_small_classes(sel, valid, k)


def greedy_map_structured(
    d: jax.Array, alpha: jax.Array, p: jax.Array, valid: jax.Array, k: int
) -> jax.Array:
    """Greedy MAP for S = diag(d) + alpha p p^T without forming S (columns in O(N)).

    Args:
      d: [N] diagonal part (0 on masked items).
      alpha: scalar rank-one weight.
      p: [N] confidences (0 on masked items).
      valid: [N] bool, items that may be chosen.
      k: number of items (static), below the number of valid items.

    Returns:
      [N] bool selection mask with k True entries.
    """
    idx = jnp.arange(d.shape[0])

    def column(j):
        return jnp.where(idx == j, d[j], 0.0) + alpha * p[j] * p  # [N]

    return chain_rule_select(None, column, d + alpha * p * p, valid, k, True)
