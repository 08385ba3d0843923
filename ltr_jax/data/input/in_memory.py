"""In-device-memory CIFAR-scale data: the long-tailed training set, batches, eval padding.

The whole (long-tailed) training set lives on every device as uint8; a step gathers its
batch by position inside the jitted step and shards it over the ``data`` mesh axis, so no
image crosses the host-device boundary during training.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import jax
import numpy as np

from ltr_jax import runtime
from ltr_jax.data import long_tail

if TYPE_CHECKING:  # a type only: importing sources at run time would import TFDS
    from ltr_jax.data.sources import Dataset


@dataclasses.dataclass(frozen=True)
class LongTailData:
    """The long-tailed training set and the (balanced) test set, on the host."""

    train_images: np.ndarray  # uint8 [N, H, W, 3]
    train_labels: np.ndarray  # int32 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_counts: np.ndarray  # int64 [C]
    groups: long_tail.ShotGroups
    class_names: tuple[str, ...] = ()


def make_long_tail(dataset: Dataset, data_config) -> LongTailData:
    """Applies the long-tail subset (LDAM protocol or ``data.class_counts``), the cap of
    ``data.max_per_class`` on both splits and the Many/Medium/Few thresholds of ``config.data``."""
    train, test = dataset.train, dataset.test
    pos = long_tail.train_subset(
        train.labels,
        train.index,
        dataset.num_classes,
        data_config.imbalance_factor,
        tuple(data_config.class_counts),
    )
    pos = pos[long_tail.cap_per_class(train.labels[pos], data_config.max_per_class)]
    test_pos = long_tail.cap_per_class(test.labels, data_config.max_per_class)
    labels = train.labels[pos].astype(np.int32)
    counts = np.bincount(labels, minlength=dataset.num_classes)
    groups = long_tail.shot_groups(counts, data_config.many_threshold, data_config.few_threshold)
    logging.info(
        "Long-tailed train set: IF %s, %d images, class counts %s; many/medium/few %d/%d/%d.",
        data_config.imbalance_factor,
        len(pos),
        counts.tolist(),
        len(groups.many),
        len(groups.medium),
        len(groups.few),
    )
    return LongTailData(
        train_images=train.images[pos],
        train_labels=labels,
        test_images=_take(test.images, test_pos),
        test_labels=test.labels[test_pos].astype(np.int32),
        num_classes=dataset.num_classes,
        class_counts=counts,
        groups=groups,
        class_names=tuple(dataset.class_names),
    )


def _take(images: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``images[positions]``, without a copy when ``positions`` is every image in order."""
    if len(positions) == len(images):
        return images
    return images[positions]


def device_train_data(lt: LongTailData, mesh) -> dict:
    """The training set replicated on every device: ``{"images": uint8, "labels": int32}``."""
    return runtime.put_replicated(mesh, {"images": lt.train_images, "labels": lt.train_labels})


def gather(data: dict, positions: jax.Array, mesh) -> dict:
    """The examples at ``positions`` (int [B]), batch axis sharded over ``data``."""
    positions = jax.lax.with_sharding_constraint(positions, runtime.batch_sharded(mesh))
    return {"images": data["images"][positions], "labels": data["labels"][positions]}
