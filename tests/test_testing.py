"""kerasave.testing.assert_round_trip and the ``round_trip`` pytest fixture."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasave as ks
import kerasave.testing as kt
from kerasave.testing import FORMATS, assert_round_trip

from .conftest import all_vars, assert_bit_exact, values

pytest_plugins = ["pytester"]


class Net(keras.Model):
    """The checkpoint guide's subclassed model: no get_config, no constructor arguments."""

    def __init__(self):
        super().__init__()
        self.l1 = keras.layers.Dense(5)

    def call(self, x):
        return self.l1(x)


class Wide(keras.Model):
    """Subclassed, no get_config, and a constructor that needs an argument."""

    def __init__(self, units):
        super().__init__()
        self.l1 = keras.layers.Dense(units)

    def call(self, x):
        return self.l1(x)


@keras.saving.register_keras_serializable(package="kerasave_test_testing")
class Scale(keras.layers.Layer):
    """Deliberately broken: get_config forgets ``factor``, which changes the output."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return super().get_config()  # no "factor": a rebuilt layer multiplies by 1.0


def _compiled_subclassed(model, in_dim=3):
    model(np.ones((2, in_dim), np.float32))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x = np.random.default_rng(0).random((8, in_dim), dtype=np.float32)
    model.fit(x, x[:, :1] * 2.0, epochs=1, batch_size=4, verbose=0)
    return model


def _functional():
    inputs = keras.Input(shape=(8,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.Dropout(0.25, seed=3)(hidden)
    outputs = keras.layers.Dense(1, name="value")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse",
                  metrics=["mae"])
    x = np.random.default_rng(1).random((32, 8), dtype=np.float32)
    model.fit(x, x.sum(axis=1, keepdims=True), epochs=1, batch_size=8, verbose=0)
    return model


def _failed_formats(exc_info):
    return {fmt for fmt, _, _ in exc_info.value.failures}


def test_reference_model_passes_every_format(tmp_path, trained):
    before = values(all_vars(trained))
    reports = assert_round_trip(trained, tmp_path)
    assert list(reports) == list(FORMATS)
    for name, report in reports.items():
        assert report.ok, (name, str(report))
        assert any(c.name.startswith("reload: ") for c in report.checks), name
    assert reports["h5 weights"].format == "h5" and reports["h5 model"].format == "h5"
    names = {n: {c.name for c in r.checks} for n, r in reports.items()}
    assert {"reload: model variables", "reload: optimizer variables"} <= names["checkpoint"]
    assert {"reload: model variables", "reload: optimizer variables"} <= names["h5 weights"]
    assert "reload: predictions with the original weights" in names["json"]
    assert "reload: predictions" in names["keras"] and "reload: predictions" in names["h5 model"]
    assert "reload: serving outputs" in names["savedmodel"]
    assert_bit_exact(before, all_vars(trained))  # the model is left as it was


def test_functional_model_passes(tmp_path):
    model = _functional()
    reports = assert_round_trip(model, tmp_path)
    assert set(reports) == set(FORMATS) and all(r.ok for r in reports.values())
    # the Dropout seed state travels in the checkpoint and is compared there
    ckpt = {c.name: c for c in reports["checkpoint"].checks}
    assert ckpt["reload: model variables"].ok


def test_subclassed_model_fails_config_and_whole_formats_only(tmp_path):
    net = _compiled_subclassed(Net())
    with pytest.raises(AssertionError) as info:
        assert_round_trip(net, tmp_path)
    assert _failed_formats(info) == {"json", "yaml", "keras", "h5 model"}
    text = str(info.value)
    for name in ("json", "yaml", "keras", "h5 model"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{name}:"))
        assert "NotSerializableError" in line and "not registered" in line, line
    for fmt, check, _ in info.value.failures:
        assert check == "save", (fmt, check)
    # its weights survive, loaded into a fresh, unbuilt Net() that load_weights built
    reports = info.value.reports
    for name in ("checkpoint", "h5 weights", "savedmodel"):
        assert reports[name].ok, str(reports[name])
    load = {c.name: c for c in reports["checkpoint"].checks}["reload: load_weights"]
    assert "unbuilt Net()" in load.detail


def test_no_twin_loads_into_the_model_itself_and_puts_it_back(tmp_path):
    wide = _compiled_subclassed(Wide(4))  # Wide() cannot be called without units
    before = values(all_vars(wide))
    reports = assert_round_trip(wide, tmp_path, formats=["checkpoint", "h5 weights"])
    for report in reports.values():
        checks = {c.name: c for c in report.checks}
        assert "into the model itself" in checks["reload: load_weights"].detail
        assert checks["reload: model variables"].ok and checks["reload: optimizer variables"].ok
    assert_bit_exact(before, all_vars(wide))


def test_broken_get_config_is_caught_by_format_and_check(tmp_path):
    model = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Dense(4), Scale(3.0)])
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(AssertionError) as info:
        assert_round_trip(model, tmp_path)
    failures = info.value.failures
    assert _failed_formats(info) == {"json", "yaml", "keras", "h5 model"}
    checks = {(fmt, check) for fmt, check, _ in failures}
    assert ("keras", "save check 'predictions'") in checks
    assert ("h5 model", "save check 'predictions'") in checks
    # (the config formats' own round trip runs the rebuilt model on the original's values)
    assert ("json", "save check 'predictions'") in checks
    assert ("yaml", "save check 'predictions'") in checks
    lines = str(info.value).splitlines()
    assert (f"did not survive 4 of {len(FORMATS)} format(s): json, yaml, keras, h5 model"
            in lines[0])
    assert any(ln.startswith("  keras: save check 'predictions':") and "differ" in ln
               for ln in lines)
    # the weights and the serving export do not depend on the config
    assert all(info.value.reports[f].ok for f in ("checkpoint", "h5 weights", "savedmodel"))


def test_a_load_that_does_nothing_is_caught(tmp_path, trained, monkeypatch):
    def load_nothing(model, path, *, format=None):
        return ks.Report(str(path), "checkpoint", True, ())

    monkeypatch.setattr(kt, "load_weights", load_nothing)
    with pytest.raises(AssertionError) as info:
        assert_round_trip(trained, tmp_path, formats=["weights"])
    checks = {(fmt, check) for fmt, check, _ in info.value.failures}
    assert ("checkpoint", "reload check 'model variables'") in checks
    assert ("h5 weights", "reload check 'model variables'") in checks

    wide = _compiled_subclassed(Wide(4))  # the in-place path: values are changed first
    before = values(all_vars(wide))
    with pytest.raises(AssertionError) as info:
        assert_round_trip(wide, tmp_path, formats=["checkpoint"])
    assert ("checkpoint", "reload check 'model variables'") in {
        (f, c) for f, c, _ in info.value.failures}
    assert_bit_exact(before, all_vars(wide))


def test_formats_subset(tmp_path, trained):
    reports = assert_round_trip(trained, tmp_path / "a", formats=["yaml", "h5_weights"])
    assert list(reports) == ["h5 weights", "yaml"]
    (run,) = (tmp_path / "a").iterdir()
    written = sorted(p.name for p in run.iterdir() if not p.name.endswith(".kerasave.json"))
    assert written == ["model.weights.h5", "model.yaml"]
    assert list(assert_round_trip(trained, tmp_path / "b", formats="keras")) == ["keras"]
    assert list(assert_round_trip(trained, tmp_path / "c", formats=["h5"])) == [
        "h5 weights", "h5 model"]


@pytest.mark.parametrize("formats", [["json", "torchscript"], "pickle", [], ["h5 weight"]])
def test_unknown_format_is_a_value_error(tmp_path, trained, formats):
    with pytest.raises(ValueError, match="expected some of: checkpoint, h5 weights"):
        assert_round_trip(trained, tmp_path, formats=formats)
    assert list(tmp_path.iterdir()) == []  # nothing was saved


USER_TESTS = '''
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import kerasave as ks


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.l1 = keras.layers.Dense(5)

    def call(self, x):
        return self.l1(x)


def test_reference_model_survives(round_trip, tmp_path):
    reports = round_trip(ks.reference_model(seed=0), formats=["checkpoint", "json"])
    assert sorted(reports) == ["checkpoint", "json"]
    assert all(r.ok for r in reports.values())
    assert any(p.name.startswith("round-trip-") for p in tmp_path.iterdir())


def test_subclassed_model_as_json(round_trip):
    net = Net()
    net(np.ones((2, 3), np.float32))
    round_trip(net, formats=["h5 weights", "json"])
'''


USER_INI = """
[pytest]
filterwarnings =
    error
    ignore::DeprecationWarning:tensorflow.*
    ignore::DeprecationWarning:keras.*
    ignore::DeprecationWarning:h5py.*
    ignore::DeprecationWarning:google.*
    ignore::FutureWarning:keras.*
