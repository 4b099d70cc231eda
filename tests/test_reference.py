import keras
import numpy as np

import kerasave as ks

from .conftest import values


def test_reference_model_is_the_tutorials():
    model = ks.reference_model()
    assert isinstance(model, keras.Sequential)
    assert model.input_shape == (None, 32)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [(d.units, d.activation.__name__) for d in dense] == [(64, "relu"), (10, "softmax")]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert np.isclose(float(model.optimizer.learning_rate), 0.001)
    config = model.get_compile_config()
    assert config["loss"] == "categorical_crossentropy" and config["metrics"] == ["accuracy"]
    assert model.built and model.optimizer.built
    assert len(model.optimizer.variables) == 2 + 2 * len(model.trainable_variables)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = ks.reference_model(seed=3), ks.reference_model(seed=3), ks.reference_model(seed=4)
    for x, y in zip(values(a.weights), values(b.weights)):
        assert x.tobytes() == y.tobytes()
    assert values(a.weights)[0].tobytes() != values(c.weights)[0].tobytes()


def test_reference_data():
    data, labels = ks.reference_data(50, seed=1)
    assert data.shape == (50, 32) and data.dtype == np.float32
    assert labels.shape == (50, 10) and labels.dtype == np.float32
    assert np.array_equal(labels.sum(axis=1), np.ones(50, np.float32))
    again, _ = ks.reference_data(50, seed=1)
    other, _ = ks.reference_data(50, seed=2)
    assert np.array_equal(data, again) and not np.array_equal(data, other)
