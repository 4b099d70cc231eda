"""Weights: unbuilt models, all-or-nothing loads, mismatches, optimizer handling."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks

from .conftest import all_vars, assert_bit_exact, bfloat16_model, next_loss, perturb, values

WEIGHT_PATHS = ["ckpt/model", "model.weights.h5", "model.h5"]


class Net(keras.Model):
    """A subclassed model without get_config, as in the checkpoint guide."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.hidden(x))


def _net():
    net = Net()
    net.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return net


def _toy(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 5), dtype=np.float32), rng.random((n, 3), dtype=np.float32)


@pytest.mark.parametrize("rel", WEIGHT_PATHS)
def test_fresh_unbuilt_subclassed_model_resumes_exactly(tmp_path, rel):
    x, y = _toy()
    net = _net()
    for _ in range(3):
        net.train_on_batch(x, y)
    ks.save_weights(net, tmp_path / rel)

    fresh = _net()
    assert not fresh.built
    report = ks.load_weights(fresh, tmp_path / rel)
    assert report.ok and any(c.name == "build" for c in report.checks)
    assert_bit_exact(values(all_vars(net)), all_vars(fresh))

    # The next steps match bit for bit: the guide's scenario that natively
    # loses the Dense kernel on Keras 3.
    for _ in range(2):
        a = next_loss(net, x, y)
        b = next_loss(fresh, x, y)
        assert a == b
    assert_bit_exact(values(all_vars(net)), all_vars(fresh))


def test_native_restore_into_unbuilt_model_loses_the_kernel(tmp_path):
    """The breakage kerasave exists for (DESIGN.md): TF's deferred restore on Keras 3."""
    x, y = _toy()
    net = _net()
    net.train_on_batch(x, y)
    prefix = tf.train.Checkpoint(model=net, optimizer=net.optimizer).write(str(tmp_path / "c"))
    fresh = _net()
    tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).read(prefix).expect_partial()
    fresh(x[:1])
    restored = [v.numpy().tobytes() for v in fresh.weights]
    original = [v.numpy().tobytes() for v in net.weights]
    assert restored != original  # natively something is not restored


@pytest.mark.parametrize("rel", WEIGHT_PATHS)
def test_mismatch_raises_and_changes_nothing(trained, tmp_path, rel):
    ks.save_weights(trained, tmp_path / rel)
    wider = keras.Sequential([keras.Input((32,)), keras.layers.Dense(65, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    wider.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy")
    wider.optimizer.build(wider.trainable_variables)
    before = values(all_vars(wider))
    with pytest.raises(ks.ArchitectureMismatchError) as info:
        ks.load_weights(wider, tmp_path / rel)
    message = str(info.value)
    assert str(tmp_path / rel) in message
    # The message names the mismatch: both shapes of the first layer's kernel.
    assert "(32, 64) float32" in message and "(32, 65) float32" in message, message
    assert wider.layers[0].kernel.path in message, message
    assert_bit_exact(before, all_vars(wider))


def test_h5_mismatch_names_optimizer_arrays(trained, tmp_path):
    ks.save_weights(trained, tmp_path / "w.weights.h5")
    model = ks.reference_model(seed=5)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError) as info:
        ks.load_weights(model, tmp_path / "w.weights.h5")
    message = str(info.value)
    # Adam saved 10 arrays (2 per variable, plus counters); SGD with momentum has 6.
    assert "10 optimizer arrays, the model's SGD has 6 variables" in message, message
    assert "only in the file: optimizer/vars/" in message, message
    assert "only in the model: nothing" in message, message
    assert_bit_exact(before, all_vars(model))


@pytest.mark.parametrize("rel", WEIGHT_PATHS)
def test_extra_layer_in_model_raises_and_changes_nothing(trained, tmp_path, rel):
    ks.save_weights(trained, tmp_path / rel)
    deeper = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                               keras.layers.Dense(10, activation="softmax"),
                               keras.layers.Dense(10)])
    before = values(deeper.variables)
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.load_weights(deeper, tmp_path / rel)
    assert_bit_exact(before, deeper.variables)


