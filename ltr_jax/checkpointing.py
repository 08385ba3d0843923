"""Orbax checkpoints of a stage's train state: the only module that imports Orbax."""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

from ltr_jax.errors import UserError


class CorruptCheckpointError(UserError, RuntimeError):
    """A checkpoint exists but cannot be read back into the expected state."""


class _UnretrievedFutures(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" reports. A failed restore
    leaves one per array read that failed, each with a TensorStore traceback (thousands of
    lines), burying the one-line error that says what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


class Checkpointer:
    """Saves and restores a pytree per step under one directory (newest ``max_to_keep``)."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def replace(self, step: int, state) -> None:
        """Saves ``step``, first deleting a checkpoint of that step if one exists."""
        if step in self._manager.all_steps():
            self._manager.delete(step)
        self.save(step, state)

    def restore_latest(self, target):
        """Restores the newest checkpoint into the structure of ``target``; ``target`` if none.

        Raises:
          CorruptCheckpointError: the newest checkpoint cannot be read. Nothing is deleted:
            the message names the folder to move aside to resume from the one before it.
        """
        step = self.latest_step()
        if step is None:
            return target
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        quiet, asyncio_log = _UnretrievedFutures(), logging.getLogger("asyncio")
        asyncio_log.addFilter(quiet)  # kept after a failure: its futures are collected later
        try:
            restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # Orbax raises many types for truncated/corrupt files
            path = os.path.join(self.directory, str(step))
            older = [s for s in self._manager.all_steps() if s < step]
            hint = (
                f"move it aside (e.g. `mv {path} {path}.corrupt`) to resume from step {max(older)}"
                if older
                else f"move it aside (e.g. `mv {path} {path}.corrupt`) "
                "to restart this stage from scratch"
            )
            raise CorruptCheckpointError(
                f"Checkpoint {path} cannot be restored ({type(e).__name__}: {_first_line(e)}). "
                "It may be "
                f"truncated or from an incompatible config. Nothing was changed: {hint}."
            ) from e
        asyncio_log.removeFilter(quiet)
        logging.info("Restored %s at step %d.", self.directory, step)
        return restored

    def restore_latest_raw(self):
        """The newest checkpoint as saved (nested dicts of arrays, no target), or None.

        For readers that know no train state (`ltr_jax.inference`: the trained variables).

        Raises:
          CorruptCheckpointError: the newest checkpoint cannot be read.
        """
        step = self.latest_step()
        if step is None:
            return None
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore())
        except Exception as e:  # Orbax raises many types for truncated/corrupt files
            path = os.path.join(self.directory, str(step))
            raise CorruptCheckpointError(
                f"Checkpoint {path} cannot be read ({type(e).__name__}: {_first_line(e)}): "
                "rerun the stage in a copy of the workdir to write it again."
            ) from e

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _first_line(error: Exception, limit: int = 160) -> str:
    """The start of an error's message: Orbax/TensorStore errors run to hundreds of lines."""
    lines = str(error).strip().splitlines() or [""]
    line = lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
