"""Real models, not only the tutorial's: every format each can hold, bit for bit.

Each model is built by a small factory, compiled with Adam and trained one step on
deterministic data (so optimizer state is non-trivial), then shared by the cases
of this module. Every case captures the state it needs first and puts the shared
model back as it found it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave.formats import formats  # noqa: E402
from tests.conftest import next_loss  # noqa: E402

# --------------------------------------------------------------------------- models


@keras.saving.register_keras_serializable(package="kerasave_tests")
class Scale(keras.layers.Layer):
    """A custom layer with its own weight (created in build) and a config."""

    def __init__(self, init=1.5, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init))

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


class Tower(keras.Model):
    """A subclassed model: layers in __init__, no get_config of its own."""

    def __init__(self, units=12, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.norm = keras.layers.BatchNormalization()
        self.head = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.head(self.norm(self.hidden(x), training=training))


def _adam():
    return keras.optimizers.Adam(learning_rate=1e-3)


def functional_bn(seed=0):
    """Two inputs, two outputs, BatchNormalization (non-trainable moving statistics)."""
    keras.utils.set_random_seed(seed)
    a = keras.Input((8,), name="a")
    b = keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(16, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model([a, b], [cls, reg], name="two_by_two")
    model.compile(optimizer=_adam(), loss=["categorical_crossentropy", "mse"])
    rng = np.random.default_rng(10)
    x = [rng.random((8, 8), dtype=np.float32), rng.random((8, 4), dtype=np.float32)]
    y = [np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)],
         rng.random((8, 1), dtype=np.float32)]
    return model, x, y


def _recurrent(cell, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(20, 8),
        cell(8),
        keras.layers.Dense(2),
    ])
    model.compile(optimizer=_adam(), loss="mse")
    rng = np.random.default_rng(11)
    return model, rng.integers(0, 20, (8, 6)).astype("int32"), rng.random((8, 2), np.float32)


def lstm(seed=0):
    return _recurrent(keras.layers.LSTM, seed)


def gru(seed=0):
    return _recurrent(keras.layers.GRU, seed)


def custom_layer(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(6, activation="tanh"),
        Scale(init=1.5, name="scale"),
        keras.layers.Dense(3),
    ])
    model.compile(optimizer=_adam(), loss="mse")
    rng = np.random.default_rng(12)
    return model, rng.random((8, 5), np.float32), rng.random((8, 3), np.float32)


def mobilenet(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=5,
                                           alpha=0.35)
    model.compile(optimizer=_adam(), loss="categorical_crossentropy")
    rng = np.random.default_rng(13)
    return (model, rng.random((2, 32, 32, 3), dtype=np.float32),
            np.eye(5, dtype=np.float32)[[1, 3]])


def subclassed(seed=0):
    """Compiled, not built: the first train step builds model and optimizer."""
    keras.utils.set_random_seed(seed)
    model = Tower()
    model.compile(optimizer=_adam(), loss="mse")
    rng = np.random.default_rng(14)
    return model, rng.random((8, 10), np.float32), rng.random((8, 3), np.float32)


FACTORIES = {
    "functional_bn": functional_bn,
    "lstm": lstm,
    "gru": gru,
    "custom_layer": custom_layer,
    "mobilenet": mobilenet,
    "subclassed": subclassed,
}
CONFIGURABLE = [n for n in FACTORIES if n != "subclassed"]
SLOW = {"mobilenet"}


def _model_param(name, *extra):
    marks = [pytest.mark.slow] if name in SLOW else []
    return pytest.param(name, *extra, marks=marks, id="-".join([name, *map(str, extra)]))


@pytest.fixture(scope="module")
def zoo():
    """name -> (model, x, y): built by its factory and trained one step, shared."""
    cache = {}

    def get(name):
        if name not in cache:
            model, x, y = FACTORIES[name]()
            model.train_on_batch(x, y)
            cache[name] = (model, x, y)
        return cache[name]

    return get


# -------------------------------------------------------------------------- helpers


def _by_id(variables):
    return {id(v) for v in variables}


def weights_and_optimizer(model):
    """What every Keras format holds: weights (incl. non-trainable) and optimizer."""
    return list(model.weights) + list(model.optimizer.variables)


def all_state(model):
    """Every variable: weights, RNG seed states, optimizer."""
    return list(model.variables) + list(model.optimizer.variables)


def seed_states(model):
    weights = _by_id(model.weights)
    return [v for v in model.variables if id(v) not in weights]


def snapshot(variables):
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def put_back(variables, values):
    for v, value in zip(variables, values, strict=True):
        v.assign(value)


def perturb(variables, seed=99):
    """Assign different values to every variable."""
    rng = np.random.default_rng(seed)
    for v in variables:
        value = keras.ops.convert_to_numpy(v)
        if np.issubdtype(value.dtype, np.floating):
            v.assign((value + 1 + rng.random(value.shape)).astype(value.dtype))
        else:
            v.assign(value + 7)


def _label(v, i):
    return getattr(v, "path", None) or getattr(v, "name", None) or f"#{i}"


def assert_exact(expected, actual, what, labels=None):
    """Bit-exact: same count, dtype, shape and values (np.array_equal and same bytes)."""
    actual = [a if isinstance(a, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(a))
              for a in actual]
    assert len(expected) == len(actual), f"{what}: {len(actual)} arrays, expected {len(expected)}"
    bad = []
    for i, (e, a) in enumerate(zip(expected, actual)):
        name = labels[i] if labels else f"#{i}"
        if e.dtype != a.dtype or e.shape != a.shape:
            bad.append(f"{name}: {a.dtype}{a.shape}, expected {e.dtype}{e.shape}")
        elif not (np.array_equal(e, a) and e.tobytes() == a.tobytes()):
            diff = np.max(np.abs(e.astype(np.float64) - a.astype(np.float64)))
            bad.append(f"{name}: {int(np.sum(e != a))}/{e.size} differ, max abs diff {diff:.3g}")
    assert not bad, f"{what} not bit-exact: " + "; ".join(bad[:6]) + (
        f" (+{len(bad) - 6} more)" if len(bad) > 6 else "")


def outputs(result):
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(result)]


def predictions(model, x):
    return outputs(model(x, training=False))


def architecture(model):
    """The model's serialized config without compile settings or build shapes."""
    config = json.loads(model.to_json())
    return {"class_name": config["class_name"], "config": config["config"]}


