"""Artifacts as the command line reads them: each checked once, then read through its
format's handler.

``open_artifact`` finds an artifact's handler and checks its integrity manifest
(the one CRC32C pass over its files), as every public call does; what the
command then reads (``inspect``'s contents, every stored array, a load) reads
that checked version through the handler, without checking it again.

Names: see ``kerasave.cli._names``. Without an architecture, names are those
``inspect`` lists (the handler's ``arrays``), which line up only between
artifacts of one format.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasave import _facade, _registry
from kerasave import store as stores
from kerasave._errors import ArchitectureMismatchError, KerasaveError, UnknownFormatError
from kerasave._facade import Opened, open_artifact
from kerasave._lazy import keras
from kerasave._report import Check
from kerasave._state import fresh_twin
from kerasave._tolerance import compare_within
from kerasave._verify import optimizer_of, probe_inputs, to_numpy
from kerasave.cli._names import model_names, optimizer_arrays, unique
from kerasave.formats._export import SECOND_BATCH, ExportFormat, Served, serve_batch
from kerasave.formats.savedmodel import SavedModelHandler

__all__ = ["Opened", "open_artifact", "Arrays", "NeedsArchitecture", "DoesNotFit",
           "architecture", "read", "read_pair", "load_into", "local_copy", "same_place",
           "is_export", "outputs_verdict"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """``path`` itself, or for a URL a local copy of its artifact (every object's size
    and CRC32C checked), removed afterwards. kerasave's errors inside name the URL."""
    with stores.at(path) as store, store.local(_registry.detect) as local:
        yield str(local)


def same_place(a: PathLike, b: PathLike) -> bool:
    return stores.at(a).same(stores.at(b))


class NeedsArchitecture(KerasaveError):
    """The two artifacts name their variables differently and no architecture is known."""


class DoesNotFit(KerasaveError):
    """A weights-only artifact does not fit the architecture of the other side."""


# -- one artifact, checked once ----------------------------------------------------------


# -- the arrays of one artifact ------------------------------------------------------------


@dataclass
class Arrays:
    """The arrays of one artifact, split into model and optimizer variables.

    ``optimizer`` is None when the artifact holds no optimizer state (or it could
    not be read into the architecture used). ``naming`` says which names these
    are: ``"model"`` (from an architecture), else the format's own (those
    ``inspect`` lists); ``names`` says it in words.
    """

    path: str
    format: str
    kind: str
    naming: str
    names: str
    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] | None
    notes: list[str] = field(default_factory=list)


def architecture(source: Opened) -> keras.Model:
    """A model of the architecture ``source`` holds: a JSON/YAML config, ``.keras`` or ``.h5``.

    A config gives a fresh, uncompiled model (no optimizer); a whole model comes
    compiled, so optimizer state can be read into it too.
    """
    if source.handler.kind == "config":
        return source.load_config()
    if source.whole:
        return _load_whole(source)[0]
    raise UnknownFormatError(
        f"an architecture comes from a .json/.yaml config or a .keras/.h5 model; this is a "
        f"{source.handler.name} {source.handler.kind} artifact", path=source.source)


def _load_whole(source: Opened) -> tuple[keras.Model, list[str]]:
    """The loaded model, and a note for every warning that says optimizer state was not read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = source.load_model()
    notes = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if "optimizer" in text.lower():
            notes.append(text)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model, notes


def _from_model(source: Opened, model: keras.Model, names: str,
                with_optimizer: bool) -> Arrays:
    named = model_names(model)
    arrays = {n: to_numpy(v) for n, v in named}
    optimizer = optimizer_arrays(model, named) if with_optimizer else None
    return Arrays(str(source.source), source.handler.name, source.handler.kind, "model", names,
                  arrays, optimizer or None)


def _whole(source: Opened) -> tuple[Arrays, keras.Model]:
    """A whole model's arrays by its own architecture, and the model it loaded as."""
    model, notes = _load_whole(source)
    has_opt = source.contents.has_optimizer and not notes and optimizer_of(model) is not None
    result = _from_model(source, model, "model names from its own architecture", has_opt)
    result.notes += notes
    return result, model


def _as_saved(source: Opened) -> Arrays:
    """The arrays by the names the artifact gives them (``inspect``'s)."""
    optimizer_names = set(source.contents.optimizer_variables)
    model: dict[str, np.ndarray] = {}
    optimizer: dict[str, np.ndarray] = {}
    model_taken: set[str] = set()
    for name, value in source.arrays():
        if name in optimizer_names:
            optimizer[name] = value
        else:
            model[unique(name, model_taken)] = value
    return Arrays(str(source.source), source.handler.name, source.handler.kind,
                  source.handler.name, source.handler.array_names, model, optimizer or None)


