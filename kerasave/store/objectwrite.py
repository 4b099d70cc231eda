"""The writing side of ``ObjectStore`` (``kerasave.store.objectstore``): a save's
steps 1-5, as that module's docstring tells them.

``Writing`` is a part of ``ObjectStore`` (its methods use the store's reading
side: ``_read_doc``, ``_versions``, ``_listing``...); ``_Announcement`` runs steps
1-3 with the copy in a thread, made when the first object is about to be
replaced. Every object-store step is announced to ``objectstore._step`` (the
crash-point tests stop a save at each one in turn).
"""

from __future__ import annotations

import json
import posixpath
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kerasave._errors import CorruptArtifactError, KerasaveError
from kerasave.store import legacy, manifest
from kerasave.store.backends import ABSENT, ANY, Conflict, Obj
from kerasave.store.layout import Layout
from kerasave.store.objectnames import PREVIOUS, Names
from kerasave.store.paths import safe_join

if TYPE_CHECKING:
    from kerasave.store.objectstore import ObjectStore

__all__ = ["Writing", "LAYOUT", "PREVIOUS"]

LAYOUT = 2  # (1: kerasave.store.legacy)
_ATTEMPTS = 5  # manifest writes that lose a race are tried again this often


def _objectstore() -> ModuleType:
    """The store's module: its ``_step`` hook, ``GRACE`` and ``progress`` are set there."""
    from kerasave.store import objectstore

    return objectstore


def _step(kind: str, url: str) -> None:
    _objectstore()._step(kind, url)


@dataclass
class _Version:
    """One whole version of the artifact: its manifest, and where each file is."""

    label: str  # "committed", "pending", "previous" or "plain"
    manifest: dict[str, Any]  # its local manifest (the files' sizes and CRC32Cs)
    keys: dict[str, str]  # the manifest's file names → object keys
    local: dict[str, str]  # the manifest's file names → paths relative to the staging folder
    etags: dict[str, str | None] = field(default_factory=dict)  # as uploaded, when known
    entry: dict[str, Any] = field(default_factory=dict)  # its entry in the manifest's "store"

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("files") or {}

    def problem(self, listing: dict[str, Obj], url: Callable[[str], str]) -> str | None:
        """Why the objects listed are not this version's (before any download), or None."""
        for name, key in self.keys.items():
            found = listing.get(key)
            if found is None:
                return f"an object the manifest lists is missing: {url(key)}"
            want = self.files[name].get("bytes")
            if found.size != want:
                return (f"{posixpath.basename(key)} has {found.size:,} bytes, the manifest "
                        f"says {want:,}")
        return None

    def untouched(self, listing: dict[str, Obj]) -> bool:
        """Every object is the very one uploaded (its ETag), where ETags are known."""
        return bool(self.etags) and all(
            self.etags.get(n) is not None and listing.get(k) is not None
            and listing[k].etag == self.etags[n] for n, k in self.keys.items())


