"""Refusing artifacts that would run code, or reach outside themselves, when loaded.

Applied by every loader, whatever the Keras version (Keras added some of these
guards only in 3.15; kerasave supports 3.12 and later).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
from h5py import h5d, h5l, h5o

from kerasave._errors import CorruptArtifactError, UnsafeArtifactError

__all__ = ["refuse_code", "code_in_config", "check_h5", "check_zip"]

# Layer classes whose config makes loading run or fetch code.
_CODE_CLASSES = {
    "Lambda": "its Python code would run when the model is built",
    "TFSMLayer": "it loads a SavedModel (a TensorFlow program) from a path the file names",
}
# Deflate cannot do much better than ~1000:1; weights compress about 1.1:1.
_MAX_RATIO = 200
_RATIO_FLOOR = 16 * 2**20  # small members may compress well (configs, zeros)


def code_in_config(config: Any, *, compiled: bool = True) -> tuple[str, str] | None:
    """What in a config would run code when loaded (``"a Lambda layer ('doubler')"``)
    and why; None when nothing would. ``compiled``: the load compiles the model, so
    the compile settings (a lambda loss or metric) count too."""

    def walk(obj: Any, owner: tuple[str, str]) -> tuple[str, str] | None:
        if isinstance(obj, list):
            for v in obj:
                found = walk(v, owner)
                if found:
                    return found
            return None
        if not isinstance(obj, Mapping):
            return None
        cls = obj.get("class_name")
        inner = obj.get("config")
        name = inner.get("name") if isinstance(inner, Mapping) else None
        if isinstance(cls, str) and isinstance(name, str):
            owner = (cls, name)
        if isinstance(cls, str) and cls in _CODE_CLASSES:
            shown = name if isinstance(name, str) else "?"
            return f"a {cls} layer ({shown!r})", _CODE_CLASSES[cls]
        if cls == "__lambda__" or obj.get("function_type") == "lambda":
            # A lambda serialized as its bytecode, in a Lambda subclass or any layer.
            return f"a {owner[0]} layer ({owner[1]!r})", _CODE_CLASSES["Lambda"]
        for v in obj.values():
            found = walk(v, owner)
            if found:
                return found
        return None

    if not isinstance(config, Mapping):
        return walk(config, ("?", "?"))
    found = walk({k: v for k, v in config.items() if k != "compile_config"}, ("?", "?"))
    if found is None and compiled and walk(config.get("compile_config"), ("?", "?")):
        return ("a lambda in its compile settings (a loss or a metric)",
                "its Python code would run when the model is compiled")
    return found


def refuse_code(config: Mapping[str, Any], source: str | Path | None, *,
                compiled: bool = True) -> None:
    """UnsafeArtifactError if loading the config (``compiled``: and compiling the
    model) would run code from it."""
    found = code_in_config(config, compiled=compiled)
    if found is not None:
        what, reason = found
        raise UnsafeArtifactError(
            f"the config holds {what}: {reason}; pass safe_mode=False only if you trust "
            "the file",
            path=source,
        )


def check_h5(f: h5py.File, source: str | Path) -> None:
    """UnsafeArtifactError for soft or external links, and datasets stored in external
    files or virtual (mapped from other datasets, possibly in other files)."""
    links: list[tuple[str, int]] = []
    datasets: list[str] = []

    def link(name: bytes, info: Any) -> None:
        if info.type != h5l.TYPE_HARD:
            links.append((name.decode(errors="replace"), info.type))

    def dataset(name: bytes, info: Any) -> None:
        if info.type == h5o.TYPE_DATASET:
            datasets.append(name)

    try:
        # HDF5 walks the file itself (H5Lvisit, then H5Ovisit through hard links only):
        # ~3x faster than opening every object from Python.
        f.id.links.visit(link, info=True)
        if links:
            name, kind = links[0]
            what = {h5l.TYPE_SOFT: "a soft link",
                    h5l.TYPE_EXTERNAL: "an external link"}.get(kind, "a user-defined link")
            raise UnsafeArtifactError(
                f"the HDF5 file holds {what} at /{name}: loading would read data from "
                "outside the artifact",
                path=source,
            )
        h5o.visit(f.id, dataset, info=True)
        for name in datasets:
            plist = h5o.open(f.id, name).get_create_plist()
            here = "/" + name.decode(errors="replace")
            count = plist.get_external_count()
            if count:
                files = [plist.get_external(i)[0] for i in range(count)]
                raise UnsafeArtifactError(
                    f"the HDF5 dataset {here} is stored in external files {files!r}",
                    path=source,
                )
            if plist.get_layout() == h5d.VIRTUAL:
                raise UnsafeArtifactError(
                    f"the HDF5 dataset {here} is virtual: its values would be read from "
                    "other datasets or files",
                    path=source,
                )
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
