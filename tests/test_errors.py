"""Bad input gets a typed error naming the path; nothing is left half-written."""

import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import yaml

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


# -- foreign errors: one table, one context manager (kerasave._errors) ------------------

def test_first_line_of_any_exception():
    from kerasave._errors import first_line

    class Mute(Exception):
        def __str__(self):
            raise RuntimeError("no words")

    assert first_line(ValueError("")) == "ValueError"  # (not an IndexError)
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(ValueError("\n  shape (3,)  \nmore")) == "shape (3,)"
    assert first_line(KeyError("w"), typed=True) == "KeyError: 'w'"
    assert first_line(OSError(), typed=True) == "OSError"
    assert first_line(Mute()) == "Mute"


def test_every_foreign_type_the_table_names_exists():
    """As httpx checks that every httpcore exception is mapped: every type the table
    names is an exception of the module it names, once that module is imported (a
    misspelled name, or a type a new TensorFlow moved, would silently map nothing)."""
    import google.protobuf.message  # noqa: F401
    import tensorflow  # noqa: F401
    import yaml.constructor  # noqa: F401

    from kerasave._errors import FOREIGN, _resolved

    names = {name for row in FOREIGN for name in row.types}
    assert {name for name in names if _resolved(name) is None} == set()
    assert all(row.at for row in FOREIGN)


def test_the_error_module_imports_nothing_heavy():
    code = ("import sys, kerasave._errors; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'h5py', 'yaml', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.stdout.strip() == "[]"


def _raised(at, raise_it, path="m.x", what="could not read it"):
    from kerasave._errors import foreign_errors

    with pytest.raises(BaseException) as caught:
        with foreign_errors(path, what, at=at):
            raise_it()
    return caught.value


def _keras_config(class_name, **config):
    return {"class_name": class_name, "module": "keras.layers", "config": config,
            "registered_name": None}


def _tf_error():
    import tensorflow as tf

    tf.reshape(tf.zeros([0]), [8])


def _h5_damage(tmp_path):
    import h5py

    (tmp_path / "d.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    return lambda: h5py.File(tmp_path / "d.h5", "r")


@pytest.mark.parametrize("at,raise_it,expected,words", [
    # what readers raise for damage: CorruptArtifactError, "what: its first line"
    ("read", lambda: json.loads("[1,"), ks.CorruptArtifactError,
     "could not read it: Expecting value"),
    ("read", lambda: zipfile.ZipFile(io.BytesIO(b"PK no")), ks.CorruptArtifactError,
     "could not read it: File is not a zip file"),
    ("read", lambda: yaml.safe_load("a: [1"), ks.CorruptArtifactError,
     r"could not read it: while parsing a flow sequence .* line 1, column 6"),
    ("read", lambda: yaml.safe_load("!!python/name:os.system x"), ks.UnsafeArtifactError,
     "refusing an unknown YAML tag"),
    ("read", lambda: struct.unpack("<q", b"\0"), ks.CorruptArtifactError,
     "could not read it: unpack requires"),
    # anything else at a reader is kerasave's own bug: raised as it is
    ("read", lambda: None + 1, TypeError, "unsupported operand"),
    # TensorFlow running on a file: anything it raises
    ("run", _tf_error, ks.CorruptArtifactError, "could not read it: .*reshape"),
    # Keras' deserializer: its refusals and unknown classes say more than their types
    ("config", lambda: keras.saving.deserialize_keras_object(_keras_config(
        "Lambda", function={"class_name": "__lambda__",
                            "config": {"code": "x", "defaults": None, "closure": None}})),
     ks.UnsafeArtifactError, "safe_mode"),
    ("config", lambda: keras.saving.deserialize_keras_object(
        {"class_name": "NoSuchLayer", "config": {}}),
     ks.NotSerializableError, "names a class .* Could not locate class 'NoSuchLayer'"),
    ("config", lambda: keras.saving.deserialize_keras_object(
        _keras_config("Dense", units=2, no_such_argument=1)), ks.CorruptArtifactError,
     "could not read it: "),
    # ... TensorFlow's errors while a layer builds are raised as they are (a deferred
    # build builds again on them); a whole model's load maps them
    ("config", _tf_error, "InvalidArgumentError", "reshape"),
    ("load", _tf_error, ks.CorruptArtifactError, "could not read it: .*reshape"),
    ("load", lambda: keras.saving.deserialize_keras_object(
        {"class_name": "NoSuchLayer", "config": {}}),
     ks.NotSerializableError, "Could not locate class 'NoSuchLayer'"),
    # values into a model: a ValueError is a shape or a count that does not fit
    ("assign", lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]
                                        ).set_weights([np.zeros((4, 2))]),
     ks.ArchitectureMismatchError, "length 1, but the layer was expecting 2 weights"),
    ("assign", lambda: {}["kernel"], ks.CorruptArtifactError, "could not read it: 'kernel'"),
    # Keras writing: the disk's errors are the disk's; anything else, the model's
    ("write", lambda: open("/nonexistent/dir/x", "w"), FileNotFoundError, "No such file"),
    ("write", lambda: json.dumps({"f": object()}), ks.NotSerializableError,
     "could not read it: Object of type object is not JSON serializable"),
])
def test_foreign_errors_map_by_where_and_what(at, raise_it, expected, words):
    error = _raised(at, raise_it)
    if isinstance(expected, str):
        assert type(error).__name__ == expected
    else:
        assert type(error) is expected
    assert re.search(words, str(error)), str(error)
    if isinstance(error, ks.KerasaveError):
        assert error.path == "m.x" and error.__cause__ is not None


def test_foreign_errors_read_h5py_damage(tmp_path):
    error = _raised("read", _h5_damage(tmp_path), path=tmp_path / "d.h5",
                    what="unreadable HDF5 file")
    assert type(error) is ks.CorruptArtifactError
    assert str(error).startswith("unreadable HDF5 file: Unable to ")
    assert isinstance(error.__cause__, OSError)


def test_foreign_errors_name_the_path_of_kerasave_errors_that_had_none():
    def pathless():
        raise ks.UnsafeArtifactError("refusing the tag !!python/name")

    error = _raised("read", pathless, path="m.yaml")
    assert type(error) is ks.UnsafeArtifactError and error.path == "m.yaml"
    assert str(error) == "refusing the tag !!python/name (path: m.yaml)"

    def named():
        raise ks.CorruptArtifactError("bad", path="other.h5")

    assert _raised("read", named, path="m.yaml").path == "other.h5"


def test_a_recursion_error_is_corrupt_without_its_frames():
    def deep(n=0):
        return deep(n + 1)

    error = _raised("read", deep, what="not valid JSON")
    assert type(error) is ks.CorruptArtifactError
    assert str(error).startswith("not valid JSON: it nests too deeply")
    assert error.__cause__ is None and error.__suppress_context__


def test_a_mapped_error_frees_what_the_failed_code_held_without_the_collector():
    # (a SavedModel's check maps TensorFlow's error: the variables the failed load held,
    # pages of the mapped file, must be given back when the error is, not at a later gc)
    import gc
    import weakref

    from kerasave._errors import foreign_errors

    class Held:
        pass

    def fail(held):
        raise ValueError("bad value")

    held = Held()
    ref = weakref.ref(held)
    gc.disable()
    try:
        try:
            with foreign_errors("m.h5", "could not read the weights", at="run"):
                fail(held)
        except ks.CorruptArtifactError:
            pass
        del held
        assert ref() is None
    finally:
        gc.enable()
