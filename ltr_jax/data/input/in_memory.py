"""`InMemoryInput`: the whole long-tailed training set in device memory (CIFAR, synthetic, your
own small data).

The long-tailed training set lives on every device as uint8; a step samples positions with
`sampler` (jax.random) and gathers its batch by position inside the jitted step, sharded over
the ``data`` mesh axis, so no image crosses the host-device boundary during training. Every
augmentation runs on device (`augment`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ltr_jax import runtime
from ltr_jax.data.datasets.records import LongTail
from ltr_jax.data.input import augment, augment_registry, sampler, sampler_registry
from ltr_jax.data.input.sampler_registry import Sampling


def index_names(num_classes: int) -> tuple[str, ...]:
    """Class names "0".."C-1" for a dataset without names."""
    return tuple(str(c) for c in range(num_classes))


def device_train_data(long_tail: LongTail, mesh) -> dict:
    """The training set replicated on every device: ``{"images": uint8, "labels": int32}``."""
    train = {"images": long_tail.train.images, "labels": long_tail.train_labels}
    return runtime.put_replicated(mesh, train)


def gather(data: dict, positions: jax.Array, mesh) -> dict:
    """The examples at ``positions`` (int [B]), batch axis sharded over ``data``."""
    positions = jax.lax.with_sharding_constraint(positions, runtime.batch_sharded(mesh))
    return {"images": data["images"][positions], "labels": data["labels"][positions]}


def device_augment(name: str, strength: float) -> Callable:
    """``fn(key, float images [B, H, W, 3]) -> images`` for a named augmentation, on device
    (`augment_registry.Augmentation.device`)."""
    return augment_registry.AUGMENTS[name].device(strength)


class _DeviceFeed:
    """Batches gathered on device from the replicated training set (`InMemoryInput`)."""

    def __init__(self, data: InMemoryInput, sampling: Sampling, aug: Callable):
        self._data, self._mesh, self._aug = data, data.mesh, aug
        self._over_subset, self._drop_last = sampling.over_subset, sampling.drop_last
        if sampling.over_subset:
            n = sampling.subset_size
            self._sample = lambda step: sampler.epoch_batch(
                sampling.key, step, n, sampling.batch_size, sampling.drop_last
            )
        else:
            sample = sampler_registry.make_batch_sampler(
                sampling.kind,
                sampling.key,
                data.train_labels,
                data.num_classes,
                sampling.batch_size,
            )
            self._sample = lambda step: (sample(step), None)
        self._device_data = None

    def data(self, step: int, state) -> dict:
        del step, state
        if self._device_data is None:
            self._device_data = device_train_data(self._data.long_tail, self._mesh)
        return self._device_data

    def batch_fn(self, device_data: dict, state) -> dict:
        positions, weights = self._sample(state.step)
        if self._over_subset:
            positions = state.subset[positions]
        batch = gather(device_data, positions, self._mesh)
        return batch if self._drop_last else {**batch, "weights": weights}

    def view(self, key: jax.Array, batch: dict, v: int = 0) -> jax.Array:
        del v  # every view is a fresh on-device draw from the same image
        return self._aug(key, augment.to_float(batch["images"]))

    def set_population(self, positions: np.ndarray, step: int) -> None:
        del positions, step  # read from state.subset inside the step

    def close(self) -> None:
        """Nothing to stop (the stream feed's twin)."""


class InMemoryInput:
    """The long-tailed training set and the test set as host arrays, copied to every device."""

    def __init__(self, long_tail: LongTail, mesh: jax.sharding.Mesh):
        self.long_tail, self.mesh = long_tail, mesh
        self.dataset_name = long_tail.name
        self.num_classes = long_tail.num_classes
        self.train_labels = long_tail.train_labels
        self.test_labels = long_tail.test_labels
        self.class_counts = long_tail.class_counts
        self.groups = long_tail.groups
        self.class_names = long_tail.class_names or index_names(self.num_classes)

    def train_feed(
        self,
        sampling: Sampling,
        *,
        augment: str = "none",
        strength: float = 1.0,
        num_views: int = 1,
    ) -> _DeviceFeed:
        del num_views
        sampler_registry.check_sampling(sampling)
        return _DeviceFeed(self, sampling, device_augment(augment, strength))

    def map_split(
        self, fn: Callable, split: str, positions: np.ndarray | None = None, batch_size: int = 512
    ) -> Any:
        """``fn(images uint8, labels int32, positions int32)`` over ``split`` in padded batches."""
        images, labels = {
            "train": (self.long_tail.train.images, self.train_labels),
            "test": (self.long_tail.test.images, self.test_labels),
        }[split]
        if positions is None:  # the whole split: no host copy of its images
            positions = np.arange(len(labels), dtype=np.int32)
        else:
            positions = np.asarray(positions, np.int32)
            images, labels = images[positions], labels[positions]
        return runtime.apply_in_batches(fn, (images, labels, positions), batch_size, self.mesh)
