"""The dataset registry: ``config.data.name`` -> its entry, and `load`, the layer's one entry.

``load(config.data)`` looks the name up, calls the entry's loader and makes the result
long-tailed and capped in one place (`long_tail.apply`), returning one `records.LongTail` for
both kinds of data. A loader takes the read-only ``config.data`` and returns either a
`records.Dataset` (both splits as uint8 [N, H, W, 3] arrays with labels and class names, the
training split balanced or not) or a `records.StreamedDataset` (random-access sources of
encoded images, for the streaming inputs). The entry says which (``kind``): ``in_memory``,
``streamed``, or ``auto`` (the loader decides; ``image_folder`` streams large folders).

Built in: ``cifar10``, ``cifar100``, ``synthetic`` (in memory); ``imagenet_lt``,
``inaturalist2018`` (streamed, they come long-tailed), ``synthetic_jpeg`` (streamed);
``image_folder``, ``arrays`` and ``tfds:<name>`` (any prepared TFDS image-classification
dataset) for your own data. Anything else: ``register_dataset("my_set", my_loader)`` before
``pipeline.run`` (e.g. at the top of a config file, which run.py imports before it runs
anything)::

    def my_loader(data_config) -> records.Dataset:
        ...  # read data_config.train_path etc.; images uint8 [N, H, W, 3]
        return records.Dataset(train=..., test=..., num_classes=C, class_names=names,
                               verified=True)

    registry.register_dataset("my_set", my_loader)

The loaders of CIFAR and the image lists import their modules when called: both import
TensorFlow Datasets, which importing the pipeline must not (a slow optional import).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from ltr_jax.data.datasets import long_tail, own_data, records, synthetic
from ltr_jax.registry import Registry

KINDS = ("in_memory", "streamed", "auto")
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """What the registry holds for one name.

    Attributes:
      kind: one of `KINDS`: what the loader returns.
      loader: ``data_config -> records.Dataset | records.StreamedDataset``.
      long_tailed: the source comes long-tailed (ImageNet-LT, iNaturalist): the LDAM profile
        of ``data.imbalance_factor`` is not applied to it.
      smoke: the dataset a ``:smoke`` run uses instead (synthetic data of the same kind), or
        "" to keep this one, cut to a few images per class.
    """

    kind: str
    loader: Callable[[Any], Any]
    long_tailed: bool = False
    smoke: str = ""


def _cifar(data_config) -> records.Dataset:
    from ltr_jax.data.datasets import cifar  # imports TensorFlow Datasets

    return cifar.load_dataset(data_config)


def _image_list(data_config) -> records.StreamedDataset:
    from ltr_jax.data.datasets import image_lists  # imports TensorFlow Datasets

    ds = image_lists.load_image_list_dataset(data_config)
    names = tuple(ds.class_names or (str(c) for c in range(ds.num_classes)))
    return records.StreamedDataset(ds.train, ds.test, ds.num_classes, names)


def _tfds(tfds_name: str) -> DatasetEntry:
    return DatasetEntry("in_memory", lambda data_config: own_data.load_tfds(tfds_name, data_config))


def _builtin_entries() -> dict[str, DatasetEntry]:
    return {
        "cifar10": DatasetEntry("in_memory", _cifar, smoke="synthetic"),
        "cifar100": DatasetEntry("in_memory", _cifar, smoke="synthetic"),
        "synthetic": DatasetEntry("in_memory", synthetic.load_synthetic, smoke="synthetic"),
        "imagenet_lt": DatasetEntry(
            "streamed", _image_list, long_tailed=True, smoke="synthetic_jpeg"
        ),
        "inaturalist2018": DatasetEntry(
            "streamed", _image_list, long_tailed=True, smoke="synthetic_jpeg"
        ),
        "synthetic_jpeg": DatasetEntry(
            "streamed", synthetic.load_synthetic_jpeg, smoke="synthetic_jpeg"
        ),
        "image_folder": DatasetEntry("auto", own_data.load_image_folder),
        "arrays": DatasetEntry("in_memory", own_data.load_arrays),
    }


_BUILT_IN = frozenset(_builtin_entries())
DATASETS: Registry[DatasetEntry] = Registry(
    "dataset name",
    _builtin_entries(),
    prefixes={TFDS_PREFIX: _tfds},
    hint="(or register yours with ltr_jax.data.datasets.registry.register_dataset)",
)


def register_dataset(name: str, loader: Callable[[Any], Any], *, kind: str = "in_memory") -> None:
    """Makes ``config.data.name=name`` load with ``loader(config.data)``.

    Args:
      name: the dataset name (not a built-in one, not starting with ``tfds:``); registering
        it again replaces its loader.
      loader: ``data_config -> records.Dataset`` (``kind="in_memory"``), or a
        `records.StreamedDataset` (``kind="streamed"``).
      kind: ``in_memory``, ``streamed`` or ``auto`` (the loader's result decides).

    Raises:
      ValueError: an invalid kind, or a built-in name.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown dataset kind {kind!r}; valid: {', '.join(KINDS)}.")
    if name.startswith(TFDS_PREFIX):
        raise ValueError(f"Dataset names starting with {TFDS_PREFIX!r} are read from TFDS.")
    if name in _BUILT_IN:
        raise ValueError(f"Dataset name {name!r} is built in; choose another name.")
    # A config file may be imported more than once (run.py checks overrides, then loads it):
    # registering a name again replaces its loader.
    DATASETS[name] = DatasetEntry(kind, loader)


def dataset_name(data_config) -> str:
    """The dataset's name in results: ``data.dataset_name``, else the name of your own data's
    folder or file (the folder above a ``train`` folder), else ``data.name``."""
    given = data_config.get("dataset_name")
    path = data_config.get("train_path")
    if given or not path:
        return given or data_config.name
    first = os.path.normpath(path.split(",")[0].strip())
    base = os.path.basename(first)
    if base.lower() in ("train", "training"):
        base = os.path.basename(os.path.dirname(first)) or base
    return os.path.splitext(base)[0] or data_config.name


def load_source(data_config) -> records.Dataset | records.StreamedDataset:
    """``config.data``'s dataset as its loader returns it (not yet long-tailed nor capped).

    Raises:
      UnknownNameError: ``data.name`` is not registered (the message lists the valid ones).
      TypeError: the loader returned something else than its entry's kind.
    """
    entry = DATASETS[data_config.name]
    loaded = entry.loader(data_config)
    expected = {
        "in_memory": records.Dataset,
        "streamed": records.StreamedDataset,
        "auto": (records.Dataset, records.StreamedDataset),
    }[entry.kind]
    if not isinstance(loaded, expected):
        raise TypeError(
            f"The loader of dataset {data_config.name!r} (kind {entry.kind}) returned "
            f"{type(loaded).__name__}; it must return {getattr(expected, '__name__', expected)}."
        )
    return loaded


def load(data_config) -> records.LongTail:
    """``config.data``'s dataset, long-tailed and capped (`long_tail.apply`, the one place): one
    `records.LongTail` of either kind, what `ltr_jax.data.input.make.make_input` takes."""
    entry = DATASETS[data_config.name]
    return long_tail.apply(
        load_source(data_config),
        data_config,
        name=dataset_name(data_config),
        long_tailed=entry.long_tailed,
    )
