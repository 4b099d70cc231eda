"""``LocalStore``: an artifact on a local (POSIX) disk.

Its transaction is ``kerasave.store.transaction.Transaction`` (a hidden
temporary sibling, fsync, rename under the directory's lock); its reads check
the files where they are (``resolve_checked``). Every disk change goes through
``kerasave.store.local``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kerasave.store import local, manifest
from kerasave.store.base import Found, Listed, Naming, Store
from kerasave.store.layout import Layout
from kerasave.store.transaction import Transaction, resolve_checked

__all__ = ["LocalStore"]


class LocalStore:
    """A path on the local disk (see ``kerasave.store.base.Store``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target = path  # (formats write and read the path itself)
        self.shown = str(path)
        self.name = path.name
        self.naming = Naming([])
        self.local_dir: Path | None = path  # (a folder on this machine's disk)

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalStore({self.shown!r})"

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.path / name)

    def same(self, other: Store) -> bool:
        return isinstance(other, LocalStore) and self.path.resolve() == other.path.resolve()

    def transaction(self, layout: Layout, *, suffix: str | None = None
                    ) -> contextlib.AbstractContextManager[Transaction]:
        return Transaction(layout, self.path, suffix=suffix, shown=self.shown)

    @contextlib.contextmanager
    def resolve(self, detect: Callable[[Path], Any]) -> Iterator[Found]:
        layout = detect(self.path)
        where = manifest.manifest_path(layout, self.path)
        present = where.is_file()
        actual, detail, checksummed = resolve_checked(layout, self.path)
        yield Found(layout, self.path, actual, detail, checksummed, where if present else None,
                    self.naming)

    @contextlib.contextmanager
    def local(self, detect: Callable[[Path], Any] | None = None) -> Iterator[Path]:
        yield self.path

    def exists(self) -> bool:
        return self.path.exists() or self.path.with_name(self.path.name + ".index").exists()

    def list(self, pattern: str, layout: Layout) -> list[Listed]:
        if not self.path.is_dir():
            return []
        names = {e.name.split(".", 1)[0] for e in self.path.iterdir()}
        found = []
        for name in names:
            match = re.fullmatch(pattern, name)
            if not match or not layout.exists(self.path / name):
                continue
            try:
                recorded = json.loads(manifest.manifest_path(layout, self.path / name)
                                      .read_text(encoding="utf-8"))
            except (OSError, ValueError):
                recorded = {}
            if not isinstance(recorded, dict):
                recorded = {}
            if "time" not in recorded:  # (a checkpoint TensorFlow wrote: its index's time)
                members = layout.members(self.path / name)
                if members:
                    recorded = {**recorded, "time": members[-1].stat().st_mtime}
            found.append(Listed(name, int(match.group(1)), recorded, str(self.path / name)))
        return sorted(found, key=lambda e: e.number)

    def delete(self, layout: Layout) -> None:
        with local.removing() as held:  # (disk space freed once all names are gone)
            members = layout.members(self.path)
            index = self.path.with_name(self.path.name + ".index")
            if index in members:  # first: what makes the rest a checkpoint
                local.remove(index, held)
            for member in members:
                if member != index:
                    local.remove(member, held)

    def migrate(self) -> builtins.list[str]:
        return []  # (nothing on disk was ever written in another layout)

    def put_text(self, name: str, text: str) -> None:
        target = self.path / name
        fresh = target.with_name(f"{name}.kerasave-new")
        local.write_text(fresh, text)
        local.replace(fresh, target)
        local.fsync_one(self.path)

    def read_text(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
