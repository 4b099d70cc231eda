"""Every saved array of an artifact, by a name that lines up across formats.

The command line's ``diff``, ``verify`` and ``convert`` read artifacts through
this module. It reuses the format handlers, the registry and the integrity
manifest (every read checks the manifest first), and the public loaders.

Names. Formats name variables differently, and some names depend on the Python
objects that wrote them (``sequential_1/dense_2/kernel`` for the second model of
a process). When an architecture is at hand, variables get *model names* that
depend only on the model's structure, the way Keras' own weights files address
layers (class name in snake case, numbered in order):

    dense/kernel, dense/bias, dense_1/kernel, ...
    optimizer/iteration, optimizer/learning_rate, optimizer/dense/kernel/momentum, ...

A whole model (``.keras``, legacy ``.h5``) carries its architecture. A
weights-only artifact (checkpoint, HDF5 weights, SavedModel variables) is read
into a model whose architecture comes from the other side of a comparison or
from a config the caller names. Without one, names are the artifact's own:
variable paths as saved (checkpoints, SavedModel, Keras 2 HDF5), or Keras'
weights-file layout (``layers/dense/vars/0``); those only line up with the same
kind of naming.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from kerasave import _facade, _registry
from kerasave._errors import (
    ArchitectureMismatchError,
    CorruptArtifactError,
    KerasaveError,
    UnknownFormatError,
)
from kerasave._safety import check_h5, check_zip
from kerasave._state import fresh_twin
from kerasave._verify import optimizer_of, probe_inputs, to_numpy
from kerasave.formats import checkpoint as _checkpoint
from kerasave.formats.h5weights import _datasets as _h5_datasets
from kerasave.formats.h5weights import open_h5
from kerasave.formats.whole import _weights_h5
from kerasave.store import manifest as _manifest
from kerasave.store import transaction as _transaction

__all__ = [
    "Arrays",
    "Entry",
    "Comparison",
    "Integrity",
    "NeedsArchitecture",
    "DoesNotFit",
    "describe",
    "integrity",
    "architecture",
    "model_names",
    "read",
    "read_pair",
    "compare",
    "stored_arrays",
    "fingerprint",
    "load_savedmodel_variables",
    "load_weights_into",
    "checkpoint_manifest",
    "run_probe",
]

PathLike = str | os.PathLike[str]
WHOLE = ("keras", "h5")  # formats of kind "model" that hold an architecture


class NeedsArchitecture(KerasaveError):
    """The two artifacts name their variables differently and no architecture is known."""


class DoesNotFit(KerasaveError):
    """A weights-only artifact does not fit the architecture of the other side."""


# -- what is at a path -------------------------------------------------------------------


def describe(path: PathLike) -> tuple[str, str]:
    """``(format, kind)`` of the artifact at ``path``; kind is weights, config or model."""
    handler = _registry.detect(Path(os.fspath(path)))
    return handler.name, handler.kind


@dataclass(frozen=True)
class Integrity:
    """Whether the artifact has a kerasave manifest, and whether its files match it."""

    present: bool
    manifest: str | None
    ok: bool
    detail: str


def integrity(path: PathLike) -> Integrity:
    """The manifest's status; never raises for a mismatch (``ok`` is then False)."""
    source = Path(os.fspath(path))
    handler = _registry.detect(source)
    where = _manifest.manifest_path(handler, source)
    present = where.is_file()
    try:
        _, detail = _transaction.resolve(handler, source)
    except CorruptArtifactError as exc:
        return Integrity(present, str(where) if present else None, False, str(exc))
    return Integrity(present, str(where) if present else None, True, detail)


def _resolved(path: Path) -> tuple[Any, Path]:
    """The handler and the checked version of the artifact to read (manifest first)."""
    handler = _registry.detect(path)
    actual, _ = _transaction.resolve(handler, path)
    return handler, actual


# -- model names -------------------------------------------------------------------------


