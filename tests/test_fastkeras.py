"""kerasave's own .keras reader and writer: the same files Keras reads and writes."""

import zipfile

import keras
import numpy as np
import pytest

import kerasave as ks
from kerasave._fastpaths import zipwriter
from kerasave._fastpaths.h5read import member_span

from .conftest import all_vars, assert_bit_exact, values


def _no_native(monkeypatch):
    """Fail the test if kerasave falls back to Keras' own reader or writer."""
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to Keras")

    monkeypatch.setattr(keras.saving, "load_model", refuse)
    monkeypatch.setattr(keras.Model, "save", refuse)


def test_plain_keras_reads_what_kerasave_writes(trained, tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    with monkeypatch.context() as m:
        _no_native(m)
        ks.save_model(trained, path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every member's CRC-32 is right
        assert zf.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    loaded = keras.saving.load_model(path)
    assert_bit_exact(values(all_vars(trained)), all_vars(loaded))


def test_kerasave_reads_what_plain_keras_writes(trained, batch, tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    trained.save(path)
    native = keras.saving.load_model(path)
    with monkeypatch.context() as m:
        _no_native(m)
        ours = ks.load_model(path)
    assert_bit_exact(values(all_vars(native)), all_vars(ours))
    assert ours.optimizer.built and int(ours.optimizer.iterations) > 0
    data, labels = batch
    native.train_on_batch(data, labels)
    ours.train_on_batch(data, labels)  # the next step is the same step
    assert_bit_exact(values(all_vars(native)), all_vars(ours))


def test_a_plain_keras_file_with_a_flipped_weight_byte_is_refused(trained, tmp_path):
    path = tmp_path / "m.keras"
    trained.save(path)  # no kerasave manifest: the zip's CRC-32 is the check
    with zipfile.ZipFile(path) as zf:
        start, size = member_span(path, zf, "model.weights.h5")
    raw = bytearray(path.read_bytes())
    raw[start + size - 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ks.CorruptArtifactError, match="CRC"):
        ks.load_model(path)


def test_a_deflated_archive_loads_through_keras(trained, tmp_path):
    plain, deflated = tmp_path / "plain.keras", tmp_path / "deflated.keras"
    trained.save(plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(deflated, "w",
                                                         zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    loaded = ks.load_model(deflated)
    assert_bit_exact(values(all_vars(trained)), all_vars(loaded))


def test_models_with_assets_are_written_by_keras(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(zipwriter, "_has_assets", lambda model: True)
    saved = []
    original = keras.Model.save
    monkeypatch.setattr(keras.Model, "save",
                        lambda self, *a, **k: saved.append(1) or original(self, *a, **k))
    report = ks.save_model(trained, tmp_path / "m.keras")
    assert report.ok and saved == [1]


def test_loading_never_runs_the_initializers(tmp_path):
    calls = []

    @keras.saving.register_keras_serializable(package="kerasave_tests")
    class Counting(keras.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            calls.append(shape)
            return keras.ops.ones(shape, dtype=dtype)

    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(2, kernel_initializer=Counting())])
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "m.keras"
    ks.save_model(model, path)
    calls.clear()
    loaded = ks.load_model(path)
    assert calls == []
    assert np.array_equal(loaded.layers[0].kernel.numpy(), np.ones((3, 2), "float32"))


@pytest.mark.parametrize("units", [1, 300, 3000])
def test_configs_of_any_size_fill_the_userblock_exactly(tmp_path, units):
    # Many layers make a config.json of tens of KB: the HDF5 userblock grows to the
    # next power of two and config.json's trailing whitespace fills the rest.
    layers = [keras.Input((2,))] + [keras.layers.Dense(2, name=f"d{i}")
                                    for i in range(units // 10 + 1)]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    path = tmp_path / "m.keras"
    ks.save_model(model, path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        start, _ = member_span(path, zf, "model.weights.h5")
        assert start >= 512 and start & (start - 1) == 0  # a power of two
    loaded = keras.saving.load_model(path)
    assert_bit_exact(values(all_vars(model)), all_vars(loaded))


def test_h5_weights_are_keras_own_both_ways(trained, tmp_path, monkeypatch):
    ours, theirs = tmp_path / "ours.weights.h5", tmp_path / "theirs.weights.h5"
    with monkeypatch.context() as m:
        m.setattr(keras.Model, "save_weights",
                  lambda *a, **k: (_ for _ in ()).throw(AssertionError("fell back")))
        ks.save_weights(trained, ours)
    trained.save_weights(theirs)
    twin = ks.reference_model(seed=3)
    twin.load_weights(ours)  # plain Keras reads kerasave's file
    assert_bit_exact(values(all_vars(trained)), all_vars(twin))
    fresh = ks.reference_model(seed=4)
    with monkeypatch.context() as m:
        m.setattr(keras.Model, "load_weights",
                  lambda *a, **k: (_ for _ in ()).throw(AssertionError("fell back")))
        ks.load_weights(fresh, theirs)  # kerasave reads plain Keras' file, its own way
    assert_bit_exact(values(all_vars(trained)), all_vars(fresh))
