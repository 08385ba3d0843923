"""`make_input`: the input layer's one entry, from a `LongTail` record to what the stages see.

A stage sees one interface (`protocols.DataInput`) and never which kind it got; the record
decides: arrays in memory -> `in_memory.InMemoryInput`; a streamed record ->
`streamed.StreamingInput` (``data.format = "jpeg"``) or `decoded.DecodedInput` (``"decoded"``,
its store prepared the first time). `load_input` is the whole path of a run: the dataset layer's
`registry.load`, then `make_input`, with the first process preparing what needs preparing.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils

from ltr_jax.data.datasets import registry
from ltr_jax.data.datasets.records import LongTail
from ltr_jax.data.input import decoded, in_memory, protocols, streamed


def stream_options(data_config) -> streamed.StreamOptions:
    """The host pipeline settings of ``config.data``."""
    return streamed.StreamOptions(
        image_size=data_config.image_size,
        num_workers=data_config.num_workers or streamed.default_num_workers(),
        prefetch_steps=data_config.prefetch_steps,
        num_processes=data_config.worker_processes,
        draft=data_config.jpeg_draft,
    )


def make_input(long_tail: LongTail, data_config, mesh: jax.sharding.Mesh) -> protocols.DataInput:
    """What the stages see of ``long_tail``: `InMemoryInput`, `StreamingInput` or `DecodedInput`.

    Args:
      long_tail: the dataset layer's record (`registry.load`).
      data_config: ``config.data`` (the streaming settings, ``format``, the store's place).
      mesh: the device mesh batches are sharded over.
    """
    if not long_tail.streamed:
        return in_memory.InMemoryInput(long_tail, mesh)
    decoded.check_format(data_config)
    train, test, input_cls = long_tail.train, long_tail.test, streamed.StreamingInput
    if data_config.format == "decoded":
        train, test = decoded.decoded_splits(long_tail, data_config)
        input_cls = decoded.DecodedInput
    return input_cls(
        train,
        test,
        long_tail.num_classes,
        long_tail.groups,
        mesh,
        stream_options(data_config),
        long_tail.class_names,
        dataset_name=long_tail.name,
    )


def load_input(data_config, mesh: jax.sharding.Mesh) -> protocols.DataInput:
    """The input of ``config.data``: its dataset loaded and long-tailed, then made an input.

    With several processes, process 0 loads first (preparing the dataset and the decoded store
    if they are not yet prepared) while the others wait at a barrier, then they load the
    prepared copy: no two processes write the same dataset.
    """
    load = lambda: make_input(registry.load(data_config), data_config, mesh)
    if jax.process_count() == 1:
        return load()
    barrier = lambda: multihost_utils.sync_global_devices("ltr_jax: dataset prepared")
    if jax.process_index() == 0:
        data = load()
        barrier()
        return data
    barrier()
    return load()
