"""The dataset registry: ``config.data.name`` -> (kind, loader), in one place.

A loader takes the read-only ``config.data`` and returns either a `sources.Dataset` (both
splits as uint8 [N, H, W, 3] arrays with labels and class names; the training split balanced
or not: ``data.imbalance_factor`` / ``data.class_counts`` then make it long-tailed, exactly as
for CIFAR) or a `user_sources.StreamedDataset` (random-access sources of encoded images,
already long-tailed, for the streaming pipeline). ``kind`` says which it returns: ``in_memory``,
``streamed``, or ``auto`` (the loader decides; ``image_folder`` streams large folders).

Built in: ``cifar10``, ``cifar100``, ``synthetic`` (in memory); ``imagenet_lt``,
``inaturalist2018``, ``synthetic_jpeg`` (streamed); ``image_folder``, ``arrays`` and
``tfds:<name>`` (any prepared TFDS image-classification dataset) for your own data. Anything
else: ``register_dataset("my_set", my_loader)`` before ``pipeline.run`` (e.g. at the top of a
config file, which run.py imports before it runs anything)::

    def my_loader(data_config) -> sources.Dataset:
        ...  # read data_config.train_path etc.; images uint8 [N, H, W, 3]
        return sources.Dataset(train=..., test=..., num_classes=C, class_names=names,
                               verified=True)

    datasets.register_dataset("my_set", my_loader)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

KINDS = ("in_memory", "streamed", "auto")
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """What the registry holds for one name."""

    kind: str  # one of KINDS
    loader: Callable[[Any], Any]  # data_config -> sources.Dataset | StreamedDataset


def _cifar(data_config):
    from ltr_jax.data import sources

    return sources.load_dataset(data_config)


def _streamed_builtin(data_config):
    from ltr_jax.data import user_sources

    if data_config.name == "synthetic_jpeg":
        from ltr_jax.data import synthetic_jpeg

        train, test, num_classes = synthetic_jpeg.make_splits(data_config)
        names = tuple(f"class_{c}" for c in range(num_classes))
        return user_sources.StreamedDataset(train, test, num_classes, names)
    from ltr_jax.data import image_lists

    ds = image_lists.load_image_list_dataset(data_config)
    names = tuple(getattr(ds, "class_names", None) or (str(c) for c in range(ds.num_classes)))
    return user_sources.StreamedDataset(ds.train, ds.test, ds.num_classes, names)


def _user(name: str) -> Callable[[Any], Any]:
    def load(data_config):
        from ltr_jax.data import user_sources

        return getattr(user_sources, f"load_{name}")(data_config)

    return load


def _builtin_registry() -> dict[str, DatasetEntry]:
    return {
        "cifar10": DatasetEntry("in_memory", _cifar),
        "cifar100": DatasetEntry("in_memory", _cifar),
        "synthetic": DatasetEntry("in_memory", _cifar),
        "imagenet_lt": DatasetEntry("streamed", _streamed_builtin),
        "inaturalist2018": DatasetEntry("streamed", _streamed_builtin),
        "synthetic_jpeg": DatasetEntry("streamed", _streamed_builtin),
        "image_folder": DatasetEntry("auto", _user("image_folder")),
        "arrays": DatasetEntry("in_memory", _user("arrays")),
    }


_BUILT_IN = frozenset(_builtin_registry())
_REGISTRY: dict[str, DatasetEntry] = _builtin_registry()


def register_dataset(name: str, loader: Callable[[Any], Any], *, kind: str = "in_memory") -> None:
    """Makes ``config.data.name=name`` load with ``loader(config.data)``.

    Args:
      name: the dataset name (not a built-in one, not starting with ``tfds:``); registering
        it again replaces its loader.
      loader: ``data_config -> sources.Dataset`` (``kind="in_memory"``), or a
        `user_sources.StreamedDataset` (``kind="streamed"``).
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
    _REGISTRY[name] = DatasetEntry(kind, loader)


def names() -> tuple[str, ...]:
    """Every registered dataset name (plus the ``tfds:<name>`` family)."""
    return (*_REGISTRY, TFDS_PREFIX + "<name>")


def lookup(name: str) -> DatasetEntry:
    """The entry of a dataset name; an unknown name fails with the valid ones."""
    if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
        tfds_name = name[len(TFDS_PREFIX) :]

        def load(data_config):
            from ltr_jax.data import user_sources

            return user_sources.load_tfds(tfds_name, data_config)

        return DatasetEntry("in_memory", load)
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown dataset name {name!r}; valid: {', '.join(names())} "
            "(or register yours with ltr_jax.data.datasets.register_dataset)."
        )
    return _REGISTRY[name]


def load(data_config):
    """``config.data``'s dataset: a `sources.Dataset` or a `user_sources.StreamedDataset`."""
    from ltr_jax.data import sources, user_sources

    entry = lookup(data_config.name)
    loaded = entry.loader(data_config)
    expected = {
        "in_memory": sources.Dataset,
        "streamed": user_sources.StreamedDataset,
        "auto": (sources.Dataset, user_sources.StreamedDataset),
    }[entry.kind]
    if not isinstance(loaded, expected):
        raise TypeError(
            f"The loader of dataset {data_config.name!r} (kind {entry.kind}) returned "
            f"{type(loaded).__name__}; it must return {getattr(expected, '__name__', expected)}."
        )
    return loaded
