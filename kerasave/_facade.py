"""The public save/load/verify/inspect calls.

The facade owns what cuts across formats: paths, picking the handler, writing to
a temporary sibling and renaming it into place, verification after every save,
timing, and turning foreign exceptions into kerasave's.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np

from kerasave import _registry, _safety, _state, _verify
from kerasave import store as stores
from kerasave._errors import (
    CorruptArtifactError,
    KerasaveError,
    NotSerializableError,
    RoundTripError,
    UnsafeArtifactError,
)
from kerasave._lazy import keras
from kerasave._public import public
from kerasave._report import Check, Inspection, Report
from kerasave.formats._base import (
    ConfigFormat,
    Contents,
    Handler,
    ModelFormat,
    WeightsFormat,
    versions_now,
)
from kerasave.store import manifest as _manifest
from kerasave.store.base import Naming, Store

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
          verify: bool, max_shard_size: float | None = None) -> Report:
    start = time.perf_counter()
    with _verify.one_save(), stores.at(path) as store:
        report = _save_once(kind, model, store, format, verify, max_shard_size)
    return replace(report, seconds=time.perf_counter() - start)


def _save_once(kind: str, model: keras.Model, store: Store, format: str | None,
               verify: bool, max_shard_size: float | None = None) -> Report:
    start = time.perf_counter()
    target = store.target  # (a URL's: its name in the store's staging folder)
    handler = _registry.for_save(kind, target, format)
    if max_shard_size is not None:
        handler = _registry.sharded(handler, target, max_shard_size)
    with _state.untouched(model):  # (whatever the checks run, the model is as it was)
        return _save_checked(handler, model, store, kind, verify, start)


def _save_checked(handler: Handler, model: keras.Model, store: Store, kind: str,
                  verify: bool, start: float) -> Report:
    target = store.target
    handler.preflight(model, target)
    if verify and handler.verifiable_config:
        _refuse_unverifiable(model, handler.name, kind, target)
    with store.transaction(handler) as txn:
        txn.write(lambda tmp: _write(handler, model, tmp, target))
        if verify:
            checks = txn.verify(lambda tmp: _verify.guarded(
                "verify", lambda: handler.check(model, tmp, own=True)))
        else:
            checks = (Check("verify", True, "skipped (verify=False)"),)
        report = Report(store.shown, handler.name, all(c.ok for c in checks), checks)
        if not report.ok:
            raise RoundTripError(replace(report, seconds=time.perf_counter() - start))
        txn.commit({"versions": versions_now()})
    return replace(report, bytes=_size(handler, target), seconds=time.perf_counter() - start)


def _write(handler: Handler, model: keras.Model, tmp: Path, target: Path) -> None:
    """The handler writes the temporary; what Keras raises about a model it cannot
    write becomes NotSerializableError."""
    try:
        handler.write(model, tmp)
    except NotSerializableError as exc:
        if exc.path is not None:
            raise
        raise NotSerializableError(str(exc), path=target) from exc  # (named as the target)
    except (KerasaveError, OSError):
        raise
    except Exception as exc:  # (TensorFlow's errors too: a model export traces the model)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotSerializableError(
            f"Keras could not write the {handler.name} format: {first}", path=target) from exc


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


def save_weights(model: keras.Model, path: PathLike, *, format: str | None = None,
                 verify: bool = True, max_shard_size: float | None = None) -> Report:
    """Save the model's variables (and optimizer state) and prove it with a round trip.

    Args:
        model: A built Keras model.
        path: A checkpoint prefix (``./weights/my_model`` → ``my_model.index``,
            ``my_model.data-*``), an HDF5 file (``.h5``, ``.hdf5``, ``.weights.h5``),
            or the map of Keras' sharded HDF5 weights (``.weights.json``, beside
            it ``<name>_00000.weights.h5``...).
        format: ``"checkpoint"``, ``"h5"`` or ``"h5-sharded"``; by default chosen
            from the suffix.
        verify: Read the artifact back and compare every variable bit for bit.
        max_shard_size: For ``.weights.json``: the largest shard, in GB (Keras'
            unit; default 5). Keras does not split a variable across shards.

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
    return _save("weights", model, path, format, verify, max_shard_size)


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


