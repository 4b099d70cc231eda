"""Who writes a ``CheckpointManager``'s directory: the newest manager of this
process, and no manager of another process.

A lease is this process' hold on a directory's writer lock file
(``.kerasave-writer.lock``, ``flock``-ed), which passes from manager to manager:
a notebook cell run again creates a new manager while the old one lives on, and
the new one takes the directory over. A URL's lease is this process' alone
(object stores have no locks: see docs/scaling.md).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
from pathlib import Path
from typing import Any

from kerasave._errors import KerasaveError

__all__ = ["Lease", "take", "give_back", "next_number", "LOCK_NAME"]

LOCK_NAME = ".kerasave-writer.lock"


class Lease:
    """``writing`` is held for each write, so two managers of one process never
    interleave theirs; ``pending`` is a background write still running."""

    def __init__(self, fd: int | None, key: tuple[Any, Any], holder: int) -> None:
        self.fd, self.key, self.holder = fd, key, holder
        self.writing = threading.Lock()
        self.pending: threading.Thread | None = None


_leases: dict[tuple[Any, Any], Lease] = {}  # by the directory's (st_dev, st_ino), or URL
_leases_lock = threading.Lock()
_created = itertools.count(1)  # managers in order of creation: the newest writer wins


def next_number() -> int:
    """A new manager's place in the order of creation."""
    return next(_created)


def _superseded(where: Path | str) -> KerasaveError:
    return KerasaveError(
        "this CheckpointManager was superseded by a newer one for the same directory in "
        "this process (e.g. a notebook cell run again), which now writes there; save "
        "through the newer one", path=where)


def take(held: Lease | None, number: int, where: Path | str) -> Lease:
    """The lease of the directory (a ``Path``) or URL (a ``str``) ``where`` for the
    manager ``number``: the one it ``held``, the process' last manager's, or a new
    one that locks the directory's writer lock file.

    Raises:
        KerasaveError: a newer manager of this process took it over, or a manager of
            another process holds it.
    """
    if held is not None:
        if held.holder != number or _leases.get(held.key) is not held:
            raise _superseded(where)
        return held
    if isinstance(where, str):
        key: tuple[Any, Any] = ("url", where)
    else:
        where.mkdir(parents=True, exist_ok=True)
        st = where.stat()
        key = (st.st_dev, st.st_ino)
    with _leases_lock:
        lease = _leases.get(key)
        if lease is not None:
            if lease.holder > number:
                raise _superseded(where)
            lease.holder = number
            return lease
        if isinstance(where, str):
            lease = _leases[key] = Lease(None, key, number)
            return lease
        fd = os.open(where / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise KerasaveError(
                f"another CheckpointManager (process {holder}) is writing to this "
                "directory; only one writer at a time", path=where) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        lease = _leases[key] = Lease(fd, key, number)
        return lease  # released by give_back or when the process dies


def give_back(lease: Lease, number: int) -> None:
    """Release the manager ``number``'s lease (after its background write), unless a
    newer manager holds it now."""
    with _leases_lock:
        if lease.holder != number or _leases.get(lease.key) is not lease:
            return  # superseded: the lease is the newer manager's
        del _leases[lease.key]
    pending = lease.pending
    if pending is not None and pending is not threading.current_thread():
        pending.join()
    if lease.fd is not None:
        fcntl.flock(lease.fd, fcntl.LOCK_UN)
        os.close(lease.fd)
