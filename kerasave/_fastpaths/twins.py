"""The twin cache: models rebuilt for verification, kept for the next save's check.

Building a twin (a fresh model of the file's architecture) is most of a small
save's verification; ``Twins`` keeps one per architecture, lends it to one
check at a time, and ``_Replay`` reduces Keras' load traversal of a kept twin
to the reads it made. Callers go through ``kerasave.compare.state`` (``lent_twin``),
which owns how twins are built; this is the optimisation behind it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import h5py

from kerasave._fastpaths import attempt
from kerasave._fastpaths.h5read import Source
from kerasave._fastpaths.patches import Recorded, build_deferred, initialize_rest
from kerasave._runtime.lazy import keras
from kerasave.compare.verify import fixed_config

__all__ = ["TWINS", "Read", "Twins"]

# How a lent twin is filled: ``read(twin, replay)`` records the file's values
# against the twin's variables; ``replay`` (None unless the twin is kept) is
# handed to ``kerasave._fastpaths.savinglib``'s traversal, which replays or learns.
Read = Callable[["keras.Model", "_Replay | None"], Recorded]


class _Twin:
    """A model built for verification, and which variables verification records."""

    def __init__(self, model: keras.Model, created: list[Any]) -> None:
        self.model, self._created = model, created
        self._expected: set[int] | None = None
        # (the public twin keeps nothing: every check builds its own)
        self.kept = attempt("twin_cache", lambda: _keras_only(model), lambda: False)
        self._replay = _Replay(model) if self.kept else None
        if self.kept:
            fixed_config(model)  # its config is serialized once, for all the saves it checks

    def fill(self, read: Read) -> tuple[keras.Model, Recorded]:
        values = read(self.model, self._replay)
        if self._expected is None:
            initialize_rest([v for v in self._created if id(v) not in values])
            self._created = []
            self._expected = set(values)
        elif set(values) != self._expected:
            raise _Stale()
        if self._replay is not None:
            self._replay.learn(values)
        return self.model, values


class _Replay:
    """Keras' load traversal of a kept twin, reduced to the reads it made.

    Which dataset Keras' traversal gives to which variable depends only on the
    model (a kept twin does not change) and on the names in the file: groups
    and datasets, as ``H5IOStore`` looks them up. So once a traversal over a
    file has read every value from a dataset, a later file whose HDF5 holds
    exactly the same names is read the same way: each variable ``assign``s its
    dataset again (recorded, as in the traversal), without Keras' Python walk
    over the layers (~10 ms for a small model). Anything else, or a file with
    any other name, runs the traversal again.
    """

    def __init__(self, model: keras.Model) -> None:
        self._model = model
        self._names: list[bytes] | None = None  # every link in the file
        self._plan: list[tuple[Any, str]] | None = None  # (variable, dataset)
        self._pending: tuple[list[bytes], Source] | None = None  # the traversal running

    def run(self, model: keras.Model, source: Source) -> bool:
        """Replay the reads into ``model``; False when the traversal must run (and is
        then watched, to learn from)."""
        self._pending = None
        if model is not self._model or not source.mapped:
            return False  # (only verification's mapped reads of a save's temporary)
        names: list[bytes] = []
        with h5py.File(source.window(), "r") as f:
            f.id.links.visit(names.append)
            arrays = self._replayed(f, source) if names == self._names else None
        if arrays is not None:
            for variable, array in arrays:
                variable.assign(array)  # recorded, as the traversal's assign is
            return True
        self._plan = None
        source.reads = []
        self._pending = (names, source)
        return False

    def _replayed(self, f: h5py.File, source: Source) -> list[tuple[Any, Any]] | None:
        """Each planned variable with its dataset's values, or None if one has changed."""
        arrays = []
        for variable, name in self._plan or ():
            dataset = f.get(name)
            if not isinstance(dataset, h5py.Dataset) or len(dataset.attrs):
                return None
            array = source.array(dataset)
            if array is None:
                return None
            arrays.append((variable, array))
        return arrays if self._plan else None

    def learn(self, values: Recorded) -> None:
        """After a traversal: what each recorded value was read from. Only a traversal
        whose every read became one recorded value is replayed: a layer may do more
        with what it reads (Keras' ``IndexLookup`` derives state from its IDF
        weights, assigned to a variable of its own), and a replay would skip that."""
        if self._pending is None:
            return
        names, source = self._pending
        self._pending = None
        reads = source.reads or []
        source.reads = None
        if any(array is None for array, _ in reads):
            return  # something was read by Keras' own code
        read_as = {id(array): name for array, name in reads}  # (the arrays are held)
        plan = [(variable, read_as.get(id(array))) for variable, array in values.values()]
        if (plan and all(name is not None for _, name in plan)
                and sorted(name for _, name in plan) == sorted(name for _, name in reads)):  # type: ignore[type-var]  # (every name checked)
            self._names, self._plan = names, plan  # type: ignore[assignment]


class _Stale(Exception):
    """A kept twin was given other variables than when it was built."""


class Twins:
    """Twins built for verification, kept for the next check of the same architecture.

    Saving the same model again (each epoch, say) would otherwise rebuild the
    same model from the same config every time: about 30 ms for the tutorial's
    model, most of a small save. A twin is kept only when every layer and the
    optimizer are Keras' own classes, so no redefined custom class can hide
    behind an unchanged config. It is lent to one verification at a time and
    holds no weights: its variables were never assigned.
    """

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._kept: dict[Any, _Twin] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lend(self, key: Any, build: Callable[[], keras.Model],
             read: Read) -> Iterator[tuple[keras.Model, Recorded]]:
        """``(twin, recorded)``: ``build`` (run with initializers deferred) or a kept
        twin for ``key``, and what ``read`` records for it."""
        with self._lock:
            twin = self._kept.pop(key, None)
        result = None
        if twin is not None:
            try:
                result = twin.fill(read)
            except _Stale:
                twin = None
        if twin is None:
            twin = _Twin(*build_deferred(build))
            result = twin.fill(read)
        yield result  # type: ignore[misc]  # (fill returned)
        if twin.kept:  # (not after a failure: the exception skips this)
            with self._lock:
                self._kept[key] = twin
                while len(self._kept) > self._size:
                    self._kept.pop(next(iter(self._kept)))

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


def _keras_only(model: keras.Model) -> bool:
    """Whether every layer, the optimizer and everything their configs name (an
    activation, an initializer...) is Keras' own, so nothing can be redefined."""
    if not hasattr(model, "_flatten_layers"):
        return False  # (cannot tell: keep no twin)
    objects = list(model._flatten_layers(include_self=True))
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        objects.append(optimizer)
    if not all(type(o).__module__.startswith("keras.") for o in objects):
        return False
    try:
        config = model.get_config()
    except Exception:
        return False

    def own(node: Any) -> bool:
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and not module.startswith("keras"):
                return False  # a registered function or class of the user's
            return all(own(v) for v in node.values())
        if isinstance(node, (list, tuple)):
            return all(own(v) for v in node)
        return True

    return own(config)


TWINS = Twins()
