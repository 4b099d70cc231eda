"""Each fast path's probe: run it and its public twin on a tiny model, compare bit for bit.

A probe runs once per process, the first time its fast path is wanted
(``kerasave._fastpaths.on``); ``kerasave doctor`` runs them all. A probe raises
when the fast path does not work on this stack or gives anything but what the
public API gives; the fast path is then off for the process. Probes run in a
thread of their own (``kerasave._fastpaths.on``), so Keras' per-thread state
(automatic names, the dtype policy, scopes) is not the caller's, and work in a
temporary directory of their own.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._fastpaths import dlpack, h5read, patches, register, savinglib, zipwriter
from kerasave._runtime.lazy import keras

__all__: list[str] = []


def _tiny() -> keras.Model:
    """A compiled functional model with its optimizer built and every value distinct."""
    inputs = keras.Input((3,), name="kerasave_probe_input")
    hidden = keras.layers.Dense(4, activation="relu", name="kerasave_probe_hidden")(inputs)
    outputs = keras.layers.Dense(2, name="kerasave_probe_output")(hidden)
    model = keras.Model(inputs, outputs, name="kerasave_probe")
    model.compile(optimizer=keras.optimizers.Adam(0.01, name="kerasave_probe_adam"),
                  loss="mse")
    model.optimizer.build(model.trainable_variables)
    for i, variable in enumerate(_variables(model)):
        shape = tuple(variable.shape)
        count = int(np.prod(shape, dtype=np.int64))
        variable.assign((np.arange(count) + 10 * i + 1).reshape(shape).astype(variable.dtype))
    return model


def _variables(model: keras.Model) -> list[Any]:
    return list(model.variables) + list(model.optimizer.variables)


def _values(variables: list[Any]) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def _same(expected: list[np.ndarray], got: list[Any], what: str) -> None:
    got = [np.asarray(keras.ops.convert_to_numpy(g)) if not isinstance(g, np.ndarray) else g
           for g in got]
    if len(expected) != len(got) or any(
            e.dtype != g.dtype or e.shape != g.shape or e.tobytes() != g.tobytes()
            for e, g in zip(expected, got)):
        raise AssertionError(f"{what}: the values differ from the public API's")


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kerasave-probe-") as tmp:
        yield Path(tmp)


@register("dlpack_views", "writers read variables' memory in place (DLPack), not a copy",
          "a NumPy copy of each value (keras.ops.convert_to_numpy)")
def _probe_views() -> None:
    variable = keras.Variable(np.arange(12, dtype="float32").reshape(3, 4) + 0.5,
                              name="kerasave_probe_view")
    view = dlpack.variable_view(variable)
    if view is None or view.flags.owndata:
        raise AssertionError("no view of the variable's memory")
    _same(_values([variable]), [np.asarray(view)], "a variable's view")


@register("dlpack_adopt", "loaded arrays become variables' memory (DLPack), not a copy",
          "tf.convert_to_tensor copies each array")
def _probe_adopt() -> None:
    from kerasave._runtime.lazy import tf

    expected = (np.arange(12, dtype="float32").reshape(3, 4) + 0.25)
    loaded = dlpack.aligned((3, 4), np.dtype("float32"))
    loaded[...] = expected
    tensor = tf.experimental.dlpack.from_dlpack(loaded.view(np.ndarray).__dlpack__())
    variable = keras.Variable(np.zeros((3, 4), "float32"), name="kerasave_probe_adopt")
    variable.assign(loaded)
    _same([expected, expected], [tensor.numpy(), variable], "an adopted array")


@register("deferred_init", "models built to be loaded into run no initializers",
          "Keras builds the model as usual, initializers and all")
def _probe_deferred() -> None:
    with patches.uninitialized() as created:
        layer = keras.layers.Dense(3, name="kerasave_probe_deferred")
        layer.build((None, 2))
    if len(created) != 2 or any(v._value.is_initialized() for v in created):
        raise AssertionError("variables were initialized or not deferred")
    kernel = np.arange(6, dtype="float32").reshape(2, 3)
    layer.kernel.assign(kernel)
    patches.initialize_rest(created)
    _same([kernel, np.zeros(3, "float32")], [layer.kernel, layer.bias], "a deferred build")


@register("recorded_assign", "verification compares the file's pages, copying nothing",
          "a real load into a fresh model (load_model, load_weights), compared")
def _probe_recorded() -> None:
    variable = keras.Variable(np.zeros(4, "float32"), name="kerasave_probe_recorded")
    value = np.arange(4, dtype="float32")
    with patches.recorded([variable]) as got:
        variable.assign(value)
    if id(variable) not in got or got[id(variable)][1] is not value:
        raise AssertionError("the assignment was not recorded")
    _same([np.zeros(4, "float32")], [variable], "a recorded variable")


@register("keras_reader", ".keras and weights files read straight into the variables",
          "keras.saving.load_model, model.load_weights")
def _probe_reader() -> None:
    with _workdir() as tmp:
        model = _tiny()
        expected = _values(_variables(model))
        archive = tmp / "probe.keras"
        model.save(str(archive))
        with zipfile.ZipFile(archive) as zf:
            config = json.loads(zf.read("config.json"))
        loaded = savinglib.load_keras(archive, config, compile=True, safe_mode=True,
                                      custom_objects=None, checksummed=False)
        public = keras.saving.load_model(str(archive))
        _same(_values(_variables(public)), _variables(loaded), ".keras load")
        _same(expected, _variables(loaded), ".keras load")
        weights = tmp / "probe.weights.h5"
        model.save_weights(str(weights))
        into = _tiny()
        savinglib.read_weights(into, weights)()
        _same(expected, _variables(into), "weights load")


@register("keras_writer", ".keras and weights files written once, from the variables",
          "model.save, model.save_weights")
def _probe_writer() -> None:
    with _workdir() as tmp:
        model = _tiny()
        expected = _values(_variables(model))
        archive = tmp / "probe.keras"
        zipwriter.save_keras(model, archive)
        _same(expected, _variables(keras.saving.load_model(str(archive))), ".keras save")
        weights = tmp / "probe.weights.h5"
        savinglib.write_weights(model, weights)
        into = _tiny()
        into.load_weights(str(weights))
        _same(expected, _variables(into), "weights save")
        public = tmp / "public.weights.h5"
        model.save_weights(str(public))
        # Object by object, what save_weights writes (the optimizer's state too): the
        # same datasets and groups, the same attributes, the same bytes.
        written, fast = _contents(public), _contents(weights)
        if sorted(written) != sorted(fast):
            raise AssertionError("the fast writer writes other datasets than save_weights")
        if any(written[name][1] != fast[name][1] for name in written):
            raise AssertionError("the fast writer writes other attributes than save_weights")
        names = sorted(n for n, (value, _) in written.items() if value is not None)
        _same([written[n][0] for n in names], [fast[n][0] for n in names], "weights save")  # type: ignore[misc]  # (names hold values)
        entries = savinglib.stored_entries(model)
        if sorted(entries) != names:
            raise AssertionError("stored_entries names other datasets than save_weights")
        _same([written[n][0] for n in names], [entries[n] for n in names], "stored entries")  # type: ignore[misc]  # (names hold values)


def _contents(path: Path) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
    """Every group's and dataset's attributes, and every dataset's value, of an HDF5
    file, by name (a group's value: None)."""
    found: dict[str, tuple[np.ndarray | None, dict[str, Any]]] = {}

    def visit(name: str, obj: Any) -> None:
        value = np.asarray(obj[()]) if isinstance(obj, h5py.Dataset) else None
        found[name] = (value, {k: np.asarray(v).tolist() for k, v in obj.attrs.items()})

    with h5py.File(path, "r") as f:
        found[""] = (None, {k: np.asarray(v).tolist() for k, v in f.attrs.items()})
        f.visititems(visit)
    return found


@register("legacy_h5_io", "legacy .h5 models through Keras' own legacy module, in place",
          "model.save, model.load_weights, load_model of a name ending in .h5")
def _probe_legacy() -> None:
    from kerasave._fastpaths import legacy

    with _workdir() as tmp:
        model = _tiny()
        expected = _values(list(model.variables))
        path = tmp / "probe.h5"
        legacy.save_h5_model(model, path)
        public = keras.saving.load_model(str(path), compile=False)
        _same(expected, list(public.variables), "legacy .h5 save")
        into = _tiny()
        import os

        fd = os.open(path, os.O_RDONLY)
        try:
            source = h5read.Source(fd, 0, os.fstat(fd).st_size, path)
            with h5py.File(path, "r") as f:
                legacy.load_h5_weights(into, path, f["model_weights"], source)
        finally:
            os.close(fd)
        _same(expected, list(into.variables), "legacy .h5 load")


@register("keras2_config", "Keras 2 configs through Keras' own legacy deserializer",
          "keras.saving.deserialize_keras_object, each class given its Keras 3 module")
def _probe_keras2() -> None:
    from kerasave._fastpaths import legacy

    config = {"class_name": "Sequential", "config": {"name": "kerasave_probe_k2", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "dtype": "float32",
                                                "name": "kerasave_probe_k2_input"}},
        {"class_name": "Dense", "config": {
            "name": "kerasave_probe_k2_dense", "units": 2, "activation": "relu",
            "use_bias": True, "dtype": "float32", "trainable": True,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": 1}},
            "bias_initializer": {"class_name": "Zeros", "config": {}}}}]}}
    fast = legacy.keras2_model(config, None)
    public = keras.saving.deserialize_keras_object(
        legacy.keras2_modules(json.loads(json.dumps(config))))
    if fast.get_config() != public.get_config():
        raise AssertionError("a Keras 2 config: the models differ from the public API's")


