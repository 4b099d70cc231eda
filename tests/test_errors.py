"""Bad input gets a typed error naming the path; nothing is left half-written."""

import os

import keras
import numpy as np
import pytest

import kerasave as ks
from kerasave.formats.checkpoint import CheckpointHandler

from .conftest import all_vars, assert_bit_exact, values


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        return self.dense(x)


def _net():
    net = Net()
    net.compile(optimizer="adam", loss="mse")
    net(np.zeros((1, 3), np.float32))  # build by calling, as users do
    return net


@pytest.mark.parametrize("call,rel", [("save_config", "m.json"), ("save_config", "m.yaml"),
                                      ("save_model", "m.keras"), ("save_model", "m.h5")])
def test_subclassed_model_without_config_is_refused_before_writing(tmp_path, call, rel):
    with pytest.raises(ks.NotSerializableError, match="not registered"):
        getattr(ks, call)(_net(), tmp_path / rel)
    assert list(tmp_path.iterdir()) == []


def test_subclassed_model_config_calls_refuse():
    with pytest.raises(ks.NotSerializableError):
        ks.to_json(_net())
    with pytest.raises(ks.NotSerializableError):
        ks.to_yaml(_net())


def test_subclassed_model_weights_and_export_still_save(tmp_path):
    net = _net()
    assert ks.save_weights(net, tmp_path / "w" / "ckpt").ok
    assert ks.save_weights(net, tmp_path / "w.h5").ok
    assert ks.save_model(net, tmp_path / "serving").ok


def test_unbuilt_model_cannot_be_saved(tmp_path):
    with pytest.raises(ks.NotSerializableError, match="not built"):
        ks.save_weights(Net(), tmp_path / "w.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("load", [
    lambda p: ks.load_weights(ks.reference_model(), p),
    lambda p: ks.load_model(p),
    lambda p: ks.load_config(p),
    lambda p: ks.inspect(p),
    lambda p: ks.verify(ks.reference_model(), p),
])
def test_missing_artifact(tmp_path, load):
    with pytest.raises(ks.ArtifactNotFoundError) as info:
        load(tmp_path / "nothing-here.h5")
    assert isinstance(info.value, FileNotFoundError)
    assert "nothing-here.h5" in str(info.value)


def test_unknown_format_names(trained, tmp_path):
    with pytest.raises(ks.UnknownFormatError, match="checkpoint, h5"):
        ks.save_weights(trained, tmp_path / "w", format="pickle")
    with pytest.raises(ks.UnknownFormatError, match="save_model"):
        ks.save_weights(trained, tmp_path / "w.keras")
    with pytest.raises(ks.UnknownFormatError, match="save_config"):
        ks.save_model(trained, tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rel,content", [
    ("m.h5", b""), ("m.h5", b"garbage" * 10), ("m.keras", b"PK\x03\x04broken"),
    ("m.keras", b"not a zip"), ("m.json", b"\xff\xfe"), ("m.yaml", b"a: [1, 2"),
])
def test_damaged_files_are_corrupt(tmp_path, rel, content):
    path = tmp_path / rel
    path.write_bytes(content)
    with pytest.raises(ks.CorruptArtifactError) as info:
        if rel.endswith((".json", ".yaml")):
            ks.load_config(path)
        else:
            ks.load_model(path)
    assert str(path) in str(info.value)


def test_truncated_h5_weights_are_corrupt_and_change_nothing(trained, tmp_path):
    path = tmp_path / "w.h5"
    ks.save_weights(trained, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    model = ks.reference_model(seed=4)
    before = values(all_vars(model))
    with pytest.raises(ks.CorruptArtifactError):
        ks.load_weights(model, path)
    assert_bit_exact(before, all_vars(model))


def test_truncated_checkpoint_is_corrupt_and_changes_nothing(trained, tmp_path):
    prefix = tmp_path / "w" / "ckpt"
    ks.save_weights(trained, prefix)
    data = tmp_path / "w" / "ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    model = ks.reference_model(seed=4)
    before = values(all_vars(model))
    with pytest.raises(ks.CorruptArtifactError):
        ks.load_weights(model, prefix)
    assert_bit_exact(before, all_vars(model))


def test_failed_verification_leaves_the_previous_artifact(trained, tmp_path, monkeypatch):
    prefix = tmp_path / "w" / "ckpt"
    first = ks.reference_model(seed=7)
    ks.save_weights(first, prefix)
    before = {p.name: p.read_bytes() for p in (tmp_path / "w").iterdir()}

    def broken_check(self, model, path, own=False):
        return [ks.Check("model variables", False, "injected failure")]

    monkeypatch.setattr(CheckpointHandler, "check", broken_check)
    with pytest.raises(ks.RoundTripError) as info:
        ks.save_weights(trained, prefix)
    report = info.value.report
    assert not report.ok and report.failed[0].detail == "injected failure"
    assert report.path == str(prefix)
    after = {p.name: p.read_bytes() for p in (tmp_path / "w").iterdir()}
    assert after == before, "the previous checkpoint must be untouched, no temporaries left"


def test_a_failed_round_trip_names_the_artifact_not_its_temporary(trained, tmp_path,
                                                                   monkeypatch):
    def failing_check(self, model, path, own=False):
        raise_here = ks.CorruptArtifactError("could not read the weights", path=path)
        return [ks.Check("load", False, str(raise_here)),
                ks.Check("model variables", False, f"{path.name}: 1 of 3 values differ")]

    monkeypatch.setattr(CheckpointHandler, "check", failing_check)
    prefix = tmp_path / "w" / "ckpt"
    with pytest.raises(ks.RoundTripError) as info:
        ks.save_weights(trained, prefix)
    message = str(info.value)
    assert "kerasave-tmp" not in message, message
    assert message == (f"round trip of the 'checkpoint' artifact failed: load: could not read "
                       f"the weights; model variables: ckpt: 1 of 3 values differ "
                       f"(path: {prefix})")


def test_failed_write_leaves_nothing(trained, tmp_path, monkeypatch):
    def boom(self, model, path):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    from kerasave.formats.keras import KerasHandler

    monkeypatch.setattr(KerasHandler, "write", boom)
    with pytest.raises(OSError):
        ks.save_model(trained, tmp_path / "m.keras")
    assert os.listdir(tmp_path) == []


def test_loading_with_the_wrong_call_names_the_right_one(trained, tmp_path):
    ks.save_weights(trained, tmp_path / "w.weights.h5")
    ks.save_config(trained, tmp_path / "c.json")
    with pytest.raises(ks.UnknownFormatError, match="load_weights"):
        ks.load_model(tmp_path / "w.weights.h5")
    with pytest.raises(ks.UnknownFormatError, match="load_config"):
        ks.load_model(tmp_path / "c.json")
    with pytest.raises(ks.UnknownFormatError, match="load_config"):
        ks.load_weights(trained, tmp_path / "c.json")


def test_an_unknown_class_names_the_class(tmp_path):
    @keras.saving.register_keras_serializable(package="kerasave_unknown")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential([keras.Input((3,)), Doubler()])
    model.compile(optimizer="adam", loss="mse")
    ks.save_model(model, tmp_path / "m.keras")
    ks.save_config(model, tmp_path / "m.json")
    registered = keras.saving.get_custom_objects()
    name = next(k for k, v in registered.items() if v is Doubler)
    del registered[name]
    with pytest.raises(ks.NotSerializableError, match="Could not locate class 'Doubler'"):
        ks.load_model(tmp_path / "m.keras")
    with pytest.raises(ks.NotSerializableError, match="Could not locate class 'Doubler'"):
        ks.load_config(tmp_path / "m.json")
