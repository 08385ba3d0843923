"""The run's folder: which folders are ltr_jax workdirs, and the lock that keeps one run in each.

A folder is an ltr_jax workdir when it is empty (or does not exist yet), holds the lock file
:data:`LOCK_FILE` (the first thing a run creates in it, kept after the run as the folder's
marker), or holds a ``config.json`` of ltr_jax's shape (a workdir written before the marker
existed; it stays resumable). Any other non-empty folder (a user's own files) is refused, in
one line, before anything is written.

The lock is an OS-level ``flock`` on :data:`LOCK_FILE`, taken by process 0 of a run (only it
writes the run's files; the other processes of a multi-host run share the folder by design)
for as long as the run lives. The kernel drops it when the process ends, however it ends, so
a run that was killed never blocks a rerun. The file names the holder (pid, host, start
time) so that a second run is refused naming it. On a shared filesystem ``flock`` works
across hosts where the filesystem supports it (NFSv4, Lustre with ``-o flock``); where it
does not, the run warns and goes on without a lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator

from ltr_jax.errors import UserError

LOCK_FILE = ".ltr_jax.lock"
CONFIG_FILE = "config.json"
# Top-level keys that every ltr_jax config.json has (config_lib.base_config).
_CONFIG_KEYS = frozenset({"seed", "pipeline", "data", "model", "train"})
# flock errors of a filesystem without locks (the run then goes on without one).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirError(UserError, ValueError):
    """The workdir cannot hold this run (a file, read-only, another program's folder)."""


class WorkdirLockedError(WorkdirError):
    """Another run holds the workdir's lock."""


def _is_our_config(path: str) -> bool:
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and _CONFIG_KEYS <= set(saved)


def is_workdir(folder: str) -> bool:
    """True for a missing or empty folder and for a folder that an ltr_jax run wrote."""
    if not os.path.isdir(folder):
        return not os.path.exists(folder)
    entries = os.listdir(folder)
    if not entries or LOCK_FILE in entries:
        return True
    return CONFIG_FILE in entries and _is_our_config(os.path.join(folder, CONFIG_FILE))


def check(workdir: str, *, writer: bool = True) -> None:
    """Refuses a workdir that is a file, is not writable, is another program's folder, or is
    locked by a running run (looked at by the process that will lock it, ``writer``: the
    other processes of a multi-host run see process 0's lock); writes nothing.

    Raises:
      WorkdirError: in one line, saying what to do instead.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir} is a file: give a folder.")
    existing = workdir
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WorkdirError(
            f"--workdir={workdir}: {existing} is not writable: give a folder you can write to."
        )
    if not is_workdir(workdir):
        shown = sorted(os.listdir(workdir))
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise WorkdirError(
            f"--workdir={workdir} is a non-empty folder that no ltr_jax run wrote (it holds "
            f"{', '.join(shown[:5])}{more}; no {LOCK_FILE} nor ltr_jax {CONFIG_FILE}): nothing "
            "was written; give a new or empty folder, e.g. a sub-folder of it."
        )
    path = os.path.join(workdir, LOCK_FILE)
    if writer and os.path.exists(path):  # a look now, before the data loads; taken later
        fd = os.open(path, os.O_RDWR)  # NFS grants an exclusive flock to a writable fd only
        try:
            _flock_or_refuse(fd, workdir)
        finally:
            os.close(fd)  # closing drops the lock taken for the look


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    return " ".join(text.split()) or "unknown"


def _flock_or_refuse(fd: int, workdir: str) -> bool:
    """Takes an exclusive lock on ``fd``; False where the filesystem has no locks.

    Raises:
      WorkdirLockedError: another process holds it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WorkdirLockedError(
            f"--workdir={workdir} is in use by another run ({_holder(fd)}): wait for it to "
            "end, stop it (SIGTERM stops it at the next step with a checkpoint), or give "
            "another --workdir."
        ) from None
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
        logging.warning(
            "%s cannot be locked on this filesystem (%s): make sure no other run uses it.",
            workdir,
            os.strerror(e.errno),
        )
        return False
    return True


@contextlib.contextmanager
def lock(workdir: str, *, writer: bool = True) -> Iterator[None]:
    """Creates ``workdir`` and holds its lock for the block (process 0: ``writer``).

    Other processes (``writer=False``) take no lock and create nothing here.

    Raises:
      WorkdirLockedError: another run holds the lock.
    """
    if not writer:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _flock_or_refuse(fd, workdir):
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
            holder = f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n"
            os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock; the file stays as the folder's marker
