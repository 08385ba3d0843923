"""Precomputed features as a data input: what the linear probe and cRT train a head on.

The features of the training images are computed once (frozen encoder, eval mode), so an epoch
costs only head updates. `FeatureInput` offers the ``train_feed`` of the other inputs
(`ltr_jax.data.input`), so `ltr_jax.train_lib.fit` trains a head on features as it trains any
stage: the step samples positions (`sampler`) and gathers its batch on device; the "view" of a
batch is its features (no augmentation applies to features).
"""

from __future__ import annotations

import jax
import numpy as np

from ltr_jax import runtime
from ltr_jax.data.input import in_memory, sampler, sampler_registry


class FeatureInput:
    """Training features and labels, replicated on every device of ``mesh``."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int, mesh):
        self.features = np.asarray(features)
        self.train_labels = np.asarray(labels, np.int32)
        self.num_classes, self.mesh = num_classes, mesh

    def train_feed(
        self, sampling, *, augment: str = "none", strength: float = 1.0, num_views: int = 1
    ) -> _FeatureFeed:
        """A feed of batches of features (``augment`` must be ``none``)."""
        del strength, num_views
        if augment != "none":
            raise ValueError(f"Features cannot be augmented (augment={augment!r}); use 'none'.")
        if sampling.over_subset:
            raise ValueError("A feature input samples from all of its features only.")
        return _FeatureFeed(self, sampling)


class _FeatureFeed:
    def __init__(self, data: FeatureInput, sampling):
        self._data, self._mesh = data, data.mesh
        self._drop_last = sampling.drop_last
        if sampling.drop_last:
            self._sample = sampler_registry.make_batch_sampler(
                sampling.kind,
                sampling.key,
                data.train_labels,
                data.num_classes,
                sampling.batch_size,
            )
        elif sampling.kind == "uniform":  # the same order, the last partial batch kept
            n, size = len(data.train_labels), sampling.batch_size
            self._sample = lambda step: sampler.epoch_batch(sampling.key, step, n, size, False)
        else:
            raise ValueError("drop_last=False needs the uniform sampler.")
        self._device_data = None

    def data(self, step: int, state) -> dict:
        del step, state
        if self._device_data is None:
            self._device_data = runtime.put_replicated(
                self._mesh, {"images": self._data.features, "labels": self._data.train_labels}
            )
        return self._device_data

    def batch_fn(self, device_data: dict, state) -> dict:
        if self._drop_last:
            return in_memory.gather(device_data, self._sample(state.step), self._mesh)
        positions, weights = self._sample(state.step)  # weights 0: padding rows
        return {**in_memory.gather(device_data, positions, self._mesh), "weights": weights}

    @staticmethod
    def view(key: jax.Array, batch: dict, v: int = 0) -> jax.Array:
        del key, v
        return batch["images"]

    def set_population(self, positions: np.ndarray, step: int) -> None:
        raise ValueError("A feature input has no training subset.")

    def close(self) -> None:
        """Nothing to stop."""
