"""Object storage through fsspec: an artifact at a URL, committed by its manifest.

Object stores have no rename, so a save cannot swap a finished temporary into
place. Instead an artifact at ``<parent>/<name>`` is::

    <parent>/<name>.kerasave.json             the commit record: the manifest
    <parent>/.<name>.kerasave-v/<token>/...   one complete version's objects

A save stages the artifact locally (the whole local transaction: write, verify,
seal; ``kerasave.store.transaction``), uploads its files under a fresh token,
and then writes the manifest, which names the token, in one PUT: the commit. An
upload killed before that leaves the old manifest naming the old, untouched
objects; readers trust only what a committed manifest lists, and check every
object against its size and CRC32C. After the commit the writer deletes the
version it replaced; versions nobody committed (killed uploads, the loser of two
concurrent writers) are deleted by a later save once they are older than
``GRACE`` seconds, so an upload still running elsewhere is never cut short.

A URL holding a plain artifact (no manifest: uploaded by other tools) is read
as it is, with the format's own checks.

Every object-store step goes through ``_step`` (the crash-point tests stop a
process at each one in turn). fsspec is imported only when a URL is used: the
backends are the optional extra ``kerasave[remote]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kerasave._errors import ArtifactNotFoundError, CorruptArtifactError, KerasaveError
from kerasave._report import Report
from kerasave.store.layout import Layout
from kerasave.store.paths import safe_join

__all__ = ["is_url", "local_path", "Remote", "staged_save", "fetched", "stage_dir", "series",
           "at_url", "renamed", "report_at", "GRACE"]

VERSIONS = ".kerasave-v"
MANIFEST = ".kerasave.json"
GRACE = float(os.environ.get("KERASAVE_REMOTE_GRACE", 3600))  # seconds
_MANIFEST_LIMIT = 64 * 2**20  # a manifest larger than this is not one
_TOKEN = r"\d{10}-[0-9a-f]{12}"  # a version's name: when its upload began, and a nonce
CHECKSUM = "crc32c"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_EXTRA = "pip install 'kerasave[remote]'"

# Called before each object-store step with its kind ("put", "commit", "delete")
# and URL; the crash-point tests set it, nothing else does.
_hook: Callable[[str, str], None] | None = None
# What draws a progress bar for a transfer: ``progress(what, total_bytes)`` is a
# context manager giving ``advance(n_bytes)``; the command line sets it when stderr
# is a terminal (``kerasave.cli._ui.transfer_bar``).
progress: Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]] \
    | None = None


def _step(kind: str, url: str) -> None:
    if _hook is not None:
        _hook(kind, url)


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL of an fsspec backend (``file://`` is a local path)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    text = os.fspath(path)
    match = _SCHEME.match(text) if isinstance(text, str) else None
    return bool(match) and match.group(1).lower() not in ("file", "local")


def local_path(path: Any) -> Path:
    """A local path, also from a ``file://`` URL."""
    text = os.fspath(path)
    if isinstance(text, str) and re.match(r"^(file|local)://", text, re.IGNORECASE):
        text = text.split("://", 1)[1]
    return Path(text)


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise KerasaveError(f"a URL needs fsspec and its backends: {_EXTRA}",
                            path=url) from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise KerasaveError(f"no fsspec backend for this URL is installed ({exc}); "
                            f"{_EXTRA} installs the common ones", path=url) from None
    except ValueError as exc:
        raise KerasaveError(f"fsspec does not know this URL: {exc}", path=url) from None


@dataclass
class Version:
    """A committed version: its manifest and where its objects are."""

    manifest: dict[str, Any]
    prefix: str  # the objects' folder, in the filesystem's own path form
    paths: dict[str, str]  # the manifest's file names → object paths relative to prefix
    manifest_at: str  # where the manifest lives in a local copy, relative to the copy


