"""`StreamingInput`: a long-tailed training split and a test split of encoded images, decoded
on the host while training (ImageNet-LT, iNaturalist 2018, synthetic JPEGs, large folders).

Images are decoded from a random-access source by Grain worker threads or processes
(`grain_pipeline`), each process loading its rows of every global batch; the batch order is a
NumPy function of (seed, step) (`grain_pipeline.StepPlan`), so resumes are exact as in memory.
The host does the random resized crop + flip (one crop per view), the device the rest of a
recipe (SimCLR's colour jitter, grayscale and blur); evaluation uses the standard
resize-to-S/0.875 + centre crop. `decoded.DecodedInput` reads a decoded store instead.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ltr_jax import runtime
from ltr_jax.data.datasets.records import ShotGroups
from ltr_jax.data.input import augment, augment_registry, grain_pipeline, sampler_registry
from ltr_jax.data.input.in_memory import index_names
from ltr_jax.data.input.sampler_registry import Sampling


def host_augment(name: str, strength: float) -> Callable:
    """The device part of a named augmentation whose crop the host already did
    (`augment_registry.Augmentation.after_host_crop`)."""
    return augment_registry.AUGMENTS[name].after_host_crop(strength)


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """Host pipeline settings from ``config.data``."""

    image_size: int
    num_workers: int
    prefetch_steps: int
    num_processes: int = 0
    draft: bool = False


class StreamFeed:
    """Host-decoded batches from Grain worker threads (`StreamingInput`)."""

    def __init__(
        self,
        data: StreamingInput,
        sampling: Sampling,
        augment_name: str,
        aug: Callable,
        num_views: int,
    ):
        if not sampling.drop_last:
            raise ValueError(
                "drop_last=False (probe.drop_last, stage2.drop_last) needs an "
                "in-memory dataset; set it True for streamed data."
            )
        self._data, self._sampling, self._aug = data, sampling, aug
        self._mode = augment_registry.AUGMENTS[augment_name].host_crop
        self._num_views = num_views if self._mode == "train" else 1
        self._seed = sampler_registry.key_to_seed(sampling.key)
        self._subset: np.ndarray | None = None
        self._iterator, self._next_step = None, -1

    def _plan(self) -> grain_pipeline.StepPlan:
        s, pi, pc = self._sampling, jax.process_index(), jax.process_count()
        if s.over_subset:
            inner = grain_pipeline.BatchPlan(len(self._subset), s.batch_size, self._seed, pi, pc)
            positions = grain_pipeline.SubsetPositions(self._subset, inner)
            return grain_pipeline.StepPlan(positions, s.batch_size, self._seed, pi, pc)
        host_plan = sampler_registry.SAMPLERS[s.kind].host_plan
        data = self._data
        return host_plan(data.train_labels, data.num_classes, s.batch_size, self._seed, pi, pc)

    def data(self, step: int, state) -> dict:
        if self._sampling.over_subset and self._subset is None:
            self._subset = runtime.to_host(state.subset)  # a resumed run's current draw
        if self._iterator is None or step != self._next_step:
            _close(self._iterator)
            self._iterator = self._data.iterator(
                self._data.train,
                plan=self._plan(),
                start_step=step,
                mode=self._mode,
                num_views=self._num_views,
                global_batch_size=self._sampling.batch_size,
            )
        self._next_step = step + 1
        local = next(self._iterator)
        return grain_pipeline.make_global_batch(self._data.mesh, _without_positions(local))

    def batch_fn(self, batch: dict, state) -> dict:
        del state
        return batch

    def view(self, key: jax.Array, batch: dict, v: int = 0) -> jax.Array:
        images = batch["images"]
        if images.ndim == 5:  # [B, V, S, S, 3]: one host crop per view
            images = images[:, v]
        return self._aug(key, augment.to_float(images))

    def set_population(self, positions: np.ndarray, step: int) -> None:
        self._subset = np.asarray(positions)
        _close(self._iterator)
        self._iterator = None  # the draw changed: restart the pipeline at this step
        del step

    def close(self) -> None:
        """Stops the decoding threads or processes (call when the stage's loop is done)."""
        _close(self._iterator)
        self._iterator = None


def _close(iterator) -> None:
    """Stops a pipeline's threads or worker processes (a restarted feed drops its iterator)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _without_positions(local: dict) -> dict:
    return {k: v for k, v in local.items() if k != "positions"}


class StreamingInput:
    """A long-tailed training source and a test source of encoded images, streamed."""

    def __init__(
        self,
        train,
        test,
        num_classes: int,
        groups: ShotGroups,
        mesh: jax.sharding.Mesh,
        options: StreamOptions,
        class_names: tuple[str, ...] = (),
        dataset_name: str = "",
    ):
        self.train, self.test, self.mesh, self.options = train, test, mesh, options
        self.dataset_name = dataset_name
        self.num_classes = num_classes
        self.class_names = tuple(class_names) or index_names(num_classes)
        self.train_labels = np.asarray(train.labels, np.int32)
        self.test_labels = np.asarray(test.labels, np.int32)
        self.class_counts = np.bincount(self.train_labels, minlength=num_classes)
        self.groups = groups

    def iterator(
        self,
        split,
        *,
        plan,
        start_step: int = 0,
        num_steps: int | None = None,
        mode: str = "train",
        num_views: int = 1,
        global_batch_size: int,
    ):
        """This process's host batches of ``split`` (an `image_lists.ImageSplit`-like pair)."""
        spec = grain_pipeline.IteratorSpec(
            global_batch_size=global_batch_size,
            start_step=start_step,
            num_steps=num_steps,
            process_index=plan.process_index,
            process_count=jax.process_count(),
            plan=plan,
            image_size=self.options.image_size,
            mode=mode,
            num_views=num_views,
            draft=self.options.draft,
            num_workers=self.options.num_workers,
            prefetch_steps=self.options.prefetch_steps,
            num_processes=self.options.num_processes,
        )
        return grain_pipeline.make_iterator(split.source, spec)

    def train_feed(
        self,
        sampling: Sampling,
        *,
        augment: str = "none",
        strength: float = 1.0,
        num_views: int = 1,
    ) -> StreamFeed:
        sampler_registry.check_sampling(sampling)
        return StreamFeed(self, sampling, augment, host_augment(augment, strength), num_views)

    def map_split(
        self, fn: Callable, split: str, positions: np.ndarray | None = None, batch_size: int = 512
    ) -> Any:
        """``fn(images uint8, labels int32, positions int32)`` over ``split``, centre crops."""
        source = {"train": self.train, "test": self.test}[split]
        if positions is None:
            positions = np.arange(len(source.labels))
        plan, num_batches = grain_pipeline.eval_plan(
            positions, batch_size, jax.process_index(), jax.process_count()
        )
        local_batches = self.iterator(
            source, plan=plan, num_steps=num_batches, mode="eval", global_batch_size=batch_size
        )
        outs, left = [], len(positions)
        for local in local_batches:
            batch = grain_pipeline.make_global_batch(self.mesh, local)
            out = runtime.to_host(fn(batch["images"], batch["labels"], batch["positions"]))
            real = min(left, batch_size)
            outs.append(jax.tree.map(lambda x, r=real: x[:r], out))
            left -= real
        _close(local_batches)
        return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def default_num_workers() -> int:
    """Decoding threads when ``data.num_workers`` is 0: this process's CPU cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