def load_into(model: keras.Model, source: Opened) -> keras.Model:
    """Load a weights-only artifact (or a SavedModel's variables) into ``model``'s
    architecture, all or nothing.

    Returns the model that holds the values: ``model`` itself, or, when the artifact
    holds no optimizer state and ``model`` has an optimizer, an uncompiled twin of it
    (an HDF5 weights file without optimizer state does not load into a model whose
    optimizer is built).
    """
    holds = source.handler.can_hold_optimizer and source.contents.has_optimizer
    if not holds and optimizer_of(model) is not None:
        model = fresh_twin(model) or model
    if isinstance(source.handler, SavedModelHandler):
        with _facade._reading(source.source):
            source.handler.load_variables(model, source.actual)
    else:
        source.load_weights(model)
    return model


def read(source: Opened, *, into: keras.Model | None = None,
         architecture_name: str | None = None) -> Arrays:
    """The arrays of ``source``.

    A whole model is read with its own architecture. A weights-only artifact is
    loaded into ``into`` (all or nothing; a SavedModel's variables by position)
    and named by that model, else read as saved.

    Raises:
        UnknownFormatError: a config, which holds no weights.
        ArchitectureMismatchError: the artifact does not fit ``into``.
    """
    handler = source.handler
    if handler.kind == "config":
        raise UnknownFormatError(
            f"this is a {handler.name} config: it holds an architecture, no weights",
            path=source.source)
    if source.whole:
        return _whole(source)[0]
    if into is None:
        return _as_saved(source)
    label = f"model names from the architecture of {architecture_name or 'the given model'}"
    holds = handler.can_hold_optimizer and source.contents.has_optimizer
    into = load_into(into, source)
    has_opt = holds and optimizer_of(into) is not None
    result = _from_model(source, into, label, has_opt)
    if holds and not has_opt:
        result.notes.append(f"{source.source} holds optimizer state, but the architecture of "
                            f"{architecture_name} has no optimizer to read it into")
    return result


# -- two artifacts ---------------------------------------------------------------------


def read_pair(a: PathLike, b: PathLike, *, config: PathLike | None = None
              ) -> tuple[Arrays, Arrays]:
    """Both artifacts' arrays, named the same way; each artifact is checked once.

    Whole models are read with their own architectures. A weights-only side is
    read into the architecture at ``config`` when given, else into the other
    side's when that is a whole model, else as saved. When either side is a
    deployment export, both sides' outputs on the same probe batches are read
    instead (``output I (batch of N)``), with a note of the export tolerance.

    Raises:
        DoesNotFit: a weights-only side does not fit the other side's architecture.
        NeedsArchitecture: both are weights-only, named differently, and no config.
    """
    sides = [open_artifact(a)]
    same = same_place(a, b)
    if not same:
        sides.append(open_artifact(b))
    if any(is_export(side) for side in sides):  # (compared by what they compute)
        return _outputs_pair([sides[0], sides[-1]], config)
    if same:
        # The same artifact twice: checked and read once.
        if sides[0].handler.kind == "config":
            raise _no_weights(sides[0])
        first = read(sides[0], into=architecture(open_artifact(config)) if config is not None
                     and not sides[0].whole else None,
                     architecture_name=None if config is None else os.fspath(config))
        return first, first
    for side in sides:
        if side.handler.kind == "config":
            raise _no_weights(side)
    result: list[Arrays | None] = [None, None]
    loaded: list[keras.Model | None] = [None, None]
    for i in (0, 1):
        if sides[i].whole:
            result[i], loaded[i] = _whole(sides[i])
    shared = architecture(open_artifact(config)) if config is not None and not all(
        s.whole for s in sides) else None
    for i in (0, 1):
        if result[i] is not None:
            continue
        other = loaded[1 - i]
        if shared is not None:
            result[i] = read(sides[i], into=shared, architecture_name=os.fspath(config or ""))
        elif other is not None:
            # The other side's arrays were copied out already: its model is free to reuse.
            try:
                result[i] = read(sides[i], into=other, architecture_name=str(sides[1 - i].source))
            except ArchitectureMismatchError as exc:
                raise DoesNotFit(
                    f"{sides[i].source} does not fit the architecture of "
                    f"{sides[1 - i].source}: {exc}") from exc
        else:
            result[i] = read(sides[i])
    first, second = result
    assert first is not None and second is not None
    # Two formats name alike when their handlers say so (h5 and h5-sharded weights:
    # Keras' weights-file layout, split into shards or not).
    alike = first.naming == second.naming or (
        "model" not in (first.naming, second.naming) and first.names == second.names)
    if not alike:
        raise NeedsArchitecture(
            f"{first.path} ({first.format}, {first.names}) and {second.path} "
            f"({second.format}, {second.names}) name their variables differently and neither "
            "holds an architecture to line them up")
    return first, second


