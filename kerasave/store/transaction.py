"""One transaction for every writer: lock, temporary, write, verify, seal, commit, discard.

The facade's saves, the manager's checkpoints and ``kerasave convert`` all write
through ``Transaction``::

    with Transaction(handler, target) as txn:   # claims a temporary name
        txn.write(lambda tmp: handler.write(model, tmp))
        checks = txn.verify(lambda tmp: handler.check(model, tmp, own=True))
        txn.commit({"versions": ...})            # manifest, then renamed into place
    # leaving: whatever is left of the temporary is removed

**Temporaries.** A transaction's files are hidden siblings of the target that
carry its token: ``.<name>.kerasave-tmp-<token><suffix>`` and whatever a writer
puts beside that name (TensorFlow's ``<prefix>_temp/``). The token's *claim*,
``.kerasave-tmp-<token>.claim``, is created first and held ``flock``-ed for the
transaction's life; a writer that dies drops the lock with its process.

**One lock.** The directory's ``flock`` is held for the short steps that change
what other writers see: cleaning dead temporaries and claiming a token (when a
transaction begins) and the commit (with the manager's retention after it).
Writing and verifying run without it, so a ``save_weights`` into a
``CheckpointManager``'s directory and the manager's own save proceed side by side.

**Cleanup only of what is provably dead**, under the lock: a token whose claim
can be locked (its writer is gone), or that has no claim at all (left by a writer
that died before claiming, or by an older kerasave). Tokens of this process'
open transactions are never touched, whatever the filesystem's locks say.

**The read side** (``resolve``): a commit killed half-way leaves the previous
version under its backup name (``kerasave.store.local.commit``); readers take
whichever complete version the manifests vouch for.

**The storage seam.** Every disk step is a call into ``kerasave.store.local``
(``locked``, ``commit``, ``remove``, ``write_text``...); formats only ever see
the temporary's local path. This is ``LocalStore``'s transaction
(``kerasave.store.base.Store``); ``ObjectStore`` runs it in a staging folder and
then uploads what it committed (``kerasave.store.objectstore``). ``shown`` is the
name the caller gave: what the checks and errors say instead of the temporary's.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kerasave._errors import CorruptArtifactError, KerasaveError
from kerasave._report import Check
from kerasave.store import local, manifest
from kerasave.store.base import Naming
from kerasave.store.layout import Layout
from kerasave.store.manifest import backup_path

__all__ = ["TMP_MARK", "Transaction", "clean", "resolve", "resolve_checked", "temp_path"]

TMP_MARK = ".kerasave-tmp-"
_CLAIM = ".claim"
_TOKEN = 12  # hex digits
_live: set[str] = set()  # tokens of this process' open transactions
_live_lock = threading.Lock()


def temp_path(path: Path, token: str, suffix: str) -> Path:
    """A hidden sibling of ``path`` that no artifact name can collide with."""
    return path.with_name(f".{path.name}{TMP_MARK}{token}{suffix}")


def _claim_path(directory: Path, token: str) -> Path:
    return directory / f"{TMP_MARK}{token}{_CLAIM}"


def _token_of(name: str) -> str | None:
    _, mark, rest = name.partition(TMP_MARK)
    token = rest[:_TOKEN]
    if not mark or len(token) != _TOKEN:
        return None
    return token


def _is_alive(claim: Path) -> bool:
    """Whether the writer that holds ``claim`` still runs (its flock is held)."""
    try:
        fd = os.open(claim, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def clean(directory: Path) -> None:
    """Remove the temporaries of dead writers in ``directory`` (call under ``locked``)."""
    groups: dict[str, list[Path]] = {}
    try:
        entries = [e for e in directory.iterdir() if TMP_MARK in e.name]
    except OSError:
        return
    for entry in entries:
        token = _token_of(entry.name)
        if token is not None:
            groups.setdefault(token, []).append(entry)
    for token, found in groups.items():
        with _live_lock:
            if token in _live:
                continue
        claim = _claim_path(directory, token)
        if claim in found and _is_alive(claim):
            continue
        with local.removing() as held:
            for entry in found:
                if entry != claim:
                    local.remove(entry, held)
            if claim in found:
                local.remove(claim, held)


class _Claimed:
    """A held claim on a token: the proof, for other writers, that it is alive."""

    def __init__(self, directory: Path) -> None:
        self.token = secrets.token_hex(_TOKEN // 2)
        self.path = _claim_path(directory, self.token)
        with _live_lock:
            _live.add(self.token)
        local._step("write", self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        try:
            local.remove(self.path)
        finally:
            os.close(self.fd)
            with _live_lock:
                _live.discard(self.token)


class Transaction:
    """One save of one artifact (see the module's docstring)."""

    def __init__(self, handler: Layout, target: Path, *, suffix: str | None = None,
                 shown: str | None = None, durable: bool = True) -> None:
        self.handler = handler
        self.durable = durable  # (False: a staging copy, uploaded next: no fsync)
        self.target = target
        self.shown = str(target) if shown is None else shown
        self.naming = Naming([])
        self._suffix = handler.temp_suffix if suffix is None else suffix
        self._claim: _Claimed | None = None
        self._flushed: local.Flushed | None = None
        self.tmp = target  # set on entering

    def __enter__(self) -> Transaction:
        directory = self.target.parent
        directory.mkdir(parents=True, exist_ok=True)
        with local.locked(directory):
            clean(directory)
            self._claim = _Claimed(directory)
        self.tmp = temp_path(self.target, self._claim.token, self._suffix)
        # What is said about the temporary names the target (or what it stands for).
        self.naming = Naming([(str(self.tmp), self.shown), (self.tmp.name, self.target.name),
                              (str(self.target), self.shown)])
        return self

    def write(self, write: Callable[[Path], None]) -> None:
        """Write the temporary (``write(tmp)``); its checksums and fsync then start
        in threads, overlapping the verification that follows."""
        self._flushed = local.Flushed(  # (checksums mapped: our own temporary)
            self.handler, self.tmp, lambda: manifest.checksums(self.handler, self.tmp,
                                                               mapped=True),
            durable=self.durable)
        local._step("write", self.tmp)
        write(self.tmp)
        self._flushed.written()

    def verify(self, check: Callable[[Path], Iterable[Check]]) -> tuple[Check, ...]:
        """The checks ``check(tmp)`` makes, worded as checks of the target: no hidden
        temporary names (which are gone once the save returns) in what they say."""
        said = f" (path: {self.tmp})"
        return tuple(self.naming.check(replace(c, detail=c.detail.replace(said, "")))
                     for c in check(self.tmp))

    def commit(self, fields: dict[str, Any], *, then: Callable[[], None] | None = None) -> None:
        """Seal the manifest (with ``fields``) and rename the temporary into place,
        under the directory's lock; ``then`` runs under the same lock afterwards."""
        files, synced = None, frozenset[Path]()
        if self._flushed is not None:
            flushed, self._flushed = self._flushed, None
            errors = flushed.wait()
            if errors:
                raise errors[0]
            files, synced = flushed.files, flushed.synced
        manifest.seal(self.handler, self.tmp, fields, files)  # (written and fsynced)
        synced |= {manifest.manifest_path(self.handler, self.tmp)}
        with local.locked(self.target.parent):
            local.commit(self.handler, self.tmp, self.target,
                         backup_path(self.handler, self.target), synced,
                         durable=self.durable)
            if then is not None:
                then()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, KerasaveError):
            self.naming.error(exc)  # (what it says of the temporary, said of the target)
        try:
            if self._flushed is not None:
                self._flushed.wait()  # the block's own error is the one to report
            self._discard()
        finally:
            if self._claim is not None:
                self._claim.release()

    def _discard(self) -> None:
        """Remove whatever is left under the token (a failed save, a writer's extras)."""
        assert self._claim is not None
        with local.removing() as held:
            for entry in self.target.parent.glob(f"*{TMP_MARK}{self._claim.token}*"):
                if entry != self._claim.path:
                    local.remove(entry, held)


