"""Integrity manifests: what an artifact is, and a CRC32C of every file in it.

Every artifact kerasave writes gets a manifest, ``<artifact>.kerasave.json``
beside it (inside the directory for a SavedModel), recording the format, the
versions that wrote it and the size and CRC32C of each file. Loading, verifying
and inspecting check it first (``kerasave.store.transaction.resolve``) and raise
``CorruptArtifactError`` on a mismatch. Artifacts written by plain Keras have no
manifest and load with the checks their format offers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kerasave._errors import CorruptArtifactError, foreign_errors
from kerasave.store import local
from kerasave.store.crc import crc32c
from kerasave.store.layout import Layout

__all__ = ["CHECKSUM", "PREV_MARK", "manifest_path", "backup_path", "checksums", "seal",
           "read", "mismatch", "schema_problem"]

CHECKSUM = "crc32c"
PREV_MARK = ".kerasave-prev"
_THREADS = min(4, os.cpu_count() or 1)


def manifest_path(handler: Layout, path: Path) -> Path:
    if handler.manifest_inside:  # a directory artifact holds its own
        return path / "kerasave.json"
    return path.with_name(path.name + ".kerasave.json")


def backup_path(handler: Layout, path: Path) -> Path:
    """Where the previous version waits while a save renames the new one into place."""
    return path.with_name(f".{path.name}{PREV_MARK}{handler.temp_suffix}")


def _files(handler: Layout, path: Path) -> dict[str, Path]:
    """The artifact's data files by the names the manifest uses (not the manifest)."""
    own = manifest_path(handler, path)
    found: dict[str, Path] = {}
    for member in handler.members(path):
        if member == own:
            continue
        if member.is_dir():
            for child in sorted(member.rglob("*")):
                if child.is_file() and child != own:
                    found[str(child.relative_to(member))] = child
        else:
            # Named relative to the artifact's own name, so temporaries and backups
            # carry the same table as the final artifact.
            found[handler.member_tail(path, member)] = member
    return found


def read(handler: Layout, path: Path) -> dict[str, Any] | None:
    target = manifest_path(handler, path)
    with foreign_errors(target, "unreadable manifest"):
        try:
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    with foreign_errors(target, "the manifest is not valid JSON"):
        data = json.loads(text)
    if not isinstance(data, dict):
        raise CorruptArtifactError("the manifest is not a JSON object", path=target)
    return data


def checksums(handler: Layout, path: Path, *, mapped: bool = False) -> dict[str, dict[str, Any]]:
    """The manifest's table of the artifact's data files: sizes and checksums
    (``mapped``: see ``crc32c``)."""
    return {name: {"bytes": f.stat().st_size, CHECKSUM: crc32c(f, mapped=mapped)}
            for name, f in _files(handler, path).items()}


def seal(handler: Layout, path: Path, fields: dict[str, Any],
         files: dict[str, dict[str, Any]] | None = None) -> None:
    """Write (or complete) the manifest of the artifact at ``path``.

    ``files`` is the table ``checksums`` gave for these very files, if known.
    """
    manifest = read(handler, path) or {}
    manifest.update(fields)
    manifest["kerasave_manifest"] = 1
    manifest["format"] = handler.name
    manifest["checksum"] = CHECKSUM
    manifest["files"] = files if files is not None else checksums(handler, path)
    target = manifest_path(handler, path)
    local.write_text(target, json.dumps(manifest, indent=1, default=str) + "\n")


def schema_problem(manifest: dict[str, Any]) -> str | None:
    """What in a manifest breaks its schema (every kerasave manifest has a file
    table: name → {"bytes": int, "crc32c": str}); None when nothing does."""
    if not isinstance(manifest.get("format", ""), str):
        return f"the manifest's format is {manifest.get('format')!r}, not a name"
    table = manifest.get("files")
    if not isinstance(table, dict):
        return (f"the manifest's file table is {type(table).__name__}, not a mapping of "
                "file names to sizes and checksums")
    for name, want in table.items():
        if not isinstance(want, dict) or type(want.get("bytes")) is not int \
                or want["bytes"] < 0 or not isinstance(want.get(CHECKSUM), str):
            return (f"the manifest's entry for {str(name)[:80]!r} is {repr(want)[:80]}, not a "
                    f"size and a {CHECKSUM}")
    return None


def mismatch(handler: Layout, path: Path, manifest: dict[str, Any]) -> str | None:
    if manifest.get("format") not in (None, handler.name):
        return f"the manifest says format {manifest.get('format')!r}, expected {handler.name!r}"
    problem = schema_problem(manifest)
    if problem is not None:
        return problem  # (never "fine": a table that is not one checks nothing)
    table: dict[str, Any] = manifest["files"]  # (a mapping: schema_problem said so)
    files = _files(handler, path)
    if set(files) != set(table):
        missing = sorted(set(table) - set(files))
        extra = sorted(set(files) - set(table))
        return f"files differ from the manifest (missing {missing}, unexpected {extra})"
    for name, f in files.items():
        want = table[name]
        size = f.stat().st_size
        said = want.get("bytes")
        if size != said:
            said = f"{said:,}" if isinstance(said, int) else repr(said)
            return f"{f.name} has {size:,} bytes, the manifest says {said}"
        got = crc32c(f, threads=_THREADS)  # a load waits for this: use every core
        if got != want.get(CHECKSUM):
            return f"{f.name} has CRC32C {got}, the manifest says {want.get(CHECKSUM)}"
    return None
