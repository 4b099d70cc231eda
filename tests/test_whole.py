"""Whole models: .keras, legacy .h5 (incl. Keras 2 files and loss="mse"), SavedModel."""

import keras
import numpy as np
import pytest

import kerasave as ks

from .conftest import FIXTURES, all_vars, assert_bit_exact, bfloat16_model, next_loss, values

KERAS2 = FIXTURES / "keras2"


def _mse_model():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse", metrics=["mae"])
    data, labels = ks.reference_data(64)
    model.fit(data, labels, epochs=1, batch_size=16, verbose=0)
    return model


def test_native_keras_fails_on_mse_h5(tmp_path):
    """The breakage (DESIGN.md)."""
    model = _mse_model()
    model.save(tmp_path / "native.h5")
    try:
        loaded = keras.saving.load_model(tmp_path / "native.h5")
    except ValueError:
        return  # Keras 3.12 through 3.15
    # Keras 3.16 (make test-next) reads it: the breakage is fixed upstream, and
    # what Keras reads kerasave reads too, the same weights, compiled.
    ours = ks.load_model(tmp_path / "native.h5")
    assert loaded.compiled and ours.compiled
    assert_bit_exact(values(loaded.weights), ours.weights)


@pytest.mark.parametrize("rel", ["m.h5", "m.hdf5", "m.keras"])
def test_mse_model_loads_and_resumes_exactly(tmp_path, rel):
    model = _mse_model()
    assert ks.save_model(model, tmp_path / rel).ok
    loaded = ks.load_model(tmp_path / rel)
    assert loaded.get_compile_config()["loss"] == "mse"
    assert_bit_exact(values(all_vars(model)), all_vars(loaded))
    data, labels = ks.reference_data(16, seed=9)
    assert next_loss(model, data, labels) == next_loss(loaded, data, labels)
    assert_bit_exact(values(all_vars(model)), all_vars(loaded))


def test_native_h5_drops_optimizer_state_kerasave_keeps_it(trained, tmp_path):
    trained.save(tmp_path / "native.h5")
    native = keras.saving.load_model(tmp_path / "native.h5")
    native_state = values(native.optimizer.variables)
    ours = ks.load_model(tmp_path / "native.h5")  # the same file, written by plain Keras
    assert_bit_exact(values(trained.optimizer.variables), ours.optimizer.variables)
    assert len(native_state) != len(ours.optimizer.variables) or any(
        a.tobytes() != b.tobytes()
        for a, b in zip(native_state, values(trained.optimizer.variables)))


def test_saves_after_keras_own_h5_save_keep_the_optimizer(trained, tmp_path):
    """Keras' legacy writer pops "optimizer" from the model's compile config; the
    next save must still record (and load) the model's Adam, not a default RMSprop."""
    trained.save(tmp_path / "native.h5")
    # The damage, as it happens on Keras 3.12 through 3.15 (3.16 leaves the config whole):
    # either way the next saves keep the model's optimizer.
    stripped = "optimizer" not in trained._compile_config.config
    assert stripped or tuple(int(p) for p in keras.__version__.split(".")[:2]) >= (3, 16)
    for rel in ["m.keras", "m.h5"]:
        assert ks.save_model(trained, tmp_path / rel).ok
        loaded = ks.load_model(tmp_path / rel)
        assert type(loaded.optimizer) is type(trained.optimizer)
        assert_bit_exact(values(all_vars(trained)), all_vars(loaded))


def test_a_compile_config_of_the_users_own_is_not_mended():
    from kerasave.formats._base import mend_compile_config

    model = ks.reference_model()
    own = {"loss": "mse", "lr": 0.01}  # a model that keeps its own compile arguments
    model._compile_config.config.clear()
    model._compile_config.config.update(own)
    mend_compile_config(model)
    assert model._compile_config.config == own


def test_load_model_compile_false(trained, tmp_path):
    for rel in ["m.keras", "m.h5"]:
        ks.save_model(trained, tmp_path / rel)
        loaded = ks.load_model(tmp_path / rel, compile=False)
        assert not loaded.compiled
        assert_bit_exact(values(trained.variables), loaded.variables)


def test_model_saved_before_training_loads_without_warnings(tmp_path):
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="mse")
    assert not model.optimizer.built
    for rel in ["m.keras", "m.h5", "w/ckpt", "w.h5"]:
        save = ks.save_weights if rel.startswith("w") else ks.save_model
        assert save(model, tmp_path / rel).ok, rel


