"""The records of the dataset layer: what a loader returns and the one `LongTail` it becomes.

A loader of the registry (`registry`) returns a `Dataset` (both splits as uint8 arrays in
memory) or a `StreamedDataset` (both splits as random-access sources of encoded images). Every
split, of either kind, has int ``labels`` and ``take(positions)`` (the same split cut to
``positions``); `long_tail.apply` cuts both splits once, for both kinds, and returns a
`LongTail`: the record the input layer (`ltr_jax.data.input`) is made from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ltr_jax.errors import UserError


class DatasetError(UserError, ValueError):
    """Your dataset's files or layout do not fit its source (run.py prints it, no traceback)."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The data (archive, folder, prepared dataset) is neither there nor downloadable."""


class UnverifiedArchiveError(UserError, ValueError):
    """The archive's (or prepared dataset's) sha256 is not the official one."""


@runtime_checkable
class Cuttable(Protocol):
    """A split of either kind: labels, and the same split cut to chosen positions."""

    labels: np.ndarray

    def take(self, positions: np.ndarray) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory, in the source's own order."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # int32 [N]
    index: np.ndarray  # int64 [N], position in the source's own (official) order

    def take(self, positions: np.ndarray) -> Split:
        """The images at ``positions`` (int [M]), labels as int32."""
        return Split(
            images=self.images[positions],
            labels=self.labels[positions].astype(np.int32),
            index=self.index[positions],
        )


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Both splits of a dataset in memory, balanced or not (`long_tail.apply` cuts them)."""

    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    verified: bool  # archive checksum verified (True for synthetic and your own data)


@dataclasses.dataclass(frozen=True)
class SubsetSource:
    """Records ``positions`` of a random-access ``source``, as a source (picklable)."""

    base: Any
    positions: np.ndarray  # int64 [M]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        return self.base[int(self.positions[i])]


@dataclasses.dataclass(frozen=True)
class SourceSplit:
    """A streamed split: ``source[i] -> {"image": bytes, "label": int, "index": int}``."""

    source: Any
    labels: np.ndarray  # int32 [N], in source order (without reading the records)

    def take(self, positions: np.ndarray) -> SourceSplit:
        positions = np.asarray(positions, np.int64)
        return SourceSplit(SubsetSource(self.source, positions), self.labels[positions])


@dataclasses.dataclass(frozen=True)
class StreamedDataset:
    """Both splits as random-access sources of encoded images, for the streaming inputs.

    ``identity`` lists what identifies the images beyond their labels (the decoded store's
    fingerprint includes it): empty for files on disk, the generator's settings for
    synthetic images.
    """

    train: Cuttable  # .source[i] -> {"image": bytes, "label": int, "index": int}; .labels [N]
    test: Cuttable
    num_classes: int
    class_names: tuple[str, ...]
    identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ShotGroups:
    """Class ids of the Many / Medium / Few groups (by training count)."""

    many: np.ndarray
    medium: np.ndarray
    few: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("many", "medium", "few")}


@dataclasses.dataclass(frozen=True)
class LongTail:
    """A dataset made long-tailed and capped: what the input layer is made from.

    Attributes:
      name: the dataset's name in results and reports (``data.dataset_name``, else the
        folder or file name of your own data, else ``data.name``).
      train: the long-tailed, capped training split (a `Split` in memory, else a streamed
        split with ``.source`` and ``.labels``).
      test: the (capped) test split, of the same kind.
      num_classes: ``C``.
      class_names: ``C`` names.
      class_counts: int64 ``[C]`` training images per class.
      groups: the Many / Medium / Few classes of ``class_counts``.
      streamed: whether the splits are sources of encoded images (else arrays in memory).
      identity: what identifies a streamed dataset's images beyond their labels.
    """

    name: str
    train: Any
    test: Any
    num_classes: int
    class_names: tuple[str, ...]
    class_counts: np.ndarray
    groups: ShotGroups
    streamed: bool
    identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def train_labels(self) -> np.ndarray:
        """int32 ``[N]`` training labels."""
        return np.asarray(self.train.labels, np.int32)

    @property
    def test_labels(self) -> np.ndarray:
        """int32 ``[M]`` test labels."""
        return np.asarray(self.test.labels, np.int32)
