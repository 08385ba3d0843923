"""The IP-DPP kernel of Lin & Yuan (NeurIPS 2025, Eq. 16) and its diagonal-plus-rank-one parts.

For one class with N valid items and confidences p_i, s = sum_i p_i and alpha = 1/N ("paper") or
1/N^2 ("reference"), the kernel is S = diag(d) + alpha p p^T with d_i = 1 - alpha p_i s, so that
every row of S sums to one. Masked (padding) items get d_i = p_i = 0: zero rows and columns.

By the matrix determinant lemma det(S_Y) = prod_{Y} d_i * (1 + alpha sum_{Y} p_i^2 / d_i); every
quantity here is kept in logs because for |Y| in the hundreds the determinant underflows.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltr_jax.registry import Registry


class IPKernelParts(NamedTuple):
    """S = diag(d) + alpha p p^T, with zeros on masked items."""

    d: jax.Array  # [N]
    alpha: jax.Array  # []
    p: jax.Array  # [N]


def as_float(x: ArrayLike) -> jax.Array:
    """Returns `x` as a JAX array of a floating dtype (the default float if it was an integer)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def valid_mask(x: ArrayLike, mask: ArrayLike | None) -> jax.Array:
    """Boolean validity mask with the shape of `x` (all True when `mask` is None)."""
    if mask is None:
        return jnp.ones(jnp.shape(x), dtype=bool)
    return jnp.asarray(mask).astype(bool)