def test_keras2_h5_whole_model_loads():
    reference = np.load(KERAS2 / "reference_weights.npz")
    model = ks.load_model(KERAS2 / "reference_model.h5")  # with Keras 2's Adam state
    assert int(model.optimizer.iterations.numpy()) == 14
    weights = [reference[f"w{i}"] for i in range(len(model.weights))]
    assert_bit_exact(weights, model.weights)
    out = np.asarray(model(reference["probe_x"], training=False))
    assert np.allclose(out, reference["probe_y"], rtol=0, atol=1e-6)


def test_keras2_mse_h5_whole_model_loads():
    reference = np.load(KERAS2 / "mse_weights.npz")
    model = ks.load_model(KERAS2 / "mse_model.h5")
    assert model.get_compile_config()["loss"] == "mse"
    assert_bit_exact([reference[f"w{i}"] for i in range(len(model.weights))], model.weights)


def test_keras2_h5_weights_load():
    reference = np.load(KERAS2 / "reference_weights.npz")
    model = ks.reference_model(seed=1)
    report = ks.load_weights(model, KERAS2 / "reference_weights.h5")
    assert report.ok
    assert_bit_exact([reference[f"w{i}"] for i in range(4)], model.weights)


def test_savedmodel_holds_no_optimizer(trained, tmp_path):
    ks.save_model(trained, tmp_path / "export")
    info = ks.inspect(tmp_path / "export")
    assert info.format == "savedmodel" and not info.has_optimizer
    assert info.versions.get("tensorflow")


def test_a_bfloat16_model_is_refused_by_the_legacy_h5_format_only(tmp_path):
    model = bfloat16_model()
    with pytest.raises(ks.NotSerializableError, match="cannot hold bfloat16 variables"):
        ks.save_model(model, tmp_path / "m.h5")
    assert not any(tmp_path.iterdir())  # nothing written, not even a temporary
    assert ks.save_model(model, tmp_path / "m.keras").ok
    loaded = ks.load_model(tmp_path / "m.keras")
    assert_bit_exact(values(all_vars(model)), all_vars(loaded))


def test_a_mixed_precision_model_round_trips_through_legacy_h5(tmp_path):
    """compile() wraps the optimizer in a LossScaleOptimizer, which the legacy writer
    records: the load must compile with what was given, as the original was."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        data = np.random.default_rng(0).random((8, 4), dtype=np.float32)
        model.fit(data, data[:, :2], verbose=0)
        assert ks.save_model(model, tmp_path / "m.h5").ok
        loaded = ks.load_model(tmp_path / "m.h5")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert type(loaded.optimizer) is keras.optimizers.LossScaleOptimizer
    assert loaded.get_compile_config()["optimizer"] == model.get_compile_config()["optimizer"]
    assert_bit_exact(values(all_vars(model)), all_vars(loaded))


@pytest.mark.parametrize("rel", ["m.keras", "m.h5"])
def test_an_adapted_normalization_round_trips(tmp_path, rel):
    """adapt() builds the layer on the data's batch size; legacy h5 holds no build
    configs, so it comes back built on None, which is the same model."""
    x = np.random.default_rng(0).random((100, 8)).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([keras.Input((8,)), norm, keras.layers.Dense(4)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x[:, :4], epochs=1, batch_size=50, verbose=0)
    report = ks.save_model(model, tmp_path / rel)
    assert report.ok
    config = {c.name: c.detail for c in report.checks}["config"]
    assert ("build configs aside" in config) == rel.endswith(".h5"), config
    loaded = ks.load_model(tmp_path / rel)
    assert_bit_exact(values(all_vars(model)), all_vars(loaded))
    for name in ("mean", "variance"):
        assert np.array_equal(getattr(loaded.layers[0], name).numpy(),
                              getattr(norm, name).numpy())
    assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # The architecture itself is still compared: a changed layer config fails.
    from kerasave.compare.verify import compare_whole_models

    other = keras.Sequential([keras.Input((8,)), keras.layers.Normalization(axis=None),
                              keras.layers.Dense(4)])
    checks = compare_whole_models(model, other, build_configs=False)
    assert not {c.name: c for c in checks}["config"].ok


@pytest.mark.parametrize("rel", ["m.keras", "m.h5"])
def test_a_save_serializes_the_live_models_config_once(trained, tmp_path, monkeypatch, rel):
    calls = []
    real = keras.Model.to_json

    def counting(self, **kwargs):
        if self is trained:
            calls.append(1)
        return real(self, **kwargs)

    monkeypatch.setattr(keras.Model, "to_json", counting)
    assert ks.save_model(trained, tmp_path / rel).ok
    assert len(calls) == 1  # the preflight's, reused by the config check
    # Outside a save nothing is kept: a change shows at once.
    first = ks.to_json(trained)
    trained.layers[0].trainable = not trained.layers[0].trainable
    try:
        assert ks.to_json(trained) != first
    finally:
        trained.layers[0].trainable = not trained.layers[0].trainable