# -- the read side ------------------------------------------------------------------


def resolve(handler: Layout, path: Path) -> tuple[Path, str]:
    """The version of the artifact to read, and what was checked (see ``resolve_checked``)."""
    actual, message, _ = resolve_checked(handler, path)
    return actual, message


def resolve_checked(handler: Layout, path: Path) -> tuple[Path, str, bool]:
    """The version of the artifact to read, what was checked, and whether every
    byte of it matched the CRC32C its manifest records.

    Returns ``path`` itself when its manifest matches (or it has none: plain
    Keras), or the previous version left by an interrupted commit.

    Raises:
        CorruptArtifactError: no complete version matches its manifest.
    """
    backup = backup_path(handler, path)
    candidates: Iterable[tuple[Path, Path]] = ((path, path), (path, backup), (backup, backup))
    first_problem = None
    for files_at, manifest_at in candidates:
        if not handler.exists(files_at):
            continue
        recorded = manifest.read(handler, manifest_at)
        if recorded is None:
            if manifest_at == path and not handler.exists(backup):
                return path, "no manifest (not written by kerasave): format checks only", False
            continue
        problem = manifest.mismatch(handler, files_at, recorded)
        if problem is None:
            if files_at == path:
                return (path, f"{len(recorded.get('files', {}))} file(s) match their CRC32C",
                        isinstance(recorded.get("files"), dict))
            return (backup, "the newest save was interrupted: read the previous version",
                    isinstance(recorded.get("files"), dict))
        first_problem = first_problem or problem
    if handler.exists(backup) and manifest.read(handler, backup) is None and handler.exists(path):
        # The previous version was a plain Keras artifact and the new manifest went in
        # before the new file did: what is at the path is that previous version.
        return (path, "the newest save was interrupted: the previous (unverified) version",
                False)
    raise CorruptArtifactError(
        f"the artifact does not match its manifest: {first_problem or 'no complete version'}",
        path=path)