"""


def _doc_blocks():
    text = (Path(__file__).parents[1] / "docs" / "testing.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_round_trip_fixture_in_a_users_test_file(pytester):
    (docs_example,) = [b for b in _doc_blocks() if "def test_" in b]
    pytester.makepyfile(test_user_models=USER_TESTS, test_docs_example=docs_example)
    # A user's suite as strict as ours: warnings are errors, except TensorFlow's noise.
    pytester.makeini(USER_INI)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_user_models.py::test_subclassed_model_as_json*"])
    result.stdout.fnmatch_lines([
        "*Net did not survive 1 of 2 format(s): json*",
        "*json: save: NotSerializableError: Net is a subclassed model that is not registered*",
    ])
    result.stdout.no_fnmatch_line("*h5 weights: *")


def test_docs_example_without_pytest_runs(trained, capsys):
    (block,) = [b for b in _doc_blocks() if "TemporaryDirectory" in b]
    exec(compile(block, "docs/testing.md", "exec"), {"model": trained})  # noqa: S102
    assert capsys.readouterr().out.splitlines() == ["keras True", "h5 model True"]


def test_differences_with_nans_are_described_without_a_warning():
    from kerasave.compare.verify import array_difference

    expected = np.array([np.nan, 1.0], np.float32)
    assert array_difference(expected, expected.copy()) is None  # the same bits: equal
    why = array_difference(np.array([1.0, 2.0], np.float32),
                           np.array([np.nan, np.nan], np.float32))
    assert why == "2 of 2 values differ, max abs difference undefined (NaN)"
    why = array_difference(np.array([1.0, 2.0], np.float32), np.array([np.nan, 2.5], np.float32))
    assert why == "2 of 2 values differ, max abs difference 0.5"