class Writing(Names):
    """``ObjectStore``'s saves (see the module's docstring)."""

    url: str
    if TYPE_CHECKING:  # what ``ObjectStore`` defines and its saves call
        def _url(self, key: str) -> str: ...
        def child(self, name: str) -> ObjectStore: ...
        def _version(self, label: str, recorded: dict[str, Any], inside: bool, *,
                     at: str | None = None, paths: dict[str, str] | None = None,
                     entry: dict[str, Any] | None = None) -> _Version: ...
        def _read_doc(self, inside: bool | None = None
                      ) -> tuple[dict[str, Any] | None, str | None, bool]: ...
        def _versions(self, doc: dict[str, Any], inside: bool) -> list[_Version]: ...
        def _legacy(self, doc: dict[str, Any]) -> _Version: ...
        def fetch(self, into: Path, detect: Callable[[Path], Any] | None = None
                  ) -> tuple[Path, str, bool]: ...
        def _staged(self) -> Path: ...

    def publish(self, local: Path, layout: Layout) -> None:
        """Upload the committed local artifact ``local`` (its sealed manifest beside or
        inside it) and commit it (steps 1-5 of the module's docstring).

        The copy of step 2 runs beside the uploads of step 4: only what replaces an
        object (a PUT, a multipart upload's completion) waits for the copy and for the
        announcement (``_Announcement``)."""
        inside = layout.manifest_inside
        recorded = manifest.read(layout, local)
        if recorded is None:
            raise KerasaveError("the staged artifact has no manifest", path=local)
        if not inside:
            recorded = self._named(recorded, layout, local)
        new = self._version("pending", recorded, inside)
        sources = {n: safe_join(local.parent, rel) for n, rel in new.local.items()}
        for name, source in sources.items():
            if not source.is_file():
                raise KerasaveError(f"the staged file {name!r} is missing", path=source)
        writer = f"{int(time.time()):010d}-{secrets.token_hex(6)}"
        mine = {"manifest": new.manifest, "writer": writer, "started": time.time()}
        announced = _Announcement(self, mine, inside, set(new.keys.values()), layout)
        try:
            etags = self._upload(new, sources, announced)
        finally:
            announced.close()
        self._commit(new, etags, mine, inside, announced.previous, announced.doc,
                     announced.etag)
        mine_now = set(new.keys.values())
        listing = announced.listing
        others = [p for p in announced.previous if p.get("at") != announced.copied]
        if others or (inside and self._manifest_key(False) in listing) or any(
                self._member(k, inside, layout) and k not in mine_now for k in listing):
            self._tidy(new, inside, announced.copied, layout)
        elif announced.copied:
            self._tidy_copies(announced.copied)  # (else nothing is left to remove)

    def _named(self, recorded: dict[str, Any], layout: Layout, local: Path
               ) -> dict[str, Any]:
        """The local manifest of the file artifact ``local`` with, for each file the
        layout names otherwise than by the artifact's name and its own (``member_at``:
        a sharded map's shard), its object's name (``object``)."""
        files = recorded.get("files")
        if not isinstance(files, dict):
            return recorded
        named = {}
        for name, entry in files.items():
            entry = {k: v for k, v in entry.items() if k != "object"}
            member = layout.member_at(local, name)
            if member.parent != local.parent or not member.name:
                raise KerasaveError(f"the file {name!r} of the staged artifact is not "
                                    "beside it", path=member)
            key = posixpath.join(self.parent, member.name) if self.parent else member.name
            if member.name != self._relative(name, False):
                if not key.startswith(self._family()):
                    raise KerasaveError(
                        f"the file {member.name!r} does not start as the artifact's name "
                        "does (up to its first dot): an object store finds an artifact's "
                        "objects by that prefix", path=self._url(key))
                entry["object"] = member.name
            named[name] = entry
        return {**recorded, "files": named}

    def _state(self, inside: bool, keys: Iterable[str] = (),
               layout: Layout | None = None) -> _State:
        """Step 1: the manifest, its ETag, the artifact's objects (those a version names
        and ``keys``, the new version's, too) and what the manifest says of them."""
        try:
            doc, etag, _ = self._read_doc(inside)
        except CorruptArtifactError:
            doc = None  # a damaged manifest is replaced like a missing one
            etag = self._etag_of(self._manifest_key(inside))
        try:
            versions = self._versions(doc, inside) if doc is not None else []
        except CorruptArtifactError:
            versions = []
        listing = self._listing(copies=False, keys=[*keys, *(
            k for v in versions if v.label != "previous" for k in v.keys.values())])
        committed = next((v for v in versions if v.label == "committed"), None)
        keep: list[dict[str, Any]] = []  # previous copies still needed
        if doc is not None and legacy.is_legacy(doc) and versions:
            keep = [versions[0].entry]
        elif doc is None and inside:  # an earlier layout kept a folder's manifest beside
            keep = self._legacy_beside()
        elif doc is not None:
            keep = [e for e in (doc.get("store") or {}).get("previous") or []
                    if committed is None or not committed.untouched(listing)]
        base = committed
        if base is None and doc is None:
            base = self._plain_version(listing, inside, layout)
        return _State(doc, etag, listing, base, keep)

    def _to_copy(self, state: _State, keys: set[str]) -> _Version | None:
        """Step 2: the version to copy first: a whole one of several objects, some of
        which this save replaces."""
        base = state.base
        if (base is not None and len(base.keys) > 1 and base.problem(state.listing, self._url)
                is None and (base.label == "plain" or base.untouched(state.listing))
                and keys & set(base.keys.values())):
            return base
        return None

    def _announce(self, state: _State, mine: dict[str, Any], inside: bool,
                  entry: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
        """Step 3: the manifest with this save pending (and its copy), in one PUT,
        conditional on the manifest read.

        Raises:
            Conflict: another writer changed the manifest meanwhile.
        """
        doc = state.doc
        old = doc is not None and legacy.is_legacy(doc)
        others = [] if old else _live((doc or {}).get("store", {}).get("pending"))
        store = {"layout": LAYOUT, "pending": [*others, mine],
                 "previous": state.keep + ([entry] if entry else [])}
        registered = dict(doc) if doc is not None and not old else {}
        registered["store"] = store
        key = self._manifest_key(inside)
        _step("pending", self._url(key))
        exists = doc is not None or state.etag is not None
        etag = self.backend.put_bytes(key, _dumps(registered),
                                      match=(state.etag or ANY) if exists else ABSENT)
        return registered, etag

    def _legacy_beside(self) -> list[dict[str, Any]]:
        """The version a legacy manifest beside a folder artifact commits, as a copy to
        keep naming while the folder's own manifest takes over."""
        try:
            doc, _, _ = self._read_doc(False)
            if doc is not None and legacy.is_legacy(doc):
                return [self._legacy(doc).entry]
        except CorruptArtifactError:
            pass
        return []

    def _etag_of(self, key: str) -> str | None:
        found = self.backend.list(key).get(key)
        return found.etag if found is not None else None

    def _plain_version(self, listing: dict[str, Obj], inside: bool = False,
                       layout: Layout | None = None) -> _Version | None:
        """The plain artifact at the URL (no manifest) as a version with no checksums:
        its objects, and those of ``listing`` its layout names as its files otherwise
        than by its name (a sharded map's shards)."""
        plain = self._plain(listing)
        if not plain:
            return None
        files, local = {}, {}
        for key, rel in plain.items():
            name = rel[len(self.name):] or "."
            if name.startswith("/"):
                name = name[1:]
            files[name] = {"bytes": listing[key].size, manifest.CHECKSUM: None}
            local[name] = rel
        if self.key in plain and layout is not None and not inside:
            here = Path(self.name)
            for key, found in listing.items():
                if key not in plain and self._member(key, False, layout):
                    base = posixpath.basename(key)
                    name = layout.member_tail(here, here.with_name(base))
                    files[name] = {"bytes": found.size, manifest.CHECKSUM: None}
                    local[name] = base
        keys = {n: posixpath.join(self.parent, rel) for n, rel in local.items()}
        return _Version("plain", {"files": files}, keys, local,
                        {n: listing[k].etag for n, k in keys.items()})

    def _copy(self, version: _Version, writer: str) -> dict[str, Any]:
        """Server-side copies of ``version``'s objects in a folder of this writer's."""
        at = f".{self.name}{PREVIOUS}/{writer}"
        for name, key in version.keys.items():
            target = posixpath.join(self.parent, at, version.local[name])
            _step("copy", self._url(target))
            self.backend.copy(key, target, size=int(version.files[name]["bytes"]),
                              match=version.etags.get(name) or ANY)
        return {"at": at, "paths": dict(version.local), "manifest": version.manifest,
                "writer": writer, "started": time.time(), "of": dict(version.etags)}

    def _upload(self, new: _Version, sources: dict[str, Path],
                announced: _Announcement) -> dict[str, str | None]:
        """Step 4: every file in one PUT each (what makes the others an artifact last:
        a checkpoint's index, a SavedModel's graph, a shard map), conditional on the
        object listed when the announcement was made."""
        order = sorted(new.keys, key=lambda n: (
            n.endswith(".index") or n == "saved_model.pb" or n == ".", n))
        etags: dict[str, str | None] = {}
        total = sum(sources[n].stat().st_size for n in order)
        with _objectstore()._progress("upload", total) as callback:
            for name in order:
                key = new.keys[name]

                def condition(key: str = key) -> Any:
                    seen = announced.made().get(key)  # (waits for the copy, announces)
                    _step("put", self._url(key))
                    return ABSENT if seen is None else (seen.etag or ANY)

                try:
                    etags[name] = self.backend.put_file(sources[name], key, match=condition,
                                                        callback=callback)
                except Conflict:
                    raise _raced(self.url) from None
        return etags

    def _commit(self, new: _Version, etags: dict[str, str | None], mine: dict[str, Any],
                inside: bool, previous: list[dict[str, Any]], doc: dict[str, Any],
                etag: str | None) -> None:
        """Step 5: the manifest with the new version committed, in one PUT (conditional on
        the one registered; when another writer registered meanwhile, again on theirs,
        while every object is still this save's)."""
        key = self._manifest_key(inside)
        for _ in range(_ATTEMPTS):
            others = [p for p in _live(doc.get("store", {}).get("pending"))
                      if p.get("writer") != mine["writer"]]
            writers = {p.get("writer") for p in others}
            committed = dict(new.manifest)
            committed["files"] = {n: {**f, "etag": etags.get(n)}
                                  for n, f in new.manifest["files"].items()}
            committed["store"] = {"layout": LAYOUT, "pending": others,
                                  "previous": [p for p in previous if p.get("writer") in writers]}
            _step("commit", self._url(key))
            try:
                self.backend.put_bytes(key, _dumps(committed), match=etag or ANY)
                return
            except Conflict:
                pass
            fresh, etag, _ = self._read_doc(inside)
            listing = self._listing(copies=False, keys=new.keys.values())
            if fresh is None or not all(listing.get(k) is not None and listing[k].etag == etags[n]
                                      for n, k in new.keys.items()):
                raise _raced(self.url)
            doc = fresh
            previous = (doc.get("store") or {}).get("previous") or []
        raise _raced(self.url)

    def _tidy(self, new: _Version, inside: bool, copy: str | None,
              layout: Layout | None = None) -> None:
        """After the commit: remove this save's copy, copies and legacy versions no
        version needs, and objects of the artifact that no version names (those the
        layout names otherwise than by the artifact's name too: a map's old shards)."""
        try:
            doc, _, _ = self._read_doc(inside)
            versions = self._versions(doc, inside) if doc is not None else []
        except CorruptArtifactError:
            return
        named = {k for v in versions for k in v.keys.values()}
        listing = self._listing(keys=[*named, *new.keys.values()])
        named.add(self._manifest_key(inside))
        needed = {(v.entry or {}).get("at") for v in versions if v.label == "previous"}
        now = time.time()
        stale = []
        for key in listing:
            if key in named:
                continue
            rest = key[len(self.parent) + 1:] if self.parent else key
            folder = "/".join(rest.split("/")[:2])
            if folder.startswith(f".{self.name}{PREVIOUS}/") or folder.startswith(
                    f".{self.name}{legacy.VERSIONS}/"):
                if folder in needed:
                    continue
                born = folder.rsplit("/", 1)[-1].split("-", 1)[0]
                young = born.isdigit() and now - int(born) < _objectstore().GRACE
                if folder != copy and young and legacy.VERSIONS not in folder:
                    continue  # maybe another writer's copy, still in the making
                stale.append(key)
            elif self._member(key, inside, layout):
                stale.append(key)  # (a data shard of the old version, say)
        beside = self._manifest_key(False)
        if inside and beside in listing:  # a legacy manifest (readers look there first)
            _step("delete", self._url(beside))
            self.backend.delete([beside])
        if stale:
            _step("delete", self._url(stale[0]))
            self.backend.delete(stale)

    def _tidy_copies(self, copy: str) -> None:
        """After a commit that needed only this save's copy: remove it, and copies of
        killed saves older than ``_objectstore().GRACE`` (one listing of the copies' folder)."""
        folder = f".{self.name}{PREVIOUS}/"
        listing = self.backend.list(posixpath.join(self.parent, folder) if self.parent
                                    else folder)
        now, stale = time.time(), []
        for key in listing:
            rest = key[len(self.parent) + 1:] if self.parent else key
            at = "/".join(rest.split("/")[:2])
            born = at.rsplit("/", 1)[-1].split("-", 1)[0]
            if at == copy or born.isdigit() and now - int(born) >= _objectstore().GRACE:
                stale.append(key)
        if stale:
            _step("delete", self._url(stale[0]))
            self.backend.delete(stale)

    # -- the layout before this one --------------------------------------------------

    def migrate(self) -> list[str]:
        """Rewrite what kerasave's earlier layout holds here (``kerasave.store.legacy``:
        this artifact, or every artifact of this folder) in this one, each file's CRC32C
        checked on the way; the URLs rewritten."""
        doc, _, _ = self._read_doc(False)
        if doc is not None:
            if not legacy.is_legacy(doc):
                return []
            self._migrate()
            return [self.url]
        done = []
        for key in sorted(self.backend.list(self.key + "/")):
            name = key[len(self.key) + 1:]
            if "/" in name or not name.endswith(_objectstore().MANIFEST):
                continue
            with self.child(name[: -len(_objectstore().MANIFEST)]) as child:
                done += child.migrate()
        return done

    def _migrate(self) -> None:
        stage = self._staged()
        _objectstore()._clear(stage)
        local, _, _ = self.fetch(stage)
        layout = _Placed(local.is_dir())
        self.publish(local, layout)


@dataclass
class _State:
    """What a save found before announcing itself (``ObjectStore._state``)."""

    doc: dict[str, Any] | None
    etag: str | None
    listing: dict[str, Obj]
    base: _Version | None  # the version at the URL (committed, or a plain artifact)
    keep: list[dict[str, Any]]  # copies the manifest names that are still needed


class _Announcement:
    """Steps 1-3 of a save, the copy in a thread from the start, the announcement made
    when the first object is about to be replaced (``made``): the uploads run beside
    the copy, and nothing at the URL changes before the copy is complete and the save
    announced."""

    def __init__(self, store: Writing, mine: dict[str, Any], inside: bool,
                 keys: set[str], layout: Layout | None = None) -> None:
        self.store, self.mine, self.inside, self.keys = store, mine, inside, keys
        self.layout = layout
        self.state = store._state(inside, keys, layout)
        self.doc: dict[str, Any] = {}
        self.etag: str | None = None
        self.previous: list[dict[str, Any]] = []
        self.listing: dict[str, Obj] = dict(self.state.listing)
        self.copied: str | None = None
        self._done = False
        self._copy: _Background | None = None
        base = store._to_copy(self.state, keys)
        if base is not None:
            self._copy = _Background(lambda: store._copy(base, mine["writer"]))

    def made(self) -> dict[str, Obj]:
        """The objects as listed when the save was announced (announcing it first)."""
        if self._done:
            return self.listing
        store, state = self.store, self.state
        entry = self._copy.result() if self._copy is not None else None
        for attempt in range(_ATTEMPTS):
            if attempt:  # another writer changed the manifest: read it again
                state = store._state(self.inside, self.keys, self.layout)
                base = store._to_copy(state, self.keys)
                if base is None:
                    entry = None  # (a copy made in vain is removed as stale later)
                elif entry is None or entry.get("of") != base.etags:
                    entry = store._copy(base, self.mine["writer"])  # (it changed: again)
            if entry is not None:
                self.copied = entry["at"]
            try:
                self.doc, self.etag = store._announce(state, self.mine, self.inside, entry)
            except Conflict:
                continue
            self.state, self.listing = state, state.listing
            self.previous = self.doc["store"]["previous"]
            self._done = True
            return self.listing
        raise _raced(store.url)

    def close(self) -> None:
        """Wait for the copy, whatever happened (nothing runs on once a save is over)."""
        if self._copy is not None:
            self._copy.wait()


class _Background:
    """A call run in a thread; ``result`` waits and returns it, or raises what it raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,),
                                        name="kerasave-copy", daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._result = call()
        except BaseException as exc:  # (a kill in the tests' hook too)
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


@dataclass
class _Placed:
    """All ``publish`` needs of an artifact's layout: where its manifest is."""

    manifest_inside: bool
    name: str = ""
    temp_suffix: str = ""

    def members(self, path: Path) -> list[Path]:
        return []

    def exists(self, path: Path) -> bool:
        return path.exists()

    def member_tail(self, path: Path, member: Path) -> str:
        return member.name[len(path.name):] or "."

    def member_at(self, path: Path, tail: str) -> Path:
        return path if tail == "." else path.with_name(path.name + tail)


def _live(pending: Any) -> list[dict[str, Any]]:
    """Pending entries of writers that may still be at work (younger than ``GRACE``)."""
    now = time.time()
    return [p for p in (pending or []) if isinstance(p, dict)
            and now - float(p.get("started") or 0) < _objectstore().GRACE]


def _raced(url: str) -> KerasaveError:
    return KerasaveError("another save of this artifact changed it while this one was "
                         "uploading; that save stands and this one committed nothing "
                         "(save again to replace it)", path=url)


def _dumps(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, default=str) + "\n").encode("utf-8")