def _snake(name: str) -> str:
    """Keras' ``to_snake_case``: the name its weights files give a layer of this class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layers(obj: Any) -> list[Any]:
    try:
        found = obj.layers
    except Exception:  # some layers raise when asked for sublayers
        return []
    return list(found) if isinstance(found, (list, tuple)) else []


def model_names(model: keras.Model) -> list[tuple[str, Any]]:
    """``(name, variable)`` for every weight of the model, in ``model.weights`` order.

    A weight is named by the path of its layer in the model, each layer being its
    class in snake case numbered among its siblings (``dense``, ``dense_1``; nested
    models recurse), then its path inside that layer (``kernel``). Layer names
    chosen by Keras at run time (``dense_7``) play no part.
    """
    named: dict[int, str] = {}

    def visit(container: Any, prefix: str) -> None:
        counts: Counter[str] = Counter()
        for layer in _layers(container):
            base = _snake(type(layer).__name__)
            key = prefix + (base if counts[base] == 0 else f"{base}_{counts[base]}")
            counts[base] += 1
            if isinstance(layer, keras.Model):
                visit(layer, key + "/")
            own = getattr(layer, "path", None) or layer.name
            for v in layer.weights:
                if id(v) in named:
                    continue
                path = getattr(v, "path", None) or v.name
                inner = path[len(own) + 1:] if path.startswith(own + "/") else v.name
                named[id(v)] = f"{key}/{inner}"

    visit(model, "")
    result: list[tuple[str, Any]] = []
    taken: set[str] = set()
    for v in model.weights:
        name = named.get(id(v)) or getattr(v, "path", None) or v.name
        result.append((_unique(name, taken), v))
    return result


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    taken.add(candidate)
    return candidate


def _optimizer_name(full: str, model_paths: dict[str, str]) -> str:
    """``optimizer/<model name>/<slot>`` for a slot variable, else ``optimizer/<name>``.

    ``model_paths`` maps the model variables' saved paths to their names. Keras 3
    names a slot ``<optimizer>/<variable path with _ for />_<slot>``; Keras 2
    ``<Optimizer>/<slot>/<variable path>``.
    """
    rest = full.split("/", 1)[1] if "/" in full else full
    flat = sorted(((p.replace("/", "_"), n) for p, n in model_paths.items()),
                  key=lambda item: -len(item[0]))
    for key, name in flat:
        if rest.startswith(key + "_"):
            return f"optimizer/{name}/{rest[len(key) + 1:]}"
    for path, name in model_paths.items():
        if rest.endswith("/" + path):
            return f"optimizer/{name}/{rest[:-len(path) - 1]}"
    return f"optimizer/{rest}"


def _optimizer_arrays(model: keras.Model, named: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
    optimizer = optimizer_of(model)
    if optimizer is None:
        return {}
    paths = {getattr(v, "path", None) or v.name: n for n, v in named}
    taken: set[str] = set()
    return {_unique(_optimizer_name(getattr(v, "path", None) or v.name, paths), taken): to_numpy(v)
            for v in optimizer.variables}


# -- the arrays of one artifact ------------------------------------------------------------


@dataclass
class Arrays:
    """The arrays of one artifact, split into model and optimizer variables.

    ``optimizer`` is None when the artifact holds no optimizer state (or it could
    not be read into the architecture used). ``naming`` says which names these
    are: ``"model"`` (from an architecture), ``"paths"`` (variable paths as saved)
    or ``"layout"`` (Keras' weights-file layout); ``names`` says it in words.
    """

    path: str
    format: str
    kind: str
    naming: str
    names: str
    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] | None
    notes: list[str] = field(default_factory=list)


def architecture(path: PathLike) -> keras.Model:
    """A model of the architecture at ``path``: a JSON/YAML config, ``.keras`` or ``.h5``.

    A config gives a fresh, uncompiled model (no optimizer); a whole model comes
    compiled, so optimizer state can be read into it too.
    """
    fmt, kind = describe(path)
    if kind == "config":
        return _facade.load_config(path)
    if kind == "model" and fmt in WHOLE:
        return _load_whole(Path(os.fspath(path)))[0]
    raise UnknownFormatError(
        f"an architecture comes from a .json/.yaml config or a .keras/.h5 model; this is a "
        f"{fmt} {kind} artifact", path=path)


def _load_whole(path: Path) -> tuple[keras.Model, list[str]]:
    """``load_model``, and a note for every warning that says optimizer state was not read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _facade.load_model(path)
    notes = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if "optimizer" in text.lower():
            notes.append(text)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model, notes


def _from_model(path: Path, fmt: str, kind: str, model: keras.Model, names: str,
                with_optimizer: bool) -> Arrays:
    named = model_names(model)
    arrays = {n: to_numpy(v) for n, v in named}
    optimizer = _optimizer_arrays(model, named) if with_optimizer else None
    return Arrays(str(path), fmt, kind, "model", names, arrays, optimizer or None)


def _holds_optimizer(path: Path) -> bool:
    return _facade.inspect(path).has_optimizer


def read(path: PathLike, *, into: keras.Model | None = None,
         architecture_name: str | None = None) -> Arrays:
    """The arrays at ``path``.

    A whole model is read with its own architecture. A weights-only artifact is
    loaded into ``into`` (all or nothing: ``load_weights``; a SavedModel's
    variables by position) and named by that model, else read as saved.

    Raises:
        UnknownFormatError: a config, which holds no weights.
        ArchitectureMismatchError: the artifact does not fit ``into``.
    """
    source = Path(os.fspath(path))
    fmt, kind = describe(source)
    if kind == "config":
        raise UnknownFormatError(
            f"this is a {fmt} config: it holds an architecture, no weights", path=source)
    if kind == "model" and fmt in WHOLE:
        model, notes = _load_whole(source)
        has_opt = _holds_optimizer(source) and not notes and optimizer_of(model) is not None
        result = _from_model(source, fmt, kind, model, "model names from its own architecture",
                             has_opt)
        result.notes += notes
        return result
    if into is None:
        return _read_as_saved(source, fmt, kind)
    label = f"model names from the architecture of {architecture_name or 'the given model'}"
    holds = fmt != "savedmodel" and _holds_optimizer(source)
    into = load_weights_into(into, source, holds_optimizer=holds)
    if fmt == "savedmodel":
        return _from_model(source, fmt, kind, into, label, False)
    has_opt = holds and optimizer_of(into) is not None
    result = _from_model(source, fmt, kind, into, label, has_opt)
    if holds and not has_opt:
        result.notes.append(f"{source} holds optimizer state, but the architecture of "
                            f"{architecture_name} has no optimizer to read it into")
    return result


def load_weights_into(model: keras.Model, path: PathLike, *,
                      holds_optimizer: bool | None = None) -> keras.Model:
    """Load a weights-only artifact (or a SavedModel's variables) into ``model``'s architecture.

    All or nothing. Returns the model that holds the values: ``model`` itself, or,
    when the artifact holds no optimizer state and ``model`` has an optimizer, an
    uncompiled twin of it (an HDF5 weights file without optimizer state does not
    load into a model whose optimizer is built).
    """
    source = Path(os.fspath(path))
    fmt, _ = describe(source)
    holds = holds_optimizer if holds_optimizer is not None else (
        fmt != "savedmodel" and _holds_optimizer(source))
    if not holds and optimizer_of(model) is not None:
        model = fresh_twin(model) or model
    if fmt == "savedmodel":
        load_savedmodel_variables(model, source)
    else:
        _facade.load_weights(model, source)
    return model


# -- reading without an architecture ---------------------------------------------------


def _read_as_saved(path: Path, fmt: str, kind: str) -> Arrays:
    handler, actual = _resolved(path)
    with _facade._reading(path):
        if fmt == "checkpoint":
            model, optimizer = _checkpoint_arrays(actual)
            return Arrays(str(path), fmt, kind, "paths", "variable paths as saved",
                          model, optimizer or None)
        if fmt == "savedmodel":
            ordered = _savedmodel_arrays(actual)
            return Arrays(str(path), fmt, kind, "paths", "variable paths as saved",
                          {n: a for n, a in ordered}, None)
        return _h5_weights_arrays(path, actual)


def _checkpoint_arrays(prefix: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Model and optimizer variables of a TF checkpoint, by their saved paths."""
    reader = _checkpoint._reader(prefix)
    graph = _checkpoint._graph(reader, prefix)
    root_children = {c.local_name: c.node_id for c in graph.nodes[0].children}
    # tf.train.Checkpoint(model=..., optimizer=...) (kerasave, TF guides), or the
    # model itself at the root (Keras 2 model.save_weights).
    model_root = root_children.get("model", 0)

    def reach(start: int, skip: set[str]) -> list[int]:
        seen, order, stack = set(), [], [start]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            order.append(node_id)
            children = [c for c in graph.nodes[node_id].children
                        if not (node_id in (0, model_root) and c.local_name in skip)]
            stack.extend(c.node_id for c in reversed(children))
        return order

    model_nodes = reach(model_root, {"optimizer", "save_counter"})
    opt_roots = [root_children.get("optimizer")]
    opt_roots.append(next((c.node_id for c in graph.nodes[model_root].children
                           if c.local_name == "optimizer"), None))
    taken_model = set(model_nodes)
    opt_nodes = list(dict.fromkeys(n for r in opt_roots if r is not None
                                   for n in reach(r, set()) if n not in taken_model))

    def values(nodes: list[int]) -> list[tuple[str, np.ndarray]]:
        found = []
        for node_id in nodes:
            for attr in graph.nodes[node_id].attributes:
                if attr.name != "VARIABLE_VALUE":
                    continue
                key = attr.checkpoint_key
                plain = key.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")
                found.append((attr.full_name or plain, np.asarray(reader.get_tensor(key))))
        return found

    taken: set[str] = set()
    model = {_unique(n, taken): a for n, a in values(model_nodes)}
    paths = {n: n for n in model}
    taken = set()
    optimizer = {_unique(_optimizer_name(n, paths), taken): a for n, a in values(opt_nodes)}
    return model, optimizer


def _savedmodel_arrays(path: Path) -> list[tuple[str, np.ndarray]]:
    """The exported model's variables, in ``model.variables`` order, by saved path."""
    prefix = path / "variables" / "variables"
    reader = _checkpoint._reader(prefix)
    graph = _checkpoint._graph(reader, prefix)
    root = {c.local_name: c.node_id for c in graph.nodes[0].children}
    if "variables" not in root:
        raise CorruptArtifactError("the SavedModel lists no variables (not a Keras export?)",
                                   path=path)
    found = []
    taken: set[str] = set()
    for child in graph.nodes[root["variables"]].children:
        for attr in graph.nodes[child.node_id].attributes:
            if attr.name == "VARIABLE_VALUE":
                name = attr.full_name or f"variables/{child.local_name}"
                found.append((int(child.local_name), _unique(name, taken),
                              np.asarray(reader.get_tensor(attr.checkpoint_key))))
    return [(n, a) for _, n, a in sorted(found, key=lambda item: item[0])]


def _h5_weights_arrays(path: Path, actual: Path) -> Arrays:
    model: dict[str, np.ndarray] = {}
    optimizer: dict[str, np.ndarray] = {}
    with open_h5(actual) as f:
        if "layer_names" in f.attrs:  # Keras 2 layout: every array names its variable
            taken: set[str] = set()
            for layer in f.attrs["layer_names"]:
                group = f[_text(layer)]
                for weight in group.attrs.get("weight_names", []):
                    name = _text(weight)
                    model[_unique(name.removesuffix(":0"), taken)] = np.asarray(group[name])
            return Arrays(str(path), "h5", "weights", "paths", "variable paths as saved",
                          model, None)
        for name, dataset in _datasets(f):
            target = optimizer if name.startswith("optimizer/") else model
            target[name] = np.asarray(dataset)
    return Arrays(str(path), "h5", "weights", "layout", "Keras' weights-file layout",
                  model, optimizer or None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _datasets(group: h5py.Group) -> list[tuple[str, h5py.Dataset]]:
    return list(_h5_datasets(group).items())


def load_savedmodel_variables(model: keras.Model, path: PathLike) -> None:
    """Assign a SavedModel export's variables to ``model``'s, by position, all or nothing."""
    source = Path(os.fspath(path))
    fmt, _ = describe(source)
    if fmt != "savedmodel":
        raise UnknownFormatError(f"expected a SavedModel directory, found {fmt}", path=source)
    _, actual = _resolved(source)
    with _facade._reading(source):
        saved = _savedmodel_arrays(actual)
    live = list(model.variables)
    if len(saved) != len(live):
        raise ArchitectureMismatchError(
            f"the SavedModel holds {len(saved)} variables, the model has {len(live)}",
            path=source)
    bad = [f"{getattr(v, 'path', v.name)}: saved {a.shape} {a.dtype}, live "
           f"{tuple(v.shape)} {np.dtype(keras.backend.standardize_dtype(v.dtype))}"
           for (_, a), v in zip(saved, live)
           if (a.shape, a.dtype) != (tuple(v.shape),
                                     np.dtype(keras.backend.standardize_dtype(v.dtype)))]
    if bad:
        raise ArchitectureMismatchError("; ".join(bad[:3]), path=source)
    for (_, value), variable in zip(saved, live):
        variable.assign(value)


# -- two artifacts ---------------------------------------------------------------------


def read_pair(a: PathLike, b: PathLike, *, config: PathLike | None = None
              ) -> tuple[Arrays, Arrays]:
    """Both artifacts' arrays, named the same way.

    Whole models are read with their own architectures. A weights-only side is
    read into the architecture at ``config`` when given, else into the other
    side's when that is a whole model, else as saved.

    Raises:
        DoesNotFit: a weights-only side does not fit the other side's architecture.
        NeedsArchitecture: both are weights-only, named differently, and no config.
    """
    paths = [Path(os.fspath(a)), Path(os.fspath(b))]
    kinds = [describe(p) for p in paths]
    for p, (fmt, kind) in zip(paths, kinds):
        if kind == "config":
            raise UnknownFormatError(
                f"this is a {fmt} config: it holds an architecture, no weights to compare",
                path=p)
    whole = [kind == "model" and fmt in WHOLE for fmt, kind in kinds]
    result: list[Arrays | None] = [None, None]
    for i in (0, 1):
        if whole[i]:
            result[i] = read(paths[i])
    for i in (0, 1):
        if result[i] is not None:
            continue
        other = 1 - i
        if config is not None:
            result[i] = read(paths[i], into=architecture(config),
                             architecture_name=os.fspath(config))
        elif whole[other]:
            into, _ = _load_whole(paths[other])
            try:
                result[i] = read(paths[i], into=into, architecture_name=str(paths[other]))
            except ArchitectureMismatchError as exc:
                raise DoesNotFit(
                    f"{paths[i]} does not fit the architecture of {paths[other]}: {exc}"
                ) from exc
        else:
            result[i] = read(paths[i])
    first, second = result
    assert first is not None and second is not None
    if first.naming != second.naming:
        raise NeedsArchitecture(
            f"{first.path} ({first.format}, {first.names}) and {second.path} "
            f"({second.format}, {second.names}) name their variables differently and neither "
            "holds an architecture to line them up")
    return first, second


@dataclass(frozen=True)
class Entry:
    """One variable of a comparison.

    ``status`` is ``same`` (bit for bit), ``changed`` (values), ``shape``, ``dtype``,
    ``missing`` (only in A) or ``extra`` (only in B). The differences are over the
    elements, in float64: ``max_abs`` = max |a - b|, ``max_rel`` = max |a - b| / |a|
    (infinite where a is 0 and b is not), as numpy.testing reports them.
    """

    name: str
    status: str
    a_shape: tuple[int, ...] | None = None
    a_dtype: str | None = None
    b_shape: tuple[int, ...] | None = None
    b_dtype: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None


@dataclass(frozen=True)
class Comparison:
    entries: tuple[Entry, ...]
    notes: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return all(e.status == "same" for e in self.entries)

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.entries)


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or not (
            np.issubdtype(b.dtype, np.number) or b.dtype == np.bool_):
        return None, None
    with np.errstate(all="ignore"):
        x, y = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(x - y)
        if diff.size == 0:
            return 0.0, 0.0
        rel = np.where(diff == 0, 0.0, diff / np.abs(x))
        return float(np.max(diff)), float(np.max(rel))


def _entry(name: str, a: np.ndarray, b: np.ndarray) -> Entry:
    shapes = dict(a_shape=tuple(a.shape), a_dtype=str(a.dtype),
                  b_shape=tuple(b.shape), b_dtype=str(b.dtype))
    if a.shape != b.shape:
        return Entry(name, "shape", **shapes)
    if a.dtype == b.dtype and a.tobytes() == b.tobytes():
        return Entry(name, "same", **shapes, max_abs=0.0, max_rel=0.0)
    max_abs, max_rel = _differences(a, b)
    return Entry(name, "dtype" if a.dtype != b.dtype else "changed", **shapes,
                 max_abs=max_abs, max_rel=max_rel)


def _compare_group(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[Entry]:
    entries = []
    for name, value in a.items():
        if name in b:
            entries.append(_entry(name, value, b[name]))
        else:
            entries.append(Entry(name, "missing", a_shape=tuple(value.shape),
                                 a_dtype=str(value.dtype)))
    for name, value in b.items():
        if name not in a:
            entries.append(Entry(name, "extra", b_shape=tuple(value.shape),
                                 b_dtype=str(value.dtype)))
    return entries


def compare(a: Arrays, b: Arrays) -> Comparison:
    """Every model variable; optimizer variables when both sides hold them."""
    entries = _compare_group(a.model, b.model)
    notes = [*a.notes, *b.notes]
    if a.optimizer is not None and b.optimizer is not None:
        entries += _compare_group(a.optimizer, b.optimizer)
    elif a.optimizer is not None or b.optimizer is not None:
        only = "A" if a.optimizer is not None else "B"
        notes.append(f"optimizer state is only in {only}: not compared")
    if entries and not any(e.status not in ("missing", "extra") for e in entries):
        notes.append("no variable name is on both sides; if these are the same model saved "
                     "by different objects, compare them through an architecture")
    return Comparison(tuple(entries), tuple(notes))


# -- every stored tensor, for verify -----------------------------------------------------


def stored_arrays(path: PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Every array stored in the artifact, read from disk (no model is built).

    Names are those ``inspect`` lists. Damage found while reading raises
    ``CorruptArtifactError``.
    """
    source = Path(os.fspath(path))
    handler, actual = _resolved(source)
    with _facade._reading(source):
        if handler.name in ("json", "yaml"):
            return
        if handler.name in ("checkpoint", "savedmodel"):
            prefix = actual / "variables" / "variables" if handler.name == "savedmodel" \
                else actual
            reader = _checkpoint._reader(prefix)
            _checkpoint._graph(reader, prefix)  # the object graph must parse
            for key in sorted(reader.get_variable_to_shape_map()):
                if key != "_CHECKPOINTABLE_OBJECT_GRAPH":
                    yield key, np.asarray(reader.get_tensor(key))
            return
        if handler.name == "keras":
            with zipfile.ZipFile(actual) as zf:
                check_zip(zf, source)
                with _weights_h5(actual, zf) as f:  # read in place, not copied out
                    check_h5(f, source)
                    for name, dataset in _datasets(f):
                        yield name, np.asarray(dataset)
            return
        with open_h5(actual) as f:
            for name, dataset in _datasets(f):
                yield name, np.asarray(dataset)


def fingerprint(value: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """Dtype, shape and a digest of the bytes: equal exactly when the arrays are."""
    data = np.ascontiguousarray(value)
    return data.dtype.str, tuple(data.shape), hashlib.blake2b(data.tobytes(),
                                                               digest_size=20).digest()


def run_probe(model: keras.Model) -> bool:
    """Run the model on a small deterministic batch that fits its inputs.

    Returns False when the model records no input shapes to build one from.
    """
    probe = probe_inputs(model)
    if probe is None:
        return False
    model(probe, training=False)
    return True


def checkpoint_manifest(path: PathLike) -> dict[str, Any]:
    """What kerasave recorded beside a checkpoint prefix ({} for plain TensorFlow ones)."""
    return _checkpoint.read_manifest(Path(os.fspath(path)))
