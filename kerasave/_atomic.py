"""Writing to a temporary sibling and renaming it into place.

A save writes the whole artifact under a temporary name beside the target,
verifies it there, fsyncs it, and only then renames each member over the old
one (``os.replace``). A failed or refused save leaves the previous artifact as it
was and removes its temporaries.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from kerasave.formats._base import Handler

__all__ = ["TMP_MARK", "temp_path", "commit", "discard", "locked", "clean_stale"]

TMP_MARK = ".kerasave-tmp-"


def temp_path(path: Path, suffix: str) -> Path:
    """A hidden sibling of ``path`` that no artifact name can collide with."""
    return path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(6)}{suffix}")


def _final_name(member: Path, tmp: Path, path: Path) -> Path:
    if member == tmp:
        return path
    return path.with_name(path.name + member.name[len(tmp.name):])


def _fsync(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def flushing(handler: Handler, tmp: Path) -> Iterator[None]:
    """fsync a freshly written temporary in a thread while the block runs.

    Verification reads the artifact back meanwhile (from the page cache), so the
    disk flush and the comparison overlap; ``commit`` fsyncs again, cheaply.
    Leaving the block waits for the flush and raises what it raised, unless the
    block itself raised: that error is the one to report.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for member in handler.members(tmp):
                _fsync(member)
        except BaseException as exc:  # e.g. ENOSPC surfacing at fsync
            errors.append(exc)

    thread = threading.Thread(target=run, name="kerasave-fsync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def commit(handler: Handler, tmp: Path, path: Path) -> None:
    """Move the verified artifact at ``tmp`` over whatever is at ``path``.

    The current version is hard-linked (a directory: renamed) to its backup name
    first, so a reader finds a complete version whenever this is interrupted.
    """
    from kerasave._manifest import backup_path

    backup = backup_path(handler, path)
    for stale in handler.members(backup):
        _remove(stale)
    old = handler.members(path)
    for member in old:
        if member.is_file():
            os.link(member, _final_name(member, path, backup))
    _fsync(path.parent)
    new = handler.members(tmp)
    for member in new:
        _fsync(member)
    placed = set()
    for member in new:
        final = _final_name(member, tmp, path)
        if final.is_dir() and not final.is_symlink():
            os.replace(final, _final_name(final, path, backup))
        os.replace(member, final)
        placed.add(final)
    for stale in set(old) - placed:
        _remove(stale)
    _fsync(path.parent)
    for member in handler.members(backup):
        _remove(member)
    _fsync(path.parent)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One kerasave writer at a time in ``directory`` (the lock dies with its process)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def clean_stale(path: Path) -> None:
    """Remove temporaries a killed writer left for this target (call under ``locked``)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}{TMP_MARK}*"):
        _remove(stale)


def discard(handler: Handler, tmp: Path) -> None:
    """Remove whatever a failed save left under the temporary name."""
    for member in handler.members(tmp):
        _remove(member)
    if tmp.exists():
        _remove(tmp)
