"""Fast exact k-DPP draws for the IP-DPP kernel: conditional Bernoulli proposals + rejection.

Target: P(Y) ~ det(S_Y) = prod_{Y} d_i * (1 + sum_{Y} r_i), r_i = alpha p_i^2 / d_i, |Y| = k.

(i) Conditional Bernoulli proposal for prod_{Y} d_i. Independent Bernoulli(pi_i) with
    pi_i = sigmoid(t + log d_i), conditioned on exactly k successes, give
    P(Y) ~ prod_{Y} pi_i / (1 - pi_i) = prod_{Y} e^t d_i ~ prod_{Y} d_i, for ANY t; t is tuned by
    bisection so that sum_i pi_i = k only to make |Y| = k likely (about one try in
    sqrt(2 pi sum pi_i (1 - pi_i))). Vectors are drawn in batches, in parallel.
(ii) Accept Y with probability (1 + sum_{Y} r_i) / (1 + sum of the k largest r_i) <= 1.

A trial is a (Bernoulli vector, uniform) pair; trials are i.i.d., so the first trial that has
exactly k ones AND is accepted is distributed as one trial conditioned on that event:
P(Y) ~ prod_{Y} d_i (1 + sum_{Y} r_i) = det(S_Y). A batch of 128 trials is drawn at once
(counting ones is one fused reduction over Threefry bits), its first few trials with k ones are
tested for acceptance, and a `lax.while_loop` draws new batches until one trial succeeds.
"""

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltr_jax.dpp.bits import bernoulli_thresholds, stream_seed, threefry_bits, threefry_bits_at
from ltr_jax.dpp.kernels import (
    IPKernelParts,
    as_float,
    keep_small_classes,
    sampling_parts,
    valid_mask,
)

NUM_PROPOSALS = 128
NUM_CANDIDATES = 8
_BISECTION_STEPS = 30


def tilt(log_w: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """t such that sum_i sigmoid(t + log w_i) ~ k over valid items (bisection).

    At t = logit(k/n) - max log w every pi_i <= k/n, at t = logit(k/n) - min log w every
    pi_i >= k/n, so the root lies between; its accuracy only affects speed, never exactness.
    """
    n = jnp.sum(valid).astype(log_w.dtype)
    eps = jnp.finfo(log_w.dtype).eps
    frac = jnp.clip(k / jnp.maximum(n, 1.0), eps, 1.0 - eps)
    centre = jnp.log(frac) - jnp.log1p(-frac)
    lo = centre - jnp.max(jnp.where(valid, log_w, -jnp.inf))
    hi = centre - jnp.min(jnp.where(valid, log_w, jnp.inf))

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        over = jnp.sum(jnp.where(valid, jax.nn.sigmoid(mid + log_w), 0.0)) > k
        return jnp.where(over, lo, mid), jnp.where(over, mid, hi)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, body, (lo, hi))
    return 0.5 * (lo + hi)


def _candidate_rows(seed, thresholds, k, num_proposals, num_candidates):
    """Indices of the first `num_candidates` trials with exactly k ones (num_proposals: none).

    Only the counts are reduced here, so XLA fuses the random bits into one integer reduction
    and the [B, N] inclusion matrix is never stored.
    """
    n = thresholds.shape[0]
    incl = threefry_bits(seed, (num_proposals, n)) < thresholds  # [B, N]
    counts = jnp.sum(incl, axis=1, dtype=jnp.int32)  # [B]
    (rows,) = jnp.nonzero(counts == k, size=num_candidates, fill_value=num_proposals)
    return rows


def _rows_of(seed, thresholds, rows):
    """Regenerates the inclusion vectors of the given trials: [M, N] bool."""
    n = thresholds.shape[0]
    counters = rows[:, None].astype(jnp.uint32) * jnp.uint32(n) + jnp.arange(n, dtype=jnp.uint32)
    return threefry_bits_at(seed, counters) < thresholds


