"""Artifacts as the command line reads them: through the public API only.

Each artifact is opened once (``kerasave.open``: found, checked against its
integrity manifest, its structure and declared shapes checked); its arrays are
read from the ``Artifact`` by the names ``inspect`` lists, and a load takes the
open ``Artifact`` (``kerasave.load_model(artifact)`` and the other loads: its
local version checked again and read, a URL's without a second download).

Names: see ``kerasave.cli._names``. Without an architecture, names are those
``inspect`` lists, which line up only between artifacts of one format.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kerasave as ks
from kerasave import _registry
from kerasave import store as stores
from kerasave._errors import ArchitectureMismatchError, KerasaveError, UnknownFormatError
from kerasave._report import Check
from kerasave._runtime.lazy import keras
from kerasave.cli._names import model_names, optimizer_arrays, unique
from kerasave.compare.state import fresh_twin
from kerasave.compare.tolerance import compare_within
from kerasave.compare.verify import optimizer_of, probe_inputs, to_numpy
from kerasave.formats._export import SECOND_BATCH, Served, graph_outputs, serve_batch

__all__ = ["Arrays", "NeedsArchitecture", "DoesNotFit", "architecture", "read", "read_pair",
           "load_into", "local_copy", "opened", "same_place", "is_export", "whole",
           "outputs_verdict"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """``path`` itself, or for a URL a local copy of its artifact (every object's size
    and CRC32C checked), removed afterwards. kerasave's errors inside name the URL."""
    with stores.at(path) as store, store.local(_registry.detect) as local:
        yield str(local)


@contextlib.contextmanager
def opened(source: PathLike | ks.Artifact) -> Iterator[ks.Artifact]:
    """``kerasave.open(source)``, closed afterwards; an open ``Artifact`` as it is (its
    opener closes it)."""
    if isinstance(source, ks.Artifact):
        yield source
        return
    from kerasave._api import open_once  # (its one load: no second check)

    with open_once(source) as artifact:
        yield artifact


def same_place(a: PathLike, b: PathLike) -> bool:
    from kerasave import store as stores  # (where a path or URL points: no reading)

    return stores.at(a).same(stores.at(b))


def whole(source: ks.Artifact) -> bool:
    """A whole model: weights with the architecture they belong to."""
    return source.kind == "model" and bool(source.metadata["architecture"])


def is_export(source: ks.Artifact) -> bool:
    """A deployment export (ONNX, LiteRT), which declares its inputs and outputs: what it
    holds is what it computes."""
    return "inputs" in source.metadata


class NeedsArchitecture(KerasaveError):
    """The two artifacts name their variables differently and no architecture is known."""


class DoesNotFit(KerasaveError):
    """A weights-only artifact does not fit the architecture of the other side."""


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


def architecture(path: PathLike | ks.Artifact) -> keras.Model:
    """A model of the architecture at ``path``: a JSON/YAML config, ``.keras`` or ``.h5``.

    A config gives a fresh, uncompiled model (no optimizer); a whole model comes
    compiled, so optimizer state can be read into it too.
    """
    with opened(path) as source:
        if source.kind == "config":
            return ks.load_config(source)
        if whole(source):
            return _load_whole(source)[0]
        raise UnknownFormatError(
            f"an architecture comes from a .json/.yaml config or a .keras/.h5 model; this is "
            f"a {source.format} {source.kind} artifact", path=source.path)


def _load_whole(source: ks.Artifact) -> tuple[keras.Model, list[str]]:
    """The loaded model, and a note for every warning that says optimizer state was not read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ks.load_model(source)
    notes = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if "optimizer" in text.lower():
            notes.append(text)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model, notes


def _from_model(source: ks.Artifact, model: keras.Model, names: str,
                with_optimizer: bool) -> Arrays:
    named = model_names(model)
    arrays = {n: to_numpy(v) for n, v in named}
    optimizer = optimizer_arrays(model, named) if with_optimizer else None
    return Arrays(source.path, source.format, source.kind, "model", names, arrays,
                  optimizer or None)


def _whole(source: ks.Artifact) -> tuple[Arrays, keras.Model]:
    """A whole model's arrays by its own architecture, and the model it loaded as."""
    model, notes = _load_whole(source)
    has_opt = (source.metadata["has_optimizer"] and not notes
               and optimizer_of(model) is not None)
    result = _from_model(source, model, "model names from its own architecture", has_opt)
    result.notes += notes
    return result, model


