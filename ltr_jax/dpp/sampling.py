"""IP-DPP subset selection for one class or a padded batch of classes (SPEC section 3).

Convention shared by every sampler in `ltr_jax.dpp`: a draw is an [N] boolean selection mask
with exactly min(k, n_valid) True entries, all on valid items (a class with at most k valid
items is kept whole). `selection_indices` turns a mask into k int32 indices.
"""

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ltr_jax.dpp.alg1 import sample_paper_alg1
from ltr_jax.dpp.greedy import greedy_map_structured
from ltr_jax.dpp.kernels import (
    as_float,
    check_scale,
    ip_dpp_kernel,
    keep_small_classes,
    sampling_parts,
    valid_mask,
)
from ltr_jax.dpp.rejection import sample_structured_core
from ltr_jax.dpp.spectral import sample_k_dpp
from ltr_jax.dpp.structured import sample_structured_dp_core
from ltr_jax.registry import Registry


def sample_uniform(key: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """Uniformly random k of the valid items (the reference code's effective behaviour).

    Returns:
      [N] bool selection mask (k items when at least k are valid).
    """
    u = jax.random.uniform(key, valid.shape)
    _, idx = jax.lax.top_k(jnp.where(valid, u, -1.0), k)  # masked items rank last
    return jnp.zeros(valid.shape, bool).at[idx].set(True) & valid


@dataclasses.dataclass(frozen=True)
class Method:
    """One subset-selection method (``stage2.sampler``).

    Attributes:
      draw: ``draw(key, p [N], valid [N], k, scale) -> [N] bool mask`` of one class, with
        ``k < N`` (the caller keeps smaller classes whole).
      label: the name of stage 2 with this method in reports.
    """

    draw: Callable[[jax.Array, jax.Array, jax.Array, int, str], jax.Array]
    label: str


METHODS: Registry[Method] = Registry(
    "stage2.sampler",
    {
        "structured": Method(
            lambda key, p, valid, k, scale: sample_structured_core(
                key, sampling_parts(p, scale, valid), valid, k
            ),
            label="IP-DPP(structured)",
        ),
        "structured_dp": Method(
            lambda key, p, valid, k, scale: sample_structured_dp_core(
                key, sampling_parts(p, scale, valid), valid, k
            ),
            label="IP-DPP(structured_dp)",
        ),
        "spectral": Method(
            lambda key, p, valid, k, scale: sample_k_dpp(
                key, ip_dpp_kernel(p, scale, valid), k, valid
            ),
            label="IP-DPP(spectral)",
        ),
        "paper_alg1": Method(
            lambda key, p, valid, k, scale: sample_paper_alg1(
                key, ip_dpp_kernel(p, scale, valid), k, valid
            ),
            label="IP-DPP(paper_alg1)",
        ),
        "greedy_map": Method(
            lambda key, p, valid, k, scale: greedy_map_structured(
                *sampling_parts(p, scale, valid), valid, k
            ),
            label="IP-DPP(greedy_map)",
        ),
        # k uniformly random images per class: the released code's effective behaviour.
        "uniform": Method(
            lambda key, p, valid, k, scale: sample_uniform(key, valid, k), "uniform-k"
        ),
    },
)


def report_label(method: str) -> str:
    """Stage 2's name in reports for ``stage2.sampler=method`` (unknown names: IP-DPP(name))."""
    entry = METHODS.get(method)
    return entry.label if entry is not None else f"IP-DPP({method})"


def _check_method(method: str, scale: str) -> None:
    METHODS[method]  # an unknown name fails with the valid ones
    check_scale(scale)


def _sample_one(key, p, valid, k, scale, method):
    if k >= p.shape[0]:
        return valid
    return keep_small_classes(METHODS[method].draw(key, p, valid, k, scale), valid, k)


@partial(jax.jit, static_argnames=("k", "scale", "method"))
def sample_ip_dpp(
    key: jax.Array,
    p: ArrayLike,
    k: int,
    scale: str = "paper",
    method: str = "structured",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Draws k items of one class with the IP-DPP kernel S = diag(d) + alpha p p^T.

    Methods: "structured" (exact k-DPP, conditional Bernoulli + rejection, the default),
    "structured_dp" (exact, dynamic programme), "spectral" (exact, eigh of the dense kernel),
    "paper_alg1" (the paper's Algorithm 1), "greedy_map" (Chen et al. 2018), "uniform".

    Args:
      key: PRNG key.
      p: [N] confidences p(y_i | x_i).
      k: items per class (static).
      scale: "paper" (alpha = 1/N) or "reference" (alpha = 1/N^2).
      method: one of METHODS (static).
      mask: optional [N] bool; masked (padding) items are never drawn.

    Returns:
      [N] bool selection mask with min(k, n_valid) True entries.
    """
    _check_method(method, scale)
    p = as_float(p)
    return _sample_one(key, p, valid_mask(p, mask), k, scale, method)


@partial(jax.jit, static_argnames=("k", "scale", "method"))
def sample_ip_dpp_batched(
    key: jax.Array,
    p: ArrayLike,
    valid: ArrayLike,
    k: int,
    scale: str = "paper",
    method: str = "structured",
    row_ids: ArrayLike | None = None,
) -> jax.Array:
    """Draws every class of a padded batch in one compiled call (vmap over classes).

    Row r uses `jax.random.fold_in(key, row_ids[r])` (default: r), so row r equals
    `sample_ip_dpp(fold_in(key, row_ids[r]), p[r], k, scale, method, mask=valid[r])`.

    Args:
      key: PRNG key of this draw.
      p: [C, Nmax] padded confidences.
      valid: [C, Nmax] bool, True for real items.
      k: items per class (static); classes with at most k valid items are kept whole.
      scale: "paper" or "reference".
      method: one of METHODS (static).
      row_ids: optional int [C]: the id each row's key is folded from (e.g. its class).

    Returns:
      [C, Nmax] bool selection mask.
    """
    _check_method(method, scale)
    p = as_float(p)
    valid = jnp.asarray(valid).astype(bool)
    ids = jnp.arange(p.shape[0]) if row_ids is None else jnp.asarray(row_ids)
    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(ids)
    one = partial(_sample_one, k=k, scale=scale, method=method)
    return jax.vmap(one)(keys, p, valid)


def selection_indices(sel: ArrayLike, k: int, fill_value: int = -1) -> jax.Array:
    """The indices of the True entries of a selection mask, padded to length k.

    Args:
      sel: [N] bool selection mask.
      k: output length (static).
      fill_value: index used when fewer than k items are selected.

    Returns:
      [k] int32 increasing indices.
    """
    (idx,) = jnp.nonzero(jnp.asarray(sel), size=k, fill_value=fill_value)
    return idx.astype(jnp.int32)


def bucket_size(n: int, multiple: int = 128, power_of_two: bool = False) -> int:
    """Padded length for n items: the next multiple of `multiple` (or power of two, at least it).

    Few distinct padded shapes mean few compilations across datasets and re-draws.
    """
    if power_of_two:
        return max(multiple, 1 << max(n - 1, 0).bit_length())
    return max(multiple, -(-n // multiple) * multiple)


def pad_per_class(
    values: Sequence[ArrayLike], multiple: int = 128, power_of_two: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pads per-class arrays into the [C, Nmax] form of `sample_ip_dpp_batched` (host side).

    Args:
      values: C one-dimensional arrays (e.g. per-class confidences), of varying lengths.
      multiple: Nmax is rounded up to a multiple of this.
      power_of_two: round Nmax up to a power of two (at least `multiple`) instead.

    Returns:
      padded [C, Nmax] (zeros after each class's items) and valid [C, Nmax] bool.
    """
    arrays = [np.asarray(v).reshape(-1) for v in values]
    n_max = bucket_size(max(len(a) for a in arrays), multiple, power_of_two)
    padded = np.zeros((len(arrays), n_max), np.result_type(*arrays))
    valid = np.zeros((len(arrays), n_max), bool)
    for c, a in enumerate(arrays):
        padded[c, : len(a)] = a
        valid[c, : len(a)] = True
    return padded, valid


def unpad_selection(sel: ArrayLike, sizes: Sequence[int]) -> list[np.ndarray]:
    """Per-class indices (into each class's own item list) of a [C, Nmax] selection mask."""
    sel = np.asarray(sel)
    return [np.flatnonzero(sel[c, :n]) for c, n in enumerate(sizes)]


def size_groups(
    counts: Sequence[int], multiple: int = 128, max_rows: int = 256
) -> list[tuple[int, np.ndarray]]:
    """Groups classes by padded size for `sample_ip_dpp_grouped`.

    Each class goes to the bucket `bucket_size(count, multiple, power_of_two=True)`; a bucket
    is cut into chunks of at most ``max_rows`` classes, each padded (by repeating its last
    class) to ``min(max_rows, next power of two of the bucket's class count)`` rows. Shapes thus
    depend only on the class counts, so a run compiles once per bucket, whatever the draw.

    Returns:
      [(width, rows)] with rows an int [R] array of class indices (R a padded chunk length;
      repeated entries are padding).
    """
    counts = np.asarray(counts)
    widths = np.array([bucket_size(int(n), multiple, power_of_two=True) for n in counts])
    groups = []
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        chunk = min(max_rows, bucket_size(len(members), 1, power_of_two=True))
        for lo in range(0, len(members), chunk):
            part = members[lo : lo + chunk]
            groups.append(
                (int(width), np.concatenate([part, np.repeat(part[-1:], chunk - len(part))]))
            )
    return groups


def sample_ip_dpp_grouped(
    key: jax.Array,
    p: np.ndarray,
    valid: np.ndarray,
    k: int,
    scale: str = "paper",
    method: str = "structured",
    max_rows: int = 256,
) -> np.ndarray:
    """Draws many classes of very different sizes, grouped by padded size (host driver).

    Rows of ``p`` / ``valid`` hold each class's items first, then padding (as `pad_per_class`
    writes them). Class c is drawn at width W_c = `bucket_size(n_c, power_of_two=True)` with
    key `fold_in(key, c)`, so row c equals `sample_ip_dpp(fold_in(key, c), p[c, :W_c], k,
    scale, method, mask=valid[c, :W_c])` (zero-padded back to the full width). Thousands of
    classes (ImageNet-LT: 1000, iNaturalist: 8142) take a handful of compiled calls, none
    paying the largest class's width.

    Args:
      key: PRNG key of this draw.
      p: [C, Nmax] padded confidences.
      valid: [C, Nmax] bool, a prefix of True per row.
      k: items per class; classes with at most k valid items are kept whole.
      scale: "paper" or "reference".
      method: one of METHODS.
      max_rows: most classes per compiled call.

    Returns:
      [C, Nmax] bool selection mask (numpy).

    Raises:
      ValueError: a row of ``valid`` is not a prefix of True entries.
    """
    p, valid = np.asarray(p), np.asarray(valid, bool)
    counts = valid.sum(1)
    if not np.array_equal(valid, np.arange(valid.shape[1]) < counts[:, None]):
        raise ValueError("valid must be a prefix of True entries in every row.")
    big = np.flatnonzero(counts > k)  # the others are kept whole: no draw needed
    sel = valid.copy()
    for width, rows in size_groups(counts[big], max_rows=max_rows):
        classes = big[rows]
        p_w, valid_w = _fit_width(p[classes], width), _fit_width(valid[classes], width)
        drawn = np.asarray(
            sample_ip_dpp_batched(key, p_w, valid_w, k, scale, method, row_ids=classes)
        )
        w = min(width, valid.shape[1])
        sel[classes, :w] = drawn[:, :w]
    return sel


def _fit_width(x: np.ndarray, width: int) -> np.ndarray:
    """The first ``width`` columns of ``x``, zero-padded if it has fewer."""
    if x.shape[1] >= width:
        return x[:, :width]
    return np.pad(x, ((0, 0), (0, width - x.shape[1])))