@register("twin_cache", "verification keeps the model it rebuilt for the next save",
          "every check builds its own model")
def _probe_twins() -> None:
    model = _tiny()
    layers = list(model._flatten_layers(include_self=True))
    if model not in layers or len(layers) < 3:
        raise AssertionError("cannot list a model's layers")


@register("background_copies", "save(blocking=False) copies the state and writes it later",
          "save(blocking=False) writes before it returns, as blocking=True")
def _probe_copies() -> None:
    from kerasave._fastpaths.trackables import snapshot
    from kerasave._runtime.lazy import tf

    with _workdir() as tmp:
        model = _tiny()
        expected = _values(_variables(model))
        checkpoint, copies = snapshot(
            {"model": model, "optimizer": model.optimizer}, None, tmp)
        for variable in _variables(model):  # what the copies hold must not move
            variable.assign(variable + 1)
        prefix = checkpoint.write(str(tmp / "probe"))
        into = _tiny()
        tf.train.Checkpoint(model=into, optimizer=into.optimizer).read(
            prefix).assert_existing_objects_matched()
        _same(expected, _variables(into), "a checkpoint written from copies")


@register("fit_initial_epoch", "a resumed fit starts at the epoch after the last one saved",
          "none in Keras: the callback asks for fit(initial_epoch=N)")
