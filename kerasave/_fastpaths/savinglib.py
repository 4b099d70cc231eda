"""Keras' own ``saving_lib`` traversals, driven at the disk's speed.

Keras' traversal (``saving_lib._load_state``/``_save_state``) decides which
dataset goes to which variable; kerasave only changes where the bytes come from
and go to: an ``H5IOStore`` whose datasets come from a ``Source``
(``kerasave._fastpaths.h5read``), and one that writes views of the variables.

- ``load_keras``: a ``.keras`` archive loaded like ``keras.saving.load_model``.
- ``keras_twin_recipe``: how to build and fill the twin of a ``.keras`` archive
  for verification (lent by ``kerasave.compare.state.lent_twin``).
- ``read_weights``/``map_weights``: a Keras weights file staged for an
  all-or-nothing load, or recorded against a twin without copies.
- ``write_weights``: a Keras weights file written from views of the variables.

Anything this module does not recognise (assets, sharded or npz weights, a
Keras version whose internals differ) raises ``Unsupported``: the caller uses
Keras' own calls instead, with the same result, slower.
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._errors import CorruptArtifactError
from kerasave._fastpaths import Unsupported, require
from kerasave._fastpaths.dlpack import ALIGN, variable_view
from kerasave._fastpaths.h5read import (
    WEIGHTS,
    Source,
    check_sizes,
    crc32_span,
    member_span,
    twin_variables,
)
from kerasave._fastpaths.patches import (
    Recorded,
    build_deferred,
    initialize_rest,
    optimizer_variables,
    recorded,
)
from kerasave._fastpaths.twins import Read
from kerasave._runtime.lazy import keras

__all__ = ["keras_twin_recipe", "load_keras", "map_weights", "read_weights", "stored_entries",
           "write_weights"]


@functools.cache
def _store_class() -> type:
    """An ``H5IOStore`` whose datasets come from a ``Source``."""
    from keras.src.saving import saving_lib

    base = saving_lib.H5IOStore
    if not all(hasattr(base, name) for name in ("get", "_get_h5_file", "__getitem__")):
        raise Unsupported("this Keras' H5IOStore differs")

    class FastStore(base):  # type: ignore[misc, valid-type]
        def __init__(self, source: Source):
            self._source = source
            super().__init__(io.BytesIO(), mode="r")

        def _get_h5_file(self, path_or_io: Any, mode: str | None = None) -> h5py.File:
            return h5py.File(self._source.window(), "r")

        def __getitem__(self, key: str) -> Any:
            group = getattr(self, "_h5_entry_group", None)
            dataset = group.get(key) if isinstance(group, h5py.Group) else None
            if isinstance(dataset, h5py.Dataset) and "dtype" not in dataset.attrs:
                fast = self._source.array(dataset)
                if fast is not None:
                    return fast
            elif self._source.reads is not None:
                self._source.reads.append((None, key))  # read by Keras, not by the source
            return super().__getitem__(key)

    return FastStore


def _raise_failure(saving_lib: Any, errors: dict[int, Any]) -> None:
    """What went wrong while Keras' traversal read the values: ours first, as raised."""
    for _, error in errors.values():
        if isinstance(error, CorruptArtifactError):
            raise error
    saving_lib._raise_loading_failure(errors)


def _read_state(model: keras.Model, source: Source, replay: Any = None) -> None:
    """Keras' own load traversal over the weights in ``source``, read by ``_store_class``
    (or, for a kept twin, the reads it made last time: ``replay``, see
    ``kerasave._fastpaths.twins._Replay``).

    A save's own temporary (``source.mapped``) was written from the model a moment
    ago: its dataset sizes are not walked first (``check_sizes``); anything else is.
    """
    from keras.src.saving import saving_lib

    if replay is not None and replay.run(model, source):
        return
    if not source.mapped:
        check_sizes(model, source)
    _warm_skipsets(saving_lib)
    store = _store_class()(source)
    failed: set[int] = set()
    errors: dict[int, Any] = {}
    try:
        saving_lib._load_state(model, weights_store=store, assets_store=None, inner_path="",
                               visited_saveables=set(), failed_saveables=failed,
                               error_msgs=errors)
    finally:
        store.close()
    if failed:
        _raise_failure(saving_lib, errors)