def _as_saved(source: ks.Artifact) -> Arrays:
    """The arrays by the names the artifact gives them (``inspect``'s)."""
    optimizer_names = set(source.metadata["optimizer_variables"])
    model: dict[str, np.ndarray] = {}
    optimizer: dict[str, np.ndarray] = {}
    model_taken: set[str] = set()
    for name in source:
        value = source.array(name)
        if name in optimizer_names:
            optimizer[name] = value
        else:
            model[unique(name, model_taken)] = value
    return Arrays(source.path, source.format, source.kind, source.format,
                  source.metadata["array_names"], model, optimizer or None)


def _served_variables(model: keras.Model, served: Any, source: ks.Artifact) -> None:
    """A SavedModel export's variables (its ``variables``, in the order of the model that
    wrote it) assigned to ``model``'s by position, all or nothing."""
    saved = list(getattr(served, "variables", None) or ())
    if not saved:
        raise ArchitectureMismatchError(
            "the SavedModel lists no variables (not a Keras export?)", path=source.path)
    live = list(model.variables)
    if len(saved) != len(live):
        raise ArchitectureMismatchError(
            f"the SavedModel holds {len(saved)} variables, the model has {len(live)}",
            path=source.path)
    values = [to_numpy(v) for v in saved]
    bad = [f"{getattr(v, 'path', v.name)}: saved {a.shape} {a.dtype}, live "
           f"{tuple(v.shape)} {np.dtype(keras.backend.standardize_dtype(v.dtype))}"
           for a, v in zip(values, live)
           if (a.shape, a.dtype) != (tuple(v.shape),
                                     np.dtype(keras.backend.standardize_dtype(v.dtype)))]
    if bad:
        raise ArchitectureMismatchError("; ".join(bad[:3]), path=source.path)
    for value, variable in zip(values, live):
        variable.assign(value)


def load_into(model: keras.Model, source: ks.Artifact, served: Any = None) -> keras.Model:
    """Load a weights-only artifact (or a SavedModel's variables, by position: ``served``
    when it is loaded already) into ``model``'s architecture, all or nothing.

    Returns the model that holds the values: ``model`` itself, or, when the artifact
    holds no optimizer state and ``model`` has an optimizer, an uncompiled twin of it
    (an HDF5 weights file without optimizer state does not load into a model whose
    optimizer is built).
    """
    if not source.metadata["has_optimizer"] and optimizer_of(model) is not None:
        model = fresh_twin(model) or model
    if source.kind == "model":  # (a SavedModel export)
        _served_variables(model, served if served is not None else ks.load_model(source),
                          source)
    else:
        ks.load_weights(model, source)
    return model


def read(source: ks.Artifact, *, into: keras.Model | None = None,
         architecture_name: str | None = None) -> Arrays:
    """The arrays of ``source``.

    A whole model is read with its own architecture. A weights-only artifact is
    loaded into ``into`` (all or nothing; a SavedModel's variables by position)
    and named by that model, else read as saved.

    Raises:
        UnknownFormatError: a config, which holds no weights.
        ArchitectureMismatchError: the artifact does not fit ``into``.
    """
    if source.kind == "config":
        raise UnknownFormatError(
            f"this is a {source.format} config: it holds an architecture, no weights",
            path=source.path)
    if whole(source):
        return _whole(source)[0]
    if into is None:
        return _as_saved(source)
    label = f"model names from the architecture of {architecture_name or 'the given model'}"
    holds = source.metadata["has_optimizer"]
    into = load_into(into, source)
    has_opt = holds and optimizer_of(into) is not None
    result = _from_model(source, into, label, has_opt)
    if holds and not has_opt:
        result.notes.append(f"{source.path} holds optimizer state, but the architecture of "
                            f"{architecture_name} has no optimizer to read it into")
    return result


# -- two artifacts ---------------------------------------------------------------------


