"""One process of ``test_multihost.py``'s library checks (not a test module itself).

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR

Checks, with arrays spread over the devices of every process: host <-> global array round
trips, ``apply_in_batches`` with a padded last batch, Orbax save/restore of replicated and
sharded arrays from all processes, restoring into process-local arrays and replicating them
(what ``stages.common.load_module`` + ``runtime.put_replicated`` do), and the cross-process
equality check. Writes WORKDIR/ok_<PROCESS_ID> when every check passed.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax import checkpointing, runtime


def check_host_round_trips(mesh) -> None:
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    sharded = runtime.put_batch_sharded(mesh, x)
    assert not sharded.is_fully_addressable
    np.testing.assert_array_equal(runtime.to_host(sharded), x)
    replicated = runtime.put_replicated(mesh, x)
    assert not replicated.is_fully_addressable and replicated.is_fully_replicated
    np.testing.assert_array_equal(runtime.to_host(replicated), x)
    doubled = runtime.apply_in_batches(jax.jit(lambda a: 2 * a), (np.arange(10.0),), 4, mesh)
    np.testing.assert_array_equal(doubled, 2 * np.arange(10.0))  # 3 batches, last one padded


def check_checkpoints(mesh, workdir: str) -> None:
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    state = {
        "rep": runtime.put_replicated(mesh, np.arange(6.0)),
        "shard": runtime.put_batch_sharded(mesh, x),
    }
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "ckpt"))
    ckpt.save(3, state)
    ckpt.close()
    target = jax.tree.map(jnp.zeros_like, state)  # same (global) shardings
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "ckpt"))
    restored = ckpt.restore_latest(target)
    np.testing.assert_array_equal(runtime.to_host(restored["shard"]), x)
    assert restored["shard"].sharding == state["shard"].sharding
    # Into arrays of this process only (a fresh module's variables), then replicated.
    local = ckpt.restore_latest({"rep": jnp.zeros(6), "shard": jnp.zeros((8, 3))})
    ckpt.close()
    assert local["rep"].is_fully_addressable
    replicated = runtime.put_replicated(mesh, local)
    np.testing.assert_array_equal(runtime.to_host(replicated["shard"]), x)


def check_equality_check(process_id: int) -> None:
    runtime.check_same_on_all_processes(np.arange(5), "the same values")
    try:
        runtime.check_same_on_all_processes(np.array([process_id]), "a process id")
    except AssertionError as e:
        assert "a process id differs between processes" in str(e)
    else:
        raise AssertionError("different values passed the equality check")


def main(process_id: int, num_processes: int, port: int, workdir: str) -> None:
    runtime.init_distributed(
        True,
        coordinator_address=f"localhost:{port}",
        num_processes=num_processes,
        process_id=process_id,
    )
    assert jax.process_count() == num_processes
    mesh = runtime.make_mesh()
    check_host_round_trips(mesh)
    check_checkpoints(mesh, workdir)
    check_equality_check(process_id)
    with open(os.path.join(workdir, f"ok_{process_id}"), "w") as f:
        f.write("ok")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
