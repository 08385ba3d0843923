"""The sampler registry: ``<section>.sampler`` -> its device sampler and its host plan; and
`Sampling`, how a stage asks an input for its batches.

Data in device memory samples its batches inside the jitted step (`Sampler.device`, from the
pure functions of `ltr_jax.data.input.sampler`); streamed data asks the host for a
`grain_pipeline.StepPlan` with the same contract, a pure function of (seed, step)
(`Sampler.host_plan`). One entry here makes a name valid in the config (``ce.sampler``,
``crt.sampler``) and usable by every input::

    SAMPLERS["my_sampler"] = Sampler(
        device=lambda key, labels, num_classes, batch_size: lambda step: ...,  # int32 [B]
        host_plan=lambda labels, num_classes, batch_size, seed, pi, pc: StepPlan(...),
    )
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ltr_jax.data.input import grain_pipeline, sampler
from ltr_jax.registry import Registry

DeviceSampler = Callable[[jax.Array], jax.Array]  # step -> int32 [batch_size] positions


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One sampler, for both kinds of input.

    Attributes:
      device: ``device(key, labels [N], num_classes, batch_size) -> fn(step)``: positions of
        the step's batch, jittable in ``step`` (``labels`` is a host array: tables built
        from it become constants of the compiled step).
      host_plan: ``host_plan(labels [N], num_classes, batch_size, seed, process_index,
        process_count) -> grain_pipeline.StepPlan`` of the same batches' positions, in NumPy.
    """

    device: Callable[[jax.Array, np.ndarray, int, int], DeviceSampler]
    host_plan: Callable[[np.ndarray, int, int, Any, int, int], grain_pipeline.StepPlan]


SAMPLERS: Registry[Sampler] = Registry(
    "sampler",
    {
        "uniform": Sampler(  # epochs of shuffling without replacement
            device=lambda key, labels, num_classes, batch_size: (
                lambda step: sampler.uniform_batch(key, step, len(labels), batch_size)
            ),
            host_plan=lambda labels, num_classes, batch_size, seed, pi, pc: (
                grain_pipeline.BatchPlan(len(labels), batch_size, seed, pi, pc)
            ),
        ),
        "class_balanced": Sampler(  # a class uniformly, then one of its images uniformly
            device=lambda key, labels, num_classes, batch_size: (
                lambda step: sampler.class_balanced_batch(
                    key, step, labels, num_classes, batch_size
                )
            ),
            host_plan=grain_pipeline.class_balanced_plan,
        ),
    },
)


def make_batch_sampler(
    kind: str, key: jax.Array, labels: np.ndarray, num_classes: int, batch_size: int
) -> DeviceSampler:
    """Returns ``fn(step) -> int32 [batch_size]`` positions for the named sampler, on device."""
    return SAMPLERS[kind].device(key, labels, num_classes, batch_size)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a stage samples its training batches.

    Attributes:
      kind: a `SAMPLERS` name: ``uniform`` (epochs without replacement),
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


def check_sampling(sampling: Sampling) -> None:
    """Refuses a `Sampling` no input supports (an unknown sampler lists the valid ones)."""
    if not sampling.drop_last and not sampling.over_subset:
        raise ValueError("drop_last=False supports only sampling over a subset (probe, stage 2).")
    if sampling.over_subset and sampling.kind != "uniform":
        raise ValueError("Sampling from TrainState.subset supports only the uniform sampler.")
    if sampling.over_subset and sampling.subset_size < 1:
        raise ValueError(f"Sampling.subset_size must be >= 1, got {sampling.subset_size}.")
    SAMPLERS[sampling.kind]  # an unknown name fails with the valid ones