def first_success(
    key: jax.Array,
    pi: jax.Array,
    k: int,
    accept_fn: Callable[[jax.Array, jax.Array], jax.Array],
    done: jax.Array,
    num_proposals: int = NUM_PROPOSALS,
    num_candidates: int = NUM_CANDIDATES,
) -> jax.Array:
    """Draws batches of Bernoulli(pi) vectors until one has k ones and passes `accept_fn`.

    Per batch, the first `num_candidates` trials with exactly k ones are tested for acceptance
    in order and the rest of the batch is dropped. Which trials are tested depends only on the
    counts of the trials before them, so the tested ones are i.i.d. draws of the conditional
    Bernoulli law and the first accepted one is exact. Bernoulli draws compare uint32 random
    bits with floor(pi 2^32), so each inclusion probability is pi to within 2^-32.

    Args:
      key: PRNG key.
      pi: [N] inclusion probabilities (0 for items that must never be drawn).
      k: required number of ones (static).
      accept_fn: (incl [M, N] bool, u [M] uniform) -> [M] bool acceptance.
      done: scalar bool; True skips the loop (e.g. when at most k items are valid).
      num_proposals: trials per batch (static).
      num_candidates: trials with k ones tested per batch (static).

    Returns:
      [N] bool, the first successful trial (all False if `done` was True).
    """
    thresholds = bernoulli_thresholds(pi)  # [N]

    def body(state):
        rnd, _, sel = state
        key_b, key_u = jax.random.split(jax.random.fold_in(key, rnd))
        seed = stream_seed(key_b)
        rows = _candidate_rows(seed, thresholds, k, num_proposals, num_candidates)  # [M]
        incl = _rows_of(seed, thresholds, rows)  # [M, N]
        u = jax.random.uniform(key_u, rows.shape, pi.dtype)
        ok = (rows < num_proposals) & accept_fn(incl, u)  # [M]
        found = jnp.any(ok)
        return rnd + 1, found, jnp.where(found, incl[jnp.argmax(ok)], sel)

    init = (jnp.asarray(0, jnp.int32), done, jnp.zeros(pi.shape, bool))
    return jax.lax.while_loop(lambda state: ~state[1], body, init)[2]


def _proposal_probs(log_w: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """pi_i = sigmoid(t + log w_i) on valid items, 0 elsewhere."""
    t = tilt(log_w, valid, k)
    return jnp.where(valid, jax.nn.sigmoid(t + log_w), 0.0)


@partial(jax.jit, static_argnames=("k", "num_proposals", "num_candidates"))
def sample_conditional_bernoulli(
    key: jax.Array,
    w: ArrayLike,
    k: int,
    mask: ArrayLike | None = None,
    num_proposals: int = NUM_PROPOSALS,
    num_candidates: int = NUM_CANDIDATES,
) -> jax.Array:
    """Exact draw of Y, |Y| = k, with P(Y) ~ prod_{Y} w_i (w_i > 0 on valid items).

    Args:
      key: PRNG key.
      w: [N] positive weights.
      k: subset size (static).
      mask: optional [N] bool; masked items are never drawn.
      num_proposals: Bernoulli vectors per batch (static).
      num_candidates: vectors with k ones kept per batch (static).

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    w = as_float(w)
    valid = valid_mask(w, mask) & (w > 0)
    if k >= w.shape[0]:
        return valid
    pi = _proposal_probs(jnp.log(jnp.where(valid, w, 1.0)), valid, k)
    done = jnp.sum(valid) <= k

    def accept_all(incl, u):
        return jnp.ones(u.shape, bool)

    sel = first_success(key, pi, k, accept_all, done, num_proposals, num_candidates)
    return keep_small_classes(sel, valid, k)


def sample_structured_core(
    key: jax.Array,
    parts: IPKernelParts,
    valid: jax.Array,
    k: int,
    num_proposals: int = NUM_PROPOSALS,
    num_candidates: int = NUM_CANDIDATES,
) -> jax.Array:
    """Exact rejection draw from kernel parts with d_i > 0 on valid items; [N] bool mask."""
    d, alpha, p = parts
    d_safe = jnp.where(valid, d, 1.0)
    r = jnp.where(valid, alpha * p * p / d_safe, 0.0)  # [N]
    top = jnp.sum(jax.lax.top_k(r, k)[0])

    def accept(incl, u):
        return u * (1.0 + top) < 1.0 + jnp.sum(jnp.where(incl, r, 0.0), axis=1)  # [M]

    pi = _proposal_probs(jnp.log(d_safe), valid, k)
    done = jnp.sum(valid) <= k
    return first_success(key, pi, k, accept, done, num_proposals, num_candidates)


@partial(jax.jit, static_argnames=("k", "scale", "num_proposals", "num_candidates"))
def sample_structured(
    key: jax.Array,
    p: ArrayLike,
    k: int,
    scale: str = "paper",
    mask: ArrayLike | None = None,
    num_proposals: int = NUM_PROPOSALS,
    num_candidates: int = NUM_CANDIDATES,
) -> jax.Array:
    """Fast exact k-DPP draw for the IP-DPP kernel (conditional Bernoulli + rejection).

    Args:
      key: PRNG key.
      p: [N] confidences.
      k: subset size (static).
      scale: "paper" or "reference".
      mask: optional [N] bool; masked items are never drawn.
      num_proposals: Bernoulli vectors per batch (static).
      num_candidates: vectors with k ones tested for acceptance per batch (static).

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    p = as_float(p)
    valid = valid_mask(p, mask)
    if k >= p.shape[0]:
        return valid
    parts = sampling_parts(p, scale, valid)
    sel = sample_structured_core(key, parts, valid, k, num_proposals, num_candidates)
    return keep_small_classes(sel, valid, k)