def load_keras(path: Path, config: dict[str, Any], *, compile: bool, safe_mode: bool,
               custom_objects: Any, checksummed: bool, mmap: bool = False) -> keras.Model:
    """Load a ``.keras`` archive like ``keras.saving.load_model``, at disk speed.

    ``checksummed`` says the whole file was already checked (kerasave's manifest);
    otherwise the zip's own CRC-32 of the weights member is checked first.
    ``mmap``: the variables' memory is the archive's pages, mapped copy-on-write,
    where a dataset starts on 64 bytes (kerasave's writers align them).

    Raises:
        Unsupported: the caller should use Keras' reader instead (nothing was changed).
        CorruptArtifactError: the archive is damaged.
    """
    model, _ = _restore_keras(path, config, compile=compile, safe_mode=safe_mode,
                              custom_objects=custom_objects, checksummed=checksummed,
                              mmap=mmap)
    return model


def keras_twin_recipe(path: Path, config: dict[str, Any], *,
                      mapped: bool = False) -> tuple[Any, Callable[[], keras.Model], Read]:
    """How to build and fill the twin of a ``.keras`` archive, for verification:
    ``(key, build, read)`` for ``kerasave.compare.state.lent_twin``.

    ``build`` makes the model from the archive's config, compiled, as Keras'
    loader does. ``read`` runs Keras' own traversal over it, but every value Keras
    would assign is recorded instead (see ``recorded``): read-only views of the
    archive's pages when ``mapped`` (the archive is kerasave's own temporary,
    written by this process just now), else aligned copies.
    """
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    return (("keras", json.dumps(config, sort_keys=True)),
            lambda: saving_lib._model_from_config(json.dumps(config), None, True, True),
            lambda model, replay: _read_keras(path, model, checksummed=True, record=True,
                                              mapped=mapped, replay=replay))


def _restore_keras(path: Path, config: dict[str, Any], *, compile: bool, safe_mode: bool,
                   custom_objects: Any, checksummed: bool,
                   mmap: bool = False) -> tuple[keras.Model, Recorded]:
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    model, created = build_deferred(lambda: saving_lib._model_from_config(
        json.dumps(config), custom_objects, compile, safe_mode))
    values = _read_keras(path, model, checksummed=checksummed, record=False, private=mmap)
    initialize_rest([v for v in created if id(v) not in values])
    return model, values


def _check_saving_lib(saving_lib: Any) -> None:
    """Raise Unsupported unless Keras' own traversal may read through a ``Source``."""
    require("keras_reader")
    if not all(hasattr(saving_lib, name) for name in (
            "_load_state", "_model_from_config", "_raise_loading_failure")):
        raise Unsupported("this Keras' saving_lib differs")


def _read_keras(path: Path, model: keras.Model, *, checksummed: bool, record: bool,
                mapped: bool = False, replay: Any = None, private: bool = False) -> Recorded:
    """Keras' traversal of ``model`` over the archive's weights: assigned, or, when
    ``record``, recorded (``mapped``: as views of kerasave's own temporary;
    ``private``: assigned as copy-on-write views of the archive's pages)."""
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if WEIGHTS not in names or len(names) > 3:
            raise Unsupported("npz/sharded weights or assets")
        start, size = member_span(path, zf, WEIGHTS)
        crc = zf.getinfo(WEIGHTS).CRC
    _store_class()  # raises Unsupported before anything is read
    fd = os.open(path, os.O_RDONLY)
    try:
        if not checksummed and crc32_span(fd, start, size, path) != crc:
            raise CorruptArtifactError(f"{WEIGHTS} fails its zip CRC-32", path=path)
        source = Source(fd, start, start + size, path, mapped=mapped, private=private)
        with recorded(twin_variables(model) if record else ()) as values:
            _read_state(model, source, replay)
        return values
    finally:
        os.close(fd)


def write_weights(model: keras.Model, path: Path, *, userblock: int = 0) -> None:
    """Keras' weights file (``model.save_weights`` layout), written without copies.

    Keras' own traversal decides what goes where; values reach h5py as
    read-only views of the variables' memory instead of two copies each.
    """
    from keras.src.saving import saving_lib

    require("keras_writer")
    if not hasattr(saving_lib, "_save_state"):
        raise Unsupported("this Keras' saving_lib differs")

    class Store(saving_lib.H5IOStore):  # type: ignore[misc, name-defined]
        def _get_h5_file(self, path_or_io: Any, mode: str | None = None) -> h5py.File:
            # Every dataset of 64 bytes or more starts on 64 (from the file's start: a
            # userblock is a power of two), so ``load_model(..., mmap=True)`` can map it.
            return h5py.File(path_or_io, "w", userblock_size=userblock or 0,
                             alignment_threshold=ALIGN, alignment_interval=ALIGN)

        def __setitem__(self, key: str, value: Any) -> None:
            array = None
            if isinstance(value, keras.Variable):
                array = variable_view(value)
            elif isinstance(value, np.ndarray) and value.dtype.kind in "fiucb":
                array = value
            if array is None or not hasattr(self, "_create_h5_group"):
                super().__setitem__(key, value)
                return
            if not self._h5_entry_initialized:
                self._create_h5_group(self._h5_entry_path)
            self._h5_entry_group[key] = array

    _warm_skipsets(saving_lib)
    store = Store(path, mode="w")
    try:
        with optimizer_variables((Store,)):  # (the optimizer's state uncopied too)
            saving_lib._save_state(model, weights_store=store, assets_store=None,
                                   inner_path="", visited_saveables=set())
    finally:
        store.close()


