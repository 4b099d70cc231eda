"""Model state helpers: every variable, snapshots for all-or-nothing, fresh twins."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from kerasave._internals import FastPathWarning
from kerasave._verify import optimizer_of, to_numpy

__all__ = ["all_variables", "Snapshot", "empty_twin", "fresh_twin", "keras_warnings"]


def all_variables(model: keras.Model) -> list[Any]:
    """The model's variables, then its optimizer's (when it has one)."""
    variables = list(model.variables)
    optimizer = optimizer_of(model)
    if optimizer is not None:
        variables += list(optimizer.variables)
    return variables


class Snapshot:
    """Copies of every variable's value, to put back when a load fails half way."""

    def __init__(self, model: keras.Model) -> None:
        self._values = [(v, to_numpy(v)) for v in all_variables(model)]

    def restore(self) -> None:
        for variable, value in self._values:
            variable.assign(value)

    def changed(self) -> list[tuple[Any, np.ndarray]]:
        return [(v, old) for v, old in self._values if to_numpy(v).tobytes() != old.tobytes()]


def fresh_twin(model: keras.Model) -> keras.Model | None:
    """A new, built model of the same architecture, or None when it has no usable config."""
    twin, _ = _twin(model, empty=False)
    return twin


def empty_twin(model: keras.Model) -> tuple[keras.Model | None, list[Any]]:
    """``fresh_twin`` whose variables have no memory and ran no initializer yet.

    For loading into right away: afterwards, pass the returned list to
    ``kerasave._internals.fastkeras.initialize_rest``.
    """
    return _twin(model, empty=True)


def _twin(model: keras.Model, *, empty: bool) -> tuple[keras.Model | None, list[Any]]:
    from kerasave._internals import fastkeras as _fastkeras

    try:
        config = model.get_config()
        scope = _fastkeras.uninitialized() if empty else contextlib.nullcontext([])
        with scope as created:
            twin = type(model).from_config(config)
            if not twin.built:
                twin.build_from_config(model.get_build_config())
    except Exception:
        return None, []
    if [tuple(v.shape) for v in twin.variables] != [tuple(v.shape) for v in model.variables]:
        return None, []
    return twin, created


@contextlib.contextmanager
def keras_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings Keras emits while loading, instead of printing them.

    kerasave's own ``FastPathWarning`` (a fast path is off) is not Keras': it is
    said again, as it was, once the block ends.
    """
    ours: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield caught
            finally:
                ours = [w for w in caught if issubclass(w.category, FastPathWarning)]
                caught[:] = [w for w in caught if w not in ours]
    finally:
        for w in ours:
            warnings.warn(w.message, w.category, stacklevel=3)
