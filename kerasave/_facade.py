"""The public save/load/verify/inspect calls.

The facade owns what cuts across formats: paths, picking the handler, writing to
a temporary sibling and renaming it into place, verification after every save,
timing, and turning foreign exceptions into kerasave's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras

from kerasave import _atomic, _manifest, _registry, _safety, _verify
from kerasave._errors import (
    CorruptArtifactError,
    KerasaveError,
    NotSerializableError,
    RoundTripError,
    UnsafeArtifactError,
)
from kerasave._internals import fastkeras as _fastkeras
from kerasave._report import Check, Inspection, Report
from kerasave.formats._base import Handler, versions_now

__all__ = [
    "save_weights",
    "load_weights",
    "save_config",
    "load_config",
    "save_model",
    "load_model",
    "verify",
    "inspect",
]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Whatever a reader library raises about a damaged file becomes CorruptArtifactError."""
    try:
        yield
    except KerasaveError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CorruptArtifactError(
            f"could not read the artifact ({type(exc).__name__}: {first})", path=path
        ) from exc


def _size(handler: Handler, path: Path) -> int:
    total = 0
    for member in handler.members(path):
        if member.is_dir():
            total += sum(p.stat().st_size for p in member.rglob("*") if p.is_file())
        else:
            total += member.stat().st_size
    return total


def _save(kind: str, model: keras.Model, path: PathLike, format: str | None,
          verify: bool) -> Report:
    with _verify.one_save():
        return _save_once(kind, model, path, format, verify)


