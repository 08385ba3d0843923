"""Long-tailed subsets (LDAM protocol) and Many/Medium/Few class groups.

The subset is a pure function of (labels, original indices, imbalance factor), so one prepared
dataset serves every imbalance factor.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ltr_jax.validation import ConfigError


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> np.ndarray:
    """Per-class counts n_c = floor(n_max * IF^(-c / (C - 1))) of the LDAM protocol.

    Args:
      n_max: images in the largest class (5000 for CIFAR-10, 500 for CIFAR-100).
      num_classes: number of classes C.
      imbalance_factor: ratio between the largest and the smallest class.

    Returns:
      int64 [C] counts, non-increasing.
    """
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}.")
    if num_classes == 1:
        return np.array([n_max], np.int64)
    c = np.arange(num_classes, dtype=np.float64)
    return np.floor(n_max * imbalance_factor ** (-c / (num_classes - 1))).astype(np.int64)


def ldam_subset(
    labels: np.ndarray, original_index: np.ndarray, num_classes: int, imbalance_factor: float
) -> np.ndarray:
    """Positions of the long-tailed training subset, exactly as the LDAM code draws it.

    NumPy's legacy global RNG is seeded with 0 and, for each class in order, the class's
    positions in the ORIGINAL train order are shuffled and the first n_c kept. The global RNG
    state is saved and restored, so callers' randomness is untouched.

    Args:
      labels: int [N] labels of the full (balanced) training split.
      original_index: int [N] position of each example in the official split.
      num_classes: C.
      imbalance_factor: IF.

    Returns:
      int64 [M] positions into ``labels`` (sorted ascending), M = sum of the LT counts.
    """
    labels = np.asarray(labels)
    n_max = int(np.bincount(labels, minlength=num_classes).max())
    counts = long_tail_counts(n_max, num_classes, imbalance_factor)
    return subset_with_counts(labels, original_index, counts)


def subset_with_counts(
    labels: np.ndarray, original_index: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Positions of a subset with ``counts[c]`` images of class c, drawn as the LDAM code does.

    NumPy's legacy global RNG is seeded with 0 and, for each class in order, the class's
    positions in the ORIGINAL order are shuffled and the first ``counts[c]`` kept (a class
    with fewer images is kept whole). The global RNG state is saved and restored.

    Args:
      labels: int [N] labels.
      original_index: int [N] position of each example in the source's own order.
      counts: int [C] wanted images per class.

    Returns:
      int64 [M] positions into ``labels``, sorted ascending.
    """
    labels = np.asarray(labels)
    order = np.argsort(np.asarray(original_index), kind="stable")  # official order
    ordered_labels = labels[order]
    saved = np.random.get_state()
    try:
        np.random.seed(0)
        chosen = [np.zeros(0, np.int64)]
        for c, n_c in enumerate(counts):
            idx = np.where(ordered_labels == c)[0]
            np.random.shuffle(idx)
            chosen.append(idx[: int(n_c)])
    finally:
        np.random.set_state(saved)
    return np.sort(order[np.concatenate(chosen)])


def train_subset(
    labels: np.ndarray,
    original_index: np.ndarray,
    num_classes: int,
    imbalance_factor: float,
    class_counts: tuple[int, ...] = (),
) -> np.ndarray:
    """The long-tailed training positions of ``config.data``: explicit ``class_counts`` if
    given (one per class, each at most the class's size), else the LDAM profile of
    ``imbalance_factor`` (1 keeps every image, so an already long-tailed source stays as is).
    """
    if not class_counts:
        pos = ldam_subset(labels, original_index, num_classes, imbalance_factor)
        available = np.bincount(np.asarray(labels), minlength=num_classes)
        kept = np.bincount(np.asarray(labels)[pos], minlength=num_classes)
        emptied = np.flatnonzero((kept == 0) & (available > 0)).tolist()
        if emptied:
            raise ConfigError(
                f"data.imbalance_factor={imbalance_factor} leaves classes {emptied} without a "
                f"training image (largest class: {available.max()} images): lower it, or give "
                "data.class_counts."
            )
        return pos
    available = np.bincount(np.asarray(labels), minlength=num_classes)
    if len(class_counts) != num_classes:
        raise ConfigError(
            f"data.class_counts has {len(class_counts)} entries but the dataset has "
            f"{num_classes} classes: give one count per class (or () for imbalance_factor)."
        )
    too_many = [c for c in range(num_classes) if class_counts[c] > available[c]]
    if too_many or min(class_counts) < 1:
        raise ConfigError(
            f"data.class_counts {tuple(class_counts)} asks for more images than classes "
            f"{too_many} have ({available.tolist()}), or for none: use 1..available per class."
        )
    return subset_with_counts(labels, original_index, np.asarray(class_counts))


def cap_per_class(labels: np.ndarray, max_per_class: int) -> np.ndarray:
    """Positions (sorted) of the first ``max_per_class`` images of every class, in order;
    every position when ``max_per_class`` is 0 (``:smoke`` keeps a small fixed subset)."""
    labels = np.asarray(labels)
    if max_per_class <= 0:
        return np.arange(len(labels))
    rank = np.zeros(len(labels), np.int64)  # rank of each image within its class
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return np.flatnonzero(rank < max_per_class)


@dataclasses.dataclass(frozen=True)
class ShotGroups:
    """Class ids of the Many / Medium / Few groups (by training count)."""

    many: np.ndarray
    medium: np.ndarray
    few: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("many", "medium", "few")}


def shot_groups(train_counts: np.ndarray, many_threshold: int, few_threshold: int) -> ShotGroups:
    """Many: count > many_threshold; Few: count < few_threshold; Medium otherwise."""
    counts = np.asarray(train_counts)
    many = counts > many_threshold
    few = counts < few_threshold
    ids = np.arange(len(counts))
    return ShotGroups(many=ids[many], medium=ids[~many & ~few], few=ids[few])