@dataclass
class Opened:
    """An artifact found and checked once: its handler, the version to read
    (``actual``: the path, or the backup an interrupted commit left; a URL's: its
    staging copy) and what its integrity manifest said. Every read of it goes
    through the handler, inside ``_reading``, without checksumming it again."""

    source: Path | str  # what the caller named: a path or a URL
    handler: Handler
    actual: Path
    detail: str  # what the integrity check found, in words
    checksummed: bool  # every byte matched the CRC32C its manifest records
    manifest: Path | None  # the manifest, when there is one
    # What is said about a URL's staging copy, said about the URL.
    naming: Naming = field(default_factory=lambda: Naming([]))
    _stage: Any = None

    def close(self) -> None:
        """Remove the local copy of a URL's artifact (reads of it are over)."""
        if self._stage is not None:
            self._stage.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        with _reading(self.source), self.naming():
            yield

    def named(self, path: Path | str) -> str:
        """How a file of the artifact is shown: under its URL for a URL's copy."""
        return self.naming.text(str(path))

    @property
    def bytes(self) -> int:
        return _size(self.handler, self.actual)

    @property
    def whole(self) -> bool:
        """A whole model: weights with the architecture they belong to."""
        return isinstance(self.handler, ModelFormat) and self.handler.whole_at(self.actual)

    @cached_property
    def contents(self) -> Contents:
        with self._reading():
            return self.handler.contents(self.actual)

    def arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every stored array, by the names ``inspect`` lists."""
        with self._reading():
            yield from self.handler.arrays(self.actual)

    def inspection(self) -> Inspection:
        """What ``kerasave.inspect`` gives for the artifact."""
        contents = self.contents
        # What the artifact records itself comes first; kerasave's manifest adds the
        # versions a format has no place for (a .keras archive names only Keras').
        with self._reading():
            recorded = (_manifest.read(self.handler, self.actual) or {}).get("versions")
        versions = dict(contents.versions)
        if isinstance(recorded, dict):
            versions.update({str(k): str(v) for k, v in recorded.items() if k not in versions})
        members = self.handler.members(self.actual)
        return Inspection(path=str(self.source), format=self.handler.name,
                          files=tuple(self.named(m) for m in members), bytes=self.bytes,
                          variables=contents.variables, has_optimizer=contents.has_optimizer,
                          versions=versions)

    def check(self, model: keras.Model) -> tuple[Check, ...]:
        with self._reading(), _state.untouched(model):
            return (Check("integrity", True, self.detail),
                    *_verify.guarded("verify", lambda: self.handler.check(model, self.actual)))

    def load_config(self, **options: Any) -> keras.Model:
        with self._reading():
            return cast(ConfigFormat, self.handler).load(self.actual, **options)

    def load_model(self, **options: Any) -> Any:
        with self._reading():
            return cast(ModelFormat, self.handler).load(self.actual,
                                                        checksummed=self.checksummed, **options)

    def load_weights(self, model: keras.Model) -> tuple[Check, ...]:
        with self._reading():
            return (Check("integrity", True, self.detail),
                    *cast(WeightsFormat, self.handler).load(model, self.actual,
                                                            checksummed=self.checksummed))


def open_artifact(path: PathLike, kind: str | None = None, format: str | None = None, *,
                  handler: Handler | None = None) -> Opened:
    """The artifact at ``path`` (of ``kind``/``format`` when given), found and its
    manifest checked: ``ArtifactNotFoundError``, ``UnknownFormatError``,
    ``CorruptArtifactError`` as every public call raises them.

    A URL's artifact is copied to a local folder first (checked against its
    manifest's sizes on the way, its CRC32Cs before it is read); ``Opened.close``
    removes the copy."""
    store = stores.at(path)
    stage = contextlib.ExitStack()
    try:
        stage.callback(store.close)
        with _reading(store.shown), store.naming():
            found = stage.enter_context(store.resolve(
                lambda local: handler or _registry.detect(local, kind, format)))
    except BaseException:
        stage.close()
        raise
    source = path if isinstance(path, Path) else store.shown
    opened = Opened(source, found.layout, found.actual, found.detail, found.checksummed,
                    found.manifest, found.naming, stage)
    weakref.finalize(opened, stage.close)  # (a copy nobody closed goes with it, or at exit)
    return opened


@contextlib.contextmanager
def _opened(path: PathLike, kind: str | None = None,
            format: str | None = None) -> Iterator[Opened]:
    opened = open_artifact(path, kind, format)
    try:
        yield opened
    finally:
        opened.close()


def load_weights(model: keras.Model, path: PathLike, *, format: str | None = None) -> Report:
    """Restore saved variables into ``model``, all or nothing.

    Works on a model that is not built yet (kerasave records the build shapes).
    On any mismatch it raises ``ArchitectureMismatchError`` and every variable of
    the model and its optimizer is exactly as before.
    """
    start = time.perf_counter()
    with _opened(path, "weights", format) as opened:
        checks = opened.load_weights(model)
        size = opened.bytes
    return Report(str(opened.source), opened.handler.name, True, checks, size,
                  time.perf_counter() - start)


def load_config(path: PathLike, *, custom_objects: Mapping[str, Any] | None = None,
                safe_mode: bool = True) -> keras.Model:
    """A freshly initialized, uncompiled model from a ``.json``/``.yaml`` config file."""
    with _opened(path, "config") as opened:
        return opened.load_config(custom_objects=custom_objects, safe_mode=safe_mode)


def load_model(path: PathLike, *, compile: bool = True, safe_mode: bool = True,
               custom_objects: Mapping[str, Any] | None = None, mmap: bool = False) -> Any:
    """Load a whole model; for a SavedModel directory, the restored serving object.

    A ``.keras`` or ``.h5`` model comes back compiled with its optimizer state,
    so training continues exactly where it stopped.

    ``mmap=True`` (``.keras`` and legacy ``.h5``): after the same integrity
    checks, each variable's memory is the file's pages, mapped copy-on-write, so
    a load copies nothing and touches only what is used (a variable's first
    write copies that variable; the file never changes). The file must then
    not be truncated or rewritten in place while the model lives: another
    program doing so (native ``model.save`` to the same path) ends this
    process with SIGBUS. kerasave's own saves replace files by renaming, which
    is safe. Datasets that do not start on 64 bytes (files Keras wrote itself,
    mostly) are copied as usual.
    """
    with _opened(path, "model") as opened:
        return opened.load_model(compile=compile, safe_mode=safe_mode,
                                 custom_objects=custom_objects, mmap=mmap)


def verify(model: keras.Model, path: PathLike, *, format: str | None = None) -> Report:
    """Compare an existing artifact with a model in memory, without saving.

    Returns a ``Report`` whose ``ok`` says whether every check passed; it does
    not raise for a failed check.
    """
    start = time.perf_counter()
    with _opened(path, None, format) as opened:
        checks = opened.check(model)
        size = opened.bytes
    return Report(str(opened.source), opened.handler.name, all(c.ok for c in checks), checks,
                  size, time.perf_counter() - start)


def inspect(path: PathLike) -> Inspection:
    """What the artifact at ``path`` holds, read without building a model."""
    with _opened(path) as opened:
        return opened.inspection()


public(inspect, load_config, load_model, load_weights, save_config, save_model, save_weights,
       verify)