def no_files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _check_report(report, path, fmt):
    assert report.ok, str(report)
    assert report.format == fmt, str(report)
    assert report.path == str(path)


# --------------------------------------------------------------------------- weights

# The classic formats of each kind from the format table, by handler name (the test ids).
WEIGHT_FORMATS = {f.name: f"w/{f.named('model')}" for f in formats(
    lambda f: f.classic and f.loads == "weights")}


@pytest.mark.parametrize("name,fmt", [
    _model_param(n, f) for n in FACTORIES for f in WEIGHT_FORMATS])
def test_weights_round_trip(zoo, tmp_path, name, fmt):
    model, x, _ = zoo(name)
    variables = all_state(model)
    before = snapshot(variables)
    path = tmp_path / WEIGHT_FORMATS[fmt]

    _check_report(ks.save_weights(model, path), path, fmt)
    saved = snapshot(variables)
    assert_exact(before, saved, "saving changed the model")
    # A checkpoint holds every variable; Keras' HDF5 layout holds weights and
    # optimizer state but not the RNG seed states of layers such as LSTM/GRU.
    held = variables if fmt == "checkpoint" else weights_and_optimizer(model)
    held_saved = snapshot(held)
    labels = [_label(v, i) for i, v in enumerate(held)]
    try:
        perturb(variables)
        assert all(not np.array_equal(a, b) for a, b in zip(snapshot(held), held_saved))
        report = ks.load_weights(model, path)
        assert report.ok and report.format == fmt, str(report)
        assert_exact(held_saved, held, f"{fmt} restore", labels)
    finally:
        put_back(variables, saved)


FRESH = [n for n in FACTORIES if n not in SLOW]  # a MobileNet train trace costs ~20 s


@pytest.mark.parametrize("name,fmt", [_model_param(n, f) for n in FRESH for f in WEIGHT_FORMATS])
def test_weights_into_fresh_model_resume_exactly(zoo, tmp_path, name, fmt):
    """A new model (other weights, optimizer never built; a subclassed one not even
    built) takes the saved state, and its next step equals the original's bit for bit."""
    model, x, y = zoo(name)
    variables = all_state(model)
    saved = snapshot(variables)
    path = tmp_path / WEIGHT_FORMATS[fmt]
    _check_report(ks.save_weights(model, path), path, fmt)

    fresh, _, _ = FACTORIES[name](seed=7)
    assert not fresh.optimizer.built
    if name == "subclassed":
        assert not fresh.built
    else:
        assert any(not np.array_equal(a, b) for a, b in
                   zip(snapshot(model.weights), snapshot(fresh.weights)))
    report = ks.load_weights(fresh, path)
    assert report.ok, str(report)
    assert fresh.built and fresh.optimizer.built
    labels = [_label(v, i) for i, v in enumerate(weights_and_optimizer(model))]
    assert_exact(snapshot(weights_and_optimizer(model)), weights_and_optimizer(fresh),
                 "fresh model after load", labels)
    try:
        loss = next_loss(model, x, y)
        fresh_loss = next_loss(fresh, x, y)
        assert_exact(snapshot(weights_and_optimizer(model)), weights_and_optimizer(fresh),
                     "variables after one more step", labels)
        assert np.asarray(loss).tobytes() == np.asarray(fresh_loss).tobytes()
    finally:
        put_back(variables, saved)


