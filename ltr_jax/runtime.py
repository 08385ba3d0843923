"""Process runtime: optional multi-host init, the one data-parallel mesh, shardings, root key."""

from __future__ import annotations

import logging

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def init_distributed(multihost: bool) -> None:
    """Initialises JAX's multi-process runtime (coordinator, ids from the environment)."""
    if multihost:
        jax.distributed.initialize()
    logging.info(
        "process %d/%d, %d local / %d global devices: %s",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        jax.devices()[0].device_kind,
    )  # fmt: skip


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


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh.")


def put_replicated(mesh: Mesh, tree):
    """Places a host pytree on every device of the mesh (identical copies on every process)."""
    return jax.device_put(tree, replicated(mesh))


def root_key(seed: int) -> jax.Array:
    return jax.random.key(seed)