def read_pair(a: PathLike | ks.Artifact, b: PathLike | ks.Artifact, *,
              config: PathLike | None = None) -> tuple[Arrays, Arrays]:
    """Both artifacts' arrays, named the same way; each artifact is opened (checked) once.

    Whole models are read with their own architectures. A weights-only side is
    read into the architecture at ``config`` when given, else into the other
    side's when that is a whole model, else as saved. When either side is a
    deployment export, both sides' outputs on the same probe batches are read
    instead (``output I (batch of N)``), with a note of the export tolerance.

    Raises:
        DoesNotFit: a weights-only side does not fit the other side's architecture.
        NeedsArchitecture: both are weights-only, named differently, and no config.
    """
    with contextlib.ExitStack() as held:
        sides = [held.enter_context(opened(a))]
        same = same_place(_named(a), _named(b))
        if not same:
            sides.append(held.enter_context(opened(b)))
        return _pair(sides, same, config)


def _named(side: PathLike | ks.Artifact) -> PathLike:
    return side.path if isinstance(side, ks.Artifact) else side


def _pair(sides: list[ks.Artifact], same: bool, config: PathLike | None
          ) -> tuple[Arrays, Arrays]:
    if any(is_export(side) for side in sides):  # (compared by what they compute)
        return _outputs_pair([sides[0], sides[-1]], config)
    if same:
        # The same artifact twice: checked and read once.
        if sides[0].kind == "config":
            raise _no_weights(sides[0])
        first = read(sides[0], into=architecture(config) if config is not None
                     and not whole(sides[0]) else None,
                     architecture_name=None if config is None else os.fspath(config))
        return first, first
    for side in sides:
        if side.kind == "config":
            raise _no_weights(side)
    result: list[Arrays | None] = [None, None]
    loaded: list[keras.Model | None] = [None, None]
    for i in (0, 1):
        if whole(sides[i]):
            result[i], loaded[i] = _whole(sides[i])
    shared = architecture(config) if config is not None and not all(
        whole(s) for s in sides) else None
    for i in (0, 1):
        if result[i] is not None:
            continue
        other = loaded[1 - i]
        if shared is not None:
            result[i] = read(sides[i], into=shared, architecture_name=os.fspath(config or ""))
        elif other is not None:
            # The other side's arrays were copied out already: its model is free to reuse.
            try:
                result[i] = read(sides[i], into=other, architecture_name=sides[1 - i].path)
            except ArchitectureMismatchError as exc:
                raise DoesNotFit(
                    f"{sides[i].path} does not fit the architecture of "
                    f"{sides[1 - i].path}: {exc}") from exc
        else:
            result[i] = read(sides[i])
    one, two = result
    assert one is not None and two is not None
    first, second = one, two
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


def _no_weights(side: ks.Artifact) -> UnknownFormatError:
    return UnknownFormatError(
        f"this is a {side.format} config: it holds an architecture, no weights to "
        "compare", path=side.path)


# -- exports: compared by what they compute ---------------------------------------------


def _runner(source: ks.Artifact, config: PathLike | None) -> tuple[Any, Any]:
    """What computes ``source``'s outputs: (a Keras model, None) or (None, a Served)."""
    if source.kind == "config":
        raise _no_weights(source)
    if is_export(source):
        return None, ks.load_model(source)
    if whole(source):
        return _load_whole(source)[0], None
    if config is None:
        raise NeedsArchitecture(
            f"{source.path} ({source.format}) holds weights only: an export is "
            "compared by its outputs with a whole model's, another export's, or weights "
            "read into an architecture (--config)")
    return load_into(architecture(config), source), None


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


def _outputs_pair(sides: list[ks.Artifact], config: PathLike | None
                  ) -> tuple[Arrays, Arrays]:
    """Both sides' outputs on the same probe batches (of 4 rows and of 1), named
    ``output I (batch of N)``: an export holds what it computes, not the model's
    variables."""
    runners = [_runner(side, config) for side in sides]
    model = next((m for m, _ in runners if m is not None), None)
    if model is not None:
        first = probe_inputs(model)
        if first is None:
            raise NeedsArchitecture(f"the model of {sides[0].path} records no input shapes "
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
                got = graph_outputs(loaded, batch)
            elif model is not None:
                got = serve_batch(model, served, batch)
            else:
                got = _feed(served, [p.name for p in runners[0][1].inputs], list(batch))
            named.update((f"output {i} (batch of {rows})", np.asarray(a))
                         for i, a in enumerate(got))
        how = (f"its outputs in {served.runtime}" if served is not None
               else "the outputs of its model")
        results.append(Arrays(side.path, side.format, side.kind,
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
