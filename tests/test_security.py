"""No code from files: Lambda and TFSMLayer, zip tricks, HDF5 links."""

import json
import zipfile

import h5py
import keras
import numpy as np
import pytest

import kerasave as ks


def _lambda_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2),
                              keras.layers.Lambda(lambda x: x * 2, name="doubler")])
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.parametrize("rel", ["m.keras", "m.h5"])
def test_lambda_whole_models_refused_unless_trusted(tmp_path, rel):
    model = _lambda_model()
    path = tmp_path / rel
    model.save(path)  # written by plain Keras
    with pytest.raises(ks.UnsafeArtifactError, match="doubler"):
        ks.load_model(path)
    trusted = ks.load_model(path, safe_mode=False)
    x = np.ones((1, 4), np.float32)
    assert np.array_equal(np.asarray(trusted(x)), np.asarray(model(x)))


@pytest.mark.parametrize("call,rel", [("save_model", "m.keras"), ("save_model", "m.h5"),
                                      ("save_config", "m.json"), ("save_config", "m.yaml")])
def test_a_verified_save_of_a_lambda_model_is_refused_before_writing(tmp_path, call, rel):
    """Verifying would read the file back, running the Lambda's code from it."""
    model = _lambda_model()
    with pytest.raises(ks.UnsafeArtifactError) as info:
        getattr(ks, call)(model, tmp_path / rel)
    message = str(info.value)
    assert "'doubler'" in message and "verify=False" in message and "safe_mode=False" in message
    assert list(tmp_path.iterdir()) == []  # nothing written
    # Unverified, it saves; reading it back is the caller's trusted choice.
    assert getattr(ks, call)(model, tmp_path / rel, verify=False).ok
    with pytest.raises(ks.UnsafeArtifactError, match="doubler"):
        (ks.load_model if call == "save_model" else ks.load_config)(tmp_path / rel)
    x = np.ones((1, 4), np.float32)
    if call == "save_model":
        trusted = ks.load_model(tmp_path / rel, safe_mode=False)
        assert np.array_equal(np.asarray(trusted(x)), np.asarray(model(x)))
    # A SavedModel export holds the traced function, not the Python code: verified.
    assert ks.save_model(model, tmp_path / "served").ok


