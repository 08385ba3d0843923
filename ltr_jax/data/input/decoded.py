"""`DecodedInput` (``data.format = "decoded"``, the default of the ImageNet-LT and iNaturalist
configs): a streamed dataset decoded once into a memory-mapped store of S x S uint8 squares
(`decoded_store`), prepared here the first time.

The host only gathers this process's rows of each step (the streaming `StepPlan`s, so resumes
stay exact) and every augmentation, the random resized crop to ``data.image_size`` included,
runs on device; evaluation's resize + centre crop too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ltr_jax.data.datasets.records import LongTail
from ltr_jax.data.input import (
    augment,
    augment_registry,
    decoded_store,
    grain_pipeline,
    sampler_registry,
)
from ltr_jax.data.input.sampler_registry import Sampling
from ltr_jax.data.input.streamed import StreamFeed, StreamingInput

FORMATS = ("jpeg", "decoded")  # data.format of a streamed dataset


def store_augment(name: str, strength: float, image_size: int, store_size: int) -> Callable:
    """``fn(key, float store squares [B, S, S, 3]) -> [B, image_size, image_size, 3]``: a named
    augmentation wholly on device, its crop taken from the store's squares
    (`augment_registry.Augmentation.from_store`)."""
    eval_side = store_size * image_size / grain_pipeline.eval_resize(image_size)
    return augment_registry.AUGMENTS[name].from_store(strength, image_size, eval_side)


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
    ) -> StreamFeed:
        sampler_registry.check_sampling(sampling)
        aug = store_augment(augment, strength, self.options.image_size, self.train.size)
        return StreamFeed(self, sampling, augment, aug, num_views)

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


def check_format(data_config) -> None:
    """Refuses an unknown ``data.format`` or a store smaller than the crops it must give."""
    if data_config.format not in FORMATS:
        raise ValueError(f"Unknown data.format {data_config.format!r}; valid: {FORMATS}.")
    eval_side = grain_pipeline.eval_resize(data_config.image_size)
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


def decoded_splits(long_tail: LongTail, data_config) -> tuple[Any, Any]:
    """The store of the long tail's (train, test), prepared first if it is not yet complete."""
    train, test = long_tail.train, long_tail.test
    facts = dict(
        name=data_config.name,
        test_split=data_config.test_split,
        train=train.labels,
        test=test.labels,
    )
    facts.update(long_tail.identity)  # what the labels alone do not say (synthetic images)
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