def stored_entries(model: keras.Model) -> dict[str, Any]:
    """What ``model.save_weights`` writes, by dataset name (``layers/dense/vars/0``),
    each value as Keras' traversal hands it over (a variable, or an array a layer
    keeps of its own: ``IndexLookup``'s IDF weights), nothing copied or written.

    The public twin writes the file with ``model.save_weights`` and reads it back.
    """
    from keras.src.saving import saving_lib

    require("keras_writer")
    if not hasattr(saving_lib, "_save_state") or not hasattr(saving_lib, "H5IOStore"):
        raise Unsupported("this Keras' saving_lib differs")
    found: dict[str, Any] = {}

    class Recording(saving_lib.H5IOStore):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:  # (no file: every value is recorded, not written)
            self.mode = "w"
            self._where = ""

        def __bool__(self) -> bool:
            return True

        def make(self, path: str, metadata: Any = None) -> Any:
            self._where = f"{path}/vars" if path else "vars"
            return self

        def __setitem__(self, key: str, value: Any) -> None:
            found[f"{self._where}/{key}"] = value

        def close(self) -> None:
            pass

    _warm_skipsets(saving_lib)
    with optimizer_variables((Recording,)):  # (the optimizer's variables, not copies)
        saving_lib._save_state(model, weights_store=Recording(), assets_store=None,
                               inner_path="", visited_saveables=set())
    return found


def _warm_skipsets(saving_lib: Any) -> None:
    """Keras' traversal builds reference objects (an optimizer, with variables) each
    time it meets a kind of object: not allowed in a stateless scope.

    Keras 3.15 means to cache them, but stores the cache under
    ``saving_attr_skipset_<kind>`` and looks for ``saving_attr_skiplist_<kind>``;
    kerasave fills the name it looks for, once.
    """
    from keras.src.backend.common import global_state

    for kind in ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer",
                 "Loss", "Cross", "Feature"):
        if global_state.get_global_attribute(f"saving_attr_skiplist_{kind}") is not None:
            continue
        try:
            skipset = saving_lib.get_attr_skipset(kind)
        except Exception:
            continue
        global_state.set_global_attribute(f"saving_attr_skiplist_{kind}", skipset)


def map_weights(model: keras.Model, path: Path, *, mapped: bool = False,
                replay: Any = None) -> Recorded:
    """What a Keras weights file would assign to ``model``'s variables, assigning
    nothing, by variable (see ``recorded``): read-only views of the file's pages
    when ``mapped`` (the file is kerasave's own temporary, written by this process
    just now), else aligned copies. ``replay``: a kept twin's (``lent_twin``).

    Raises:
        Unsupported: the caller should load with Keras' reader instead.
    """
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    _store_class()
    fd = os.open(path, os.O_RDONLY)
    try:
        with recorded(twin_variables(model)) as values:
            _read_state(model, Source(fd, 0, os.fstat(fd).st_size, path, mapped=mapped),
                        replay)
    finally:
        os.close(fd)
    return values


def read_weights(model: keras.Model, path: Path) -> Callable[[], None]:
    """``model.load_weights`` of a Keras weights file, staged: returns the assignment.

    Keras' traversal runs in a ``keras.StatelessScope``, which records every
    ``variable.assign`` instead of applying it: everything is read (one
    ``preadv`` per array) and checked while the model stays as it was, and the
    returned function applies it all. No copy of the old values is needed.

    Raises:
        Unsupported: the caller should use Keras' reader (nothing was changed).
    """
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    _store_class()
    _warm_skipsets(saving_lib)
    fd = os.open(path, os.O_RDONLY)
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            _read_state(model, Source(fd, 0, os.fstat(fd).st_size, path))
    finally:
        os.close(fd)
    values = dict(scope.state_mapping)
    candidates = twin_variables(model) + list(getattr(model, "metrics_variables", []))
    targets = {id(v): v for v in candidates if id(v) in values}
    if len(targets) != len(values):
        raise Unsupported("assigned something that is not a model or optimizer variable")

    def apply() -> None:
        for key, variable in targets.items():
            variable.assign(values.pop(key))

    return apply