@keras.saving.register_keras_serializable("kerasave_tests")
class _Twice(keras.layers.Layer):
    """Uses a Lambda inside, but its config holds no code."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Lambda(lambda x: x * 2)

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


@keras.saving.register_keras_serializable("kerasave_tests")
class _MyLambda(keras.layers.Lambda):
    pass


@pytest.mark.parametrize("rel", ["m.keras", "m.h5", "m.json"])
def test_the_refusal_judges_the_config_written_not_the_layers(tmp_path, rel):
    call = ks.save_config if rel.endswith(".json") else ks.save_model
    inside = keras.Sequential([keras.Input((4,)), _Twice(name="twice")])
    inside.compile(optimizer="adam", loss="mse")
    assert call(inside, tmp_path / rel).ok  # no code in the file: verified
    subclass = keras.Sequential([keras.Input((4,)), _MyLambda(lambda x: x * 2, name="mine")])
    subclass.compile(optimizer="adam", loss="mse")
    with pytest.raises(ks.UnsafeArtifactError, match=r"_MyLambda layer \('mine'\)"):
        call(subclass, tmp_path / ("sub-" + rel))
    assert not (tmp_path / ("sub-" + rel)).exists()


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
def test_a_lambda_loss_counts_only_where_the_model_is_compiled(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean((y - p) ** 2))
    # A config file is read back uncompiled: the lambda loss is not in play.
    assert ks.save_config(model, tmp_path / "m.json").ok
    assert isinstance(ks.load_config(tmp_path / "m.json"), keras.Model)
    # A whole model is compiled on load: that would run the lambda.
    with pytest.raises(ks.UnsafeArtifactError, match="compile settings"):
        ks.save_model(model, tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    ks.save_model(model, tmp_path / "m.keras", verify=False)
    with pytest.raises(ks.UnsafeArtifactError, match="compile settings"):
        ks.load_model(tmp_path / "m.keras")
    uncompiled = ks.load_model(tmp_path / "m.keras", compile=False)
    assert not uncompiled.compiled


def test_lambda_json_refused(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(_lambda_model().to_json())
    with pytest.raises(ks.UnsafeArtifactError, match="Lambda"):
        ks.load_config(path)


def test_tfsmlayer_reference_refused():
    config = json.loads(ks.to_json(ks.reference_model()))
    config["config"]["layers"][1] = {
        "module": "keras.layers", "class_name": "TFSMLayer", "registered_name": None,
        "config": {"name": "remote", "filepath": "/somewhere/else", "call_endpoint": "serve"}}
    with pytest.raises(ks.UnsafeArtifactError, match="TFSMLayer"):
        ks.model_from_json(json.dumps(config))


def _rewrite_zip(src, dst, extra_member=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        if extra_member:
            zout.writestr(extra_member, b"x")


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/evil", "a/../../b"])
def test_zip_members_outside_the_archive_refused(trained, tmp_path, member):
    ks.save_model(trained, tmp_path / "good.keras")
    _rewrite_zip(tmp_path / "good.keras", tmp_path / "bad.keras", member)
    with pytest.raises(ks.UnsafeArtifactError, match="outside"):
        ks.load_model(tmp_path / "bad.keras")


def test_zip_bomb_refused(trained, tmp_path):
    ks.save_model(trained, tmp_path / "good.keras")
    with zipfile.ZipFile(tmp_path / "good.keras") as zin, \
            zipfile.ZipFile(tmp_path / "bomb.keras", "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        zout.writestr("padding.bin", b"\0" * (64 * 2**20))
    with pytest.raises(ks.UnsafeArtifactError, match="zip bomb"):
        ks.load_model(tmp_path / "bomb.keras")


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_hdf5_links_refused(trained, tmp_path, kind):
    path = tmp_path / "w.weights.h5"
    ks.save_weights(trained, path)
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.arange(4.0)
    # A hostile file comes without kerasave's manifest (which would catch any edit).
    path.with_name(path.name + ".kerasave.json").unlink()
    with h5py.File(path, "r+") as f:
        if kind == "external":
            f["layers/sneaky"] = h5py.ExternalLink(str(secret), "/data")
        else:
            f["layers/sneaky"] = h5py.SoftLink("/layers/dense/vars/0")
    model = ks.reference_model(seed=2)
    before = [np.asarray(v).copy() for v in model.weights]
    what = "an external link" if kind == "external" else "a soft link"
    with pytest.raises(ks.UnsafeArtifactError, match=f"{what} at /layers/sneaky"):
        ks.load_weights(model, path)
    with pytest.raises(ks.UnsafeArtifactError):
        ks.inspect(path)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.weights))


def test_hdf5_external_storage_refused(tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(4,), dtype="float32",
                         external=[(str(raw), 0, 16)])
    with pytest.raises(ks.UnsafeArtifactError, match="layers/dense/vars/0 is stored in external"):
        ks.load_weights(ks.reference_model(), path)


def test_hdf5_virtual_dataset_refused(tmp_path):
    """A virtual dataset maps its values from other datasets, possibly in other files."""
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["x"] = np.full(64, 42.0, np.float32)
    path = tmp_path / "m.h5"
    ks.save_model(ks.reference_model(), path)
    path.with_name(path.name + ".kerasave.json").unlink()  # a hostile file has none
    with h5py.File(path, "r+") as f:
        names = []
        f.visit(names.append)
        bias = next(n for n in names if n.startswith("model_weights") and n.endswith("bias")
                    and f[n].shape == (64,))
        parent, name = bias.rsplit("/", 1)
        del f[bias]
        layout = h5py.VirtualLayout(shape=(64,), dtype=np.float32)
        layout[...] = h5py.VirtualSource(str(secret), "x", shape=(64,))
        f[parent].create_virtual_dataset(name, layout)
    with pytest.raises(ks.UnsafeArtifactError, match=f"/{bias} is virtual"):
        ks.load_model(path)
