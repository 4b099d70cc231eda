"""Keras' legacy code (``keras.src.legacy.saving``): Keras 2 configs and HDF5 whole models.

Keras 3 keeps its Keras 2 readers and its HDF5 whole-model writer in private
modules, and reaches them publicly only through ``model.save("x.h5")``,
``model.load_weights("x.h5")`` and ``load_model``. kerasave calls them directly
(fast paths ``keras2_config`` and ``legacy_h5_io``) and, when a fast path is
off, goes the public way for the same result:

- a Keras 2 config: every class named without a module gets the module Keras 3
  serializes it with (``keras.layers``, ``keras.initializers``, ...), and
  ``keras.saving.deserialize_keras_object`` builds it;
- a legacy HDF5 model: ``model.save`` / ``model.load_weights`` of a name ending
  in ``.h5`` (a symbolic link when the file's own name does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py

from kerasave._fastpaths import attempt
from kerasave._fastpaths.dlpack import ALIGN
from kerasave._fastpaths.h5read import Source
from kerasave._fastpaths.patches import legacy_reads, legacy_writes
from kerasave._runtime.lazy import keras

__all__ = ["keras2_model", "save_h5_model", "load_h5_weights", "keras2_modules", "named",
           "training_optimizer"]

# Where Keras 3 finds each kind of class a Keras 2 config names without a module.
_MODULES = (("keras.layers", "layers"), ("keras.initializers", "initializers"),
            ("keras.regularizers", "regularizers"), ("keras.constraints", "constraints"),
            ("keras", None))


def keras2_modules(node: Any) -> Any:
    """A Keras 2 config (already upgraded by ``kerasave.formats.configtext.upgrade_keras2``) in
    Keras 3's form: each ``{"class_name", "config"}`` gets its ``module``."""
    if isinstance(node, dict):
        if "class_name" in node and "config" in node and "module" not in node:
            name = node["class_name"]
            if name in ("Functional", "Model"):  # Keras 3 serializes Functional as a Model
                node["class_name"], name = "Model", "Model"
            for module, attribute in _MODULES:
                owner = getattr(keras, attribute) if attribute else keras
                if hasattr(owner, name):
                    node["module"] = module
                    break
            node.setdefault("registered_name", None)
        for value in node.values():
            keras2_modules(value)
    elif isinstance(node, list):
        for value in node:
            keras2_modules(value)
    return node


def keras2_model(config: dict[str, Any], custom_objects: Mapping[str, Any] | None, *,
                 safe_mode: bool = True) -> Any:
    """A Keras 3 object from an upgraded Keras 2 config (``config`` is not changed)."""
    objects = dict(custom_objects or {})

    def fast() -> Any:
        from keras.src.legacy.saving import saving_utils
        from keras.src.saving.serialization_lib import SafeModeScope

        with SafeModeScope(safe_mode):
            return saving_utils.model_from_config(json.loads(json.dumps(config)),
                                                  custom_objects=objects)

    def public() -> Any:
        return keras.saving.deserialize_keras_object(
            keras2_modules(json.loads(json.dumps(config))), custom_objects=objects,
            safe_mode=safe_mode)

    return attempt("keras2_config", fast, public)


@contextlib.contextmanager
def named(path: Path, suffixes: tuple[str, ...] = (".h5", ".hdf5")) -> Iterator[str]:
    """``path`` under a name ending in one of ``suffixes``, which Keras' public calls
    choose their reader by (a symbolic link when the file's own name does not)."""
    if path.name.endswith(suffixes):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="kerasave-") as tmp:
        link = Path(tmp) / f"linked{suffixes[0]}"
        os.symlink(path.resolve(), link)
        yield str(link)


def save_h5_model(model: keras.Model, path: Path) -> None:
    """Keras' legacy HDF5 whole model (``model.save("x.h5")``) at ``path``."""

    def fast() -> None:
        from keras.src.legacy.saving import legacy_h5_format

        # Datasets aligned as kerasave's other writers align them (``mmap=True`` loads).
        with legacy_writes(), h5py.File(path, "w", alignment_threshold=ALIGN,
                                        alignment_interval=ALIGN) as f:
            legacy_h5_format.save_model_to_hdf5(model, f)

    def public() -> None:
        path.unlink(missing_ok=True)
        with named(path) as h5:
            model.save(h5)

    attempt("legacy_h5_io", fast, public)


def load_h5_weights(model: keras.Model, path: Path, group: Any,
                    source: Source | None = None) -> None:
    """Keras' legacy loader: the weights of ``group`` (``model_weights`` of a whole
    model, or the root of a Keras 2 weights file) into ``model``, read through
    ``source`` when given. Keras' own rules decide what goes where."""
    from kerasave._errors import KerasaveError

    def fast() -> None:
        from keras.src.legacy.saving import legacy_h5_format

        with legacy_reads(source) if source is not None else contextlib.nullcontext():
            legacy_h5_format.load_weights_from_hdf5_group(group, model)

    def public() -> None:
        with named(path) as h5:
            model.load_weights(h5)

    attempt("legacy_h5_io", fast, public, passthrough=(KerasaveError, ValueError))


def training_optimizer(training: dict[str, Any], custom_objects: Mapping[str, Any] | None) -> Any:
    """The optimizer a legacy HDF5 file's ``training_config`` records, as Keras' legacy
    loader builds it (Keras 2's ``Custom>Adam`` and its Keras 2-only arguments too)."""
    import inspect

    objects = dict(custom_objects or {})
    config = training["optimizer_config"]

    def fast() -> Any:
        from keras.src.legacy.saving import saving_utils

        bare = dict(training, loss=None, metrics=None, weighted_metrics=None)
        return saving_utils.compile_args_from_training_config(bare, objects)["optimizer"]

    def public() -> Any:
        with keras.saving.custom_object_scope(objects):
            name = str(config.get("class_name", ""))
            own = getattr(keras.optimizers, name.removeprefix("Custom>"), None)
            if not (isinstance(own, type) and issubclass(own, keras.optimizers.Optimizer)):
                return keras.optimizers.deserialize(dict(config))
            # A Keras 2 optimizer config: the arguments Keras 3's class takes.
            taken = set(inspect.signature(own.__init__).parameters)  # type: ignore[misc]  # (the class's own)
            arguments = {k: v for k, v in dict(config.get("config") or {}).items()
                         if k in taken}
            rate = arguments.get("learning_rate")
            if isinstance(rate, dict):
                arguments["learning_rate"] = keras.optimizers.schedules.deserialize(rate)
            return own(**arguments)

    if str(config.get("class_name", "")).startswith("Custom>"):
        # Keras 2's TF 2.11+ optimizers: Keras' legacy loader finds no class of that
        # name and falls back to the built-in by name, with default arguments (an
        # SGD(momentum=0.9) comes back with momentum 0): only the public path keeps them.
        return public()
    return attempt("legacy_h5_io", fast, public)
