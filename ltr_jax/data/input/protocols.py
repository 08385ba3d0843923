"""The typed interfaces between the stages and their data: `DataInput` and `Feed`.

`ltr_jax.data.input` has three inputs (`InMemoryInput`, `StreamingInput`, `DecodedInput`) and
two feeds; a stage sees only these protocols, so a new kind of input is a class with these
members (checked structurally: ``isinstance(x, DataInput)`` holds for any object that has them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from ltr_jax.data.datasets import records


@runtime_checkable
class Feed(Protocol):
    """A stage's training batches (from `DataInput.train_feed`).

    ``data(step, state)`` is what the training loop hands the jitted step at ``step``;
    ``batch_fn(data, state)`` picks the batch inside the step (``{"images", "labels"}``);
    ``view(key, batch, v)`` is augmented view ``v`` of it (float32 ``[B, S, S, 3]``);
    ``set_population(positions, step)`` says the training subset (``TrainState.subset``)
    changes at ``step``; ``close()`` stops any decoding workers.
    """

    def data(self, step: int, state: Any) -> Any: ...

    def batch_fn(self, data: Any, state: Any) -> dict: ...

    def view(self, key: jax.Array, batch: dict, v: int = 0) -> jax.Array: ...

    def set_population(self, positions: np.ndarray, step: int) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class DataInput(Protocol):
    """A long-tailed training set and a test set, as the stages see them.

    Attributes:
      dataset_name: the dataset's name in results (`registry.dataset_name`).
      num_classes: ``C``.
      class_names: ``C`` names.
      train_labels: int32 ``[N]`` labels of the long-tailed training set.
      test_labels: int32 ``[M]`` labels of the test set.
      class_counts: ``[C]`` training images per class.
      groups: the Many / Medium / Few classes.
      mesh: the device mesh batches are sharded over.
    """

    dataset_name: str
    num_classes: int
    class_names: tuple[str, ...]
    train_labels: np.ndarray
    test_labels: np.ndarray
    class_counts: np.ndarray
    groups: records.ShotGroups
    mesh: jax.sharding.Mesh

    def train_feed(
        self, sampling: Any, *, augment: str = "none", strength: float = 1.0, num_views: int = 1
    ) -> Feed:
        """The feed of ``sampling`` (a `Sampling`) with a registered augmentation."""
        ...

    def map_split(
        self,
        fn: Callable,
        split: str,
        positions: np.ndarray | None = None,
        batch_size: int = 512,
    ) -> Any:
        """``fn(images uint8, labels int32, positions int32)`` over ``split`` (``train`` or
        ``test``) without augmentation, in padded batches; outputs on the host."""
        ...
