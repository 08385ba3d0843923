"""Where a stage's images come from: the whole set in device memory, or streamed from disk.

Stages see one interface and never which kind they got (the dataset name decides), typed by
`protocols.DataInput` and `protocols.Feed`:

- host facts: ``num_classes``, ``class_names``, ``train_labels``, ``class_counts``, ``groups``,
  ``test_labels``;
- ``train_feed(sampling, augment=..., strength=..., num_views=...)`` -> a feed:
  ``feed.data(step, state)`` is what `train_lib.run_loop` hands the jitted step,
  ``feed.batch_fn(data, state)`` picks the batch inside the step, and
  ``feed.view(key, batch, v)`` is augmented view v of the batch (float32 [B, S, S, 3]);
  ``feed.set_population(positions, step)`` tells it a new stage-2 draw starts at ``step``,
  and ``feed.close()`` stops its decoding workers when the loop is done;
- ``map_split(fn, split, positions, batch_size)``: an evaluation pass (no augmentation) of
  ``fn(images, labels, positions)`` over chosen images of ``train`` or ``test``, outputs on
  the host (of every process).

`InMemoryInput` (CIFAR, synthetic): the long-tailed training set lives on every device; the
step samples positions with `sampler` (jax.random) and gathers its batch on device; every
augmentation runs on device (`augment`).

`StreamingInput` (ImageNet-LT, iNaturalist 2018, synthetic JPEGs): images are decoded from a
random-access source by Grain worker threads or processes (`streaming`), each process loading
its rows of every global batch; the batch order is a NumPy function of (seed, step)
(`streaming.StepPlan`), so resumes are exact as in memory. The host does the random resized
crop + flip (one crop per view), the device the rest of a recipe (SimCLR's colour jitter,
grayscale and blur); evaluation uses the standard resize-to-S/0.875 + centre crop.

`DecodedInput` (``data.format = "decoded"``, the default of the ImageNet-LT and iNaturalist
configs): the same sets decoded once into a memory-mapped store of S x S uint8 squares
(`decoded_store`); the host only gathers this process's rows of each step (same `StepPlan`s,
so resumes stay exact) and every augmentation, the random resized crop to ``data.image_size``
included, runs on device; evaluation's resize + centre crop too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from ltr_jax import runtime, train_lib
from ltr_jax.data import (
    augment,
    augmentations,
    batches,
    decoded_store,
    long_tail,
    sampler,
    samplers,
    streaming,
)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a stage samples its training batches.

    Attributes:
      kind: a `samplers.SAMPLERS` name: ``uniform`` (epochs without replacement),
        ``class_balanced``, ...
      key: the sampler's key (the data order is a pure function of key and step).
      batch_size: global batch size.
      subset_size: None: batches are drawn from every training image; ``n``: from the ``n``
        training positions held in ``TrainState.subset`` (e.g. stage 2's current draw), which
        the feed is told of by ``set_population``.
      drop_last: over a subset only: False keeps each epoch's last partial batch, its padding
        rows weighted 0 in ``batch["weights"]`` (``sampler.epoch_batch``; in-memory data only).
    """

    kind: str
    key: jax.Array
    batch_size: int
    subset_size: int | None = None
    drop_last: bool = True

    @property
    def over_subset(self) -> bool:
        """Whether batches are drawn from ``TrainState.subset`` (not the whole training set)."""
        return self.subset_size is not None


def key_to_seed(key: jax.Array) -> list[int]:
    """NumPy seed entropy of a JAX key (host samplers use it)."""
    return np.asarray(jax.random.key_data(key)).reshape(-1).tolist()


def _check_sampling(sampling: Sampling) -> None:
    if not sampling.drop_last and not sampling.over_subset:
        raise ValueError("drop_last=False supports only sampling over a subset (probe, stage 2).")
    if sampling.over_subset and sampling.kind != "uniform":
        raise ValueError("Sampling from TrainState.subset supports only the uniform sampler.")
    if sampling.over_subset and sampling.subset_size < 1:
        raise ValueError(f"Sampling.subset_size must be >= 1, got {sampling.subset_size}.")
    samplers.lookup(sampling.kind)  # an unknown name fails with the valid ones


