"""What an opened artifact says beyond its arrays: ``kerasave.Artifact.metadata``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasave.formats._export import ExportFormat
from kerasave.store import manifest as _manifest

__all__ = ["artifact_metadata"]


def artifact_metadata(opened: Any, size: Callable[[Path], int]) -> dict[str, Any]:
    """``Artifact.metadata``: what the artifact says beyond its arrays."""
    handler, at, contents = opened.handler, opened.actual, opened.contents
    # What the artifact records itself comes first; kerasave's manifest adds the
    # versions a format has no place for (a .keras archive names only Keras').
    recorded = (_manifest.read(handler, at) or {})
    versions = dict(contents.versions)
    if isinstance(recorded.get("versions"), dict):
        versions.update({str(k): str(v) for k, v in recorded["versions"].items()
                         if k not in versions})
    files = {opened.named(m): size(m) for m in handler.members(at)}
    found: dict[str, Any] = {
        "versions": versions,
        "description": handler.description_at(at),
        "architecture": handler.kind == "config" or opened.whole,
        "has_optimizer": contents.has_optimizer,
        "optimizer_variables": contents.optimizer_variables,
        "recorded_optimizer_variables": contents.recorded_optimizer_variables,
        "not_loaded": handler.left_out(at),
        "array_names": handler.array_names,
        "files": files,
        "bytes": sum(files.values()),
        "manifest": {"path": None if opened.manifest is None else opened.named(opened.manifest),
                     "detail": opened.detail, "checksummed": opened.checksummed},
    }
    if isinstance(handler, ExportFormat):  # what it takes and gives
        inputs, outputs = handler.inspect_ports(at)
        found["inputs"], found["outputs"] = (
            tuple({"name": p.name, "dtype": p.dtype,
                   "shape": None if p.shape is None else tuple(p.shape)} for p in ports)
            for ports in (inputs, outputs))
    return found
