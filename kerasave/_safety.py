"""Refusing artifacts that would run code, or reach outside themselves, when loaded.

Applied by every loader, whatever the Keras version (Keras added some of these
guards only in 3.15; kerasave supports 3.12 and later).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import h5py

from kerasave._errors import CorruptArtifactError, UnsafeArtifactError

__all__ = ["refuse_code", "check_h5", "check_zip"]

# Layer classes whose config makes loading run or fetch code.
_CODE_CLASSES = {
    "Lambda": "its Python code would run when the model is built",
    "TFSMLayer": "it loads a SavedModel (a TensorFlow program) from a path the file names",
}
# Deflate cannot do much better than ~1000:1; weights compress about 1.1:1.
_MAX_RATIO = 200
_RATIO_FLOOR = 16 * 2**20  # small members may compress well (configs, zeros)


def _walk(obj: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(obj, Mapping):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def refuse_code(config: Mapping[str, Any], source: str | Path | None) -> None:
    """UnsafeArtifactError if the config holds a layer whose loading runs code."""
    for node in _walk(config):
        cls = node.get("class_name")
        reason = _CODE_CLASSES.get(cls) if isinstance(cls, str) else None
        if reason is None and node.get("function_type") == "lambda":
            cls, reason = "Lambda", _CODE_CLASSES["Lambda"]
        if reason is not None:
            inner = node.get("config")
            name = inner.get("name", "?") if isinstance(inner, Mapping) else "?"
            raise UnsafeArtifactError(
                f"the config holds a {cls} layer ({name!r}): {reason}; pass safe_mode=False "
                "only if you trust the file",
                path=source,
            )


def check_h5(f: h5py.File, source: str | Path) -> None:
    """UnsafeArtifactError for soft or external links and externally stored datasets."""

    def walk(group: h5py.Group, where: str) -> None:
        for name in group:
            link = group.get(name, getlink=True)
            here = f"{where}/{name}"
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
                raise UnsafeArtifactError(
                    f"the HDF5 file holds {kind} at {here}: loading would read data from "
                    "outside the artifact",
                    path=source,
                )
            obj = group[name]
            if isinstance(obj, h5py.Group):
                walk(obj, here)
            elif isinstance(obj, h5py.Dataset) and obj.external:
                raise UnsafeArtifactError(
                    f"the HDF5 dataset {here} is stored in external files {obj.external!r}",
                    path=source,
                )

    try:
        walk(f, "")
    except UnsafeArtifactError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise CorruptArtifactError(f"unreadable HDF5 structure: {exc}", path=source) from exc


def check_zip(zf: zipfile.ZipFile, source: str | Path) -> None:
    """UnsafeArtifactError for members that escape the archive or are zip bombs."""
    for info in zf.infolist():
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in info.filename:
            raise UnsafeArtifactError(
                f"the archive member {info.filename!r} points outside the archive", path=source
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * max(
                info.compress_size, 1):
            raise UnsafeArtifactError(
                f"the archive member {info.filename!r} declares {info.file_size:,} bytes from "
                f"{info.compress_size:,} compressed (a zip bomb?)",
                path=source,
            )