def _probe_initial_epoch() -> None:
    from kerasave._fastpaths.fit import start_at

    seen: list[int] = []

    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            if not start_at(self.model, 1):
                raise AssertionError("start_at declined")

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            seen.append(epoch)

    model = _tiny()
    data = np.ones((2, 3), "float32")
    model.fit(data, np.ones((2, 2), "float32"), epochs=2, verbose=0, callbacks=[Start()])
    if seen != [1]:
        raise AssertionError(f"fit ran epochs {seen}, not [1]")


@register("compile_config", "a legacy .h5 save leaves the caller's compile settings as they were",
          "get_compile_config(), then compile() with them and the model's own optimizer")
def _probe_compile_config() -> None:
    from keras.src.legacy.saving import legacy_h5_format  # (what model.save("x.h5") runs)

    from kerasave._fastpaths import compiling

    with _workdir() as tmp:
        got = []
        for keep, mend in ((compiling._keep_fast, compiling._mend_fast),
                           (compiling._keep_public, compiling._mend_public)):
            model = _tiny()
            expected, optimizer = model.get_compile_config(), model.optimizer
            restore = keep(model)
            # (Keras 3.12-3.15 pop "optimizer" from the model's compile settings here)
            legacy_h5_format.save_model_to_hdf5(model, str(tmp / "kept.h5"))
            restore()
            legacy_h5_format.save_model_to_hdf5(model, str(tmp / "mended.h5"))
            mend(model)
            if model.get_compile_config() != expected or model.optimizer is not optimizer:
                raise AssertionError("a legacy .h5 save changed the compile settings")
            got.append(model.get_compile_config())
        if got[0] != got[1]:
            raise AssertionError("the compile settings differ from the public API's")
    model = _tiny()
    record = compiling._record(model)
    if record.get("optimizer") is not model.optimizer:
        raise AssertionError("compile() keeps its settings elsewhere")
    record["loss"] = "mae"  # the record is what get_compile_config() serializes
    if model.get_compile_config().get("loss") != "mae":
        raise AssertionError("the record is not the model's compile config")


@register("thread_settings", "a config's dry build sees the caller's custom_object_scope",
          "the dry build sees what is registered; the real build judges the rest")
def _probe_thread_settings() -> None:
    import threading

    from kerasave._fastpaths.threadstate import _capture

    class KerasaveProbeLayer(keras.layers.Layer):
        pass

    seen: list[Any] = []
    with keras.saving.custom_object_scope({"KerasaveProbeLayer": KerasaveProbeLayer}):
        apply = _capture()

    def other() -> None:
        apply()
        seen.append(keras.saving.get_registered_object("KerasaveProbeLayer"))

    worker = threading.Thread(target=other, daemon=True)
    worker.start()
    worker.join()
    if seen != [KerasaveProbeLayer]:
        raise AssertionError("the other thread does not see the caller's custom objects")


@register("savedmodel_pages", "a save's own SavedModel export is verified from its mapped pages",
          "tf.saved_model.load")
def _probe_savedmodel_pages() -> None:
    from kerasave._runtime.lazy import tf
    from kerasave.formats import savedmodel

    with _workdir() as tmp:
        model = _tiny()
        model.export(str(tmp / "export"), format="tf_saved_model", verbose=False)
        probe = np.arange(6, dtype="float32").reshape(2, 3)
        public = tf.saved_model.load(str(tmp / "export"))
        served, variables = savedmodel._restored(tmp / "export")
        try:
            _same(_values(list(public.variables)), list(served.variables), "export variables")
            _same([np.asarray(public.serve(probe))], [np.asarray(served.serve(probe))],
                  "served outputs")
        finally:
            savedmodel._release(variables)