class Remote:
    """One artifact at a URL (see the module's docstring)."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        self.url = f"{scheme}://{rest.rstrip('/')}"
        self.fs, path = _filesystem(self.url)
        self.path = path.rstrip("/")
        self.parent, self.name = posixpath.split(self.path)
        if not self.name or not self.parent.strip("/") and self.fs.root_marker != "/":
            raise KerasaveError("the URL names no object inside a bucket or folder "
                                "(expected e.g. s3://bucket/model.keras)", path=url)
        self.manifest_path = f"{self.path}{MANIFEST}"
        self.versions = posixpath.join(self.parent, f".{self.name}{VERSIONS}")

    @property
    def parent_url(self) -> str:
        """The URL of the folder the artifact is in (what a local copy's folder stands for)."""
        return self.url.rsplit("/", 1)[0]

    def _url(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    # -- reading ---------------------------------------------------------------------

    def committed(self) -> Version | None:
        """The committed version, or None when the URL has no kerasave manifest."""
        self.fs.invalidate_cache(self.parent)
        try:
            with self.fs.open(self.manifest_path, "rb") as f:
                data = f.read(_MANIFEST_LIMIT + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptArtifactError(f"unreadable manifest: {exc}",
                                       path=self._url(self.manifest_path)) from exc
        where = self._url(self.manifest_path)
        if len(data) > _MANIFEST_LIMIT:
            raise CorruptArtifactError(f"the manifest is larger than {_MANIFEST_LIMIT:,} bytes",
                                       path=where)
        try:
            manifest = json.loads(data)
            place = manifest["remote"]
            objects = place["objects"]
            # Only a version folder of this very artifact: a save deletes what it names.
            if not isinstance(objects, str) or not re.fullmatch(
                    re.escape(f".{self.name}{VERSIONS}/") + _TOKEN, objects):
                raise ValueError(f"not a version folder of this artifact: {objects!r}")
            prefix = posixpath.join(self.parent, objects)
            paths = {str(k): _relative(v) for k, v in place["paths"].items()}
            manifest_at = _relative(place["manifest"])
            files = manifest["files"]
            for name, entry in files.items():
                size = entry["bytes"]
                if type(size) is not int or size < 0 or not isinstance(entry[CHECKSUM], str):
                    raise ValueError(f"no size and checksum for {name!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArtifactError(f"not a kerasave manifest of an object-store artifact "
                                       f"({type(exc).__name__}: {exc})", path=where) from None
        if set(files) != set(paths):
            raise CorruptArtifactError("the manifest's file table and object names differ",
                                       path=where)
        return Version(manifest, prefix, paths, manifest_at)

    def exists(self) -> bool:
        if self.committed() is not None:
            return True
        return bool(self._plain_objects())

    def _plain_objects(self) -> dict[str, str]:
        """What is at the URL without a manifest: object path → path relative to the copy."""
        fs = self.fs
        fs.invalidate_cache(self.parent)
        if fs.isfile(self.path):
            return {self.path: self.name}
        found = {}
        for p in fs.glob(f"{glob_escape(self.path)}.*"):
            rest = p[len(self.path):]
            if rest == ".index" or rest.startswith(".data-"):  # a TensorFlow checkpoint
                found[p] = self.name + rest
        if found:
            return found
        if fs.isdir(self.path):
            for p in fs.find(self.path):
                found[p] = posixpath.join(self.name, posixpath.relpath(p, self.path))
        return found

    def fetch(self, into: Path) -> Path:
        """A local copy of the committed version (or of a plain artifact) in
        ``into``; returns its path. Objects are streamed to disk and checked
        against the sizes the manifest lists before a byte is read; the CRC32Cs are
        the local read's to check (``resolve_checked``).

        Raises:
            ArtifactNotFoundError: nothing at the URL.
            CorruptArtifactError: an object the manifest lists is missing or differs.
        """
        for attempt in range(3):
            version = self.committed()
            if version is None:
                plain = self._plain_objects()
                if not plain:
                    raise ArtifactNotFoundError("nothing at this URL", path=self.url)
                self._get(plain, into, {})
                return into / self.name
            try:
                self._get({posixpath.join(version.prefix, rel): rel
                           for rel in version.paths.values()}, into,
                          {rel: version.manifest["files"][name].get("bytes")
                           for name, rel in version.paths.items()})
            except FileNotFoundError as exc:
                again = self.committed()
                if again is None:  # deleted meanwhile (retention, another writer)
                    raise ArtifactNotFoundError("the artifact was deleted while it was read",
                                                path=self.url) from None
                if again is not None and again.prefix != version.prefix and attempt < 2:
                    _clear(into)  # a newer save replaced this version meanwhile
                    continue
                raise CorruptArtifactError(f"an object the manifest lists is missing: {exc}",
                                           path=self.url) from None
            target = into / version.manifest_at
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(version.manifest, indent=1) + "\n", encoding="utf-8")
            return into / self.name
        raise AssertionError("unreachable")

    def _get(self, objects: dict[str, str], into: Path, sizes: dict[str, Any]) -> None:
        fs = self.fs
        infos = {}
        for path in objects:
            info = fs.info(path)  # FileNotFoundError: missing
            rel = objects[path]
            safe_join(into, rel, source=self._url(path))  # (before anything is copied)
            want = sizes.get(rel)
            if want is not None and info.get("size") != want:
                raise CorruptArtifactError(
                    f"{posixpath.basename(path)} has {info.get('size')} bytes, the manifest "
                    f"says {want}", path=self._url(path))
            infos[path] = info
        with _progress("download", sum(int(i.get("size") or 0) for i in infos.values())) as cb:
            for path, rel in objects.items():
                local = safe_join(into, rel, source=self._url(path))  # (a key may say ..)
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, str(local), callback=cb)

    # -- writing ---------------------------------------------------------------------

    def publish(self, local: Path, manifest_at: Path, handler: Layout | None = None) -> None:
        """Upload the staged artifact ``local`` (its files in its folder, its sealed
        manifest at ``manifest_at``) as a new version, then commit it. ``handler``:
        its format, when its files are not all named after it (``Layout.member_tail``)."""
        stage = local.parent
        try:
            manifest = json.loads(manifest_at.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KerasaveError(f"the staged manifest is unreadable: {exc}",
                                path=manifest_at) from exc
        before = self.committed_or_none()
        token = f"{int(time.time()):010d}-{secrets.token_hex(6)}"
        prefix = posixpath.join(self.versions, token)
        files = {p for p in stage.rglob("*") if p.is_file() and p != manifest_at}
        table = _table_paths(local, manifest, files, stage, handler)
        uploads = [(stage / rel, posixpath.join(prefix, rel)) for rel in sorted(table.values())]
        with _progress("upload", sum(src.stat().st_size for src, _ in uploads)) as cb:
            for src, dst in uploads:
                _step("put", self._url(dst))
                self.fs.put_file(str(src), dst, callback=cb)
        manifest["remote"] = {"objects": posixpath.relpath(prefix, self.parent),
                              "paths": table,
                              "manifest": str(manifest_at.relative_to(stage))}
        _step("commit", self._url(self.manifest_path))
        self.fs.pipe_file(self.manifest_path,
                          (json.dumps(manifest, indent=1, default=str) + "\n").encode())
        if before is not None and before.prefix != prefix:
            self._delete_prefix(before.prefix)
        self.clean(keep={prefix})

    def committed_or_none(self) -> Version | None:
        try:
            return self.committed()
        except CorruptArtifactError:
            return None  # a damaged manifest is replaced like a missing one

    def clean(self, keep: set[str]) -> None:
        """Delete this artifact's uncommitted versions older than ``GRACE`` seconds."""
        fs = self.fs
        fs.invalidate_cache(self.versions)
        try:
            entries = fs.ls(self.versions, detail=False)
        except (FileNotFoundError, OSError):
            return
        now = time.time()
        current = self.committed_or_none()  # (another writer may have committed since)
        keep = keep | ({current.prefix} if current is not None else set())
        for entry in entries:
            entry = entry.rstrip("/")
            if entry in keep:
                continue
            token = posixpath.basename(entry)
            born = token.split("-", 1)[0]
            if born.isdigit() and now - int(born) < GRACE:
                continue  # maybe an upload still running elsewhere
            self._delete_prefix(entry)

    def delete(self) -> None:
        """Remove the artifact: its commit record first, then every version of it
        (killed uploads too: nothing saves this name again to clean them)."""
        _step("delete", self._url(self.manifest_path))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.manifest_path)
        self._delete_prefix(self.versions)

    def _delete_prefix(self, prefix: str) -> None:
        _step("delete", self._url(prefix))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(prefix, recursive=True)
        self.fs.invalidate_cache(prefix)


def _relative(value: Any) -> str:
    """A relative object path from a manifest, refused when it would leave its folder."""
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value:
        raise ValueError(f"not a relative path: {value!r}")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {value!r}")
    return value


def _table_paths(local: Path, manifest: dict[str, Any], files: set[Path],
                 stage: Path, handler: Layout | None = None) -> dict[str, str]:
    """The manifest's file names → the files' paths relative to the stage."""
    names = manifest.get("files")
    if not isinstance(names, dict):
        raise KerasaveError("the staged manifest has no file table", path=local)
    table = {}
    for f in files:
        rel = f.relative_to(stage)
        if local in f.parents:  # a directory artifact: named inside it
            name = str(f.relative_to(local))
        elif handler is not None:  # a file artifact's members, as its format names them
            name = handler.member_tail(local, f)
        else:  # a file artifact's members: named by what follows its name
            name = f.name[len(local.name):] or "."
        if name in names:
            table[name] = str(rel).replace(os.sep, "/")
    if set(table) != set(names):
        raise KerasaveError(f"the staged files differ from their manifest: "
                            f"{sorted(set(names) ^ set(table))}", path=local)
    return table


def glob_escape(path: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", path)


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


# -- what the facade and the manager use ---------------------------------------------


@contextlib.contextmanager
def at_url(stage: Path | str, url: str) -> Iterator[None]:
    """kerasave's errors raised about a staged copy name the URL instead."""
    try:
        yield
    except KerasaveError as exc:
        raise renamed(exc, str(stage), url) from None


def renamed(exc: KerasaveError, old: str, new: str) -> KerasaveError:
    """``exc``, its message and path saying ``new`` where they said ``old``."""
    if exc.path is not None:
        exc.path = exc.path.replace(old, new)
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (exc.args[0].replace(old, new), *exc.args[1:])
    report = getattr(exc, "report", None)
    if isinstance(report, Report):
        exc.report = report_at(report, old, new)  # type: ignore[attr-defined]
    return exc


def report_at(report: Report, old: str, new: str) -> Report:
    checks = tuple(replace(c, detail=c.detail.replace(old, new)) for c in report.checks)
    return replace(report, path=report.path.replace(old, new), checks=checks)



@contextlib.contextmanager
def stage_dir() -> Iterator[Path]:
    """A private local folder for one transfer, removed afterwards."""
    root = os.environ.get("KERASAVE_STAGING") or None
    path = Path(tempfile.mkdtemp(prefix="kerasave-stage-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_save(url: str) -> Iterator[tuple[Remote, Path]]:
    """``(remote, local)``: save to ``local`` (a staged path with the URL's name)
    inside the block and publish it with ``remote.publish`` before leaving;
    kerasave's errors inside name the URL."""
    remote = Remote(url)
    with stage_dir() as stage, at_url(stage, remote.parent_url):
        yield remote, stage / remote.name


@contextlib.contextmanager
def fetched(url: str) -> Iterator[tuple[Path, tuple[str, str]]]:
    """``(local, shown)``: a local, size-checked copy of what is at ``url``, removed
    afterwards, and ``(its folder, the URL's folder)`` for naming what is in it
    (``report_at``); kerasave's errors inside name the URL."""
    remote = Remote(url)
    with stage_dir() as stage, at_url(stage, remote.parent_url):
        yield remote.fetch(stage), (str(stage), remote.parent_url)


def series(url: str, pattern: str = r"ckpt-(\d+)") -> list[tuple[int, str, dict[str, Any]]]:
    """The committed checkpoints in the folder ``url``: ``(number, URL, manifest)``,
    by the names ``pattern`` matches (its group: the number)."""
    fs, path = _filesystem(url)
    path, url = path.rstrip("/"), url.rstrip("/")
    fs.invalidate_cache(path)
    try:
        names = fs.glob(f"{glob_escape(path)}/*{MANIFEST}")
    except (FileNotFoundError, OSError):
        return []
    found = []
    for name in names:
        base = posixpath.basename(name)[: -len(MANIFEST)]
        match = re.fullmatch(pattern, base)
        if not match:
            continue
        try:
            with fs.open(name, "rb") as f:
                manifest = json.loads(f.read(_MANIFEST_LIMIT))
        except (OSError, ValueError):
            manifest = {}
        found.append((int(match.group(1)), f"{url}/{base}",
                      manifest if isinstance(manifest, dict) else {}))
    return sorted(found, key=lambda e: e[0])
