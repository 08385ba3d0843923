"""Process runtime: optional multi-host init, the one data-parallel mesh, shardings, root key."""

from __future__ import annotations

import logging
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def init_distributed(
    multihost: bool,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Initialises JAX's multi-process runtime when ``multihost`` is set.

    Arguments left None are auto-detected by ``jax.distributed.initialize`` (TPU pods, SLURM,
    Open MPI); set all three for a manual launch, e.g. several processes on one machine. Every
    process must see the same workdir (a shared filesystem or bucket): all of them read the
    Orbax checkpoints and the finished-stage results that process 0 writes.
    """
    if multihost:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    logging.info(
        "process %d/%d, %d local / %d global devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].device_kind,
    )


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over all (or the first ``num_devices``) devices, axis ``data``, Auto type."""
    devices = jax.devices()[: num_devices or jax.device_count()]
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def put_batch_sharded(mesh: Mesh, x: np.ndarray) -> jax.Array:
    """A host array (the same on every process) as a global array, batch axis over ``data``.

    Each process copies only the rows of its own devices, without the cross-process equality
    check that ``jax.device_put`` makes of host arrays.
    """
    return jax.make_array_from_callback(x.shape, batch_sharded(mesh), lambda index: x[index])


def _to_host_if_process_local(x):
    # A jax.Array committed to this process's devices (e.g. restored from a checkpoint) cannot
    # be device_put onto devices of other processes (CPU and GPU have no cross-host transfers);
    # its host copy can, since every process holds the same value. PRNG key arrays stay.
    if (
        isinstance(x, jax.Array)
        and x.is_fully_addressable
        and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    ):
        return np.asarray(x)
    return x


def put_replicated(mesh: Mesh, tree):
    """Places a pytree on every device of the mesh.

    With several processes every process must pass the same values (JAX checks that host
    arrays are equal across processes); arrays on this process's devices go through the host.
    """
    if jax.process_count() > 1:
        tree = jax.tree.map(_to_host_if_process_local, tree)
    return jax.device_put(tree, replicated(mesh))


def to_host(tree):
    """The global value of every array of ``tree`` as numpy, on every process.

    Arrays split over devices of several processes are all-gathered (a collective: every
    process must call this); others, replicated ones included, are copied from this process's
    devices.
    """

    def fetch(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)

    return jax.tree.map(fetch, tree)


def check_same_on_all_processes(tree, what: str) -> None:
    """Raises if ``tree`` (host values) differs between processes; nothing with one process."""
    if jax.process_count() > 1:
        multihost_utils.assert_equal(tree, f"{what} differs between processes.")


def root_key(seed: int) -> jax.Array:
    return jax.random.key(seed)


def apply_in_batches(fn: Callable, arrays: tuple, batch_size: int, mesh) -> np.ndarray:
    """Applies a jitted ``fn(*batch)`` over host arrays in padded, sharded batches.

    The last batch is padded to full size (so one compiled shape serves every batch) and the
    padded rows are dropped from the output.

    Returns:
      The outputs of every real row, concatenated on the host (of every process).
    """
    n = len(arrays[0])
    outs = []
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        real = len(chunk[0])
        chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - real, 0)]) for c in chunk]
        out = fn(*[put_batch_sharded(mesh, c) for c in chunk])
        outs.append(jax.tree.map(lambda x, r=real: x[:r], to_host(out)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)
