"""An object-store artifact's names: where its objects and its manifest are, and
which objects of its folder are its own (``Names``, a part of ``ObjectStore``).

Most artifacts' files are named after the artifact: ``m.keras``, ``ckpt.index``
and ``ckpt.data-00000-of-00001``, ``served/...``. A file its layout names
otherwise (``Layout.member_at``: a sharded map ``m.weights.json``'s shards
``m_00000.weights.h5``...) is recorded under its object's name in the manifest
(``object``, a plain name beside the artifact), and such objects are told from a
sibling's by the layout alone (``member_tail`` and ``member_at`` agree on them).
Every object of a file artifact starts as its name does up to the first dot
(``_family``): one listing of its folder with that prefix finds them all.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kerasave._errors import KerasaveError
from kerasave.store import legacy
from kerasave.store.backends import Backend, Obj
from kerasave.store.layout import Layout

__all__ = ["Names", "MANIFEST", "INSIDE", "PREVIOUS"]

MANIFEST = ".kerasave.json"  # beside an artifact: <key>.kerasave.json
INSIDE = "kerasave.json"  # inside a folder artifact: <key>/kerasave.json
PREVIOUS = ".kerasave-prev"  # .<name>.kerasave-prev/<writer>/: a copy of a committed version
_WRITER = r"\d{10}-[0-9a-f]{12}"  # a writer's token: when its save began, and a nonce


class Names:
    """Where an artifact's objects are (see the module's docstring)."""

    key: str  # the artifact's key (``bucket/folder/name``)
    name: str
    parent: str  # its folder's key
    backend: Backend

    def _manifest_key(self, inside: bool) -> str:
        return f"{self.key}/{INSIDE}" if inside else f"{self.key}{MANIFEST}"

    def _relative(self, name: str, inside: bool) -> str:
        """A manifest's file name → its path relative to the artifact's folder, by the
        rule of most formats (the artifact's name, then the file's)."""
        if inside:
            return f"{self.name}/{name}"
        return self.name if name == "." else self.name + name

    def _family(self) -> str:
        """The key prefix of every object of a file artifact: its folder, and its name
        up to the first dot (a checkpoint prefix's files, a sharded map's shards)."""
        head = self.name.split(".", 1)[0]
        return posixpath.join(self.parent, head) if self.parent else head

    def _member(self, key: str, inside: bool, layout: Layout | None) -> bool:
        """Whether ``key`` is one of the artifact's own files (not a sibling's): by the
        name-and-tail rule (``_mine``), or one the layout names so (``member_tail`` and
        ``member_at`` agree on it: a sharded map's shard)."""
        if self._mine(key, inside):
            return True
        if inside or layout is None or not key.startswith(self._family()):
            return False
        base = key[len(self.parent) + 1:] if self.parent else key
        if "/" in base or base.startswith(self.name):
            return False  # (a name and a tail: ``_mine`` says which are the artifact's)
        here = Path(self.name)
        member = here.with_name(base)
        try:
            return layout.member_at(here, layout.member_tail(here, member)) == member
        except (ValueError, TypeError):
            return False

    def _object(self, value: Any, inside: bool) -> str:
        """A file's ``object`` in the manifest (its object's name, when it is not the
        artifact's name and the file's): a plain name in the artifact's folder."""
        if inside:
            raise ValueError("an object name in the manifest of a folder artifact")
        rel = _plain_relative(value)
        if "/" in rel or rel == self.name + MANIFEST:
            raise ValueError(f"not an object beside the artifact: {value!r}")
        return rel

    def _own_folder(self, at: str) -> bool:
        """Only a version folder of this very artifact: a save deletes what it names."""
        return bool(re.fullmatch(re.escape(f".{self.name}{PREVIOUS}/") + _WRITER, at)
                    or re.fullmatch(re.escape(f".{self.name}{legacy.VERSIONS}/") + _WRITER, at))

    def _listing(self, copies: bool = True, keys: Iterable[str] = ()) -> dict[str, Obj]:
        """The objects whose keys start with the artifact's, (``copies``) those in its
        folders of copies and earlier versions, and, when ``keys`` (what the versions
        at hand name) holds others, the objects of its folder that start as every
        object of the artifact does (``_family``: a sharded map's shards)."""
        found = self.backend.list(self.key)
        folders = [posixpath.join(self.parent, f".{self.name}{folder}/") if self.parent
                   else f".{self.name}{folder}/" for folder in (PREVIOUS, legacy.VERSIONS)]
        for folder in folders if copies else ():
            found.update(self.backend.list(folder))
        if any(not k.startswith((self.key, *folders)) for k in keys):
            found.update(self.backend.list(self._family(), below=False))
        return found

    def _plain(self, listing: dict[str, Obj]) -> dict[str, str]:
        """What is at the URL without a manifest: object key → path relative to the
        staging folder (a file, a checkpoint prefix's files, or a folder's objects)."""
        if self.key in listing:
            return {self.key: self.name}
        found = {}
        for key in listing:
            if not key.startswith(self.key):
                continue  # (a sibling, in a listing of the artifact's family)
            rest = key[len(self.key):]
            if rest == ".index" or re.fullmatch(r"\.data-\d{5}-of-\d{5}", rest):
                found[key] = self.name + rest
        if found:
            return found
        return {key: self.name + key[len(self.key):] for key in listing
                if key.startswith(self.key + "/")}

    def _plain_members(self, into: Path, detect: Callable[[Path], Any],
                       plain: dict[str, str]) -> dict[str, str]:
        """The other objects of the plain file artifact copied to ``into``: those of
        its folder its layout (``detect``) names as its members."""
        try:
            layout = detect(into / self.name)
        except KerasaveError:
            return {}  # (the caller's own detection says why)
        found = self.backend.list(self._family(), below=False)
        return {key: key[len(self.parent) + 1:] if self.parent else key for key in found
                if key not in plain and self._member(key, False, layout)}

    def _mine(self, key: str, inside: bool) -> bool:
        """Whether ``key`` is one of the artifact's own names (not a sibling's)."""
        if not key.startswith(self.key):
            return False
        rest = key[len(self.key):]
        if inside:
            return rest.startswith("/")
        return rest == "" or rest == ".index" or bool(
            re.fullmatch(r"\.data-\d{5}-of-\d{5}", rest))


def _plain_relative(value: Any) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value:
        raise ValueError(f"not a relative path: {value!r}")
    if any(p in ("", ".", "..") for p in value.split("/")):
        raise ValueError(f"not a plain relative path: {value!r}")
    return value
