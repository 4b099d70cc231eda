"""Local (POSIX) storage: the disk steps of a transaction.

Every change a save makes on disk goes through one of the calls here (each
announced to ``_step``: the crash-point test stops a process at each one in
turn): writing a small file, fsync, a hard link, a rename, a removal. Also the
directory lock, the commit of a verified temporary (previous version hard-linked
to its backup name first, then each member renamed over the old one) and the
background work that overlaps a save's disk I/O with its verification.

What a transaction does with them, and in which order, is
``kerasave.store.transaction``'s business.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import itertools
import os
import queue
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from kerasave.store.layout import Layout

__all__ = ["commit", "locked", "Flushed", "removing", "settle",
           "write_text", "link", "replace", "remove", "fsync_one"]

# Called before each disk step with its kind ("write", "fsync", "link", "rename",
# "unlink", "rmtree") and path; the crash-point test sets it, nothing else does.
_hook: Callable[[str, Path], None] | None = None


def _step(kind: str, path: Path) -> None:
    if _hook is not None:
        _hook(kind, path)


def write_text(path: Path, text: str) -> None:
    """A small file (a manifest), written and fsynced."""
    _step("write", path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def link(source: Path, name: Path) -> None:
    _step("link", name)
    os.link(source, name)


def replace(source: Path, target: Path) -> None:
    _step("rename", target)
    os.replace(source, target)


def _final_name(handler: Layout, member: Path, tmp: Path, path: Path) -> Path:
    """What ``member`` of the artifact at ``tmp`` is called in the artifact at ``path``."""
    if member == tmp:
        return path
    return handler.member_at(path, handler.member_tail(tmp, member))


def fsync_one(path: Path) -> None:
    """fsync one file, or one directory's own entries (not what is under them)."""
    _step("fsync", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(member: Path) -> None:
    """fsync a member of an artifact: a file, or a directory with everything in it."""
    if member.is_dir() and not member.is_symlink():
        for child in member.rglob("*"):
            if not child.is_symlink():
                fsync_one(child)
    fsync_one(member)


def _sync_file_range() -> Any:
    """Linux's ``sync_file_range`` (start writing a range back, don't wait), or None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
        call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        return call
    except (OSError, AttributeError):
        return None


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_EVERY = 8 * 2**20  # bytes written before their writeback is started


class Flushed:
    """The disk work of one temporary, done in threads beside the save.

    ``written()`` says the temporary is complete: its checksums (for the
    manifest) and its fsync start, while the caller verifies it. ``files`` is
    the manifest's table of its files once ``wait`` has returned.
    """

    files: dict[str, dict[str, Any]] | None = None
    synced: frozenset[Path] = frozenset()  # the members fsynced, once ``wait`` returned

    def __init__(self, handler: Layout, tmp: Path,
                 checksums: Callable[[], dict[str, dict[str, Any]]], *,
                 durable: bool = True) -> None:
        self._handler, self._tmp, self._checksums = handler, tmp, checksums
        self._durable = durable  # (a staging copy for an upload need not reach the disk)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads = [self._start(self._writeback)] if durable else []

    def _start(self, work: Any) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # e.g. ENOSPC surfacing at fsync
                self._errors.append(exc)

        thread = threading.Thread(target=run, name=f"kerasave{work.__name__}", daemon=True)
        thread.start()
        return thread

    def _files(self) -> Iterator[Path]:
        """Every file under the temporary's name, with what a writer puts beside it
        (TensorFlow writes a checkpoint in ``<prefix>_temp/`` and then renames it)."""
        for entry in self._tmp.parent.glob(glob.escape(self._tmp.name) + "*"):
            if entry.is_dir():
                yield from (p for p in entry.rglob("*") if p.is_file())
            elif entry.is_file():
                yield entry

    def _writeback(self) -> None:
        """While the temporary is written, start the disk writing back what was appended
        (``sync_file_range``, which does not wait), so the fsync finds little to do."""
        if _SYNC_FILE_RANGE is None:
            return
        started: dict[Path, int] = {}
        while not self._stop.wait(0.02):
            try:
                for path in self._files():
                    size = path.stat().st_size
                    if size - started.get(path, 0) < _SYNC_EVERY:
                        continue
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        _SYNC_FILE_RANGE(fd, started.get(path, 0), size - started.get(path, 0),
                                         _SYNC_FILE_RANGE_WRITE)
                    finally:
                        os.close(fd)
                    started[path] = size
            except OSError:
                pass  # a file renamed or removed meanwhile: the fsync decides

    def _flush(self) -> None:
        self._threads[0].join()  # one writeback request at a time
        members = self._handler.members(self._tmp)
        for member in members:
            _fsync(member)
        self.synced = frozenset(members)

    def _checksum(self) -> None:
        self.files = self._checksums()

    def written(self) -> None:
        """The temporary is complete: checksum it and flush it to disk, in threads."""
        self._stop.set()
        self._threads += [self._start(self._checksum)]
        if self._durable:
            self._threads.append(self._start(self._flush))

    def wait(self) -> list[BaseException]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self._errors


_FREE_LATER = 4 * 2**20  # bytes of a file whose disk blocks are freed in a thread
_MAX_HELD = 64  # removed files kept open at once; past this, removal frees inline
# Filesystems where a removed file that is still open just waits for its last close.
# (An NFS client renames it to .nfsXXXX in the directory instead.)
_LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs",
                                "zfs", "jfs", "bcachefs", "overlay"})


class _Held(NamedTuple):
    """A removed file kept open so that a thread frees its blocks: which file it is."""

    fd: int
    dev: int
    ino: int


_held: dict[int, _Held] = {}  # by token, from the open until the close is done
_held_lock = threading.Lock()
_tokens = itertools.count()
_to_close: queue.SimpleQueue[int] | None = None


def _close_held(token: int) -> None:
    """Close a kept-open file, then forget it (a fork meanwhile still knows it)."""
    with _held_lock:
        held = _held.get(token)
    if held is not None:
        with contextlib.suppress(OSError):
            _close(held.fd)
        with _held_lock:
            _held.pop(token, None)


def _closer(work: queue.SimpleQueue[int]) -> None:
    while True:
        _close_held(work.get())


_close = os.close  # (what closes a kept-open file: tests hold it back)


def _free_later(tokens: list[int]) -> None:
    """Close, in the background, the files ``_unlink`` kept open under ``tokens``."""
    global _to_close
    if not tokens:
        return
    with _held_lock:
        work = _to_close
        if work is None:
            work = queue.SimpleQueue()
            try:
                threading.Thread(target=_closer, args=(work,), name="kerasave-free",
                                 daemon=True).start()
            except RuntimeError:  # no thread to be had (limits, interpreter exit)
                work = None
            else:
                _to_close = work
    for token in tokens:
        if work is None:
            _close_held(token)  # free it here
        else:
            work.put(token)


@contextlib.contextmanager
def removing() -> Iterator[list[int]]:
    """Gather what ``_remove`` keeps open inside the block; free it once the block
    ends (the filesystem's journal is then busy freeing, which a directory change
    inside the block would wait for)."""
    held: list[int] = []
    try:
        yield held
    finally:
        _free_later(held)


def _forget_in_child() -> None:
    """A forked child holds copies of the kept-open files but not the thread: close
    them, or the child would keep their disk space until it exits. A descriptor is
    closed only if it still is the file it was (its number may have been reused)."""
    global _to_close, _held_lock
    _held_lock = threading.Lock()  # (held by the fork itself: see below)
    for held in _held.values():
        with contextlib.suppress(OSError):
            st = os.fstat(held.fd)
            if (st.st_dev, st.st_ino) == (held.dev, held.ino):
                os.close(held.fd)
    _held.clear()
    _to_close = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _held_lock.acquire(),
                        after_in_parent=lambda: _held_lock.release(),
                        after_in_child=_forget_in_child)


def settle() -> None:
    """Wait until the disk space of every file removed so far is freed."""
    while True:
        with _held_lock:
            if not _held:
                return
        time.sleep(0.005)


def _is_local(fd: int) -> bool:
    """Whether the open file ``fd`` is on one of ``_LOCAL_FILESYSTEMS``: its mount, by
    the mount id Linux gives each descriptor (a device number would not do: btrfs
    subvolumes have their own), and that mount's filesystem type."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            mount = next(line.split()[1] for line in f if line.startswith(b"mnt_id:"))
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                if line.split(b" ", 1)[0] == mount and b" - " in line:
                    kind = line.split(b" - ", 1)[1].split()[0]
                    return kind.decode("ascii", "replace") in _LOCAL_FILESYSTEMS
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return False


def _unlink(path: Path, held: list[int]) -> None:
    """Remove the name ``path``; a large file stays open, its token added to ``held``.

    Freeing the blocks of a file that was fsynced takes time (0.3 s per GB on this
    machine's disk, which discards them): half a save's time, spent after the
    save is complete. A file still open when its last name goes away is freed at
    its last close, so the name goes now and a thread closes the file later
    (``_free_later``), on local filesystems only. Anything unexpected on the way
    just removes the name.
    """
    fd = -1
    try:
        st = path.stat(follow_symlinks=False)
        if (stat.S_ISREG(st.st_mode) and st.st_size >= _FREE_LATER
                and len(_held) < _MAX_HELD):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            st = os.fstat(fd)  # the file that is open, whatever the name points at now
            if not _is_local(fd):
                os.close(fd)
                fd = -1
    except Exception:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        fd = -1
    if fd >= 0:
        with _held_lock:  # known before any fork can copy it
            token = next(_tokens)
            _held[token] = _Held(fd, st.st_dev, st.st_ino)
            held.append(token)
    _step("unlink", path)
    path.unlink(missing_ok=True)


def remove(path: Path, held: list[int] | None = None) -> None:
    """Remove a file or a directory tree now; large files' disk space is freed in a
    thread, when the ``removing`` block that gave ``held`` ends (at once when not
    given)."""
    if held is None:
        with removing() as gathered:
            remove(path, gathered)
        return
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            if child.is_file() and not child.is_symlink():
                with contextlib.suppress(OSError):  # rmtree decides, as before
                    _unlink(child, held)
        _step("rmtree", path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path, held)


def commit(handler: Layout, tmp: Path, path: Path, backup: Path,
           synced: frozenset[Path] = frozenset(), *, durable: bool = True) -> None:
    """Move the verified artifact at ``tmp`` over whatever is at ``path``.

    The current version is hard-linked (a directory: renamed) to its ``backup``
    name first, so a reader finds a complete version whenever this is interrupted.
    ``synced``: members fsynced since they were complete (``Flushed``); of those,
    only a directory's own entries are fsynced again (a manifest went in since).
    ``durable=False`` (a staging copy, uploaded next): renames only, no fsync.
    """
    for stale in handler.members(backup):
        remove(stale)
    old = handler.members(path)
    for member in old:
        if member.is_file():
            link(member, _final_name(handler, member, path, backup))
    sync = fsync_one if durable else (lambda _: None)
    sync(path.parent)
    new = handler.members(tmp)
    for member in new if durable else ():
        if member not in synced:
            _fsync(member)
        elif member.is_dir() and not member.is_symlink():
            fsync_one(member)
    placed = set()
    for member in new:
        final = _final_name(handler, member, tmp, path)
        if final.is_dir() and not final.is_symlink():
            replace(final, _final_name(handler, final, path, backup))
        replace(member, final)
        placed.add(final)
    with removing() as held:
        for stale in set(old) - placed:
            remove(stale, held)
        sync(path.parent)
        for member in handler.members(backup):
            remove(member, held)
        sync(path.parent)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One kerasave writer at a time in ``directory`` (the lock dies with its process)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
