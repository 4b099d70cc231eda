"""Model state: every variable, snapshots for all-or-nothing, and twins.

A twin is a fresh model of the same architecture, for a check or a test to load
into or record against. This module is the one place twins are built:

- from a live model's config: ``fresh_twin`` (initialized as usual),
  ``empty_twin`` (its variables have no memory and run no initializer until
  loaded into) and ``compiled_twin`` (compiled like the model, for
  ``kerasave.testing``);
- lent to one check at a time, built once per architecture and kept for the
  next save's check: ``model_twin`` (a live model's), ``keras_twin`` (a
  ``.keras`` archive's) and ``lent_twin`` (any other build a format describes,
  such as a legacy ``.h5`` file's). The cache behind them
  (``kerasave._fastpaths.twins``) is an optimisation: it never changes a result.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from kerasave._fastpaths import FastPathWarning, Unsupported, attempt, patches, savinglib
from kerasave._fastpaths.patches import Recorded
from kerasave._fastpaths.twins import TWINS, Read
from kerasave._runtime.lazy import keras
from kerasave.compare.verify import optimizer_of, to_numpy

__all__ = ["all_variables", "Snapshot", "NoTwin", "compiled_twin", "empty_twin",
           "fresh_twin", "keras_twin", "keras_warnings", "lent_twin", "model_twin",
           "rnn_states", "touchable", "transfer_values", "untouched"]


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


def rnn_states(model: keras.Model) -> list[Any]:
    """The state variables of the model's stateful RNN layers: not among its
    ``variables``, so no Keras format holds them, and every call changes them."""
    from kerasave.compare.probes import sublayers

    found = []
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.RNN) and getattr(layer, "stateful", False) \
                and getattr(layer, "states", None) is not None:
            found += [v for v in keras.tree.flatten(layer.states) if hasattr(v, "assign")]
    return found


def touchable(model: keras.Model) -> list[Any]:
    """Every piece of a model's state that running it (as verification does) may
    change: stateful RNN states, random-generator states (a recurrent dropout
    draws its masks even in inference), and the metrics' variables. Weights,
    optimizer state and compile settings are not: nothing verification runs
    assigns them."""
    weights = {id(v) for v in model.weights}
    found = [v for v in model.variables if id(v) not in weights]
    found += rnn_states(model)
    try:
        found += list(model.metrics_variables)
    except Exception:  # (a model never compiled or built may have none to list)
        pass
    unique: dict[int, Any] = {}
    for v in found:
        unique.setdefault(id(v), v)
    return list(unique.values())


@contextlib.contextmanager
def untouched(model: Any) -> Iterator[None]:
    """Whatever the block does, the model's ``touchable`` state is as it was after it:
    a save or a ``verify`` never changes the caller's model."""
    if not isinstance(model, keras.Model):
        yield
        return
    kept = [(v, to_numpy(v)) for v in touchable(model)]
    try:
        yield
    finally:
        for variable, value in kept:
            try:
                if to_numpy(variable).tobytes() != value.tobytes():
                    variable.assign(value)
            except Exception:  # (a variable the block released: nothing to put back)
                pass