def _index_names(num_classes: int) -> tuple[str, ...]:
    """Class names "0".."C-1" for a dataset without names."""
    return tuple(str(c) for c in range(num_classes))


# --------------------------------------------------------------------------------------------
# In device memory.


def device_augment(name: str, strength: float) -> Callable:
    """``fn(key, float images [B, H, W, 3]) -> images`` for a named augmentation, on device
    (`augmentations.Augmentation.device`)."""
    return augmentations.lookup(name).device(strength)


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
            sample = samplers.make_batch_sampler(
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
            self._device_data = batches.device_train_data(self._data.long_tail, self._mesh)
        return self._device_data

    def batch_fn(self, device_data: dict, state) -> dict:
        positions, weights = self._sample(state.step)
        if self._over_subset:
            positions = state.subset[positions]
        batch = batches.gather(device_data, positions, self._mesh)
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

    def __init__(self, long_tail_data: batches.LongTailData, mesh: jax.sharding.Mesh):
        self.long_tail, self.mesh = long_tail_data, mesh
        self.num_classes = long_tail_data.num_classes
        self.train_labels = long_tail_data.train_labels
        self.test_labels = long_tail_data.test_labels
        self.class_counts = long_tail_data.class_counts
        self.groups = long_tail_data.groups
        self.class_names = long_tail_data.class_names or _index_names(self.num_classes)

    def train_feed(
        self,
        sampling: Sampling,
        *,
        augment: str = "none",
        strength: float = 1.0,
        num_views: int = 1,
    ) -> _DeviceFeed:
        del num_views
        _check_sampling(sampling)
        return _DeviceFeed(self, sampling, device_augment(augment, strength))

    def map_split(
        self, fn: Callable, split: str, positions: np.ndarray | None = None, batch_size: int = 512
    ) -> Any:
        """``fn(images uint8, labels int32, positions int32)`` over ``split`` in padded batches."""
        lt = self.long_tail
        images, labels = {
            "train": (lt.train_images, lt.train_labels),
            "test": (lt.test_images, lt.test_labels),
        }[split]
        if positions is None:  # the whole split: no host copy of its images
            positions = np.arange(len(labels), dtype=np.int32)
        else:
            positions = np.asarray(positions, np.int32)
            images, labels = images[positions], labels[positions]
        return train_lib.apply_in_batches(fn, (images, labels, positions), batch_size, self.mesh)


# --------------------------------------------------------------------------------------------
# Streamed from disk.


def host_augment(name: str, strength: float) -> Callable:
    """The device part of a named augmentation whose crop the host already did
    (`augmentations.Augmentation.after_host_crop`)."""
    return augmentations.lookup(name).after_host_crop(strength)


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """Host pipeline settings from ``config.data``."""

    image_size: int
    num_workers: int
    prefetch_steps: int
    num_processes: int = 0
    draft: bool = False


class _StreamFeed:
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
        self._mode = augmentations.lookup(augment_name).host_crop
        self._num_views = num_views if self._mode == "train" else 1
        self._seed = key_to_seed(sampling.key)
        self._subset: np.ndarray | None = None
        self._iterator, self._next_step = None, -1

    def _plan(self) -> streaming.StepPlan:
        s, pi, pc = self._sampling, jax.process_index(), jax.process_count()
        if s.over_subset:
            inner = streaming.BatchPlan(len(self._subset), s.batch_size, self._seed, pi, pc)
            positions = streaming.SubsetPositions(self._subset, inner)
            return streaming.StepPlan(positions, s.batch_size, self._seed, pi, pc)
        host_plan = samplers.lookup(s.kind).host_plan
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
        return streaming.make_global_batch(self._data.mesh, _without_positions(local))

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
        groups: long_tail.ShotGroups,
        mesh: jax.sharding.Mesh,
        options: StreamOptions,
        class_names: tuple[str, ...] = (),
    ):
        self.train, self.test, self.mesh, self.options = train, test, mesh, options
        self.num_classes = num_classes
        self.class_names = tuple(class_names) or _index_names(num_classes)
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
        spec = streaming.IteratorSpec(
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
        return streaming.make_iterator(split.source, spec)

    def train_feed(
        self,
        sampling: Sampling,
        *,
        augment: str = "none",
        strength: float = 1.0,
        num_views: int = 1,
    ) -> _StreamFeed:
        _check_sampling(sampling)
        return _StreamFeed(self, sampling, augment, host_augment(augment, strength), num_views)

    def map_split(
        self, fn: Callable, split: str, positions: np.ndarray | None = None, batch_size: int = 512
    ) -> Any:
        """``fn(images uint8, labels int32, positions int32)`` over ``split``, centre crops."""
        source = {"train": self.train, "test": self.test}[split]
        if positions is None:
            positions = np.arange(len(source.labels))
        plan, num_batches = streaming.eval_plan(
            positions, batch_size, jax.process_index(), jax.process_count()
        )
        local_batches = self.iterator(
            source, plan=plan, num_steps=num_batches, mode="eval", global_batch_size=batch_size
        )
        outs, left = [], len(positions)
        for local in local_batches:
            batch = streaming.make_global_batch(self.mesh, local)
            out = runtime.to_host(fn(batch["images"], batch["labels"], batch["positions"]))
            real = min(left, batch_size)
            outs.append(jax.tree.map(lambda x, r=real: x[:r], out))
            left -= real
        _close(local_batches)
        return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


# --------------------------------------------------------------------------------------------
# From a decoded store.


def store_augment(name: str, strength: float, image_size: int, store_size: int) -> Callable:
    """``fn(key, float store squares [B, S, S, 3]) -> [B, image_size, image_size, 3]``: a named
    augmentation wholly on device, its crop taken from the store's squares
    (`augmentations.Augmentation.from_store`)."""
    eval_side = store_size * image_size / streaming.eval_resize(image_size)
    return augmentations.lookup(name).from_store(strength, image_size, eval_side)


class DecodedInput(StreamingInput):
    """A long-tailed training split and a test split from a decoded store (`decoded_store`).

    ``train`` and ``test`` are `decoded_store.DecodedSplit`s; batches are uint8 store squares
    [B, S, S, 3] gathered on the host by the streaming `StepPlan`s, cropped on device.
    """

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
        """This process's uint8 store rows of each step (views and crops are made on device)."""
        del mode, num_views, global_batch_size  # one copy per image; the plan knows the batch
        threads = max(1, min(self.options.num_workers, 4))  # a gather is a memcpy per image
        return decoded_store.make_iterator(
            split,
            plan=plan,
            start_step=start_step,
            num_steps=num_steps,
            num_threads=threads,
            prefetch_steps=max(self.options.prefetch_steps, threads),
        )

    def train_feed(
        self,
        sampling: Sampling,
        *,
        augment: str = "none",
        strength: float = 1.0,
        num_views: int = 1,
    ) -> _StreamFeed:
        _check_sampling(sampling)
        aug = store_augment(augment, strength, self.options.image_size, self.train.size)
        return _StreamFeed(self, sampling, augment, aug, num_views)

    def map_split(
        self, fn: Callable, split: str, positions: np.ndarray | None = None, batch_size: int = 512
    ) -> Any:
        """``fn(images uint8, labels int32, positions int32)`` over ``split``: centre crops
        made on device from the store (uint8 [B, image_size, image_size, 3], as streamed)."""
        crop = self._centre_crop({"train": self.train, "test": self.test}[split].size)
        return super().map_split(lambda x, y, i: fn(crop(x), y, i), split, positions, batch_size)

    def _centre_crop(self, store_size: int) -> Callable:
        """Jitted uint8 [B, S, S, 3] -> uint8 [B, image_size, image_size, 3] centre crops (one
        function per store size, so every evaluation reuses its compilation)."""
        crops = self.__dict__.setdefault("_crops", {})
        if store_size not in crops:
            centre = store_augment("none", 1.0, self.options.image_size, store_size)
            to_uint8 = lambda x: jax.numpy.round(x * 255.0).astype(jax.numpy.uint8)
            crops[store_size] = jax.jit(lambda x: to_uint8(centre(None, augment.to_float(x))))
        return crops[store_size]


# --------------------------------------------------------------------------------------------
# Choosing one.

FORMATS = ("jpeg", "decoded")  # data.format of a streamed dataset


def default_num_workers() -> int:
    """Decoding threads when ``data.num_workers`` is 0: this process's CPU cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load(data_config, mesh: jax.sharding.Mesh):
    """The input of ``config.data``: `InMemoryInput` or `StreamingInput`, by what the dataset's
    loader in the `datasets` registry returns.

    With several processes, process 0 loads first (preparing the dataset if it is not yet
    prepared) while the others wait at a barrier, then they load the prepared copy: no two
    processes write the same dataset.
    """
    if jax.process_count() == 1:
        return _load(data_config, mesh)
    barrier = lambda: multihost_utils.sync_global_devices("ltr_jax: dataset prepared")
    if jax.process_index() == 0:
        data = _load(data_config, mesh)
        barrier()
        return data
    barrier()
    return _load(data_config, mesh)


def _load(data_config, mesh: jax.sharding.Mesh):
    from ltr_jax.data import datasets, sources

    loaded = datasets.load(data_config)
    if isinstance(loaded, sources.Dataset):
        return InMemoryInput(batches.make_long_tail(loaded, data_config), mesh)
    options = StreamOptions(
        image_size=data_config.image_size,
        num_workers=data_config.num_workers or default_num_workers(),
        prefetch_steps=data_config.prefetch_steps,
        num_processes=data_config.worker_processes,
        draft=data_config.jpeg_draft,
    )
    train, test, num_classes = loaded.train, loaded.test, loaded.num_classes
    check_format(data_config)
    input_cls = StreamingInput
    if data_config.format == "decoded":
        train, test = _decoded_splits(data_config, train, test)
        input_cls = DecodedInput
    counts = np.bincount(np.asarray(train.labels), minlength=num_classes)
    groups = long_tail.shot_groups(counts, data_config.many_threshold, data_config.few_threshold)
    logging.info(
        "%s: %d training images (%d..%d per class), %d test images; many/medium/few %d/%d/%d.",
        data_config.name,
        len(train.labels),
        counts.min(),
        counts.max(),
        len(test.labels),
        len(groups.many),
        len(groups.medium),
        len(groups.few),
    )
    return input_cls(train, test, num_classes, groups, mesh, options, loaded.class_names)


def check_format(data_config) -> None:
    """Refuses an unknown ``data.format`` or a store smaller than the crops it must give."""
    if data_config.format not in FORMATS:
        raise ValueError(f"Unknown data.format {data_config.format!r}; valid: {FORMATS}.")
    eval_side = streaming.eval_resize(data_config.image_size)
    if data_config.format == "decoded" and data_config.decoded_size < eval_side:
        raise ValueError(
            f"data.decoded_size={data_config.decoded_size} is smaller than the {eval_side} "
            f"pixels evaluation resizes to for data.image_size={data_config.image_size}: set "
            f"--config.data.decoded_size={eval_side} or more."
        )


def store_directory(data_config, source_fingerprint: str) -> str:
    """``data.decoded_dir``, or ``<data_dir>/ltr_decoded/<name>-s<S>-<fingerprint>``."""
    if data_config.decoded_dir:
        return data_config.decoded_dir
    root = data_config.data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    name = f"{data_config.name}-s{data_config.decoded_size}-{source_fingerprint}"
    return os.path.join(os.path.expanduser(root), "ltr_decoded", name)


def _decoded_splits(data_config, train, test) -> tuple[Any, Any]:
    """The store of (train, test), prepared first if it is not yet complete."""
    facts = dict(
        name=data_config.name,
        test_split=data_config.test_split,
        train=train.labels,
        test=test.labels,
    )
    if data_config.name == "synthetic_jpeg":  # the labels alone do not identify its images
        facts.update(
            synthetic=data_config.synthetic.to_dict(), imbalance_factor=data_config.imbalance_factor
        )
    source_fingerprint = decoded_store.fingerprint(**facts)
    directory = store_directory(data_config, source_fingerprint)
    size = data_config.decoded_size
    if not decoded_store.is_complete(directory):
        logging.info("Preparing the decoded store of %s in %s.", data_config.name, directory)
        splits = {"train": train, "test": test}
        decoded_store.prepare_store(
            directory,
            splits,
            size=size,
            source_fingerprint=source_fingerprint,
            num_processes=data_config.prepare_processes,
        )
    store = decoded_store.open_store(directory, size, source_fingerprint)
    return store["train"], store["test"]