@pytest.mark.parametrize("rel", WEIGHT_PATHS)
def test_fewer_layers_in_model_raises_and_changes_nothing(tmp_path, rel):
    deeper = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                               keras.layers.Dense(10, activation="softmax"),
                               keras.layers.Dense(10)])
    ks.save_weights(deeper, tmp_path / rel)
    model = ks.reference_model(seed=3)
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.load_weights(model, tmp_path / rel)
    assert_bit_exact(before, all_vars(model))


@pytest.mark.parametrize("rel", WEIGHT_PATHS)
def test_uncompiled_model_takes_the_weights_only(trained, tmp_path, rel):
    ks.save_weights(trained, tmp_path / rel)
    bare = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])
    ks.load_weights(bare, tmp_path / rel)
    assert_bit_exact(values(trained.variables), bare.variables)


@pytest.mark.parametrize("rel", WEIGHT_PATHS)
def test_weights_into_an_unbuilt_optimizer(trained, tmp_path, rel):
    ks.save_weights(trained, tmp_path / rel)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    assert not model.optimizer.built
    ks.load_weights(model, tmp_path / rel)
    assert_bit_exact(values(all_vars(trained)), all_vars(model))


def test_unbuilt_model_and_no_build_shapes_is_a_clear_error(trained, tmp_path):
    keras_file = tmp_path / "plain.weights.h5"
    trained.save_weights(keras_file)  # written by plain Keras: no build shapes
    with pytest.raises(ks.ArchitectureMismatchError, match="not built"):
        ks.load_weights(_net(), keras_file)


def test_plain_keras_weights_file_loads(trained, tmp_path):
    keras_file = tmp_path / "plain.weights.h5"
    trained.save_weights(keras_file)
    model = ks.reference_model(seed=5)
    ks.load_weights(model, keras_file)
    assert_bit_exact(values(all_vars(trained)), all_vars(model))


def test_plain_tf_checkpoint_loads(trained, tmp_path):
    prefix = tf.train.Checkpoint(model=trained, optimizer=trained.optimizer).write(
        str(tmp_path / "tf" / "ckpt"))
    model = ks.reference_model(seed=5)
    ks.load_weights(model, prefix)
    assert_bit_exact(values(all_vars(trained)), all_vars(model))


def test_checkpoint_is_what_tensorflow_reads(trained, tmp_path):
    ks.save_weights(trained, tmp_path / "w" / "my_model")
    assert {p.name for p in (tmp_path / "w").iterdir()} == {
        "my_model.index", "my_model.data-00000-of-00001", "my_model.kerasave.json"}
    model = ks.reference_model(seed=5)
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(
        str(tmp_path / "w" / "my_model")).assert_consumed()
    assert_bit_exact(values(all_vars(trained)), all_vars(model))


def test_h5_weights_are_what_keras_reads(trained, tmp_path):
    ks.save_weights(trained, tmp_path / "m.weights.h5")
    model = ks.reference_model(seed=5)
    model.load_weights(tmp_path / "m.weights.h5")
    assert_bit_exact(values(all_vars(trained)), all_vars(model))


def test_perturbed_then_restored_with_explicit_format(trained, tmp_path):
    saved = values(all_vars(trained))
    ks.save_weights(trained, tmp_path / "weights.bin", format="h5")
    perturb(trained)
    ks.load_weights(trained, tmp_path / "weights.bin", format="h5")
    assert_bit_exact(saved, all_vars(trained))


@pytest.mark.parametrize("rel", ["w.weights.h5", "ckpt/w"])
def test_a_bfloat16_model_saves_and_restores_exactly(tmp_path, rel):
    """Keras stores bfloat16 in HDF5 as two opaque bytes marked with a dtype attribute."""
    model = bfloat16_model()
    assert model.weights[0].dtype == "bfloat16"
    assert ks.save_weights(model, tmp_path / rel).ok
    saved = values(all_vars(model))
    perturb(model)
    ks.load_weights(model, tmp_path / rel)
    assert_bit_exact(saved, all_vars(model))