def transfer_values(model: keras.Model, twin: keras.Model) -> None:
    """Give ``twin`` (rebuilt from ``model``'s config) ``model``'s values the way a
    user of a config-only file gives them: through a Keras weights file of the
    model, which ``load_weights`` reads layer by layer (each layer's
    ``load_own_variables`` may derive state from what it reads: an adapted
    ``Normalization``'s mean, a calibrated GPTQ layer's flag)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "values.weights.h5"
        attempt("keras_writer", lambda: savinglib.write_weights(model, where),
                lambda: model.save_weights(str(where)))
        with keras_warnings():
            twin.load_weights(str(where))


# -- twins of a live model ----------------------------------------------------------------

def _layouts(variables: Iterable[Any]) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(v.shape), str(v.dtype)) for v in variables]


def _from_config(model: keras.Model, *, empty: bool) -> tuple[keras.Model | None, list[Any]]:
    """A new model from ``model``'s config, built as it is (``empty``: deferred), with
    the same variable shapes and dtypes; None when it has no config that does that."""
    def build() -> keras.Model:
        twin = type(model).from_config(config)
        if not twin.built:  # (built here: a config may build it differently)
            twin.build_from_config(model.get_build_config())
        return twin

    try:
        config = model.get_config()
        twin, created = patches.build_deferred(build) if empty else (build(), [])
    except Exception:
        return None, []
    if _layouts(twin.variables) != _layouts(model.variables):
        return None, []
    return twin, created


def fresh_twin(model: keras.Model) -> keras.Model | None:
    """A new, built model of the same architecture, or None when it has no usable config."""
    twin, _ = _from_config(model, empty=False)
    return twin


def empty_twin(model: keras.Model) -> tuple[keras.Model | None, list[Any]]:
    """``fresh_twin`` whose variables have no memory and ran no initializer yet.

    For loading into right away: afterwards, pass the returned list to
    ``kerasave._fastpaths.patches.initialize_rest``.
    """
    return _from_config(model, empty=True)


def compiled_twin(model: keras.Model) -> tuple[keras.Model | None, str]:
    """A fresh model of the same architecture to load into, compiled like ``model``
    with its optimizer not built yet, and how it was made; ``(None, "")`` if none.

    Made from the model's config, or, for a subclassed model without one, by
    calling its class with no arguments (that twin is not built either, so
    ``load_weights`` builds it).
    """
    twin, _ = _from_config(model, empty=False)
    try:
        if twin is not None:
            return _compiled_like(twin, model), "a twin made from the model's config"
    except Exception:  # not compiled like the model: try the next way
        pass
    try:  # a subclassed model whose constructor needs nothing: left unbuilt
        twin = type(model)()
        if not twin.built and not twin.variables:
            return (_compiled_like(twin, model),
                    f"a fresh, unbuilt {type(model).__name__}() that load_weights built")
    except Exception:
        pass
    return None, ""


def _compiled_like(twin: keras.Model, model: keras.Model) -> keras.Model:
    """The twin compiled like the model, its optimizer left unbuilt for the load to build.

    (``compile_from_config`` would build the optimizer of a built twin even when the
    model's own optimizer was never built.)
    """
    config = model.get_compile_config() if optimizer_of(model) is not None else None
    if config:
        twin.compile(**keras.saving.deserialize_keras_object(config))
    return twin


# -- twins lent for a check -----------------------------------------------------------------

class NoTwin(Unsupported):
    """``model_twin``: the model has no config a twin can be built from (a check
    that would record against a twin uses its public twin, a real load)."""


def lent_twin(key: Any, build: Callable[[], keras.Model],
              read: Read) -> AbstractContextManager[tuple[keras.Model, Recorded]]:
    """``(twin, recorded)`` while the block runs: the model ``build`` makes (run with
    initializers deferred), or one kept for ``key`` by an earlier check, and what
    ``read(twin, replay)`` records against its variables (pass ``replay`` on to
    ``kerasave._fastpaths.savinglib``'s readers). Variables nothing was recorded
    for are initialized as a load initializes them.
    """
    return TWINS.lend(key, build, read)


def _twin_key(model: keras.Model) -> Any:
    """What identifies ``model``'s architecture among kept twins, or None."""
    try:
        return ("model", type(model), json.dumps(model.get_config(), sort_keys=True),
                json.dumps(model.get_build_config(), sort_keys=True, default=list))
    except Exception:  # no config (subclassed), or one JSON cannot hold
        return None


def model_twin(model: keras.Model,
               read: Read) -> AbstractContextManager[tuple[keras.Model, Recorded]]:
    """``lent_twin`` of a twin of ``model`` (``fresh_twin``, kept per architecture).

    Raises:
        NoTwin: ``model`` has no config a twin can be built from.
    """
    key = _twin_key(model)
    if key is None:
        raise NoTwin()

    def build() -> keras.Model:
        twin = fresh_twin(model)
        if twin is None:
            raise NoTwin()
        return twin

    return lent_twin(key, build, read)


def keras_twin(path: Path, config: dict[str, Any], *,
               mapped: bool = False) -> AbstractContextManager[tuple[keras.Model, Recorded]]:
    """``lent_twin`` of the model a ``.keras`` archive loads as, holding no copies.

    The twin is built and compiled from the archive's config (``config``) and
    Keras' own traversal runs over it, but every value Keras would assign is
    recorded instead: compare those, and run the twin in a
    ``keras.StatelessScope`` that maps its variables to them. ``mapped``: the
    archive is kerasave's own temporary, written by this process just now, and
    the values are read-only views of its pages.

    Raises:
        Unsupported: only Keras' own loader can read the archive.
    """
    return lent_twin(*savinglib.keras_twin_recipe(path, config, mapped=mapped))


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
