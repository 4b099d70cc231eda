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

import numpy as np

from kerasave import _facade
from kerasave import store as stores
from kerasave._errors import ArchitectureMismatchError, KerasaveError, UnknownFormatError
from kerasave._facade import Opened, open_artifact
from kerasave._lazy import keras
from kerasave._state import fresh_twin
from kerasave._verify import optimizer_of, to_numpy
from kerasave.cli._names import model_names, optimizer_arrays, unique
from kerasave.formats.savedmodel import SavedModelHandler

__all__ = ["Opened", "open_artifact", "Arrays", "NeedsArchitecture", "DoesNotFit",
           "architecture", "read", "read_pair", "load_into", "local_copy", "same_place"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """``path`` itself, or for a URL a local copy of its artifact (every object's size
    and CRC32C checked), removed afterwards. kerasave's errors inside name the URL."""
    with stores.at(path) as store, store.local() as local:
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
    side's when that is a whole model, else as saved.

    Raises:
        DoesNotFit: a weights-only side does not fit the other side's architecture.
        NeedsArchitecture: both are weights-only, named differently, and no config.
    """
    sides = [open_artifact(a)]
    if same_place(a, b):
        # The same artifact twice: checked and read once.
        if sides[0].handler.kind == "config":
            raise _no_weights(sides[0])
        first = read(sides[0], into=architecture(open_artifact(config)) if config is not None
                     and not sides[0].whole else None,
                     architecture_name=None if config is None else os.fspath(config))
        return first, first
    sides.append(open_artifact(b))
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
    if first.naming != second.naming:
        raise NeedsArchitecture(
            f"{first.path} ({first.format}, {first.names}) and {second.path} "
            f"({second.format}, {second.names}) name their variables differently and neither "
            "holds an architecture to line them up")
    return first, second


def _no_weights(side: Opened) -> UnknownFormatError:
    return UnknownFormatError(
        f"this is a {side.handler.name} config: it holds an architecture, no weights to "
        "compare", path=side.source)
