"""``ObjectStore``: an artifact at an fsspec URL, in the layout its users expect.

The object is at the URL. ``s3://b/models/m.keras`` is one plain object at the
key ``models/m.keras``; a checkpoint prefix ``s3://b/run/ckpt-3`` is
``run/ckpt-3.index`` and ``run/ckpt-3.data-00000-of-00001``; sharded weights
``s3://b/w/m.weights.json`` are the map and its shards ``w/m_00000.weights.h5``...
(a file named otherwise than by the artifact's name is named in the manifest:
``kerasave.store.objectnames``); a SavedModel is a folder of objects. Beside the
artifact (inside a SavedModel's folder) is its manifest, ``<key>.kerasave.json``:
the format, the versions that wrote it, and for every file its size, CRC32C and
the ETag (or version token) of the object as it was uploaded. Plain fsspec,
``aws s3 cp``, Keras and TensorFlow read the objects; kerasave reads them only as
far as the manifest vouches for them.

**A save** (``kerasave.store.objectwrite``) writes and verifies the artifact
locally (the whole local transaction, in a staging folder), then:

1. reads the manifest and lists the artifact's objects;
2. for an artifact of several files that would be overwritten in place (a
   checkpoint prefix or a SavedModel saved again at the same URL), copies the
   committed version's objects, server-side, to ``.<name>.kerasave-prev/<writer>/``
   (in a thread, beside the uploads of step 4);
3. registers the new version in the manifest as *pending* (its sizes and
   CRC32Cs) together with that copy, in one PUT, once the copy is complete and
   before the first object is replaced;
4. uploads each file in one atomic PUT (a multipart upload is seen whole or not
   at all: its parts go up beside the copy, its completion waits for step 3),
   what makes the others an artifact last (a checkpoint's index, a shard map);
5. writes the manifest with the new version committed (one PUT: the commit),
   then removes the copy and objects no version names any more.

**A read** takes the first whole version the manifest describes: the committed
one (its objects' ETags match), else a pending one (a save killed between its
uploads and its commit: its objects are complete and verified), else a copy of
the committed one (a save killed half-way through overwriting several files: the
objects at the URL are a mix, which is never read). Every object's size is
checked before it is downloaded and every file's CRC32C before a model sees a
byte; a version none of whose checks pass is a ``CorruptArtifactError``.

**Racing writers.** Where the backend has conditional writes (S3:
``If-Match``/``If-None-Match``, ``kerasave.store.backends``), every manifest
write is conditional on the manifest read, and every object PUT on the object
listed, so of two saves racing on one URL one commits and the other raises
``KerasaveError`` having committed nothing; a reader sees one whole version.
Elsewhere (``memory://``, backends without conditions) the last write of each
object wins; see docs/scaling.md.

Versions written by kerasave before this layout (``.<name>.kerasave-v/<token>/``,
committed by a manifest naming the token) are read as they are
(``kerasave.store.legacy``); a save replaces them with this layout, and
``kerasave convert URL URL`` rewrites one in place.

Every object-store step goes through ``_step`` (the crash-point tests stop a
process at each one in turn).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kerasave._errors import ArtifactNotFoundError, CorruptArtifactError, KerasaveError
from kerasave.store import legacy, manifest
from kerasave.store.backends import Obj, backend_for
from kerasave.store.base import Found, Listed, Naming
from kerasave.store.crc import crc32c
from kerasave.store.layout import Layout
from kerasave.store.objectnames import INSIDE, MANIFEST, PREVIOUS, Names, _plain_relative
from kerasave.store.objectwrite import Writing, _Version
from kerasave.store.paths import safe_join, staging
from kerasave.store.transaction import Transaction

__all__ = ["ObjectStore", "GRACE", "MANIFEST", "PREVIOUS", "progress"]

GRACE = float(os.environ.get("KERASAVE_REMOTE_GRACE", 3600))  # seconds
_MANIFEST_LIMIT = 64 * 2**20  # a manifest larger than this is not one
_THREADS = min(4, os.cpu_count() or 1)

# Called before each object-store step with its kind ("copy", "pending", "put",
# "commit", "delete") and URL; the crash-point tests set it, nothing else does.
_hook: Callable[[str, str], None] | None = None
# What draws a progress bar for a transfer: ``progress(what, total_bytes)`` is a
# context manager giving ``advance(n_bytes)``; the command line sets it when stderr
# is a terminal (``kerasave.cli._ui.transfer_bar``).
progress: Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]] \
    | None = None


def _step(kind: str, url: str) -> None:
    if _hook is not None:
        _hook(kind, url)


class ObjectStore(Writing, Names):
    """An artifact, or a folder of them, at an fsspec URL (see the module's docstring)."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        self.url = f"{scheme}://{rest.rstrip('/')}"
        self.backend, path = backend_for(self.url)
        self.key = path.rstrip("/")
        self.parent, self.name = posixpath.split(self.key)
        if not self.name or not self.parent.strip("/") and self.backend.fs.root_marker != "/":
            raise KerasaveError("the URL names no object inside a bucket or folder "
                                "(expected e.g. s3://bucket/model.keras)", path=url)
        self.shown = self.url
        self._docs: dict[str, tuple[str | None, Any]] = {}  # (list's cache: key → etag, doc)
        self._stage: contextlib.ExitStack | None = None
        self._stage_path: Path | None = None
        self.local_dir: Path | None = None  # (not a folder on this machine's disk)

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    @property
    def parent_url(self) -> str:
        """The URL of the folder the artifact is in (what a staging folder stands for)."""
        return self.url.rsplit("/", 1)[0]

    def _url(self, key: str) -> str:
        return self.backend.url(key)

    def child(self, name: str) -> ObjectStore:
        return ObjectStore(f"{self.url}/{name}")

    def same(self, other: Any) -> bool:
        return isinstance(other, ObjectStore) and self.url == other.url

    # -- where things are ------------------------------------------------------------

    def _version(self, label: str, recorded: dict[str, Any], inside: bool, *,
                 at: str | None = None, paths: dict[str, str] | None = None,
                 entry: dict[str, Any] | None = None) -> _Version:
        """A version described by ``recorded`` (its local manifest), with its files at the
        artifact's own keys, or under the folder ``at`` (relative to the artifact's)."""
        files = recorded.get("files")
        if not isinstance(files, dict):
            raise ValueError("no file table")
        for name, value in files.items():
            if not isinstance(name, str) or not isinstance(value, dict):
                raise ValueError(f"not a file entry: {name!r}")
            size, crc = value.get("bytes"), value.get(manifest.CHECKSUM)
            if type(size) is not int or size < 0 or not (crc is None or isinstance(crc, str)):
                raise ValueError(f"no size and checksum for {name!r}")
        if paths is not None:
            local = dict(paths)
        else:  # (a file named otherwise than its artifact says so: a sharded map's shard)
            local = {n: self._relative(n, inside) if v.get("object") is None
                     else self._object(v["object"], inside) for n, v in files.items()}
        if len(set(local.values())) != len(local):
            raise ValueError("two files at one object")
        base = self.parent if at is None else posixpath.join(self.parent, at)
        keys = {n: posixpath.join(base, rel) if base else rel for n, rel in local.items()}
        etags = {n: v.get("etag") for n, v in files.items()} if at is None else {}
        clean = {k: v for k, v in recorded.items() if k != "store"}
        clean["files"] = {n: {k: v for k, v in f.items() if k != "etag"}
                          for n, f in files.items()}
        return _Version(label, clean, keys, local, etags, entry or {})

    def _read_doc(self, inside: bool | None = None) -> tuple[dict[str, Any] | None, str | None,
                                                              bool]:
        """The manifest (beside, else inside), its ETag, and whether it is inside."""
        places = [False, True] if inside is None else [inside]
        for place in places:
            key = self._manifest_key(place)
            got = self.backend.get_bytes(key, _MANIFEST_LIMIT + 1)
            if got is None:
                continue
            data, etag = got
            where = self._url(key)
            if len(data) > _MANIFEST_LIMIT:
                raise CorruptArtifactError(
                    f"the manifest is larger than {_MANIFEST_LIMIT:,} bytes", path=where)
            try:
                doc = json.loads(data)
            except ValueError as exc:
                raise CorruptArtifactError(f"the manifest is not valid JSON: {exc}",
                                           path=where) from None
            if not isinstance(doc, dict):
                raise CorruptArtifactError("the manifest is not a JSON object", path=where)
            return doc, etag, place
        return None, None, False

    def _versions(self, doc: dict[str, Any], inside: bool) -> list[_Version]:
        """Every version the manifest describes: committed, pending (newest first),
        previous copies."""
        where = self._url(self._manifest_key(inside))
        if legacy.is_legacy(doc):
            return [self._legacy(doc)]
        try:
            found = []
            if "files" in doc:
                found.append(self._version("committed", doc, inside))
            place = doc.get("store") or {}
            if not isinstance(place, dict):
                raise ValueError("'store' is not an object")
            pending = place.get("pending") or []
            for entry in sorted(pending, key=lambda e: -float(e.get("started") or 0)):
                found.append(self._version("pending", entry["manifest"], inside, entry=entry))
            for entry in place.get("previous") or []:
                at = entry.get("at")
                if not isinstance(at, str) or not self._own_folder(at):
                    raise ValueError(f"not a folder of this artifact: {at!r}")
                paths = entry.get("paths")
                if paths is not None:
                    paths = {str(k): _plain_relative(v) for k, v in paths.items()}
                found.append(self._version("previous", entry["manifest"], inside, at=at,
                                           paths=paths, entry=entry))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArtifactError(f"not a kerasave manifest of an object-store artifact "
                                       f"({type(exc).__name__}: {exc})", path=where) from None
        return found

    def _legacy(self, doc: dict[str, Any]) -> _Version:
        try:
            at, paths, recorded = legacy.parse(doc, self.name)
            return self._version("previous", recorded, False, at=at, paths=paths,
                                 entry={"at": at, "paths": paths, "manifest": recorded,
                                        "writer": None, "started": 0})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArtifactError(f"not a kerasave manifest of an object-store artifact "
                                       f"({type(exc).__name__}: {exc})",
                                       path=self._url(self._manifest_key(False))) from None

    # -- reading ---------------------------------------------------------------------

    def exists(self) -> bool:
        doc, _, _ = self._read_doc()
        return doc is not None or bool(self._plain(self.backend.list(self.key)))

    def fetch(self, into: Path, detect: Callable[[Path], Any] | None = None
              ) -> tuple[Path, str, bool]:
        """A local copy in ``into`` of the first whole version (see the module's
        docstring): its path, what was checked, and whether every byte matched a
        CRC32C. Sizes are checked before a byte is downloaded. ``detect`` (a copy's
        path → its layout) finds the other files of a file artifact without a
        manifest that its layout names otherwise than by its name (a map's shards).

        Raises:
            ArtifactNotFoundError: nothing at the URL.
            CorruptArtifactError: no version the manifest describes is whole.
        """
        for attempt in range(3):
            doc, etag, inside = self._read_doc()
            if doc is None:
                listing = self.backend.list(self.key)
                plain = self._plain(listing)
                if not plain:
                    if attempt:
                        raise ArtifactNotFoundError("the artifact was deleted while it was "
                                                    "read", path=self.url)
                    raise ArtifactNotFoundError("nothing at this URL", path=self.url)
                self._download(plain, into, listing)
                if detect is not None and self.key in plain:
                    self._download(self._plain_members(into, detect, plain), into)
                return (into / self.name,
                        "no manifest (not written by kerasave): format checks only", False)
            versions = self._versions(doc, inside)
            listing = self._listing(copies=any(v.label == "previous" for v in versions),
                                    keys=[k for v in versions for k in v.keys.values()])
            problems = []
            committed = [v for v in versions if v.label == "committed"]
            if committed and not committed[0].untouched(listing):
                # Replaced since its commit: a pending version (an interrupted save) first.
                versions = [v for v in versions if v.label == "pending"] + [
                    v for v in versions if v.label != "pending"]
            for version in versions:
                problem = version.problem(listing, self._url)
                if problem is None:
                    try:
                        self._download({version.keys[n]: version.local[n]
                                        for n in version.keys}, into, listing)
                    except FileNotFoundError:  # deleted meanwhile
                        problem = "an object was deleted while it was read"
                    else:
                        problem = self._checked(version, into)
                if problem is None:
                    self._write_manifest(version, inside, into)
                    return into / self.name, _said(version), True
                problems.append(problem)
                _clear(into)
            again, again_etag, _ = self._read_doc()
            if again is None:
                raise ArtifactNotFoundError("the artifact was deleted while it was read",
                                            path=self.url)
            if again_etag is not None and again_etag == etag or again == doc:
                break  # nothing changed meanwhile: what was found is what there is
        detail = problems[0] if problems else "the manifest describes no version"
        raise CorruptArtifactError(f"the artifact does not match its manifest: {detail}",
                                   path=self.url)

    def _checked(self, version: _Version, into: Path) -> str | None:
        for name, rel in version.local.items():
            want = version.files[name].get(manifest.CHECKSUM)
            if want is None:
                continue  # a plain artifact's: format checks only
            got = crc32c(safe_join(into, rel), threads=_THREADS)
            if got != want:
                return f"{posixpath.basename(rel)} has CRC32C {got}, the manifest says {want}"
        return None

    def _write_manifest(self, version: _Version, inside: bool, into: Path) -> None:
        """The version's own manifest where the local read path looks for it."""
        if all(f.get(manifest.CHECKSUM) is None for f in version.files.values()):
            return  # a plain artifact has none
        recorded = dict(version.manifest)
        recorded["files"] = {n: {k: v for k, v in f.items() if k != "object"}
                             for n, f in version.files.items()}  # (the store's, not its)
        at = recorded.pop("manifest_at", None)  # (a legacy version says where)
        local = into / self.name
        target = (safe_join(into, at) if isinstance(at, str) else local / INSIDE if inside
                  else local.with_name(local.name + MANIFEST))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(recorded, indent=1) + "\n", encoding="utf-8")

    def _download(self, objects: dict[str, str], into: Path,
                  listing: dict[str, Obj] | None = None) -> None:
        """Each object to its relative path under ``into`` (``safe_join``: never outside)."""
        places = {key: safe_join(into, rel, source=self._url(key)) for key, rel in objects.items()}
        total = sum(listing[k].size for k in objects if k in listing) if listing else 0
        with _progress("download", total) as callback:
            for key, local in places.items():
                local.parent.mkdir(parents=True, exist_ok=True)
                self.backend.get_file(key, local, callback=callback)

    @contextlib.contextmanager
    def resolve(self, detect: Callable[[Path], Any]) -> Iterator[Found]:
        stage = self._staged()
        _clear(stage)
        with self.naming():
            local, detail, checksummed = self.fetch(stage, detect)
            layout = detect(local)
            where = manifest.manifest_path(layout, local)
            yield Found(layout, local, local, detail, checksummed,
                        where if where.is_file() else None, self.naming)

    @contextlib.contextmanager
    def local(self, detect: Callable[[Path], Any] | None = None) -> Iterator[Path]:
        stage = self._staged()
        _clear(stage)
        with self.naming():
            yield self.fetch(stage, detect)[0]

    # -- the staging folder ----------------------------------------------------------

    def _staged(self) -> Path:
        """This store's private local folder (made at first use, removed by ``close``)."""
        if self._stage is None:
            self._stage = contextlib.ExitStack()
            self._stage_path = self._stage.enter_context(staging())
            self._finalizer = weakref.finalize(self, self._stage.close)
        assert self._stage_path is not None
        return self._stage_path

    @property
    def target(self) -> Path:
        """The local path the formats write and read for this URL: its name, in the
        staging folder."""
        return self._staged() / self.name

    @property
    def naming(self) -> Naming:
        """The staging folder said as the URL's folder."""
        return Naming([(str(self._staged()), self.parent_url)])

    def close(self) -> None:
        """Remove the staging folder (reads of its copies are over)."""
        stage, self._stage, self._stage_path = self._stage, None, None
        if stage is not None:
            stage.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, KerasaveError) and self._stage_path is not None:
                self.naming.error(exc)
        finally:
            self.close()

    # -- writing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, layout: Layout, *, suffix: str | None = None) -> Iterator[_Txn]:
        """The local transaction on ``target`` (in the staging folder), whose commit
        uploads the artifact and commits it by its manifest."""
        with self.naming(), Transaction(layout, self.target, suffix=suffix, shown=self.url,
                                        durable=False) as inner:
            yield _Txn(self, layout, inner)

    def delete(self, layout: Layout | None = None) -> None:
        """Remove the artifact: its manifest first (what commits it), then every
        version's objects (those ``layout`` names otherwise than by the artifact's
        name too: a sharded map's shards) and copies."""
        inside = bool(layout is not None and layout.manifest_inside)
        named: list[str] = []
        try:
            doc, _, inside = self._read_doc(None if layout is None else inside)
        except CorruptArtifactError:
            doc = None
        with contextlib.suppress(CorruptArtifactError):
            if doc is not None:
                named = [k for v in self._versions(doc, inside) for k in v.keys.values()]
        listing = self._listing(keys=named)
        key = self._manifest_key(inside)
        if doc is not None:
            _step("delete", self._url(key))
            self.backend.delete([key])
        rest = []
        for k in listing:
            tail = k[len(self.parent) + 1:] if self.parent else k
            if self._mine(k, True) or self._member(k, False, layout) or tail.startswith(
                    (f".{self.name}{PREVIOUS}/", f".{self.name}{legacy.VERSIONS}/")):
                if k != key:
                    rest.append(k)
        first = [k for k in rest if k.endswith(".index") or k == self.key]
        if first:  # what makes the rest an artifact: a checkpoint's index, a shard map
            _step("delete", self._url(first[0]))
            self.backend.delete(first)
        others = [k for k in rest if k not in first]
        if others:
            _step("delete", self._url(others[0]))
            self.backend.delete(others)

    # -- a folder of artifacts -------------------------------------------------------

    def list(self, pattern: str, layout: Layout | None = None) -> list[Listed]:
        """The committed artifacts in this folder whose names ``pattern`` matches, by
        their manifests (the commit records); manifests unchanged since the last
        listing (their ETags) are not read again."""
        listing = self.backend.list(self.key + "/")
        found = []
        for key, obj in listing.items():
            name = key[len(self.key) + 1:]
            if "/" in name or not name.endswith(MANIFEST):
                continue
            base = name[: -len(MANIFEST)]
            match = re.fullmatch(pattern, base)
            if not match:
                continue
            cached = self._docs.get(key)
            if cached is not None and obj.etag is not None and cached[0] == obj.etag:
                doc = cached[1]
            else:
                try:
                    got = self.backend.get_bytes(key, _MANIFEST_LIMIT)
                    doc = json.loads(got[0]) if got is not None else None
                except (OSError, ValueError):
                    doc = None
                self._docs[key] = (obj.etag, doc)
            if not isinstance(doc, dict) or not ("files" in doc or legacy.is_legacy(doc)):
                continue  # not committed (an interrupted first save)
            fields = {k: v for k, v in doc.items() if k not in ("store", "remote", "files")}
            found.append(Listed(base, int(match.group(1)), fields, f"{self.url}/{base}"))
        return sorted(found, key=lambda e: e.number)

    def put_text(self, name: str, text: str) -> None:
        key = f"{self.key}/{name}"
        _step("put", self._url(key))
        self.backend.put_bytes(key, text.encode("utf-8"))

    def read_text(self, name: str) -> str | None:
        got = self.backend.get_bytes(f"{self.key}/{name}", 2**20)
        if got is None:
            return None
        try:
            return got[0].decode("utf-8")
        except UnicodeDecodeError:
            return None


