"""Keras 3 twins of the models in tests/fixtures/keras2/make_artifacts.py, and the checks
that a Keras 2 artifact's state arrived in them bit for bit.

The expected values (``<artifact>.expected.npz``) are what tf-keras held when it saved:
``w<i>`` in ``model.weights`` order, ``slot:<keras 2 slot>:<i>`` for the i-th trainable
variable, ``iterations``, and predictions on a probe batch. The slots are found here
through Keras 3's own per-variable lists (not by the names kerasave pairs them by).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

ARTIFACTS = Path(__file__).parent / "fixtures" / "keras2" / "artifacts"
OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(0.01),
    "sgd": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
}
# Keras 2 slot name -> the Keras 3 optimizer's list of that slot, one per variable.
SLOT_LISTS = {"m": ("_momentums", "momentums"), "v": ("_velocities",),
              "momentum": ("_momentums", "momentums"), "velocity": ("_velocities",),
              "rms": ("_velocities",), "mg": ("_average_gradients",),
              "average_gradient": ("_average_gradients",)}


def sequential():
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ]), "categorical_crossentropy"


def functional():
    a = keras.Input((4,), name="a")
    s = keras.Input((5, 3), name="s")
    h = keras.layers.Concatenate()([a, keras.layers.LSTM(4)(s)])
    h = keras.layers.Dense(8, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.1)(h)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model([a, s], [cls, reg]), ["categorical_crossentropy", "mse"]


class Tower(keras.Model):
    def __init__(self):
        super().__init__()
        self.rnn = keras.layers.GRU(4)
        self.blocks = [keras.layers.Dense(6, activation="relu"),
                       keras.layers.Dense(6, activation="relu")]
        self.encoder = keras.Sequential([keras.layers.Dense(5, activation="tanh")])
        self.norm = keras.layers.BatchNormalization()
        self.head = keras.layers.Dense(2)

    def call(self, x, training=False):
        h = self.rnn(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(self.encoder(h), training=training))


def subclassed(build=True):
    model = Tower()
    if build:
        model(np.zeros((1, 5, 3), "float32"))
    return model, "mse"


class Net(keras.Model):
    """The checkpoint guide's model."""

    def __init__(self):
        super().__init__()
        self.l1 = keras.layers.Dense(5)

    def call(self, x):
        return self.l1(x)


def zoo():
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 6)(tokens)
    h = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(h, h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(5))(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(3))(h)
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(h))
    return model, "categorical_crossentropy"


MODELS = {"sequential": sequential, "functional": functional, "subclassed": subclassed,
          "zoo": zoo}


def twin(kind, optimizer):
    """A fresh, compiled Keras 3 twin; its optimizer is not built."""
    model, loss = MODELS[kind]()
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss=loss)
    return model


def expected(path):
    return dict(np.load(f"{path}.expected.npz"))


def _exact(want, got, what):
    got = np.asarray(got.numpy() if hasattr(got, "numpy") else got)
    assert want.dtype == got.dtype and want.shape == got.shape, (what, want.dtype, got.dtype)
    assert np.array_equal(want, got), what


def slot(optimizer, name, variable):
    for attr in SLOT_LISTS[name]:
        found = getattr(optimizer, attr, None)
        if found:
            return found[optimizer._get_variable_index(variable)]
    raise AssertionError(f"no {name} slots in {type(optimizer).__name__}")


def differs(model, want):
    """Whether the live model differs from the saved state (before a restore)."""
    return any(not np.array_equal(want[f"w{i}"], keras.ops.convert_to_numpy(w))
               for i, w in enumerate(model.weights))


def assert_restored(model, want, optimizer=True, opt=None):
    """Every model variable and optimizer slot bit-equal to Keras 2's (``opt``: the
    optimizer, when it is not ``model.optimizer``); predictions equal within float
    rounding."""
    weights = sorted(int(k[1:]) for k in want if k[0] == "w" and k[1:].isdigit())
    assert weights == list(range(len(model.weights)))
    for i, w in enumerate(model.weights):
        _exact(want[f"w{i}"], w, f"weight {i} ({w.path})")
    if optimizer:
        opt = opt if opt is not None else model.optimizer
        _exact(want["iterations"], opt.iterations, "iterations")
        slots = [k for k in want if k.startswith("slot:")]
        assert slots
        for key in slots:
            _, name, i = key.split(":")
            variable = model.trainable_weights[int(i)]
            _exact(want[key], slot(opt, name, variable), f"{key} ({variable.path})")
    probes = sorted(k for k in want if k.startswith("probe_x"))
    inputs = [want[k] for k in probes]
    out = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    outs = out if isinstance(out, list) else [out]
    for i, got in enumerate(outs):
        np.testing.assert_allclose(got, want[f"probe_y{i}"], rtol=1e-5, atol=1e-6)
