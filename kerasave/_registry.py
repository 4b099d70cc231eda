"""The format registry: names and suffixes to handlers, one screen long.

Asked for a kind, it answers with that kind's handler type (``WeightsFormat``,
``ConfigFormat``, ``ModelFormat``), whose ``load`` has that kind's signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

from kerasave._errors import ArtifactNotFoundError, CorruptArtifactError, UnknownFormatError
from kerasave.formats._base import ConfigFormat, Handler, ModelFormat, WeightsFormat
from kerasave.formats.checkpoint import CheckpointHandler
from kerasave.formats.config import JsonHandler, YamlHandler
from kerasave.formats.h5model import H5ModelHandler
from kerasave.formats.h5sharded import ShardedWeightsHandler
from kerasave.formats.h5weights import H5WeightsHandler
from kerasave.formats.keras import KerasHandler
from kerasave.formats.litert import LiteRTHandler
from kerasave.formats.onnx import OnnxHandler
from kerasave.formats.savedmodel import SavedModelHandler
from kerasave.store.manifest import backup_path

__all__ = ["FORMATS", "for_save", "detect", "sharded"]

# Order matters for detection: a whole-model .h5 also sniffs as weights.
_HANDLERS: tuple[Handler, ...] = (
    KerasHandler(),
    H5ModelHandler(),
    SavedModelHandler(),
    OnnxHandler(),
    LiteRTHandler(),
    CheckpointHandler(),
    H5WeightsHandler(),
    ShardedWeightsHandler(),  # (before json: a shard map is a .json file too)
    JsonHandler(),
    YamlHandler(),
)
# What a path whose suffix names no format means, per kind.
_DEFAULT = {"weights": "checkpoint", "model": "savedmodel"}
_CALLS = {"weights": "save_weights", "config": "save_config", "model": "save_model"}

FORMATS: dict[str, tuple[str, ...]] = {}
for _h in _HANDLERS:
    FORMATS.setdefault(_h.kind, ())
    FORMATS[_h.kind] += (_h.name,)


def _of_kind(kind: str | None) -> list[Handler]:
    return [h for h in _HANDLERS if kind is None or h.kind == kind]


def _suffix_match(handlers: list[Handler], path: Path) -> Handler | None:
    name = path.name.lower()
    pairs = sorted(((s, h) for h in handlers for s in h.suffixes), key=lambda p: -len(p[0]))
    return next((h for s, h in pairs if name.endswith(s)), None)


def by_name(kind: str | None, name: str, path: Path) -> Handler:
    for h in _of_kind(kind):
        if h.name == name:
            return h
    allowed = ", ".join(FORMATS.get(kind, ())) if kind else ", ".join(sorted(
        {h.name for h in _HANDLERS}))
    raise UnknownFormatError(f"unknown format {name!r}; expected one of: {allowed}", path=path)


@overload
def for_save(kind: Literal["weights"], path: Path, format: str | None) -> WeightsFormat: ...
@overload
def for_save(kind: Literal["config"], path: Path, format: str | None) -> ConfigFormat: ...
@overload
def for_save(kind: Literal["model"], path: Path, format: str | None) -> ModelFormat: ...
@overload
def for_save(kind: str, path: Path, format: str | None) -> Handler: ...
def for_save(kind: str, path: Path, format: str | None) -> Handler:
    """The handler that writes ``path``: the named format, else by suffix, else the default."""
    if format is not None:
        return by_name(kind, format, path)
    found = _suffix_match(_of_kind(kind), path)
    if found is not None:
        return found
    other = _suffix_match(_of_kind(None), path)
    if other is not None:
        raise UnknownFormatError(
            f"{path.name!r} names the {other.name!r} format, which {_CALLS[other.kind]} "
            f"writes; {_CALLS[kind]} writes: {', '.join(FORMATS[kind])}",
            path=path,
        )
    if kind in _DEFAULT:
        return by_name(kind, _DEFAULT[kind], path)
    suffixes = ", ".join(s for h in _of_kind(kind) for s in h.suffixes)
    raise UnknownFormatError(
        f"no {kind} format fits {path.name!r}; expected a suffix among {suffixes}", path=path
    )


@overload
def detect(path: Path, kind: Literal["weights"], format: str | None = None) -> WeightsFormat: ...
@overload
def detect(path: Path, kind: Literal["config"], format: str | None = None) -> ConfigFormat: ...
@overload
def detect(path: Path, kind: Literal["model"], format: str | None = None) -> ModelFormat: ...
@overload
def detect(path: Path, kind: str | None = None, format: str | None = None) -> Handler: ...
def detect(path: Path, kind: str | None = None, format: str | None = None) -> Handler:
    """The handler of the artifact that exists at ``path``, found by its content."""
    handlers = _of_kind(kind)
    if format is not None:
        by_name(kind, format, path)  # raises UnknownFormatError for a bad name
        handlers = [h for h in handlers if h.name == format]
    for h in handlers:
        # A save killed mid-commit may have left only the previous version, aside.
        if h.sniff(path) or (not path.exists() and h.sniff(backup_path(h, path))):
            return h
    if not any(h.exists(path) for h in _of_kind(None)) and not path.exists():
        raise ArtifactNotFoundError(f"no artifact at {path}", path=path)
    if kind is not None:
        other = next((h for h in _of_kind(None) if h.kind != kind and h.sniff(path)), None)
        if other is not None:
            loads = {"weights": "load_weights", "config": "load_config", "model": "load_model"}
            raise UnknownFormatError(
                f"this is a {other.name} {other.kind} artifact, not {kind}; read it with "
                f"{loads[other.kind]}",
                path=path,
            )
    expected = format or (" or ".join(FORMATS[kind]) if kind else "any kerasave format")
    if path.is_file() and path.stat().st_size == 0:
        raise CorruptArtifactError(f"the file is empty; expected {expected}", path=path)
    suffix = _suffix_match(handlers, path)
    if suffix is not None:
        raise CorruptArtifactError(
            f"the file does not hold what its suffix says; expected {suffix.name}", path=path
        )
    raise UnknownFormatError(f"cannot tell the format; expected {expected}", path=path)


def sharded(handler: Handler, path: Path, max_shard_size: float) -> Handler:
    """``handler`` writing shards of at most ``max_shard_size`` GB: the sharded HDF5
    weights' only (``UnknownFormatError`` for the others)."""
    if not isinstance(handler, ShardedWeightsHandler):
        raise UnknownFormatError(
            f"max_shard_size writes Keras' sharded weights, a map whose name ends in "
            f".weights.json; {path.name!r} names the {handler.name!r} format",
            path=path)
    return handler.with_options(max_shard_size=max_shard_size)