def _save_once(kind: str, model: keras.Model, path: PathLike, format: str | None,
               verify: bool) -> Report:
    start = time.perf_counter()
    target = Path(os.fspath(path))
    handler = _registry.for_save(kind, target, format)
    handler.preflight(model, target)
    if verify and handler.name != "savedmodel" and kind in ("model", "config"):
        _refuse_unverifiable(model, handler.name, kind, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _atomic.locked(target.parent):
        _atomic.clean_stale(target)
        tmp = _atomic.temp_path(target, handler.temp_suffix)
        try:
            with _atomic.flushing(handler, tmp) as flushed:
                try:
                    handler.write(model, tmp)
                except (KerasaveError, OSError):
                    raise
                except (TypeError, ValueError, NotImplementedError) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                        type(exc).__name__
                    raise NotSerializableError(
                        f"Keras could not write the {handler.name} format: {first}",
                        path=target) from exc
                flushed.written()
                if verify:
                    with _fastkeras.private_files():
                        checks = tuple(_named_as(c, tmp, target)
                                       for c in handler.check(model, tmp))
                else:
                    checks = (Check("verify", True, "skipped (verify=False)"),)
            report = Report(str(target), handler.name, all(c.ok for c in checks), checks)
            if not report.ok:
                raise RoundTripError(replace(report, seconds=time.perf_counter() - start))
            _manifest.seal(handler, tmp, {"versions": versions_now()}, flushed.files)
            _atomic.commit(handler, tmp, target)
        finally:
            _atomic.discard(handler, tmp)
    return replace(report, bytes=_size(handler, target), seconds=time.perf_counter() - start)


def _refuse_unverifiable(model: keras.Model, fmt: str, kind: str, target: Path) -> None:
    """UnsafeArtifactError before anything is written, when reading the artifact back
    would run code from it: kerasave does that for no file, its own saves included."""
    # The config about to be written (the preflight's), judged as a load would judge
    # it: a config-only file is read back without its compile settings.
    found = _safety.code_in_config(_verify.serialized_config(model),
                                   compiled=kind == "model")
    if found:
        what, why = found
        raise UnsafeArtifactError(
            f"cannot verify the {fmt!r} save of this model: it holds {what}, so reading "
            f"the file back runs code from it ({why}), which kerasave does for no file, "
            "not even to check its own save; save with verify=False (reading it back "
            "then needs safe_mode=False)",
            path=target)


def _named_as(check: Check, tmp: Path, target: Path) -> Check:
    """A check of the temporary, as the user's artifact: no hidden temporary names
    (which are gone once the save returns) in what it says."""
    detail = (check.detail.replace(f" (path: {tmp})", "").replace(str(tmp), str(target))
              .replace(tmp.name, target.name))
    return check if detail == check.detail else replace(check, detail=detail)


def save_weights(model: keras.Model, path: PathLike, *, format: str | None = None,
                 verify: bool = True) -> Report:
    """Save the model's variables (and optimizer state) and prove it with a round trip.

    Args:
        model: A built Keras model.
        path: A checkpoint prefix (``./weights/my_model`` → ``my_model.index``,
            ``my_model.data-*``), or an HDF5 file (``.h5``, ``.hdf5``, ``.weights.h5``).
        format: ``"checkpoint"`` or ``"h5"``; by default chosen from the suffix.
        verify: Read the artifact back and compare every variable bit for bit.

    Returns:
        The ``Report`` of the checks that passed.

    Raises:
        RoundTripError: the written artifact does not give the model back; nothing
            is left at ``path`` (a previous artifact there is untouched).

    Examples:
        >>> report = save_weights(model, tmp / "weights" / "my_model")
        >>> report.ok
        True
    """
    return _save("weights", model, path, format, verify)


def save_config(model: keras.Model, path: PathLike, *, format: str | None = None,
                verify: bool = True) -> Report:
    """Save the architecture only (``.json``, ``.yaml``, ``.yml``), verified."""
    return _save("config", model, path, format, verify)


def save_model(model: keras.Model, path: PathLike, *, format: str | None = None,
               verify: bool = True) -> Report:
    """Save the whole model: ``.keras``, legacy ``.h5``/``.hdf5``, or a SavedModel directory.

    ``.keras`` and ``.h5`` hold config, variables, optimizer state and compile
    settings; ``savedmodel`` (any path without one of those suffixes) is an
    inference export for serving.
    """
    return _save("model", model, path, format, verify)


def load_weights(model: keras.Model, path: PathLike, *, format: str | None = None) -> Report:
    """Restore saved variables into ``model``, all or nothing.

    Works on a model that is not built yet (kerasave records the build shapes).
    On any mismatch it raises ``ArchitectureMismatchError`` and every variable of
    the model and its optimizer is exactly as before.
    """
    start = time.perf_counter()
    source = Path(os.fspath(path))
    with _reading(source):
        handler = _registry.detect(source, "weights", format)
        actual, integrity, checksummed = _manifest.resolve_checked(handler, source)
        checks = (Check("integrity", True, integrity),
                  *handler.load(model, actual, checksummed=checksummed))
    return Report(str(source), handler.name, True, checks, _size(handler, actual),
                  time.perf_counter() - start)


def load_config(path: PathLike, *, custom_objects: Mapping[str, Any] | None = None,
                safe_mode: bool = True) -> keras.Model:
    """A freshly initialized, uncompiled model from a ``.json``/``.yaml`` config file."""
    source = Path(os.fspath(path))
    with _reading(source):
        handler = _registry.detect(source, "config")
        actual, _ = _manifest.resolve(handler, source)
        return handler.load(actual, custom_objects=custom_objects, safe_mode=safe_mode)


def load_model(path: PathLike, *, compile: bool = True, safe_mode: bool = True,
               custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Load a whole model; for a SavedModel directory, the restored serving object.

    A ``.keras`` or ``.h5`` model comes back compiled with its optimizer state,
    so training continues exactly where it stopped.
    """
    source = Path(os.fspath(path))
    with _reading(source):
        handler = _registry.detect(source, "model")
        actual, _, checksummed = _manifest.resolve_checked(handler, source)
        return handler.load(actual, compile=compile, safe_mode=safe_mode,
                            custom_objects=custom_objects, checksummed=checksummed)


def verify(model: keras.Model, path: PathLike, *, format: str | None = None) -> Report:
    """Compare an existing artifact with a model in memory, without saving.

    Returns a ``Report`` whose ``ok`` says whether every check passed; it does
    not raise for a failed check.
    """
    start = time.perf_counter()
    source = Path(os.fspath(path))
    with _reading(source):
        handler = _registry.detect(source, None, format)
        actual, integrity = _manifest.resolve(handler, source)
        checks = (Check("integrity", True, integrity), *handler.check(model, actual))
    return Report(str(source), handler.name, all(c.ok for c in checks), checks,
                  _size(handler, actual), time.perf_counter() - start)


def inspect(path: PathLike) -> Inspection:
    """What the artifact at ``path`` holds, read without building a model."""
    source = Path(os.fspath(path))
    with _reading(source):
        handler = _registry.detect(source)
        actual, _ = _manifest.resolve(handler, source)
        contents = handler.contents(actual)
        # What the artifact records itself comes first; kerasave's manifest adds the
        # versions a format has no place for (a .keras archive names only Keras').
        recorded = (_manifest.read(handler, actual) or {}).get("versions")
    versions = dict(contents.versions)
    if isinstance(recorded, dict):
        versions.update({str(k): str(v) for k, v in recorded.items() if k not in versions})
    members = handler.members(actual)
    return Inspection(
        path=str(source),
        format=handler.name,
        files=tuple(str(m) for m in members),
        bytes=_size(handler, actual),
        variables=contents.variables,
        has_optimizer=contents.has_optimizer,
        versions=versions,
    )
