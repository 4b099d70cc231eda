"""The object-store layout kerasave wrote before the object was at the URL.

An artifact at ``<folder>/<name>`` was::

    <folder>/<name>.kerasave.json             the manifest, naming its version
    <folder>/.<name>.kerasave-v/<token>/...   that version's files

with the manifest's ``remote`` section saying where: ``objects`` (the version's
folder, relative to ``<folder>``), ``paths`` (each file of the manifest's table
→ its path under that folder) and ``manifest`` (where the manifest goes in a
local copy). ``kerasave.store.objectstore`` reads such a version as a copy of
the committed one, and its next save (or ``kerasave convert URL URL``) puts the
files at the URL and removes the version folder.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["VERSIONS", "is_legacy", "parse"]

VERSIONS = ".kerasave-v"
_TOKEN = r"\d{10}-[0-9a-f]{12}"


def is_legacy(doc: dict[str, Any]) -> bool:
    return isinstance(doc, dict) and "remote" in doc


def _relative(value: Any) -> str:
    """A relative object path from a manifest, refused when it would leave its folder."""
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value:
        raise ValueError(f"not a relative path: {value!r}")
    if any(p in ("", ".", "..") for p in value.split("/")):
        raise ValueError(f"not a plain relative path: {value!r}")
    return value


def parse(doc: dict[str, Any], name: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(folder, paths, manifest)`` of the version a legacy manifest commits: its
    folder relative to the artifact's, each file's path under it, and the manifest
    of the version itself (with ``manifest_at``: where a local copy keeps it).

    Raises:
        ValueError, KeyError, TypeError: not such a manifest of this artifact.
    """
    place = doc["remote"]
    objects = place["objects"]
    # Only a version folder of this very artifact: a save deletes what it names.
    if not isinstance(objects, str) or not re.fullmatch(
            re.escape(f".{name}{VERSIONS}/") + _TOKEN, objects):
        raise ValueError(f"not a version folder of this artifact: {objects!r}")
    paths = {str(k): _relative(v) for k, v in place["paths"].items()}
    manifest_at = _relative(place["manifest"])
    files = doc["files"]
    if set(files) != set(paths):
        raise ValueError("the manifest's file table and object names differ")
    recorded = {k: v for k, v in doc.items() if k != "remote"}
    recorded["manifest_at"] = manifest_at
    return objects, paths, recorded
