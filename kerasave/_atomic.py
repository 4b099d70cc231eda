"""Writing to a temporary sibling and renaming it into place.

A save writes the whole artifact under a temporary name beside the target,
verifies it there, fsyncs it, and only then renames each member over the old
one (``os.replace``). A failed or refused save leaves the previous artifact as it
was and removes its temporaries.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from kerasave.formats._base import Handler

__all__ = ["TMP_MARK", "temp_path", "commit", "discard"]

TMP_MARK = ".kerasave-tmp-"


def temp_path(path: Path, suffix: str) -> Path:
    """A hidden sibling of ``path`` that no artifact name can collide with."""
    return path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(6)}{suffix}")


def _final_name(member: Path, tmp: Path, path: Path) -> Path:
    if member == tmp:
        return path
    return path.with_name(path.name + member.name[len(tmp.name):])


def _fsync(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def commit(handler: Handler, tmp: Path, path: Path) -> None:
    """Move the verified artifact at ``tmp`` over whatever is at ``path``."""
    old = set(handler.members(path))
    new = handler.members(tmp)
    for member in new:
        _fsync(member)
    placed = set()
    for member in new:
        final = _final_name(member, tmp, path)
        if final.is_dir() and not final.is_symlink():
            aside = final.with_name(f".{final.name}{TMP_MARK}old-{secrets.token_hex(6)}")
            os.replace(final, aside)
            os.replace(member, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(member, final)
        placed.add(final)
    for stale in old - placed:
        _remove(stale)
    _fsync(path.parent)


def discard(handler: Handler, tmp: Path) -> None:
    """Remove whatever a failed save left under the temporary name."""
    for member in handler.members(tmp):
        _remove(member)
    if tmp.exists():
        _remove(tmp)
