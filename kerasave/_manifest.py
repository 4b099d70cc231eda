"""Integrity manifests: what an artifact is, and a CRC32C of every file in it.

Every artifact kerasave writes gets a manifest, ``<artifact>.kerasave.json``
beside it (inside the directory for a SavedModel), recording the format, the
versions that wrote it and the size and CRC32C of each file. Loading, verifying
and inspecting check it first and raise ``CorruptArtifactError`` on a mismatch.
Artifacts written by plain Keras have no manifest and load with the checks their
format offers.

A save that is killed while it renames files into place leaves the previous
version's files under a ``.kerasave-prev`` name (hard links made before the
first rename); the reader then takes whichever complete version the manifests
vouch for, so a path always loads as the old or the new artifact.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from kerasave._errors import CorruptArtifactError
from kerasave.formats._base import Handler

__all__ = ["CHECKSUM", "manifest_path", "checksums", "seal", "resolve", "resolve_checked",
           "backup_path", "read", "crc32c_of"]

CHECKSUM = "crc32c"
PREV_MARK = ".kerasave-prev"
_SPLIT = 64 * 2**20  # smaller files are not worth a second thread
_THREADS = min(4, os.cpu_count() or 1)
_CHUNK = 2**20  # read at a time: small enough to stay in the CPU's caches
_MAPPED_CHUNK = 16 * 2**20


def manifest_path(handler: Handler, path: Path) -> Path:
    if handler.name == "savedmodel":
        return path / "kerasave.json"
    return path.with_name(path.name + ".kerasave.json")


def backup_path(handler: Handler, path: Path) -> Path:
    """Where the previous version waits while a save renames the new one into place."""
    return path.with_name(f".{path.name}{PREV_MARK}{handler.temp_suffix}")


def crc32c(path: Path, *, threads: int = 1, mapped: bool = False) -> str:
    """The CRC32C of a file, as 8 hex digits; large files in ``threads`` parts at once.

    ``mapped`` reads the file through a memory mapping instead of copies: only for
    kerasave's own temporaries, since another program truncating a mapped file
    would kill the process with SIGBUS.
    """
    size = path.stat().st_size
    parts = max(1, min(threads, size // _SPLIT))
    if parts == 1:
        return f"{_crc32c_range(path, 0, size, mapped):08x}"
    bounds = [size * i // parts for i in range(parts + 1)]
    with concurrent.futures.ThreadPoolExecutor(parts, "kerasave-crc32c") as pool:
        crcs = list(pool.map(lambda i: _crc32c_range(path, bounds[i], bounds[i + 1], mapped),
                             range(parts)))
    crc = crcs[0]
    for i in range(1, parts):
        crc = crc32c_combine(crc, crcs[i], bounds[i + 1] - bounds[i])
    return f"{crc:08x}"


def _extend_function() -> Any:
    """``crc32c_extend`` of the library google-crc32c bundles, called through ctypes, or
    None. The package's own functions take only ``bytes`` (a copy of every chunk) and
    hold the GIL for anything else; through ctypes the CRC reads any memory, mapped
    pages included, with the GIL released, so it runs beside verification."""
    try:
        from google_crc32c import _crc32c  # the C extension, linked to the library

        function = ctypes.CDLL(_crc32c.__file__).crc32c_extend
        function.restype = ctypes.c_uint32
        function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        check = np.frombuffer(b"123456789", np.uint8)
        if function(0, check.ctypes.data, check.size) != 0xE3069283:  # the standard check value
            return None
        return function
    except (ImportError, OSError, AttributeError, TypeError):
        return None


_EXTEND = _extend_function()


def crc32c_of(memory: np.ndarray) -> int:
    """The CRC32C of an array's bytes (C-contiguous), as an int."""
    flat = np.ascontiguousarray(memory).reshape(-1).view(np.uint8)
    if _EXTEND is None:
        return google_crc32c.value(flat.tobytes())
    return _EXTEND(0, flat.ctypes.data, flat.size) if flat.size else 0


