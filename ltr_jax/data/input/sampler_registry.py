"""The sampler registry: ``<section>.sampler`` -> its device sampler and its host plan.

Data in device memory samples its batches inside the jitted step (`Sampler.device`, from the
pure functions of `ltr_jax.data.sampler`); streamed data asks the host for a `streaming.StepPlan`
with the same contract, a pure function of (seed, step) (`Sampler.host_plan`). One entry here
makes a name valid in the config (``ce.sampler``, ``crt.sampler``) and usable by every input::

    SAMPLERS["my_sampler"] = Sampler(
        device=lambda key, labels, num_classes, batch_size: lambda step: ...,  # int32 [B]
        host_plan=lambda labels, num_classes, batch_size, seed, pi, pc: streaming.StepPlan(...),
    )
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ltr_jax.data import sampler, streaming

DeviceSampler = Callable[[jax.Array], jax.Array]  # step -> int32 [batch_size] positions


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One sampler, for both kinds of input.

    Attributes:
      device: ``device(key, labels [N], num_classes, batch_size) -> fn(step)``: positions of
        the step's batch, jittable in ``step`` (``labels`` is a host array: tables built
        from it become constants of the compiled step).
      host_plan: ``host_plan(labels [N], num_classes, batch_size, seed, process_index,
        process_count) -> streaming.StepPlan`` of the same batches' positions, in NumPy.
    """

    device: Callable[[jax.Array, np.ndarray, int, int], DeviceSampler]
    host_plan: Callable[[np.ndarray, int, int, Any, int, int], streaming.StepPlan]


SAMPLERS: dict[str, Sampler] = {
    "uniform": Sampler(  # epochs of shuffling without replacement
        device=lambda key, labels, num_classes, batch_size: (
            lambda step: sampler.uniform_batch(key, step, len(labels), batch_size)
        ),
        host_plan=lambda labels, num_classes, batch_size, seed, pi, pc: streaming.BatchPlan(
            len(labels), batch_size, seed, pi, pc
        ),
    ),
    "class_balanced": Sampler(  # a class uniformly, then one of its images uniformly
        device=lambda key, labels, num_classes, batch_size: (
            lambda step: sampler.class_balanced_batch(key, step, labels, num_classes, batch_size)
        ),
        host_plan=streaming.class_balanced_plan,
    ),
}


def lookup(name: str) -> Sampler:
    """The registered sampler ``name``; an unknown name fails with the valid ones."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def make_batch_sampler(
    kind: str, key: jax.Array, labels: np.ndarray, num_classes: int, batch_size: int
) -> DeviceSampler:
    """Returns ``fn(step) -> int32 [batch_size]`` positions for the named sampler, on device."""
    return lookup(kind).device(key, labels, num_classes, batch_size)
