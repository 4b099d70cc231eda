"""The compile settings Keras' legacy HDF5 writer strips (fast path ``compile_config``).

``model.compile`` records its arguments (``get_compile_config`` serializes the
record); Keras' legacy HDF5 writer (3.12 through 3.15) pops ``optimizer`` from
the caller's record, so a ``.keras`` file saved afterwards (by Keras itself
too) records no optimizer, and kerasave's own round trip of the next save
would fail for a change the user never made. kerasave gives it back, both
around its own legacy save (``kept_compile_settings``) and before any
whole-model save of a model Keras' writer stripped earlier
(``mend_compile_settings``):

- fast: the record itself (the private ``_compile_config``), kept and put back
  as it was, the same objects;
- public twin: the record read with ``model.get_compile_config()`` and given
  back by ``model.compile`` with what it holds, as
  ``model.compile_from_config`` does, but with the model's own optimizer (the
  same object and state: ``compile_from_config`` would make a new one from its
  config). The compile settings come back equal, the optimizer is the one the
  model had, its state untouched; as after any ``compile``, the compiled
  metrics start afresh and the next ``fit`` traces its function again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from kerasave._fastpaths import Unsupported, attempt
from kerasave._runtime.lazy import keras

__all__ = ["kept_compile_settings", "mend_compile_settings", "given_optimizer"]

# What Keras' own compile() records, less the optimizer the legacy writer pops.
_KEYS_LESS_OPTIMIZER = frozenset({"loss", "loss_weights", "metrics", "weighted_metrics",
                                  "run_eagerly", "steps_per_execution", "jit_compile"})


def _record(model: Any) -> dict[str, Any]:
    """The dict ``compile()`` recorded for ``model`` (changing it changes the model's
    record); Unsupported when this Keras keeps it otherwise."""
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if not isinstance(config, dict):
        raise Unsupported("no compile record of Keras' own")
    return config


def _compiled_by_keras(model: Any) -> bool:
    """Whether ``model`` was compiled by Keras' own ``compile`` and reports its record
    by Keras' own ``get_compile_config`` (a model of the user's that keeps its own
    compile config is left as it is)."""
    return (isinstance(model, keras.Model) and getattr(model, "compiled", False)
            and getattr(model, "optimizer", None) is not None
            and getattr(type(model), "compile", None) is keras.Model.compile
            and getattr(type(model), "get_compile_config", None)
            is keras.Model.get_compile_config)


def given_optimizer(model: Any) -> Any:
    """The optimizer ``compile()`` was given: under ``"mixed_float16"`` it wraps it in
    a ``LossScaleOptimizer``, which the model's ``optimizer`` then is."""
    optimizer = model.optimizer
    inner = getattr(optimizer, "inner_optimizer", None)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and inner is not None:
        return inner
    return optimizer


def _recompile(model: Any, config: dict[str, Any], given: Any) -> None:
    """``model.compile`` with ``config`` (``get_compile_config()``'s) and the optimizer
    object ``given``: the record is ``config`` again, and the model keeps its own
    optimizer object (and so its state)."""
    live = model.optimizer
    rest = keras.saving.deserialize_keras_object(
        {k: v for k, v in config.items() if k != "optimizer"})
    model.compile(optimizer=given, **rest)
    if model.optimizer is not live:  # (compile() wrapped ``given`` again: keep the wrapper)
        model.optimizer = live


def _keep_fast(model: Any) -> Callable[[], None]:
    """The record kept as it is now; returns what puts it back (the same objects)."""
    record = _record(model)
    kept = dict(record)

    def restore() -> None:
        record.clear()
        record.update(kept)

    return restore


def _keep_public(model: Any) -> Callable[[], None]:
    """``get_compile_config()`` as it is now; returns what compiles the model again
    with it if it changed (and so gives back what was taken)."""
    if not _compiled_by_keras(model):
        return lambda: None
    before = model.get_compile_config()
    given = _given_by(model, before)

    def restore() -> None:
        if model.get_compile_config() != before:
            _recompile(model, before, given)

    return restore


def _given_by(model: Any, config: dict[str, Any]) -> Any:
    """The optimizer object the settings ``config`` name: the one ``compile()`` was
    given (the model's own optimizer, or the one it wraps)."""
    recorded = config.get("optimizer")
    if isinstance(recorded, dict) and recorded.get("class_name") == "LossScaleOptimizer":
        return model.optimizer
    return given_optimizer(model)


@contextlib.contextmanager
def kept_compile_settings(model: Any) -> Iterator[None]:
    """The block (Keras' legacy HDF5 writer) leaves ``model``'s compile settings as
    they were before it."""
    restore = attempt("compile_config", lambda: _keep_fast(model),
                      lambda: _keep_public(model))
    try:
        yield
    finally:
        restore()


def _mend_fast(model: Any) -> None:
    record = _record(model)
    if set(record) == _KEYS_LESS_OPTIMIZER:
        record["optimizer"] = given_optimizer(model)


def _mend_public(model: Any) -> None:
    config = model.get_compile_config()
    if set(config) == _KEYS_LESS_OPTIMIZER:
        _recompile(model, config, given_optimizer(model))


def mend_compile_settings(model: Any) -> None:
    """Put back the optimizer Keras' legacy HDF5 writer popped from ``model``'s compile
    settings (``model.save("x.h5")`` does it to the caller's model). Without it every
    later whole-model save records no optimizer: a ``.keras`` file would load with a
    default RMSprop, and kerasave's round trip would fail for a change the user
    never made.

    Only settings exactly as Keras' own ``compile`` records them, less the
    optimizer, are mended: a model keeping its own compile config is left as it is.
    """
    if _compiled_by_keras(model):
        attempt("compile_config", lambda: _mend_fast(model), lambda: _mend_public(model))