def _paper_scale(p: jax.Array, valid: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    # 1 - alpha s = mean(1 - p): summing the 1 - p_i avoids cancellation when all p ~ 1.
    return 1.0 / n, jnp.sum(jnp.where(valid, 1.0 - p, 0.0)) / n


def _reference_scale(p: jax.Array, valid: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    alpha = 1.0 / (n * n)
    return alpha, 1.0 - alpha * jnp.sum(p)


# ``stage2.kernel_scale`` -> ``fn(p [N] masked, valid [N], n valid items) -> (alpha, 1 - alpha s)``.
SCALES = Registry("stage2.kernel_scale", {"paper": _paper_scale, "reference": _reference_scale})


def check_scale(scale: str) -> None:
    """Raises ValueError unless `scale` is one of SCALES."""
    SCALES[scale]  # an unknown name fails with the valid ones


def ip_dpp_parts(
    p: ArrayLike, scale: str = "paper", mask: ArrayLike | None = None
) -> IPKernelParts:
    """Diagonal-plus-rank-one parts (d, alpha, p) of the IP-DPP kernel.

    Args:
      p: [N] confidences p(y_i | x_i) in [0, 1] (clipped).
      scale: "paper" (alpha = 1/N) or "reference" (alpha = 1/N^2), N the number of valid items.
      mask: optional [N] bool, True for real items; masked items get d_i = p_i = 0.

    Returns:
      IPKernelParts with d [N], alpha [] and the masked, clipped p [N].
    """
    check_scale(scale)
    p = as_float(p)
    valid = valid_mask(p, mask)
    p = jnp.where(valid, jnp.clip(p, 0.0, 1.0), 0.0)
    n = jnp.maximum(jnp.sum(valid), 1).astype(p.dtype)
    alpha, c = SCALES[scale](p, valid, n)
    # d_i = 1 - alpha p_i s written as (1 - p_i) + p_i (1 - alpha s): a sum of non-negatives.
    d = jnp.where(valid, (1.0 - p) + p * c, 0.0)
    return IPKernelParts(d=d, alpha=alpha, p=p)


def ip_dpp_kernel(p: ArrayLike, scale: str = "paper", mask: ArrayLike | None = None) -> jax.Array:
    """Dense IP-DPP kernel S = diag(d) + alpha p p^T (paper Eq. 16).

    Args:
      p: [N] confidences in [0, 1].
      scale: "paper" or "reference" (see `ip_dpp_parts`).
      mask: optional [N] bool; masked items get zero rows and columns.

    Returns:
      [N, N] symmetric PSD kernel; each valid row sums to one.
    """
    d, alpha, p = ip_dpp_parts(p, scale, mask)
    return jnp.diag(d) + alpha * jnp.outer(p, p)


def sampling_parts(p: ArrayLike, scale: str, valid: jax.Array) -> IPKernelParts:
    """Kernel parts for the samplers, with the one degenerate case replaced by its limit.

    d_i = 0 for a valid item only when every valid p_i equals 1 (S is then rank one and no
    subset of two or more items has a positive determinant). As the p_i tend to 1 together the
    k-DPP tends to the uniform k-subset distribution, which d = 1 on every valid item gives.
    """
    d, alpha, p = ip_dpp_parts(p, scale, valid)
    degenerate = jnp.any(valid & (d <= 0))
    d = jnp.where(valid & degenerate, 1.0, d)
    return IPKernelParts(d=d, alpha=alpha, p=p)


def log_det_from_parts(parts: IPKernelParts, sel: jax.Array) -> jax.Array:
    """log det(S_Y) for Y = {i : sel_i} via the matrix determinant lemma, exact when d_i = 0.

    det(S_Y) = prod_{Y} d_i + alpha sum_{j in Y} p_j^2 prod_{Y \\ j} d_i: with one zero d_z in Y
    only the j = z term survives; with two or more the determinant is zero.
    """
    d, alpha, p = parts
    zero = sel & (d <= 0)
    pos = sel & (d > 0)
    d_safe = jnp.where(pos, d, 1.0)
    log_prod = jnp.sum(jnp.log(d_safe))
    sum_r = jnp.sum(jnp.where(pos, alpha * p * p / d_safe, 0.0))
    n_zero = jnp.sum(zero)
    with_no_zero = log_prod + jnp.log1p(sum_r)
    with_one_zero = log_prod + jnp.log(alpha * jnp.sum(jnp.where(zero, p * p, 0.0)))
    return jnp.where(n_zero == 0, with_no_zero, jnp.where(n_zero == 1, with_one_zero, -jnp.inf))


def log_det_selected(
    p: ArrayLike, sel: ArrayLike, scale: str = "paper", mask: ArrayLike | None = None
) -> jax.Array:
    """log det(S_Y) of the IP-DPP kernel for the selected items (for logging).

    Args:
      p: [N] confidences.
      sel: [N] bool selection mask (masked items are ignored).
      scale: "paper" or "reference".
      mask: optional [N] bool validity mask.

    Returns:
      Scalar log det(S_Y); -inf when the determinant is zero, 0 for the empty set.
    """
    parts = ip_dpp_parts(p, scale, mask)
    sel = jnp.asarray(sel).astype(bool) & valid_mask(parts.p, mask)
    return log_det_from_parts(parts, sel)


def mark_masked(kernel: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zeroes masked rows/columns and puts a negative marker on their diagonal.

    The marker separates the masked items' eigenvectors (exactly e_i, eigenvalue `marker`) from
    the valid items' eigenspaces even when a valid eigenvalue is zero, so that `eigh` never mixes
    padding into a valid eigenvector.

    Returns:
      The marked [N, N] kernel and the scalar marker (below -trace(kernel) - 1).
    """
    both = valid[:, None] & valid[None, :]
    kernel = jnp.where(both, kernel, 0.0)
    marker = -1.0 - jnp.abs(jnp.trace(kernel))
    return kernel + jnp.diag(jnp.where(valid, 0.0, marker)), marker


def masked_eigh(kernel: jax.Array, valid: jax.Array):
    """eigh of the kernel with masked items marked (see `mark_masked`).

    Returns:
      (eigenvalues [N] ascending, eigenvectors [N, N], the marker eigenvalue of masked items).
    """
    marked, marker = mark_masked(kernel, valid)
    eigvals, eigvecs = jnp.linalg.eigh(marked)
    return eigvals, eigvecs, marker


def keep_small_classes(sel: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """Returns every valid item when there are at most k of them, else `sel` restricted to valid."""
    return jnp.where(jnp.sum(valid) <= k, valid, sel & valid)