# --------------------------------------------------------------------------- configs

CONFIG_FORMATS = {f.name: f"c/{f.named('model')}" for f in formats(
    lambda f: f.classic and f.loads == "config")}


@pytest.mark.parametrize("name,fmt", [
    _model_param(n, f) for n in CONFIGURABLE for f in CONFIG_FORMATS])
def test_config_round_trip(zoo, tmp_path, name, fmt):
    model, x, _ = zoo(name)
    variables = all_state(model)
    before = snapshot(variables)
    path = tmp_path / CONFIG_FORMATS[fmt]

    _check_report(ks.save_config(model, path), path, fmt)
    assert_exact(before, variables, "saving changed the model")

    fresh = ks.load_config(path)
    assert type(fresh) is type(model)
    assert getattr(fresh, "optimizer", None) is None  # uncompiled
    assert architecture(fresh) == architecture(model)
    assert [(tuple(w.shape), str(w.dtype)) for w in fresh.weights] == \
        [(tuple(w.shape), str(w.dtype)) for w in model.weights]
    # The rebuilt architecture computes exactly what the original does, given its weights.
    weights = tmp_path / "w.weights.h5"
    ks.save_weights(model, weights)
    ks.load_weights(fresh, weights)
    assert_exact(predictions(model, x), predictions(fresh, x), "predictions of the rebuilt model")


# ---------------------------------------------------------------------- whole models

WHOLE_FORMATS = {f.name: f"m/{f.named('model')}" for f in formats(
    lambda f: f.classic and f.loads == "model")}


@pytest.mark.parametrize("name,fmt", [
    _model_param(n, f) for n in CONFIGURABLE for f in WHOLE_FORMATS])
def test_whole_model_round_trip_and_exact_resume(zoo, tmp_path, name, fmt):
    model, x, y = zoo(name)
    variables = all_state(model)
    path = tmp_path / WHOLE_FORMATS[fmt]
    expected = predictions(model, x)

    _check_report(ks.save_model(model, path), path, fmt)
    saved = snapshot(variables)
    held = weights_and_optimizer(model)  # the RNG seed states are not part of these formats
    labels = [_label(v, i) for i, v in enumerate(held)]
    held_saved = snapshot(held)
    try:
        perturb(variables)  # the original changes; the loaded model must not care
        loaded = ks.load_model(path)
        put_back(variables, saved)
        assert isinstance(loaded, keras.Model) and type(loaded) is type(model)
        assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.Adam)
        assert_exact(held_saved, weights_and_optimizer(loaded), f"{fmt} load", labels)
        assert_exact(expected, predictions(loaded, x), "predictions")
        # Exact resume: one more step on the same batch gives the same variables.
        loss = next_loss(model, x, y)
        loaded_loss = next_loss(loaded, x, y)
        assert_exact(snapshot(held), weights_and_optimizer(loaded),
                     "variables after one more step", labels)
        assert np.asarray(loss).tobytes() == np.asarray(loaded_loss).tobytes()
    finally:
        put_back(variables, saved)


# ------------------------------------------------------------------------ SavedModel


@pytest.mark.parametrize("name", [_model_param(n) for n in FACTORIES])
def test_savedmodel_serves_the_predictions(zoo, tmp_path, name):
    model, x, _ = zoo(name)
    variables = all_state(model)
    before = snapshot(variables)
    path = tmp_path / "served"

    _check_report(ks.save_model(model, path), path, "savedmodel")
    assert_exact(before, variables, "exporting changed the model")
    served = ks.load_model(path)
    assert not isinstance(served, keras.Model)
    # The model's predictions (predict runs the model as a graph, like serving does;
    # an eager call may differ by an ulp where oneDNN fuses ops in graphs).
    # assert_exact reports the max difference if serving is not bit-exact.
    assert_exact(outputs(model.predict_on_batch(x)), outputs(served.serve(x)),
                 "serving outputs")


# --------------------------------------------------- subclassed: no config to save


@pytest.mark.parametrize("call,rel", [
    *(pytest.param("save_config", rel, id=name) for name, rel in CONFIG_FORMATS.items()),
    *(pytest.param("save_model", rel, id=name) for name, rel in WHOLE_FORMATS.items()),
])
def test_subclassed_refuses_config_and_whole_formats(zoo, tmp_path, call, rel):
    model, _, _ = zoo("subclassed")
    before = snapshot(all_state(model))
    path = tmp_path / rel
    with pytest.raises(ks.NotSerializableError) as info:
        getattr(ks, call)(model, path)
    assert "Tower" in str(info.value)
    assert not path.exists()
    assert no_files_under(tmp_path) == []
    assert_exact(before, all_state(model), "a refused save changed the model")
