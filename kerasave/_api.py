"""The public save/load/verify/inspect calls.

The facade owns what cuts across formats: paths, picking the handler, writing to
a temporary sibling and renaming it into place, verification after every save,
timing, and turning foreign exceptions into kerasave's.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np

from kerasave import _registry, _safety
from kerasave import store as stores
from kerasave._errors import (
    KerasaveError,
    RoundTripError,
    UnsafeArtifactError,
    foreign_errors,
)
from kerasave._report import Check, Inspection, Report, Variable
from kerasave._runtime.lazy import keras
from kerasave._runtime.public import public
from kerasave.compare import state as _state
from kerasave.compare import verify as _verify
from kerasave.formats._base import (
    ConfigFormat,
    Contents,
    Handler,
    ModelFormat,
    WeightsFormat,
    versions_now,
)
from kerasave.formats._metadata import artifact_metadata
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
    "open",
    "Artifact",
]

PathLike = str | os.PathLike[str]


def _reading(path: PathLike) -> contextlib.AbstractContextManager[None]:
    """Whatever a reader library raises about a damaged file becomes CorruptArtifactError."""
    return foreign_errors(path, "could not read the artifact", at="run", typed=True)


def _bytes(member: Path) -> int:
    if member.is_dir():
        return sum(p.stat().st_size for p in member.rglob("*") if p.is_file())
    return member.stat().st_size


def _size(handler: Handler, path: Path) -> int:
    return sum(_bytes(member) for member in handler.members(path))


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
    # (TensorFlow's errors too: a model export traces the model; an error without a
    # path is named as the target)
    with foreign_errors(target, f"Keras could not write the {handler.name} format", at="write"):
        handler.write(model, tmp)


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
    local: Path | None = None  # the local path ``source`` stands for (a URL's: its copy)

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
                    found.manifest, found.naming, stage, found.path)
    weakref.finalize(opened, stage.close)  # (a copy nobody closed goes with it, or at exit)
    return opened


@contextlib.contextmanager
def _opened(path: PathLike | Artifact, kind: str | None = None,
            format: str | None = None) -> Iterator[Opened]:
    """The artifact at ``path`` found and checked; an open ``Artifact``'s local version
    (a URL's copy) found and checked again, said as the artifact."""
    if isinstance(path, Artifact):
        checked = path._unread(kind, format)
        if checked is not None:  # (a command's load, right after the open checked it)
            yield checked
            return
        opened = path._again(kind, format)
    else:
        opened = open_artifact(path, kind, format)
    try:
        yield opened
    finally:
        opened.close()


class Artifact:
    """An artifact opened for reading without a model: what ``kerasave.open`` gives.

    Opening finds the artifact and its format, checks it against its integrity
    manifest (every byte's CRC32C, when kerasave wrote it), reads its structure
    and checks every array's declared shape and dtype against the bytes that hold
    it (the safety walks every load runs). Nothing else is read:
    ``array(name)`` reads one array when asked, and only that one.

    Use it as a context manager (or call ``close``): leaving closes the files it
    holds open and removes a URL's local copy.

    Attributes:
        path: The path or URL, as given.
        format: ``"checkpoint"``, ``"h5"``, ``"h5-sharded"``, ``"json"``,
            ``"yaml"``, ``"keras"``, ``"savedmodel"``, ``"onnx"`` or ``"litert"``.
        kind: ``"weights"``, ``"config"`` or ``"model"`` (a whole model or an export).
        variables: Every stored array as a ``Variable(name, shape, dtype)``, as
            ``kerasave.inspect`` lists them (none for a config).
        metadata: What the artifact says beyond its arrays (see ``docs/api.md``):
            ``versions``, ``manifest``, ``files``, ``bytes``, ``description``,
            ``architecture``, ``has_optimizer``, ``optimizer_variables``...
    """

    path: str
    format: str
    kind: str
    variables: tuple[Variable, ...]

    def __init__(self, opened: Opened) -> None:
        self._opened = opened
        self._files = contextlib.ExitStack()
        self._closed = False
        self._once = False  # (opened for one command's loads: open_once)
        try:
            with opened._reading():
                handler, at = opened.handler, opened.actual
                self.variables = opened.contents.variables
                self._read = self._files.enter_context(handler.reader(at))
                self._metadata = artifact_metadata(opened, _bytes)
        except BaseException:
            self._files.close()
            opened.close()
            raise
        weakref.finalize(self, self._files.close)  # (before the copy it reads goes)
        self.path = str(opened.source)
        self.format = handler.name
        self.kind = handler.kind
        self._names = {v.name for v in self.variables}

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What the artifact says beyond its arrays (a read-only mapping)."""
        return MappingProxyType(self._metadata)

    def keys(self) -> list[str]:
        """The names of the stored arrays, in the order ``variables`` lists them."""
        return [v.name for v in self.variables]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.variables)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def array(self, name: str) -> np.ndarray:
        """The stored array ``name``, read now, exactly as stored (dtype and shape).

        Raises:
            KeyError: the artifact holds no array of that name.
            CorruptArtifactError: its bytes are damaged (a checkpoint's tensor
                does not match its CRC32C, an HDF5 dataset cannot be read...).
            UnknownFormatError: it has no NumPy form (a checkpoint's dataset
                iterator state, a LiteRT string tensor).
            KerasaveError: the artifact was closed.
        """
        if self._closed:
            raise KerasaveError(f"the artifact is closed: open it again to read {name!r}",
                                path=self.path)
        if name not in self._names:
            raise KeyError(f"{self.path} holds no array named {name!r} (its {len(self)} "
                           "arrays are listed by keys())")
        with self._opened._reading():
            return self._read(name)

    def close(self) -> None:
        """Close the files it reads, and remove a URL's local copy."""
        if not self._closed:
            self._closed = True
            try:
                self._files.close()
            finally:
                self._opened.close()

    def __enter__(self) -> Artifact:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        values = sum(math.prod(v.shape) for v in self.variables)
        held = (f"{len(self.variables)} variables ({values:,} values)"
                + (", optimizer state" if self._metadata["has_optimizer"] else "")
                if self.kind != "config" else "architecture only, no arrays")
        return (f"<kerasave.Artifact {self.format} {self.path!r}: {held}"
                + (" (closed)>" if self._closed else ">"))

    def _inspection(self) -> Inspection:
        """What ``kerasave.inspect`` gives for it."""
        meta = self._metadata
        return Inspection(path=self.path, format=self.format, files=tuple(meta["files"]),
                          bytes=meta["bytes"], variables=self.variables,
                          has_optimizer=meta["has_optimizer"], versions=dict(meta["versions"]))

    def _unread(self, kind: str | None, format: str | None) -> Opened | None:
        """The check made at open, for the loads of an artifact ``open_once`` gave
        (one command: one check per file); None otherwise."""
        if not self._once or self._closed or kind not in (None, self.kind) \
                or format not in (None, self.format):
            return None
        return self._opened

    def _again(self, kind: str | None, format: str | None) -> Opened:
        """Its local version found and checked again (a load given the artifact: what it
        reads is checked when it reads it), errors and reports naming the artifact."""
        if self._closed or self._opened.local is None:
            raise KerasaveError("the artifact is closed: open it again to load it",
                                path=self.path)
        with self._opened.naming():
            fresh = open_artifact(self._opened.local, kind, format)
        return replace(fresh, source=self._opened.source,
                       naming=fresh.naming + self._opened.naming)


def open(path: PathLike, *, format: str | None = None) -> Artifact:  # noqa: A001
    """Open the artifact at ``path`` for reading without a model.

    Like safetensors' ``safe_open``: the artifact is checked and its structure
    read once, then each array is read only when asked for, after the same
    integrity and shape checks every load runs (a file's declared shapes are
    compared with the bytes that hold them before anything is allocated).
    Every format is read, Keras 2 artifacts and URLs too; a JSON/YAML config
    holds no arrays, and an ONNX or LiteRT export holds its initializers and
    constants. Neither TensorFlow nor Keras is imported for it, but to read a
    checkpoint tensor its index does not describe plainly (a string, a
    partitioned variable), which TensorFlow's reader reads.

    Args:
        path: A path or URL, as every kerasave call takes it.
        format: The format's name, when detection by content should not decide.

    Returns:
        An ``Artifact``: a context manager; ``format``, ``variables`` (as
        ``inspect`` lists them), ``keys()``, ``array(name)``, ``metadata``.

    Raises:
        ArtifactNotFoundError: nothing at ``path``.
        UnknownFormatError: no format fits it.
        CorruptArtifactError: it does not match its manifest, or its structure
            is damaged or declares more than its bytes hold.
        UnsafeArtifactError: reading it would read outside it (HDF5 external
            links, a zip member outside the archive, ONNX external data...).

    Examples:
        >>> with kerasave.open(tmp / "weights" / "my_model") as saved:
        ...     kernel = saved.array(saved.keys()[0])
    """
    return Artifact(open_artifact(path, None, format))


def open_once(path: PathLike) -> Artifact:
    """``open(path)`` for one command that loads it right away: its loads use the
    check made at open (every file is checksummed once per command) instead of
    checking again."""
    artifact = open(path)
    artifact._once = True
    return artifact


def load_weights(model: keras.Model, path: PathLike | Artifact, *,
                 format: str | None = None) -> Report:
    """Restore saved variables into ``model``, all or nothing.

    Works on a model that is not built yet (kerasave records the build shapes).
    On any mismatch it raises ``ArchitectureMismatchError`` and every variable of
    the model and its optimizer is exactly as before. ``path`` may be an open
    ``Artifact``, as for every load.
    """
    start = time.perf_counter()
    with _opened(path, "weights", format) as opened:
        checks = opened.load_weights(model)
        size = opened.bytes
    return Report(str(opened.source), opened.handler.name, True, checks, size,
                  time.perf_counter() - start)


def load_config(path: PathLike | Artifact, *, custom_objects: Mapping[str, Any] | None = None,
                safe_mode: bool = True) -> keras.Model:
    """A freshly initialized, uncompiled model from a ``.json``/``.yaml`` config file."""
    with _opened(path, "config") as opened:
        return opened.load_config(custom_objects=custom_objects, safe_mode=safe_mode)


def load_model(path: PathLike | Artifact, *, compile: bool = True, safe_mode: bool = True,
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

    ``path`` may be an open ``Artifact`` (``kerasave.open``): its local version
    is checked again and read (a URL's copy, without a second download), and
    what is said names the artifact's path or URL.
    """
    with _opened(path, "model") as opened:
        return opened.load_model(compile=compile, safe_mode=safe_mode,
                                 custom_objects=custom_objects, mmap=mmap)


def verify(model: keras.Model, path: PathLike | Artifact, *, format: str | None = None) -> Report:
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


def inspect(path: PathLike | Artifact) -> Inspection:
    """What the artifact at ``path`` holds, read without building a model
    (``kerasave.open``'s format, variables and metadata, as one record)."""
    if isinstance(path, Artifact):
        return path._inspection()
    with open(path) as artifact:
        return artifact._inspection()


public(Artifact, inspect, load_config, load_model, load_weights, open, save_config, save_model,
       save_weights, verify)
