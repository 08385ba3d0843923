"""The paper's Algorithm 1 (Lin & Yuan, NeurIPS 2025), as SPEC section 3 pins it down.

1. Eigendecompose S and scan the eigenpairs in DESCENDING eigenvalue order (ascending, eigh's
   order, would select the most confident images), keeping v_n with probability
   lambda_n / (lambda_n + 1) until k are kept; a pass that ends with fewer than k scans the
   unkept ones again, same rule.
2. k times: add i* = argmax_i sum_{v in V} (v . e_i)^2 and replace V by an orthonormal basis of
   {v in span V : v_i* = 0}.

The basis update of step 2 leaves the projection onto span V conditioned on i*, so the
row norms after the update are the conditional diagonal of the incremental Cholesky
recursion: step 2 is `chain_rule_select` with argmax, O(N k^2) instead of re-orthonormalising.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltr_jax.dpp.greedy import chain_rule_select
from ltr_jax.dpp.kernels import as_float, keep_small_classes, masked_eigh, valid_mask

MAX_PASSES = 10_000


def _fill_in_order(kept: jax.Array, candidates: jax.Array, k: int) -> jax.Array:
    """Adds the first (k - |kept|) candidates, in index order, to `kept`."""
    room = k - jnp.sum(kept)
    return kept | (candidates & (jnp.cumsum(candidates) <= room))


def keep_eigenvectors(
    key: jax.Array, keep_prob: jax.Array, eligible: jax.Array, k: int, active: jax.Array
) -> jax.Array:
    """Step 1: repeated passes over the (descending) eigenvectors until k are kept.

    A pass keeps each unkept eligible v_n with probability keep_prob_n, in order, stopping once
    k are kept. Rank-deficient kernels may never reach k: after MAX_PASSES passes the
    remaining slots go to the first unkept eligible eigenvectors.

    Args:
      key: PRNG key.
      keep_prob: [N] lambda_n / (lambda_n + 1), descending order.
      eligible: [N] bool, eigenvectors of valid items.
      k: number to keep (static).
      active: scalar bool; False skips the passes (classes with at most k items).

    Returns:
      [N] bool mask of kept eigenvectors.
    """

    def cond(state):
        passes, kept = state
        return active & (jnp.sum(kept) < k) & (passes < MAX_PASSES)

    def body(state):
        passes, kept = state
        u = jax.random.uniform(jax.random.fold_in(key, passes), keep_prob.shape, keep_prob.dtype)
        return passes + 1, _fill_in_order(kept, ~kept & eligible & (u < keep_prob), k)

    init = (jnp.asarray(0, jnp.int32), jnp.zeros(keep_prob.shape, bool))
    _, kept = jax.lax.while_loop(cond, body, init)
    return _fill_in_order(kept, ~kept & eligible, k)


@partial(jax.jit, static_argnames=("k",))
def sample_paper_alg1(
    key: jax.Array, kernel: ArrayLike, k: int, mask: ArrayLike | None = None
) -> jax.Array:
    """The paper's Algorithm 1 on a PSD kernel: random eigenvectors, then greedy items.

    Args:
      key: PRNG key.
      kernel: [N, N] symmetric PSD kernel (the IP-DPP kernel S in the paper).
      k: number of items (static).
      mask: optional [N] bool; masked items are never chosen.

    Returns:
      [N] bool selection mask with min(k, n_valid) True (distinct) entries.
    """
    kernel = as_float(kernel)
    valid = valid_mask(kernel[0], mask)
    if k >= kernel.shape[0]:
        return valid
    eigvals, eigvecs, marker = masked_eigh(kernel, valid)
    lam, vecs = eigvals[::-1], eigvecs[:, ::-1]  # descending
    eligible = lam > marker / 2
    lam = jnp.maximum(lam, 0.0)
    keep_prob = jnp.where(eligible, lam / (lam + 1.0), 0.0)
    kept = keep_eigenvectors(key, keep_prob, eligible, k, jnp.sum(valid) > k)
    (idx,) = jnp.nonzero(kept, size=k, fill_value=0)
    basis = vecs[:, idx] * valid[:, None]  # [N, k]
    diag = jnp.sum(basis * basis, axis=1)
    sel = chain_rule_select(None, lambda j: basis @ basis[j], diag, valid, k, True)
    return keep_small_classes(sel, valid, k)
