"""Exact k-DPP sampling for any PSD kernel through its eigendecomposition.

Kulesza & Taskar (2012), Alg. 8: P(Y) ~ det(L_Y), |Y| = k, is the mixture over k-subsets J of
eigenvectors with weights prod_{J} lambda_n / e_k(lambda) of projection DPPs onto span{v_n}_J.
Phase 1 picks J with the elementary symmetric polynomials e_l(lambda_1..lambda_n), computed in
log space (for k in the hundreds they overflow or underflow float64); phase 2 draws the items of
the projection DPP with the chain rule (`chain_rule_select`), O(N k^2).
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltr_jax.dpp.greedy import chain_rule_select
from ltr_jax.dpp.kernels import as_float, keep_small_classes, masked_eigh, valid_mask


def shift_up(row: jax.Array) -> jax.Array:
    """[-inf, row[0], ..., row[-2]]: the log table row for l - 1."""
    return jnp.concatenate([jnp.full((1,), -jnp.inf, row.dtype), row[:-1]])


def esp_table(log_values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Log elementary symmetric polynomials of every prefix, up to degree k.

    Args:
      log_values: [N] logs of non-negative values (-inf for zeros).
      k: highest degree (static).

    Returns:
      prev_rows [N, k+1], row n holding log e_l(v_1..v_n) for the prefix BEFORE item n (0-based),
      and last [k+1] = log e_l(v_1..v_N).
    """
    init = jnp.full((k + 1,), -jnp.inf, log_values.dtype).at[0].set(0.0)

    def step(row, log_v):
        return jnp.logaddexp(row, log_v + shift_up(row)), row

    last, prev_rows = jax.lax.scan(step, init, log_values)
    return prev_rows, last


def log_elementary_symmetric(values: ArrayLike, k: int) -> jax.Array:
    """log e_l(values) for l = 0..k, for non-negative values (negatives are clipped to 0).

    Args:
      values: [N] non-negative values, e.g. kernel eigenvalues.
      k: highest degree (static).

    Returns:
      [k+1] log elementary symmetric polynomials; log e_k(eigenvalues of L) is the log
      normaliser of the k-DPP with kernel L.
    """
    values = as_float(values)
    return esp_table(jnp.log(jnp.maximum(values, 0.0)), k)[1]


def sample_eigen_subset(key: jax.Array, log_lam: jax.Array, k: int) -> jax.Array:
    """Phase 1: draws J, |J| = k, with P(J) ~ prod_{J} lambda_n (backward pass of Alg. 8).

    Args:
      key: PRNG key.
      log_lam: [N] log eigenvalues (-inf for zero or excluded ones).
      k: subset size (static).

    Returns:
      [N] bool mask over eigenvalues.
    """
    prev_rows, _ = esp_table(log_lam, k)
    log_u = jnp.log(jax.random.uniform(key, log_lam.shape, log_lam.dtype))

    def step(left, x):
        row, log_v, lu = x
        w_in = log_v + jnp.where(left > 0, row[jnp.maximum(left - 1, 0)], -jnp.inf)
        take = (left > 0) & (lu < w_in - jnp.logaddexp(w_in, row[left]))
        return left - take.astype(left.dtype), take

    _, take = jax.lax.scan(
        step, jnp.asarray(k, jnp.int32), (prev_rows, log_lam, log_u), reverse=True
    )
    return take


def _sample_from_eigh(key, eigvals, eigvecs, valid, k, marker):
    """Both phases of the spectral sampler; eigenvalues below marker / 2 are padding."""
    lam = jnp.where(eigvals < marker / 2, 0.0, jnp.maximum(eigvals, 0.0))  # [N]
    key_subset, key_items = jax.random.split(key)
    chosen = sample_eigen_subset(key_subset, jnp.log(lam), k)
    (idx,) = jnp.nonzero(chosen, size=k, fill_value=0)
    vecs = eigvecs[:, idx] * valid[:, None]  # [N, k]
    diag = jnp.sum(vecs * vecs, axis=1)
    sel = chain_rule_select(key_items, lambda j: vecs @ vecs[j], diag, valid, k, False)
    return keep_small_classes(sel, valid, k)


@partial(jax.jit, static_argnames=("k",))
def sample_k_dpp_eigh(
    key: jax.Array,
    eigvals: ArrayLike,
    eigvecs: ArrayLike,
    k: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Exact k-DPP draw from a precomputed eigendecomposition (reuse it across draws).

    Args:
      key: PRNG key.
      eigvals: [N] eigenvalues of the PSD kernel (negative rounding noise is clipped).
      eigvecs: [N, N] orthonormal eigenvectors in columns.
      k: subset size (static).
      mask: optional [N] bool; masked items are never drawn. Their rows and columns of the
        kernel must be zero, as `ip_dpp_kernel` makes them.

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    eigvals, eigvecs = as_float(eigvals), as_float(eigvecs)
    valid = valid_mask(eigvals, mask)
    if k >= eigvals.shape[0]:
        return valid
    return _sample_from_eigh(key, eigvals, eigvecs, valid, k, jnp.asarray(-1.0, eigvals.dtype))


@partial(jax.jit, static_argnames=("k",))
def sample_k_dpp(
    key: jax.Array, kernel: ArrayLike, k: int, mask: ArrayLike | None = None
) -> jax.Array:
    """Exact k-DPP draw, P(Y) ~ det(L_Y) with |Y| = k, for any PSD kernel L.

    O(N^3) for the eigendecomposition plus O(N k) + O(N k^2) for the two phases.

    Args:
      key: PRNG key.
      kernel: [N, N] symmetric PSD kernel L.
      k: subset size (static).
      mask: optional [N] bool; masked items are removed from the kernel and never drawn.

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    kernel = as_float(kernel)
    valid = valid_mask(kernel[0], mask)
    if k >= kernel.shape[0]:
        return valid
    eigvals, eigvecs, marker = masked_eigh(kernel, valid)
    return _sample_from_eigh(key, eigvals, eigvecs, valid, k, marker)