class _Txn:
    """A save at a URL: the local transaction in a staging folder, and its upload."""

    def __init__(self, store: ObjectStore, layout: Layout, inner: Transaction) -> None:
        self.store, self.layout, self.inner = store, layout, inner
        self.tmp = inner.tmp
        self.naming = inner.naming + store.naming

    def write(self, write: Callable[[Path], None]) -> None:
        self.inner.write(write)

    def verify(self, check: Callable[[Path], Any]) -> tuple[Any, ...]:
        return tuple(self.naming.check(c) for c in self.inner.verify(check))

    def commit(self, fields: dict[str, Any], *, then: Callable[[], None] | None = None) -> None:
        self.inner.commit(fields)
        self.store.publish(self.inner.target, self.layout)
        if then is not None:
            then()


def _said(version: _Version) -> str:
    n = len(version.files)
    if version.label == "committed":
        return f"{n} file(s) match their CRC32C"
    if version.label == "pending":
        return (f"the newest save was interrupted before its commit: its upload, whole, "
                f"{n} file(s) match their CRC32C")
    return (f"the newest save was interrupted: read the previous version, {n} file(s) "
            "match their CRC32C")


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextlib.contextmanager
def _progress(what: str, total: int) -> Iterator[Any]:
    """An fsspec callback that advances ``progress``'s bar, when one is set."""
    from fsspec.callbacks import Callback, NoOpCallback

    if progress is None or total < 2**20:
        yield NoOpCallback()
        return
    with progress(what, total) as advance:

        class _Bar(Callback):  # type: ignore[misc]
            def set_size(self, size: int) -> None:
                pass  # per file; the bar counts the whole transfer

            def absolute_update(self, value: int) -> None:
                pass

            def relative_update(self, inc: int = 1) -> None:
                advance(inc)

        yield _Bar()
