"""Local paths built from names an artifact chose: object keys, manifest entries.

An object key is any string its writer liked (``../../.bashrc``, ``/etc/x``,
``a/./b``, ``C:\\x``), so a local copy of a folder of objects must never use a key
as a path as it is. ``safe_join`` is the one way kerasave turns such a name into
a path under a folder it owns.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from kerasave._errors import UnsafeArtifactError

__all__ = ["safe_join"]


def safe_join(root: Path, key: str, *, source: str | None = None) -> Path:
    """``root / key`` when ``key`` is a plain relative path that stays under ``root``.

    Refused (``UnsafeArtifactError``, naming ``source`` or ``root``): an empty key, an
    absolute one, one with a ``..``, ``.`` or empty part, a backslash, a drive or a
    NUL, and one whose place under ``root`` is reached through a symbolic link that
    leads outside ``root``.
    """
    where = source if source is not None else root
    parts = PurePosixPath(key).parts if isinstance(key, str) else ()
    if (not isinstance(key, str) or not key or key.startswith("/") or "\\" in key
            or "\0" in key or ":" in key.split("/", 1)[0]
            or any(p in ("", ".", "..") for p in key.split("/")) or not parts):
        raise UnsafeArtifactError(
            f"the name {key!r} is not a plain relative path: a copy of it would be written "
            "outside its folder", path=where)
    target = root.joinpath(*parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UnsafeArtifactError(
            f"the name {key!r} leads outside its folder (through a link)", path=where)
    return target
