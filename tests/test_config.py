"""Configs: JSON/YAML, Keras 2 files, and refusing code."""

import json

import keras
import numpy as np
import pytest
import yaml

import kerasave as ks

from .conftest import FIXTURES

KERAS2 = FIXTURES / "keras2"


def test_yaml_is_plain_safe_yaml(trained):
    text = ks.to_yaml(trained)
    assert "!!python" not in text
    assert yaml.safe_load(text) == json.loads(ks.to_json(trained))


def test_json_and_yaml_rebuild_the_same_architecture(trained):
    for fresh in (ks.model_from_json(ks.to_json(trained)), ks.model_from_yaml(ks.to_yaml(trained))):
        assert json.loads(fresh.to_json())["config"] == json.loads(trained.to_json())["config"]
        assert not fresh.compiled


def test_native_keras_rejects_keras2_json():
    """The breakage (DESIGN.md): Keras 3 cannot read a Keras 2 config."""
    with pytest.raises((TypeError, ValueError)):
        keras.models.model_from_json((KERAS2 / "reference.json").read_text())


@pytest.mark.parametrize("name", ["reference.json", "reference.yaml"])
def test_keras2_reference_config_loads(name):
    model = ks.load_config(KERAS2 / name)
    assert isinstance(model, keras.Sequential)
    assert [tuple(w.shape) for w in model.weights] == [(32, 64), (64,), (64, 10), (10,)]
    assert model.input_shape == (None, 32)
    text = (KERAS2 / name).read_text()
    loader = ks.model_from_json if name.endswith(".json") else ks.model_from_yaml
    assert [tuple(w.shape) for w in loader(text).weights] == [tuple(w.shape) for w in model.weights]


@pytest.mark.parametrize("name", ["functional.json", "functional.yaml"])
def test_keras2_functional_config_loads(name):
    model = ks.load_config(KERAS2 / name)
    assert len(model.inputs) == 2 and len(model.outputs) == 2
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_keras2_yaml_really_has_python_tuples():
    assert "!!python/tuple" in (KERAS2 / "reference.yaml").read_text()


def test_hostile_yaml_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    text = (KERAS2 / "hostile.yaml").read_text().replace("/tmp/kerasave_pwned", str(marker))
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ks.UnsafeArtifactError) as info:
        ks.load_config(path)
    assert "!!python/object" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(ks.UnsafeArtifactError):
        ks.model_from_yaml(text)
    assert not marker.exists()


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']",
                                 "!!python/name:os.system", "!!python/object:builtins.dict {}"])
def test_every_other_python_tag_is_refused(tag):
    with pytest.raises(ks.UnsafeArtifactError):
        ks.model_from_yaml(f"class_name: Sequential\nconfig: {tag}\n")


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    text = model.to_json()
    with pytest.raises(ks.UnsafeArtifactError, match="Lambda"):
        ks.model_from_json(text)


def test_unknown_class_names_the_class():
    config = json.loads(ks.to_json(ks.reference_model()))
    config["config"]["layers"][1]["class_name"] = "NoSuchLayer"
    with pytest.raises(ks.KerasaveError, match="NoSuchLayer"):
        ks.model_from_json(json.dumps(config))


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '{"class_name": "Sequential"}'])
def test_garbage_json_is_corrupt(text):
    with pytest.raises(ks.CorruptArtifactError):
        ks.model_from_json(text)


def test_save_config_refuses_other_suffixes(trained, tmp_path):
    with pytest.raises(ks.UnknownFormatError):
        ks.save_config(trained, tmp_path / "model.txt")
    with pytest.raises(ks.UnknownFormatError, match="save_model"):
        ks.save_config(trained, tmp_path / "model.keras")
    assert list(tmp_path.iterdir()) == []


def test_load_config_gives_fresh_weights(trained, tmp_path):
    ks.save_config(trained, tmp_path / "m.json")
    fresh = ks.load_config(tmp_path / "m.json")
    assert not np.array_equal(np.asarray(fresh.weights[0]), np.asarray(trained.weights[0]))