def _no_weights(side: Opened) -> UnknownFormatError:
    return UnknownFormatError(
        f"this is a {side.handler.name} config: it holds an architecture, no weights to "
        "compare", path=side.source)


# -- exports: compared by what they compute ---------------------------------------------


def is_export(source: Opened) -> bool:
    """A deployment export (ONNX, LiteRT): what it holds is what it computes."""
    return isinstance(source.handler, ExportFormat)


def _runner(source: Opened, config: PathLike | None) -> tuple[Any, Any]:
    """What computes ``source``'s outputs: (a Keras model, None) or (None, a Served)."""
    if source.handler.kind == "config":
        raise _no_weights(source)
    if is_export(source):
        return None, source.load_model()
    if source.whole:
        return _load_whole(source)[0], None
    if config is None:
        raise NeedsArchitecture(
            f"{source.source} ({source.handler.name}) holds weights only: an export is "
            "compared by its outputs with a whole model's, another export's, or weights "
            "read into an architecture (--config)")
    return load_into(architecture(open_artifact(config)), source), None


def _ports_probe(served: Served, seed: int = 1234) -> list[np.ndarray]:
    """A deterministic batch of 4 rows for an export's declared inputs (unknown
    dimensions 4), as kerasave's probes fill a model's: floats in [0, 1), integers 0 or 1."""
    rng = np.random.default_rng(seed)
    batch = []
    for port in served.inputs:
        shape = tuple(4 if d is None else d for d in (port.shape or (None,)))
        if np.issubdtype(np.dtype(port.dtype), np.integer) or port.dtype == "bool":
            batch.append(rng.integers(0, 2, size=shape).astype(port.dtype))
        else:
            batch.append(rng.random(shape, dtype=np.float32).astype(port.dtype))
    return batch


def _feed(served: Served, names: list[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
    mine = [p.name for p in served.inputs]
    if sorted(mine) == sorted(names):
        arrays = [arrays[names.index(n)] for n in mine]
    got = served.serve(*arrays)
    return list(got) if isinstance(got, tuple) else [got]


def _outputs_pair(sides: list[Opened], config: PathLike | None) -> tuple[Arrays, Arrays]:
    """Both sides' outputs on the same probe batches (of 4 rows and of 1), named
    ``output I (batch of N)``: an export holds what it computes, not the model's
    variables."""
    runners = [_runner(side, config) for side in sides]
    model = next((m for m, _ in runners if m is not None), None)
    if model is not None:
        first = probe_inputs(model)
        if first is None:
            raise NeedsArchitecture(f"the model of {sides[0].source} records no input shapes "
                                    "to probe with")
        batches = [first, keras.tree.map_structure(lambda a: a[:SECOND_BATCH], first)]
    else:
        served = runners[0][1]
        first = _ports_probe(served)
        batches = [first, [a[:SECOND_BATCH] for a in first]]
    results = []
    for (loaded, served), side in zip(runners, sides):
        named: dict[str, np.ndarray] = {}
        for batch in batches:
            rows = len(keras.tree.flatten(batch)[0])
            if loaded is not None:
                from kerasave.formats._export import _graph_call

                got = [to_numpy(x) for x in keras.tree.flatten(_graph_call(loaded)(batch))]
            elif model is not None:
                got = serve_batch(model, served, batch)
            else:
                got = _feed(served, [p.name for p in runners[0][1].inputs], list(batch))
            named.update((f"output {i} (batch of {rows})", np.asarray(a))
                         for i, a in enumerate(got))
        how = (f"its outputs in {served.runtime}" if served is not None
               else "the outputs of its model")
        results.append(Arrays(str(side.source), side.handler.name, side.handler.kind,
                              "outputs", f"{how} on probe batches", named, None))
    first_arrays, second = results
    verdict = outputs_verdict(first_arrays, second)
    if verdict is not None:
        first_arrays.notes.append(
            ("within" if verdict.ok else "NOT within") + " the export tolerance: "
            + verdict.detail)
    return first_arrays, second


def outputs_verdict(left: Arrays, right: Arrays) -> Check | None:
    """Two sides' outputs judged under the export tolerance (None: nothing to pair)."""
    pairs = [(name, value, right.model[name]) for name, value in left.model.items()
             if name in right.model]
    if left.naming != "outputs" or not pairs or len(pairs) != len(right.model):
        return None
    return compare_within("outputs", pairs)
