"""Clean stops: a run asked to stop ends at a step boundary with a checkpoint, then exits 75.

A stop is asked for by SIGTERM or SIGINT, by a wall-clock deadline given outside the config
(``LTR_DEADLINE_UNIX``: seconds since the epoch, so setting it never blocks a resume as a
config change would), or by a TPU / Cloud preemption notice where JAX exposes one
(``multihost_utils.reached_preemption_sync_point``). ``train_lib.run_loop`` polls a
:class:`Stopper` after every step; when it says stop, the loop saves a checkpoint and raises
:class:`Stopped`, which ``run.py`` turns into exit code :data:`EXIT_CODE`. Rerunning the same
command resumes from that checkpoint.

Every process of a multi-host run must stop at the same step (checkpoint saves are
collective), so the processes agree: every ``agree_every`` steps they all-gather their local
"stop" and "checkpoint due" flags and act on any of them. A single process decides alone,
after every step, at no cost (no device sync).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np

from ltr_jax.errors import UserError

EXIT_CODE = 75  # EX_TEMPFAIL of sysexits.h: stopped cleanly, rerun the same command to resume
DEADLINE_ENV = "LTR_DEADLINE_UNIX"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EnvironmentVariableError(UserError, ValueError):
    """An environment variable that ltr_jax reads holds a value it cannot use."""


class Stopped(Exception):
    """A run stopped cleanly at ``step`` of ``stage`` (checkpoint saved) for ``reason``;
    ``step`` None: before ``stage`` (re)started."""

    def __init__(self, stage: str, step: int | None, reason: str):
        where = f"{stage} stopped at step {step}" if step is not None else f"stopped before {stage}"
        super().__init__(f"{where} ({reason}); rerun to resume.")
        self.stage, self.step, self.reason = stage, step, reason


def deadline_from_env(environ=None) -> float | None:
    """The deadline in ``$LTR_DEADLINE_UNIX`` (seconds since the epoch), None when unset.

    Raises:
      EnvironmentVariableError: the variable is set but is not a finite number.
    """
    value = (os.environ if environ is None else environ).get(DEADLINE_ENV, "").strip()
    if not value:
        return None
    try:
        deadline = float(value)
    except ValueError:
        deadline = math.nan
    if not math.isfinite(deadline):
        raise EnvironmentVariableError(
            f"{DEADLINE_ENV}={value!r} is not a number: set it to seconds since the epoch, "
            f"e.g. {DEADLINE_ENV}=$(( $(date +%s) + 560 )), or unset it."
        )
    return deadline


def _wall_clock() -> float:
    return time.time()


def _allgather_flags(flags: np.ndarray) -> np.ndarray:
    """[num_processes, len(flags)] flags of every process."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(flags))


def _preemption_service_running() -> bool:
    """True where ``jax.distributed`` runs with its preemption service (TPU / Cloud)."""
    from jax._src import distributed

    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


def _preemption_reached(step: int) -> bool:
    """True on every process at the sync step after a preemption notice (TPU / Cloud)."""
    if not _preemption_service_running():
        return False
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(step)


class Stopper:
    """Decides at step boundaries whether to stop (and whether a checkpoint is due).

    Args:
      deadline: wall-clock deadline (``time.time()`` seconds); None: none.
      agree_every: multi-process runs agree every this many steps (e.g. the log interval).
      clock: the wall clock (default ``time.time``; a test may pass a fake one).
      gather: all-gathers a flag vector across processes (a test may pass a fake one).
      process_count: number of processes (default: ``jax.process_count()``).
    """

    def __init__(
        self,
        deadline: float | None = None,
        *,
        agree_every: int = 1,
        clock: Callable[[], float] | None = None,
        gather: Callable[[np.ndarray], np.ndarray] = _allgather_flags,
        process_count: int | None = None,
    ):
        self.deadline, self.agree_every = deadline, max(int(agree_every), 1)
        self.clock, self.gather = clock, gather
        self.process_count = jax.process_count() if process_count is None else process_count
        self.signal_name: str | None = None

    @classmethod
    def from_env(cls, **kw) -> Stopper:
        """A stopper with the deadline of ``$LTR_DEADLINE_UNIX`` (if set)."""
        return cls(deadline_from_env(), **kw)

    def request(self, reason: str) -> None:
        """Asks for a stop at the next step boundary (what the signal handlers call)."""
        self.signal_name = self.signal_name or reason

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.signal_name is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        logging.warning("%s received: stopping at the next step boundary.", name)
        self.request(name)

    @contextlib.contextmanager
    def signals(self) -> Iterator[Stopper]:
        """Within the block, SIGTERM / SIGINT ask for a stop; a second SIGINT interrupts.

        Nested blocks (the pipeline's, then a training loop's) share requests: the inner
        stopper starts with the outer one's and hands its own back on exit.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self  # only the main thread may install handlers
            return
        previous = {s: signal.signal(s, self._on_signal) for s in _SIGNALS}
        outer = getattr(previous[signal.SIGTERM], "__self__", None)
        outer = outer if isinstance(outer, Stopper) else None
        if outer is not None and outer.signal_name is not None:
            self.request(outer.signal_name)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if outer is not None and self.signal_name is not None:
                outer.request(self.signal_name)

    def local_reason(self) -> str | None:
        """Why this process wants to stop (a signal or the deadline), None if it does not."""
        if self.signal_name is not None:
            return self.signal_name
        if self.deadline is not None and (self.clock or _wall_clock)() >= self.deadline:
            return f"deadline {DEADLINE_ENV}={self.deadline:.0f} reached"
        return None

    def agree(self, reason: str | None, checkpoint_due: bool) -> tuple[str | None, bool]:
        """Combines the flags of every process: stop if any stops, save if any saves."""
        if self.process_count == 1:
            return reason, checkpoint_due
        flags = np.asarray([reason is not None, checkpoint_due], np.int32)
        stop, save = np.asarray(self.gather(flags)).reshape(-1, 2).any(axis=0)
        if stop and reason is None:
            reason = "stop requested by another process"
        return reason, bool(save)

    def poll(self, step: int, checkpoint_due: bool = False) -> tuple[str | None, bool]:
        """After step ``step`` (steps done): (reason to stop or None, save a checkpoint now).

        Multi-process runs act only at multiples of ``agree_every`` (all processes then take
        the same decision) or at a preemption sync point (the same step everywhere).
        """
        if _preemption_reached(step):
            return "preemption notice", True
        if self.process_count > 1 and step % self.agree_every:
            return None, False
        return self.agree(self.local_reason(), checkpoint_due)

    def check_between_stages(self, next_stage: str) -> None:
        """Raises :class:`Stopped` before ``next_stage`` starts if a stop is asked for."""
        reason, _ = self.agree(self.local_reason(), False)
        if reason is not None:
            raise Stopped(next_stage, None, reason)
