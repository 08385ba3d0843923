"""The long tail, applied in this one place to every dataset, in memory or streamed.

`apply` turns a loaded dataset (`records.Dataset` or `records.StreamedDataset`) into the one
`records.LongTail` the input layer is made from, composing the three cuts of ``config.data``
in this order, on the training split:

1. the cap: at most ``data.max_per_class`` images of every class (the first ones in the
   source's own order; 0: no cap), so a capped run (``:smoke`` on your own data) keeps a
   small fixed subset;
2. the long tail of the capped split: explicit ``data.class_counts`` if given, else the LDAM
   profile of ``data.imbalance_factor`` (1, or a source that comes long-tailed, keeps every
   image), drawn as the LDAM code draws it.

Capping first keeps the configured imbalance: the largest class keeps ``min(n_max, cap)``
images and the smallest ``1 / IF`` of that. The test split is only capped. The subset is a
pure function of (labels, original indices, settings), so one prepared dataset serves every
imbalance factor; Many / Medium / Few come from the long-tailed counts.
"""

from __future__ import annotations

import logging

import numpy as np

from ltr_jax.data.datasets import records
from ltr_jax.errors import UserError


class LongTailError(UserError, ValueError):
    """``data.imbalance_factor`` / ``data.class_counts`` do not fit the dataset (one line)."""


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
            raise LongTailError(
                f"data.imbalance_factor={imbalance_factor} leaves classes {emptied} without a "
                f"training image (largest class: {available.max()} images): lower it, or give "
                "data.class_counts."
            )
        return pos
    available = np.bincount(np.asarray(labels), minlength=num_classes)
    if len(class_counts) != num_classes:
        raise LongTailError(
            f"data.class_counts has {len(class_counts)} entries but the dataset has "
            f"{num_classes} classes: give one count per class (or () for imbalance_factor)."
        )
    too_many = [c for c in range(num_classes) if class_counts[c] > available[c]]
    if too_many or min(class_counts) < 1:
        raise LongTailError(
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


def shot_groups(
    train_counts: np.ndarray, many_threshold: int, few_threshold: int
) -> records.ShotGroups:
    """Many: count > many_threshold; Few: count < few_threshold; Medium otherwise."""
    counts = np.asarray(train_counts)
    many = counts > many_threshold
    few = counts < few_threshold
    ids = np.arange(len(counts))
    return records.ShotGroups(many=ids[many], medium=ids[~many & ~few], few=ids[few])


def train_positions(
    labels: np.ndarray,
    index: np.ndarray,
    num_classes: int,
    data_config,
    *,
    long_tailed: bool = False,
) -> np.ndarray:
    """Sorted positions of the training split kept by ``data_config``: the cap, then the long
    tail of the capped split (the module docstring's order).

    Args:
      labels: int [N] training labels.
      index: int [N] position of each image in the source's own order.
      num_classes: C.
      data_config: ``config.data`` (``max_per_class``, ``class_counts``, ``imbalance_factor``).
      long_tailed: the source comes long-tailed: the LDAM profile is not applied.
    """
    labels = np.asarray(labels)
    capped = cap_per_class(labels, data_config.max_per_class)
    imbalance_factor = 1 if long_tailed else data_config.imbalance_factor
    kept = train_subset(
        labels[capped],
        np.asarray(index)[capped],
        num_classes,
        imbalance_factor,
        tuple(data_config.class_counts),
    )
    return capped[kept]


def apply(dataset, data_config, *, name: str, long_tailed: bool = False) -> records.LongTail:
    """The `records.LongTail` of a loaded ``dataset`` under ``config.data``.

    Args:
      dataset: a `records.Dataset` (in memory) or `records.StreamedDataset`.
      data_config: ``config.data``.
      name: the dataset's name in results.
      long_tailed: the source comes long-tailed (its registry entry says so).
    """
    train, test = dataset.train, dataset.test
    index = getattr(train, "index", None)
    index = np.arange(len(train.labels)) if index is None else index
    pos = train_positions(
        train.labels, index, dataset.num_classes, data_config, long_tailed=long_tailed
    )
    test_pos = cap_per_class(test.labels, data_config.max_per_class)
    train, test = _take(train, pos), _take(test, test_pos)
    counts = np.bincount(np.asarray(train.labels), minlength=dataset.num_classes)
    groups = shot_groups(counts, data_config.many_threshold, data_config.few_threshold)
    logging.info(
        "%s: long-tailed train set (IF %s, cap %s): %d images, class counts %s; %d test "
        "images; many/medium/few %d/%d/%d.",
        name,
        data_config.imbalance_factor,
        data_config.max_per_class or "none",
        len(pos),
        counts.tolist(),
        len(test.labels),
        len(groups.many),
        len(groups.medium),
        len(groups.few),
    )
    streamed = isinstance(dataset, records.StreamedDataset)
    return records.LongTail(
        name=name,
        train=train,
        test=test,
        num_classes=dataset.num_classes,
        class_names=tuple(dataset.class_names),
        class_counts=counts,
        groups=groups,
        streamed=streamed,
        identity=dict(dataset.identity) if streamed else {},
    )


def _take(split, positions: np.ndarray):
    """``split`` cut to ``positions`` (sorted, unique); the split itself when they are all of
    its images (no copy)."""
    if len(positions) == len(split.labels):
        return split
    return split.take(positions)
