"""The legacy HDF5 whole model (``.h5``/``.hdf5``): config, variables, optimizer state
and compile settings. The reader is kerasave's own on the compile side: Keras 3
cannot compile files whose loss is a string such as ``"mse"``, and it silently
drops the optimizer state of the files it does compile."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._errors import (
    ArchitectureMismatchError,
    CorruptArtifactError,
    KerasaveError,
    NotSerializableError,
    foreign_errors,
)
from kerasave._fastpaths import attempt
from kerasave._fastpaths.compiling import kept_compile_settings
from kerasave._fastpaths.h5read import Source
from kerasave._fastpaths.legacy import load_h5_weights, save_h5_model, training_optimizer
from kerasave._fastpaths.patches import Recorded, build_deferred, initialize_rest, recorded
from kerasave._report import Check
from kerasave._runtime.lazy import keras
from kerasave._safety import declared_bytes
from kerasave.compare.lost import refuse_assets
from kerasave.compare.state import keras_warnings, lent_twin
from kerasave.compare.verify import view
from kerasave.formats._base import (
    Contents,
    ReadArray,
    passed,
    versions_now,
)
from kerasave.formats._whole import (
    WholeModelFormat,
    loaded_check,
    map_load_error,
    twin_check,
)
from kerasave.formats.configtext import model_from_config
from kerasave.formats.h5weights import (
    VERSIONS_ATTR,
    _datasets,
    _layout,
    _layout_problem,
    h5_arrays,
    h5_reading,
    h5_variables,
    is_hdf5,
    open_h5,
    optimizer_names,
)
from kerasave.keras2 import checkpoint as keras2

__all__ = ["H5ModelHandler", "compile_from_training"]


_WRAPPED_ATTR = "kerasave_optimizer_wrapped_by_compile"


def _read(source: Source, dataset: Any) -> np.ndarray:
    """A dataset's values: through ``source`` when it can, else h5py's copy."""
    fast = source.array(dataset) if isinstance(dataset, h5py.Dataset) else None
    return fast if fast is not None else np.asarray(dataset)


def _compile_value(cfg: Any, kind: str) -> Any:
    """A loss/metric config from a legacy file, as something compile() accepts."""
    if cfg is None or isinstance(cfg, str):
        return cfg
    if isinstance(cfg, list):
        return [_compile_value(c, kind) for c in cfg]
    if isinstance(cfg, dict) and "class_name" in cfg:
        inner = cfg.get("config") or {}
        if cfg["class_name"] == "MeanMetricWrapper" and isinstance(inner.get("fn"), str):
            return inner.get("name") or inner["fn"]
        module = keras.losses if kind == "loss" else keras.metrics
        try:
            return module.deserialize(cfg)
        except Exception:
            name = inner.get("name") or inner.get("fn")
            if isinstance(name, str):
                return name
            raise
    if isinstance(cfg, dict):
        return {k: _compile_value(v, kind) for k, v in cfg.items()}
    return cfg


def _keras2_names(model: keras.Model, f: h5py.File, source: Source) -> dict[str, Any]:
    """The model's variables by the names a Keras 2 file gives them
    (``dense/kernel``), each confirmed by its value: the variable holds, bit for
    bit, the dataset of that name (the weights were just read into them)."""
    found: dict[str, Any] = {}
    weights = f["model_weights"]
    for layer_name in weights.attrs.get("layer_names", ()):
        layer_name = layer_name.decode() if isinstance(layer_name, bytes) else str(layer_name)
        group = weights[layer_name]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", ())]
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue
        live = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        if len(live) != len(names):
            continue
        for name, var in zip(names, live):
            saved = _read(source, group[name])
            held = view(var)
            if saved.dtype == held.dtype and np.array_equal(saved, held):
                found[name[:-2] if name.endswith(":0") else name] = var
    return found


def compile_from_training(model: keras.Model, training: dict[str, Any], path: Path,
                          custom_objects: Any, wrapped: bool = False) -> None:
    """Compile ``model`` as a Keras 2-style ``training_config`` says (legacy ``.h5``
    files, Keras 2 SavedModels): optimizer, losses, metrics, loss weights."""
    with foreign_errors(path, "could not compile the model from its training config", at="load"):
        with keras_warnings():
            args: dict[str, Any] = {
                "optimizer": training_optimizer(training, custom_objects),
                "loss_weights": training.get("loss_weights")}
        args["loss"] = _compile_value(training.get("loss"), "loss")
        args["metrics"] = _compile_value(training.get("metrics"), "metric")
        args["weighted_metrics"] = _compile_value(training.get("weighted_metrics"), "metric")
        given = args.get("optimizer")
        policy = getattr(getattr(model, "dtype_policy", None), "name", None)
        if (wrapped and policy == "mixed_float16"
                and isinstance(given, keras.optimizers.LossScaleOptimizer)):
            args["optimizer"] = given.inner_optimizer  # compile() wraps it again
        model.compile(**args)


class H5ModelHandler(WholeModelFormat):
    name = "h5"
    suffixes = (".h5", ".hdf5")
    temp_suffix = ".h5"
    array_names = "the file's dataset paths"

    def preflight(self, model: keras.Model, path: Path) -> None:
        super().preflight(model, path)
        refuse_assets(model, path, "legacy HDF5")
        # Keras' legacy writer stores bfloat16 as 2 opaque bytes with no mark of what
        # they are, and its reader (Keras' or anyone's) cannot read them back.
        optimizer = getattr(model, "optimizer", None)
        variables = list(model.variables) + list(getattr(optimizer, "variables", None) or [])
        bf16 = [getattr(v, "path", v.name) for v in variables if v.dtype == "bfloat16"]
        if bf16:
            raise NotSerializableError(
                f"the legacy HDF5 format cannot hold bfloat16 variables ({len(bf16)}, "
                f"e.g. {bf16[0]!r}): Keras writes them as opaque bytes that no reader can "
                "load back; save as .keras, or the weights as .weights.h5 or a checkpoint",
                path=path)

    def sniff(self, path: Path) -> bool:
        if not (path.is_file() and is_hdf5(path)):
            return False
        with open_h5(path) as f:
            return "model_config" in f.attrs

    def write(self, model: keras.Model, path: Path) -> None:
        # Under "mixed_float16", compile() wraps the optimizer it is given in a
        # LossScaleOptimizer, and the legacy writer records the wrapper. Say so, for
        # the load to compile with what was given and let compile() wrap it again.
        wrapped = False
        if getattr(model, "compiled", False) and isinstance(
                getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer):
            given = model.get_compile_config().get("optimizer")
            wrapped = not (isinstance(given, dict)
                           and given.get("class_name") == "LossScaleOptimizer")
        # Keras' legacy writer pops "optimizer" from the caller's compile config;
        # keep the caller's model as it was.
        with kept_compile_settings(model):
            save_h5_model(model, path)
        with h5py.File(path, "r+") as f:
            f.attrs[VERSIONS_ATTR] = json.dumps(versions_now())
            if wrapped:
                f.attrs[_WRAPPED_ATTR] = "LossScaleOptimizer"

    def load(self, path: Path, *, compile: bool = True, safe_mode: bool = True,
             custom_objects: Any = None, checksummed: bool = False,
             mmap: bool = False) -> keras.Model:
        """The model in the file: built without running initializers, then filled.

        Keras' legacy loader decides which dataset goes to which variable; each
        dataset is read once, into memory the variable adopts (``mmap``: the
        variable adopts the file's pages, mapped copy-on-write, where aligned).
        """
        build, read, _ = self._steps(path, compile=compile, safe_mode=safe_mode,
                                     custom_objects=custom_objects, record=False,
                                     private=mmap)
        model, created = build_deferred(build)
        read(model)
        initialize_rest(created)
        return model

    def _steps(self, path: Path, *, compile: bool, safe_mode: bool, custom_objects: Any,
               record: bool, mapped: bool = False,
               private: bool = False) -> tuple[Any, Any, Any]:
        """How to build the file's model (compiled, optimizer built), how to read its
        values into it, and what identifies the build (for ``lent_twin``).

        ``record`` (verification) records the values instead of assigning them (see
        ``kerasave._fastpaths.patches.recorded``); ``mapped``: the file is kerasave's
        own temporary, written by this process just now, so the values are read-only
        views of its pages, and it is not walked for safety (that is for foreign files).
        """
        with open_h5(path, check=not mapped) as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise CorruptArtifactError(
                    "an HDF5 file without a model config: it holds weights only; use "
                    "load_weights", path=path)
            training = f.attrs.get("training_config") if compile else None
            saved_opt = (len(f["optimizer_weights"].attrs.get("weight_names", ()))
                         if "optimizer_weights" in f else 0)
            wrapped = f.attrs.get(_WRAPPED_ATTR) == "LossScaleOptimizer"
            backed = declared_bytes(f)
        config = json.loads(raw)

        def build() -> keras.Model:
            model = model_from_config(config, custom_objects=custom_objects,
                                      safe_mode=safe_mode, source=str(path), backed=backed)
            if training is not None:
                compile_from_training(model, json.loads(training), path, custom_objects, wrapped)
                # An optimizer saved before it was built holds only its step counter.
                if saved_opt > 2 and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
            return model

        def read(model: keras.Model, replay: Any = None) -> Recorded:
            # (``replay``, from ``lent_twin``: Keras' legacy loader is never replayed)
            fd = os.open(path, os.O_RDONLY)
            try:
                source = Source(fd, 0, os.fstat(fd).st_size, path, mapped=mapped,
                                private=private)
                # A save's own temporary was checked a moment ago, in _steps.
                with recorded(None if record else ()) as values, \
                        open_h5(path, check=not mapped) as f:
                    with foreign_errors(path, "could not read the weights", at="load"):
                        # Shapes before bytes: nothing is read that fits no variable.
                        problem = _layout_problem(_datasets(f["model_weights"]),
                                                  list(model.weights), "layers", "the model")
                        if problem:
                            raise ArchitectureMismatchError(problem, path=path)
                        load_h5_weights(model, path, f["model_weights"], source)
                    if training is not None:
                        self._load_optimizer(model, f, path, source)
            finally:
                os.close(fd)
            return values

        return build, read, ("h5", raw, training, saved_opt, safe_mode, wrapped)

    def _load_optimizer(self, model: keras.Model, f: h5py.File, path: Path,
                        source: Source) -> None:
        optimizer = model.optimizer
        if "optimizer_weights" not in f:
            return
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f["optimizer_weights"].attrs["weight_names"]]
        if not optimizer.built:
            return  # saved before the optimizer was built: nothing but the step counter
        # Shapes before bytes: the datasets' declared layouts are compared, then read.
        datasets = [f["optimizer_weights"][n] for n in names]
        targets = list(optimizer.variables)
        fits = len(datasets) == len(targets) and all(
            isinstance(d, h5py.Dataset) and _layout(d) == _layout(v)
            for v, d in zip(targets, datasets))
        if not fits:  # Keras 2's state, named Keras 2's way
            targets = keras2.named_slots(names, _keras2_names(model, f, source), optimizer) or []
            fits = len(targets) == len(datasets) and all(
                isinstance(d, h5py.Dataset) and _layout(d) == _layout(v)
                for v, d in zip(targets, datasets))
        if not fits:
            warnings.warn(
                f"{path}: the optimizer state in this file ({len(datasets)} arrays, "
                f"{names[:2]}...) does not fit {type(optimizer).__name__} in Keras "
                f"{keras.__version__} ({len(optimizer.variables)} variables); the model loads "
                "with a fresh optimizer, so resumed training will not match",
                UserWarning,
                stacklevel=4,
            )
            return
        values = [_read(source, d) for d in datasets]
        for variable, value in zip(targets, values):
            variable.assign(value)

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """``own``: ``path`` is kerasave's own temporary, written by this process just
        now, and may be read as mapped pages.

        A twin built from the file holds its values as recorded views (fast path
        ``recorded_assign``); its public twin is a real load (``loaded_check``).
        """

        def fast() -> list[Check]:
            build, read, key = self._steps(path, compile=True, safe_mode=True,
                                           custom_objects=None, record=True, mapped=own)
            with lent_twin(key, build, read) as (loaded, recorded):  # given back after
                # Keras' legacy writer leaves out the layers' build configs: a layer
                # built on a concrete batch (Normalization.adapt) comes back built on None.
                return twin_check(model, loaded, recorded, build_configs=False)

        try:
            return attempt("recorded_assign", fast,
                           lambda: loaded_check(model, path, self.load, build_configs=False),
                           passthrough=(KerasaveError,), ok=passed)
        except KerasaveError as exc:
            return [Check("load", False, str(map_load_error(exc, path)))]

    def contents(self, path: Path) -> Contents:
        with open_h5(path) as f:
            variables = h5_variables(f)
            has_opt = "optimizer_weights" in f
            if VERSIONS_ATTR in f.attrs:
                versions = json.loads(f.attrs[VERSIONS_ATTR])
            else:
                versions = {"keras": str(f.attrs.get("keras_version", "?"))}
        return Contents(variables, has_opt, versions, optimizer_names(variables))

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        with open_h5(path) as f:
            yield from h5_arrays(f, path)

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        with open_h5(path) as f:
            yield h5_reading(f, path)