def _crc32c_range(path: Path, start: int, end: int, mapped: bool = False) -> int:
    if end <= start:
        return 0
    if _EXTEND is None:
        checksum = google_crc32c.Checksum()
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(_CHUNK, left))):
                checksum.update(chunk)
                left -= len(chunk)
        return int.from_bytes(checksum.digest(), "big")
    crc = 0
    with open(path, "rb", buffering=0) as f:
        if mapped:  # a window at a time, so the mapped pages never add up in memory
            for at in range(start, end, _MAPPED_CHUNK):
                low = at - at % mmap.ALLOCATIONGRANULARITY
                length = min(_MAPPED_CHUNK, end - at)
                with mmap.mmap(f.fileno(), at + length - low, access=mmap.ACCESS_READ,
                               offset=low) as pages:
                    window = np.frombuffer(pages, np.uint8)
                    try:
                        crc = _EXTEND(crc, window.ctypes.data + at - low, length)
                    finally:
                        del window  # the mapping closes only once nothing points into it
            return crc
        buffer = np.empty(_CHUNK, np.uint8)
        f.seek(start)
        left = end - start
        while left > 0 and (got := f.readinto(buffer[:min(_CHUNK, left)].data)):
            crc = _EXTEND(crc, buffer.ctypes.data, got)
            left -= got
    return crc


_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC32C of A+B from those of A and B and the length of B (zlib's method)."""
    if len2 <= 0:
        return crc1
    zeros = [_CRC32C_POLY] + [1 << n for n in range(31)]  # appends one zero bit
    for _ in range(3):
        zeros = _gf2_square(zeros)  # 2, 4, then 8 zero bits: one zero byte
    while True:  # append len2 zero bytes to crc1, a power of two at a time
        if len2 & 1:
            crc1 = _gf2_times(zeros, crc1)
        len2 >>= 1
        if not len2:
            return crc1 ^ crc2
        zeros = _gf2_square(zeros)


def _files(handler: Handler, path: Path) -> dict[str, Path]:
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
            found[member.name[len(path.name):] or "."] = member
    return found


def read(handler: Handler, path: Path) -> dict[str, Any] | None:
    target = manifest_path(handler, path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptArtifactError(f"unreadable manifest: {exc}", path=target) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CorruptArtifactError(f"the manifest is not valid JSON: {exc}", path=target) from exc
    if not isinstance(data, dict):
        raise CorruptArtifactError("the manifest is not a JSON object", path=target)
    return data


def checksums(handler: Handler, path: Path, *, mapped: bool = False) -> dict[str, dict[str, Any]]:
    """The manifest's table of the artifact's data files: sizes and checksums
    (``mapped``: see ``crc32c``)."""
    return {name: {"bytes": f.stat().st_size, CHECKSUM: crc32c(f, mapped=mapped)}
            for name, f in _files(handler, path).items()}


def seal(handler: Handler, path: Path, fields: dict[str, Any],
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
    target.write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
    with open(target, "rb") as f:
        os.fsync(f.fileno())


def _mismatch(handler: Handler, path: Path, manifest: dict[str, Any]) -> str | None:
    if manifest.get("format") not in (None, handler.name):
        return f"the manifest says format {manifest.get('format')!r}, expected {handler.name!r}"
    table = manifest.get("files")
    if not isinstance(table, dict):
        return None  # an older manifest without checksums: nothing to compare
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


def resolve(handler: Handler, path: Path) -> tuple[Path, str]:
    """The version of the artifact to read, and what was checked (see ``resolve_checked``)."""
    actual, message, _ = resolve_checked(handler, path)
    return actual, message


def resolve_checked(handler: Handler, path: Path) -> tuple[Path, str, bool]:
    """The version of the artifact to read, what was checked, and whether every
    byte of it matched the CRC32C its manifest records.

    Returns ``path`` itself when its manifest matches (or it has none: plain
    Keras), or the previous version left by an interrupted save.

    Raises:
        CorruptArtifactError: no complete version matches its manifest.
    """
    backup = backup_path(handler, path)
    candidates: Iterable[tuple[Path, Path]] = ((path, path), (path, backup), (backup, backup))
    first_problem = None
    for files_at, manifest_at in candidates:
        if not handler.exists(files_at):
            continue
        manifest = read(handler, manifest_at)
        if manifest is None:
            if manifest_at == path and not handler.exists(backup):
                return path, "no manifest (not written by kerasave): format checks only", False
            continue
        problem = _mismatch(handler, files_at, manifest)
        if problem is None:
            if files_at == path:
                return (path, f"{len(manifest.get('files', {}))} file(s) match their CRC32C",
                        isinstance(manifest.get("files"), dict))
            return (backup, "the newest save was interrupted: read the previous version",
                    isinstance(manifest.get("files"), dict))
        first_problem = first_problem or problem
    if handler.exists(backup) and read(handler, backup) is None and handler.exists(path):
        # The previous version was a plain Keras artifact and the new manifest went in
        # before the new file did: what is at the path is that previous version.
        return (path, "the newest save was interrupted: the previous (unverified) version",
                False)
    raise CorruptArtifactError(
        f"the artifact does not match its manifest: {first_problem or 'no complete version'}",
        path=path)
