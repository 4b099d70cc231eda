"""The storage seam: one ``Store`` protocol, chosen once per path (``kerasave.store.at``).

A store is one place an artifact (or a folder of them, a manager's directory)
lives: ``LocalStore`` (a path on disk: fsync and rename) or ``ObjectStore`` (an
fsspec URL: one PUT per object, the manifest last). Everything above it (the
facade, the manager, the command line) writes through ``transaction``, reads
through ``resolve``, and finds and removes artifacts with ``list`` and
``delete``, without asking which kind of place it is.

As in Orbax's ``TemporaryPath`` (``from_final``/``get``/``finalize``), a
transaction is made from the final name and hands the writer a local temporary
(``txn.tmp``; the formats only ever see local paths), and its commit finalizes
it: a rename on disk, an upload committed by its manifest on an object store.
The store knows the name to show (``shown``): what the caller named, never the
temporary or a staging copy, so what a save or a read says names that.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from kerasave._errors import KerasaveError
from kerasave._report import Check, Report
from kerasave.store.layout import Layout

__all__ = ["Store", "Found", "Listed", "Naming", "Txn"]


@dataclass
class Found:
    """An artifact found and checked once: the local version to read and what its
    integrity check said.

    ``path`` is the local path the caller's name stands for (the path itself, or
    a URL's staging copy); ``actual`` the version to read there (``path``, or the
    previous version an interrupted local commit left); ``checksummed``: every
    byte of it matched a CRC32C its manifest records."""

    layout: Any  # the handler ``detect`` chose
    path: Path
    actual: Path
    detail: str
    checksummed: bool
    manifest: Path | None  # the local manifest, when there is one
    naming: Naming = field(default_factory=lambda: Naming([]))


@dataclass(frozen=True)
class Listed:
    """One artifact of a folder (``Store.list``): its name, the number the pattern
    matched, and its committed manifest (``{}`` when it has none or it is unreadable)."""

    name: str
    number: int
    manifest: dict[str, Any]
    shown: str


class Naming:
    """What is said about local stand-ins (a temporary, a staging copy), said about
    the names they stand for: every ``(local, shown)`` pair, longest first."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = sorted(((str(a), str(b)) for a, b in pairs if str(a) != str(b)),
                            key=lambda p: -len(p[0]))

    def __add__(self, other: Naming) -> Naming:
        return Naming(self.pairs + other.pairs)

    def text(self, text: str) -> str:
        for local, shown in self.pairs:
            text = text.replace(local, shown)
        return text

    def check(self, check: Check) -> Check:
        detail = self.text(check.detail)
        return check if detail == check.detail else replace(check, detail=detail)

    def report(self, report: Report) -> Report:
        return replace(report, path=self.text(report.path),
                       checks=tuple(self.check(c) for c in report.checks))

    def error(self, exc: KerasaveError) -> KerasaveError:
        if exc.path is not None:
            exc.path = self.text(exc.path)
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (self.text(exc.args[0]), *exc.args[1:])
        report = getattr(exc, "report", None)
        if isinstance(report, Report):
            exc.report = self.report(report)  # type: ignore[attr-defined]
        return exc

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        """kerasave's errors raised inside name what the stand-ins stand for."""
        if not self.pairs:
            yield
            return
        try:
            yield
        except KerasaveError as exc:
            raise self.error(exc) from exc.__cause__


class Txn(Protocol):
    """One save of one artifact (``Store.transaction``)."""

    tmp: Path  # where the writer writes: always a local path
    naming: Naming

    def write(self, write: Callable[[Path], None]) -> None: ...
    def verify(self, check: Callable[[Path], Iterable[Check]]) -> tuple[Check, ...]: ...
    def commit(self, fields: dict[str, Any], *, then: Callable[[], None] | None = None
               ) -> None: ...


class Store(Protocol):
    """One place an artifact lives (see the module's docstring)."""

    # (read-only members: a store may compute them)
    @property
    def shown(self) -> str:
        """The path or URL as the caller named it: what messages say."""
        ...

    @property
    def name(self) -> str:
        """Its last part."""
        ...

    @property
    def target(self) -> Path:
        """The local path the formats write and read for it: the path itself, or a
        URL's stand-in in the store's staging folder (removed by ``close``)."""
        ...

    @property
    def naming(self) -> Naming:
        """What is said of ``target``'s folder, said of the store's."""
        ...

    @property
    def local_dir(self) -> Path | None:
        """The path, when it is on this machine's disk (locks work there)."""
        ...

    def __enter__(self) -> Store:
        """Inside the block, kerasave's errors that name ``target`` name ``shown``;
        leaving it closes the store."""
        ...

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None: ...

    def close(self) -> None:
        """Remove the staging folder, if any."""
        ...

    def child(self, name: str) -> Store:
        """The store of ``name`` inside this one (a manager's ``ckpt-N``)."""
        ...

    def transaction(self, layout: Layout, *, suffix: str | None = None
                    ) -> contextlib.AbstractContextManager[Txn]:
        """A save of the artifact: write ``txn.tmp``, verify it, ``txn.commit``."""
        ...

    def resolve(self, detect: Callable[[Path], Any]
                ) -> contextlib.AbstractContextManager[Found]:
        """The artifact, checked against its manifest, readable at a local path for
        the block's length; ``detect(local path)`` gives its layout (handler)."""
        ...

    def local(self, detect: Callable[[Path], Any] | None = None
              ) -> contextlib.AbstractContextManager[Path]:
        """A local path holding the artifact for the block's length: the path itself,
        or a URL's copy (every object's size and CRC32C checked). ``detect`` (a local
        path → its layout) finds the files of an artifact without a manifest that its
        layout names otherwise than by its name (a shard map's shards)."""
        ...

    def list(self, pattern: str, layout: Layout) -> builtins.list[Listed]:
        """The committed artifacts of ``layout`` in this folder whose names ``pattern``
        matches (a regular expression whose one group is a number), by number."""
        ...

    def delete(self, layout: Layout) -> None:
        """Remove the artifact: what makes it one first (its index, its manifest)."""
        ...

    def exists(self) -> bool: ...

    def read_text(self, name: str) -> str | None:
        """The small file ``name`` in this folder, or None."""
        ...

    def put_text(self, name: str, text: str) -> None:
        """A small file ``name`` in this folder, replaced whole (TensorFlow's
        ``checkpoint`` state file)."""
        ...

    def migrate(self) -> builtins.list[str]:
        """Rewrite what an earlier kerasave wrote here in another layout (the artifact,
        or every artifact of the folder) in today's; what was rewritten."""
        ...

    def same(self, other: Store) -> bool:
        """Whether ``other`` is the same place."""
        ...
