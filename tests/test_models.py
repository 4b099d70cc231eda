"""Real models, not only the tutorial's: every format each can hold, bit for bit."""

import keras
import numpy as np
import pytest

import kerasave as ks

from .conftest import all_vars, assert_bit_exact, perturb, values


@keras.saving.register_keras_serializable(package="kerasave_tests")
class Scale(keras.layers.Layer):
    """A custom layer with its own weight and config."""

    def __init__(self, init=1.5, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init))

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


def functional_bn():
    a = keras.Input((8,), name="a")
    b = keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(16, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model([a, b], [keras.layers.Dense(3, activation="softmax", name="cls")(h),
                                 keras.layers.Dense(1, name="reg")(h)])
    model.compile(optimizer="adam", loss=["categorical_crossentropy", "mse"])
    rng = np.random.default_rng(0)
    x = [rng.random((16, 8), dtype=np.float32), rng.random((16, 4), dtype=np.float32)]
    y = [np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)], rng.random((16, 1), np.float32)]
    return model, x, y


def recurrent(cell):
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(20, 8),
                              cell(8), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(1)
    return model, rng.integers(0, 20, (8, 6)).astype("int32"), rng.random((8, 2), np.float32)


def custom_layer():
    model = keras.Sequential([keras.Input((5,)), Scale(), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(2)
    return model, rng.random((8, 5), np.float32), rng.random((8, 3), np.float32)


def mobilenet():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=5,
                                           alpha=0.35)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(3)
    return model, rng.random((2, 32, 32, 3), np.float32), np.eye(5, dtype=np.float32)[[1, 3]]


MODELS = {
    "functional_bn": functional_bn,
    "lstm": lambda: recurrent(keras.layers.LSTM),
    "gru": lambda: recurrent(keras.layers.GRU),
    "custom_layer": custom_layer,
    "mobilenet": mobilenet,
}
FORMATS = [("save_weights", "w/ckpt"), ("save_weights", "w.weights.h5"),
           ("save_config", "c.json"), ("save_config", "c.yaml"),
           ("save_model", "m.keras"), ("save_model", "m.h5"), ("save_model", "serving")]


def _case(name):
    marks = [pytest.mark.slow] if name == "mobilenet" else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_case(n) for n in MODELS])
def test_every_format(tmp_path, name):
    model, x, y = MODELS[name]()
    model.train_on_batch(x, y)
    state = values(all_vars(model))
    expected = [np.asarray(o) for o in keras.tree.flatten(model(x, training=False))]
    for call, rel in FORMATS:
        path = tmp_path / rel
        report = getattr(ks, call)(model, path)
        assert report.ok, (rel, str(report))
        if call == "save_weights":
            other, _, _ = MODELS[name]()
            other.optimizer.build(other.trainable_variables)
            perturb(other)  # other weights and optimizer state
            ks.load_weights(other, path)
            if rel.endswith(".h5"):  # Keras' HDF5 layout holds no RNG seed states
                assert_bit_exact(values(model.weights + model.optimizer.variables),
                                 other.weights + other.optimizer.variables)
            else:
                assert_bit_exact(state, all_vars(other))
        elif call == "save_config":
            fresh = ks.load_config(path)
            assert [tuple(w.shape) for w in fresh.weights] == \
                [tuple(w.shape) for w in model.weights]
        elif rel == "serving":
            served = ks.load_model(path)
            outputs = keras.tree.flatten(served.serve(x))
            for e, a in zip(expected, outputs):
                assert e.tobytes() == np.asarray(a).tobytes(), rel
        else:
            loaded = ks.load_model(path)
            # Keras' whole-model formats hold weights and optimizer, not RNG seed states.
            assert_bit_exact(values(model.weights + model.optimizer.variables),
                             loaded.weights + loaded.optimizer.variables)
            got = [np.asarray(o) for o in keras.tree.flatten(loaded(x, training=False))]
            assert_bit_exact(expected, got)
        assert_bit_exact(state, all_vars(model))  # saving never changes the model
    # Exact resume from the .keras file: one more step on both.
    loaded = ks.load_model(tmp_path / "m.keras")
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    assert_bit_exact(values(model.weights + model.optimizer.variables),
                     loaded.weights + loaded.optimizer.variables)
