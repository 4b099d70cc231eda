"""Paths as the store reads them: URL or local, and the one rule for staging copies.

``is_url`` and ``local_path`` tell what a path names (``kerasave.store.at`` is
their only caller outside the store); ``safe_join`` is the one function through
which every staging path is made from a name an artifact (an object key, a
manifest) supplied; ``staging`` gives the private local folder such copies go to.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kerasave._errors import UnsafeArtifactError

__all__ = ["is_url", "local_path", "safe_join", "staging"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL of an fsspec backend (``file://`` is a local path)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    text = os.fspath(path)
    match = _SCHEME.match(text) if isinstance(text, str) else None
    return match is not None and match.group(1).lower() not in ("file", "local")


def local_path(path: Any) -> Path:
    """A local path, also from a ``file://`` URL."""
    text = os.fspath(path)
    if isinstance(text, str) and re.match(r"^(file|local)://", text, re.IGNORECASE):
        text = text.split("://", 1)[1]
    return Path(text)


def safe_join(root: Path, relative: str, *, source: str | None = None) -> Path:
    """``root / relative`` for a ``/``-separated name an artifact supplied (an object
    key below a folder, a file name in a manifest).

    Raises:
        UnsafeArtifactError: the name would leave ``root`` (``..``, an absolute
            path, a backslash, a drive, an empty or ``.`` part, a NUL byte):
            nothing is written for it.
    """
    if (not isinstance(relative, str) or not relative or relative.startswith("/")
            or "\\" in relative or "\0" in relative or re.match(r"^[A-Za-z]:", relative)):
        raise UnsafeArtifactError(
            f"the name {relative!r} is not a plain relative path: a staging copy is "
            "written only inside its own folder", path=source or root)
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeArtifactError(
            f"the name {relative!r} leaves its folder or has an empty part: a staging "
            "copy is written only inside its own folder", path=source or root)
    joined = root.joinpath(*parts)
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(joined)]) != base:  # (a symlink on the way)
        raise UnsafeArtifactError(f"the name {relative!r} resolves outside its folder",
                                  path=source or root)
    return joined


@contextlib.contextmanager
def staging() -> Iterator[Path]:
    """A private local folder for one transfer, removed afterwards
    (``KERASAVE_STAGING`` or the system's temporary folder)."""
    root = os.environ.get("KERASAVE_STAGING") or None
    path = Path(tempfile.mkdtemp(prefix="kerasave-stage-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
