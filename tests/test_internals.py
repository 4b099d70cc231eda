"""Private Keras/TensorFlow names: one seam, probed fast paths, one switch.

Every fast path is an optimisation with a public twin: these tests run the
formats both ways and compare, switch the fast paths off with
``KERASAVE_FAST_PATHS=0``, and break them on purpose (a failed probe, a fast
path that raises mid-operation) to see kerasave fall back, warn once, and still
give the same values, while a damaged file is still reported as damaged.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import kerasave as ks
from kerasave import _fastpaths as _fastpaths
from kerasave._fastpaths import FastPathWarning, savinglib
from kerasave._runtime import support as _support
from tests.conftest import all_vars, assert_bit_exact, perturb, values

ROOT = Path(__file__).parents[1]
# Modules only kerasave._fastpaths may import (an import of one runs TensorFlow's or
# Keras' private code, whose names move between releases).
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow.core", "tensorflow.compiler",
                   "tensorflow.tsl", "tf_keras")
# Private names of other libraries (not Keras', not TensorFlow's) kerasave uses, and why.
FOREIGN_PRIVATE = {"_call_s3": "s3fs: one S3 operation (upload_part), which it has no "
                               "public call for"}
# What modules outside kerasave._fastpaths never use: the mechanism's own workings.
MECHANISM = {"on", "require", "_failed", "_probing", "_PATHS"}

SAVES = [("weights", "checkpoint", "w/ckpt"), ("weights", "h5", "w.weights.h5"),
         ("model", "keras", "m.keras"), ("model", "h5", "m.h5")]


NIGHTLY = any(d in _support.NIGHTLIES for d in _support.distributions().values())


def _doctor(env: dict[str, str]) -> dict:
    run = subprocess.run([sys.executable, "-m", "kerasave", "doctor", "--json"],
                         capture_output=True, text=True, timeout=300,
                         env=dict({k: v for k, v in os.environ.items() if k != _fastpaths.ENV},
                                  TF_CPP_MIN_LOG_LEVEL="3", **env))
    assert run.returncode == (1 if NIGHTLY else 0), run.stderr  # (1: outside the range)
    return json.loads(run.stdout)


def _package() -> dict[Path, ast.Module]:
    """Every module of kerasave (the installed copy, when run outside the tree)."""
    package = Path(ks.__file__).parent
    return {p.relative_to(package.parent): ast.parse(p.read_text())
            for p in sorted(package.rglob("*.py"))}


def _keras_and_tf_private() -> set[str]:
    """The private names of the Keras and TensorFlow objects kerasave handles."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    objects = [keras.Model, keras.Sequential, keras.layers.Layer, keras.layers.Dense,
               keras.Variable, keras.optimizers.Optimizer, keras.optimizers.Adam,
               keras.optimizers.LossScaleOptimizer, keras.metrics.Metric, keras.losses.Loss,
               keras.callbacks.Callback, keras.initializers.Initializer, tf.Variable, tf.Module,
               tf.Tensor, tf.train.Checkpoint, tf.train.CheckpointManager, model,
               model.optimizer, model.weights[0]]
    names = set()
    for obj in objects:
        names |= {n for n in dir(obj) if n.startswith("_") and not n.startswith("__")}
        names |= {n for n in getattr(obj, "__dict__", {}) if n.startswith("_")
                  and not n.startswith("__")}
    return names


def _private_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """Each private attribute a module reads or writes (``x._name``, and
    ``getattr(x, "_name")`` and the like), and each import of a private module. One
    of ``self``/``cls`` that the module defines itself is the module's own."""
    found = []
    defined = _defined(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                    and name in defined):
                continue
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)):
            name = node.args[1].value
        else:
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif (isinstance(node, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                                  "__import__")):
                modules = [node.args[0].value]
            found += [(node.lineno, f"import {m}") for m in modules
                      if m.startswith(PRIVATE_MODULES)]
            continue
        if name.startswith("_") and not name.startswith("__"):
            found.append((node.lineno, name))
    return found


def _defined(tree: ast.Module) -> set[str]:
    """The names a module defines: functions, classes, assigned names and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
    return names


def test_private_names_appear_only_in_the_internals():
    """No module outside kerasave._fastpaths imports keras.src or tensorflow.python or
    touches a private attribute that is not kerasave's own: every private Keras or
    TensorFlow name is a fast path, behind ``attempt``."""
    modules = _package()
    outside = {p: t for p, t in modules.items() if "_fastpaths" not in p.parts}
    assert len(outside) > 40 and len(modules) - len(outside) >= 10
    # kerasave's own private names: what the modules outside the internals define,
    # and the package's modules; never one a Keras or TensorFlow object has.
    keras_tf = _keras_and_tf_private()
    own = {p.stem for p in modules} | {p.parent.name for p in modules}
    for tree in outside.values():
        own |= _defined(tree)
    own -= keras_tf
    found = [f"{path}:{line}: {name}" for path, tree in outside.items()
             for line, name in _private_uses(tree)
             if name.startswith("import ") or (name not in own and name not in FOREIGN_PRIVATE)]
    assert found == []
    # The scan sees what it looks for: the internals' private uses are found.
    internal = {name for p, t in modules.items() if "_fastpaths" in p.parts
                for _, name in _private_uses(t)}
    assert {"import keras.src.saving.saving_lib", "_compile_config", "_initial_epoch",
            "_object_map", "_flatten_layers"} <= internal
    assert keras_tf & {"_compile_config", "_flatten_layers", "_tracker"} == \
        {"_compile_config", "_flatten_layers", "_tracker"}


def test_every_fallback_goes_through_attempt():
    """Outside kerasave._fastpaths no module decides between a fast path and its public
    twin itself: it neither catches ``Unsupported`` nor asks whether a fast path is on,
    nor switches one off. Inside, only the mechanism itself calls ``on``."""
    found = []
    for path, tree in _package().items():
        inside = "_fastpaths" in path.parts
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None and not inside:
                caught = {n.id if isinstance(n, ast.Name) else n.attr
                          for n in ast.walk(node.type) if isinstance(n, (ast.Name, ast.Attribute))}
                if "Unsupported" in caught:
                    found.append(f"{path}:{node.lineno}: except Unsupported")
            elif (isinstance(node, ast.ImportFrom) and not inside
                  and (node.module or "").startswith("kerasave._fastpaths")):
                found += [f"{path}:{node.lineno}: imports {a.name}" for a in node.names
                          if a.name in MECHANISM]
            elif isinstance(node, ast.Attribute) and not inside and node.attr in MECHANISM \
                    and isinstance(node.value, ast.Name) and "internals" in node.value.id:
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("on", "_failed")
                  and not (inside and path.name == "__init__.py")):
                found.append(f"{path}:{node.lineno}: {node.func.id}()")
    assert found == []


def test_no_module_is_over_600_lines():
    package = Path(ks.__file__).parent  # (the installed copy, when run outside the tree)
    sizes = {str(p.relative_to(package)): len(p.read_text().splitlines())
             for p in package.rglob("*.py")}
    assert len(sizes) > 40
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_doctor_lists_every_fast_path_and_the_switch_turns_them_all_off():
    on = _doctor({})
    assert on["supported"] is (not NIGHTLY) and on["fast_paths_enabled"] is True
    names = set(_fastpaths.fast_paths())
    assert set(on["fast_paths"]) == names and len(names) >= 10
    off_here = {name for name, state in on["fast_paths"].items() if not state}
    assert on["fell_back"] == sorted(off_here) and set(on["fast_path_notes"]) == off_here
    if NIGHTLY:  # a fast path may fall back there (its probe says why); most stay on
        assert len(off_here) <= 3, on["fast_path_notes"]
        assert all(on["versions"][p] is not None for p in ("tensorflow", "keras"))
        assert on["nightlies"] and all(n["installed"] for name, n in on["next"].items()
                                       if on["distributions"][name] == n["distribution"])
    else:
        assert not off_here, on["fast_path_notes"]  # (both tested stacks)
    assert set(on["versions"]) == {"kerasave", "python", "tensorflow", "keras", "h5py", "numpy"}
    off = _doctor({"KERASAVE_FAST_PATHS": "0"})
    assert off["fast_paths_enabled"] is False
    assert set(off["fast_paths"]) == names and not any(off["fast_paths"].values())


@pytest.mark.parametrize(("kind", "fmt", "name"), SAVES)
def test_fast_paths_and_public_api_write_and_read_the_same_values(
        kind, fmt, name, trained, tmp_path, monkeypatch):
    save = ks.save_weights if kind == "weights" else ks.save_model
    expected = values(all_vars(trained))
    compile_config, optimizer = trained.get_compile_config(), trained.optimizer
    got = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(_fastpaths.ENV, switch)
        path = tmp_path / switch / name
        assert save(trained, path, format=fmt).ok
        # (a legacy .h5 save: Keras' writer strips the optimizer from the caller's
        # compile settings, and both ways give it back)
        assert trained.get_compile_config() == compile_config
        assert trained.optimizer is optimizer
        if kind == "weights":
            fresh = ks.reference_model(seed=3)
            ks.load_weights(fresh, path, format=fmt)
        else:
            fresh = ks.load_model(path)
            assert fresh.get_compile_config() == compile_config
        got[switch] = values(all_vars(fresh))
        assert_bit_exact(expected, got[switch])
        # each mode reads what the other wrote
        other = tmp_path / ("0" if switch == "1" else "1") / name
        if other.parent.exists():
            assert ks.verify(trained, other, format=fmt).ok


def _keras_strips_optimizer() -> bool:
    """Whether this Keras' own ``model.save("x.h5")`` drops the optimizer from the
    model's compile config (3.12 through 3.15 do)."""
    import tempfile

    model = ks.reference_model(seed=0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(str(Path(tmp) / "m.h5"))
    return "optimizer" not in model.get_compile_config()


@pytest.mark.parametrize("switch", ["1", "0"])
def test_compile_settings_keras_strips_come_back_either_way(switch, trained, batch, tmp_path,
                                                           monkeypatch):
    """The compile_config fast path and its public twin (compile() again, with the
    model's own optimizer) give the same: settings, optimizer object and state, and
    training that goes on exactly as it would have."""
    monkeypatch.setenv(_fastpaths.ENV, switch)
    compile_config, optimizer = trained.get_compile_config(), trained.optimizer
    state = values(all_vars(trained))
    twin = ks.reference_model(seed=1)
    for mine, theirs in zip(all_vars(twin), all_vars(trained), strict=True):
        mine.assign(theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Keras: "HDF5 ... is considered legacy")
        trained.save(tmp_path / "native.h5")  # Keras' own save strips what it strips
    assert ("optimizer" not in trained.get_compile_config()) is _keras_strips_optimizer()
    report = ks.save_model(trained, tmp_path / "m.keras")  # mended first, then saved
    assert report.ok, report
    assert ks.save_model(trained, tmp_path / "m.h5").ok
    assert trained.get_compile_config() == compile_config
    assert trained.optimizer is optimizer
    assert_bit_exact(state, all_vars(trained))
    for rel in ("m.keras", "m.h5"):
        assert type(ks.load_model(tmp_path / rel).optimizer) is type(optimizer)
    trained.train_on_batch(*batch)
    twin.train_on_batch(*batch)
    assert_bit_exact(values(all_vars(twin)), all_vars(trained))


def test_a_fast_path_that_fails_its_probe_is_off_with_one_warning(trained, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv(_fastpaths.ENV, "1")
    ks.save_model(trained, tmp_path / "m.keras")
    path = _fastpaths._PATHS["keras_reader"]
    monkeypatch.setattr(path, "state", None)
    monkeypatch.setattr(path, "warned", False)

    def broken() -> None:
        raise RuntimeError("this Keras differs")

    monkeypatch.setattr(path, "probe", broken)
    with pytest.warns(FastPathWarning, match="keras_reader.*this Keras differs"):
        loaded = ks.load_model(tmp_path / "m.keras")
    assert_bit_exact(values(all_vars(trained)), values(all_vars(loaded)))
    assert path.state is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        ks.load_model(tmp_path / "m.keras")


def test_a_fast_path_that_raises_mid_operation_falls_back_and_damage_is_still_damage(
        trained, tmp_path, monkeypatch):
    monkeypatch.setenv(_fastpaths.ENV, "1")
    ks.save_model(trained, tmp_path / "m.keras")
    path = _fastpaths._PATHS["keras_reader"]
    assert _fastpaths.on("keras_reader")
    monkeypatch.setattr(path, "warned", False)
    monkeypatch.setattr(path, "state", True)
    real = savinglib.load_keras
    monkeypatch.setattr(savinglib, "load_keras",
                        lambda *a, **k: (_ for _ in ()).throw(AttributeError("moved")))
    # A damaged copy: the fast path raises, and so does Keras' reader: the artifact's fault.
    damaged = tmp_path / "d.keras"  # (written by Keras: no manifest to catch it first)
    trained.save(damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ks.CorruptArtifactError):
        ks.load_model(damaged)
    assert path.state is True  # (not the fast path's fault)
    with pytest.warns(FastPathWarning, match="keras_reader.*AttributeError: moved"):
        loaded = ks.load_model(tmp_path / "m.keras")
    assert_bit_exact(values(all_vars(trained)), values(all_vars(loaded)))
    assert path.state is False
    monkeypatch.setattr(savinglib, "load_keras", real)


def test_public_twins_give_the_fast_paths_results_for_keras2_configs():
    from kerasave._fastpaths import legacy

    for name in ("reference.json", "functional.json"):
        config = json.loads((ROOT / "tests" / "fixtures" / "keras2" / name).read_text())
        from kerasave.formats.configtext import upgrade_keras2

        upgraded = upgrade_keras2(json.loads(json.dumps(config)))
        import keras

        fast = legacy.keras2_model(upgraded, None)
        public = keras.saving.deserialize_keras_object(
            legacy.keras2_modules(json.loads(json.dumps(upgraded))))
        assert fast.get_config() == public.get_config(), name


def test_a_background_save_without_its_fast_path_blocks_and_resumes_the_same(
        tmp_path, monkeypatch):
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(64)
    model.fit(data, labels, epochs=1, verbose=0)
    expected = values(all_vars(model))
    monkeypatch.setenv(_fastpaths.ENV, "0")
    with ks.CheckpointManager(tmp_path, model=model) as manager:
        path = manager.save(blocking=False)
        assert manager._pending is None  # written before save returned
    perturb(model)
    monkeypatch.setenv(_fastpaths.ENV, "1")
    fresh = ks.reference_model(seed=5)
    with ks.CheckpointManager(tmp_path, model=fresh) as manager:
        assert manager.restore_or_initialize() == path
    assert_bit_exact(expected, values(all_vars(fresh)))
    assert np.array_equal(expected[0], values(all_vars(fresh))[0])


@pytest.mark.slow
def test_a_fresh_process_whose_first_call_loads_a_legacy_h5_model(tmp_path):
    """Its probes are first wanted while the loader holds a patch (deferred variables):
    they used to wait for that patch's lock in their own thread, forever."""
    path = tmp_path / "m.h5"
    ks.save_model(ks.reference_model(seed=0), path)
    code = ("import kerasave as ks; m = ks.load_model(__import__('sys').argv[1]);"
            "print('loaded', int(m.optimizer.iterations))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded 0" in result.stdout


@pytest.fixture
def trial(monkeypatch):
    """A fast path of the test's own, registered for the test only, on."""
    monkeypatch.setenv(_fastpaths.ENV, "1")
    path = _fastpaths._FastPath("kerasave_trial", "a trial", "the trial's twin", lambda: None,
                                state=True)
    monkeypatch.setitem(_fastpaths._PATHS, path.name, path)
    return path


def _raise(exc):
    def run():
        raise exc
    return run


def test_attempt_lets_the_public_twin_judge_what_the_fast_path_raised(trial, monkeypatch):
    attempt = _fastpaths.attempt
    assert attempt(trial.name, lambda: "fast", lambda: "public") == "fast"
    # "not this artifact": the twin, and the fast path stays on
    assert attempt(trial.name, _raise(_fastpaths.Unsupported("no")), lambda: "public") == "public"
    # the twin fails too: the artifact's fault, the twin's error, the fast path stays on
    with pytest.raises(KeyError, match="twin"):
        attempt(trial.name, _raise(ValueError("fast")), _raise(KeyError("twin")))
    # kerasave's own verdict on the artifact is not judged
    with pytest.raises(ks.CorruptArtifactError):
        attempt(trial.name, _raise(ks.CorruptArtifactError("bad")), lambda: "public",
                passthrough=(ks.KerasaveError,))
    assert trial.state is True
    # a verdict: a failing fast verdict is given again by the twin, which is not a fault
    assert attempt(trial.name, lambda: [False], lambda: [True], ok=all) == [True]
    assert attempt(trial.name, _raise(ValueError("fast")), lambda: [False], ok=all) == [False]
    assert trial.state is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (nothing said so far)
        assert attempt(trial.name, lambda: "fast", lambda: "public") == "fast"
    # the twin succeeds where the fast path raised: the fast path's fault, off, said once
    with pytest.warns(FastPathWarning, match="kerasave_trial.*ValueError: moved"):
        assert attempt(trial.name, _raise(ValueError("moved")), lambda: "public") == "public"
    assert trial.state is False
    ran = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert attempt(trial.name, lambda: ran.append(1), lambda: "public") == "public"
    assert ran == []


def test_attempt_off_runs_the_public_twin_only(trial, monkeypatch):
    monkeypatch.setenv(_fastpaths.ENV, "0")
    ran = []
    assert _fastpaths.attempt(trial.name, lambda: ran.append(1), lambda: "public") == "public"
    assert ran == []
    with pytest.raises(_fastpaths.Unsupported, match="kerasave_trial"):
        _fastpaths.require(trial.name)


def test_a_weights_reader_that_raises_is_judged_by_keras_reader(trained, tmp_path, monkeypatch):
    """The staged reader raising ``ValueError`` is no verdict on the file: Keras' reader
    judges it (it used to be reported as an architecture mismatch)."""
    from kerasave.formats.h5weights import H5WeightsHandler

    monkeypatch.setenv(_fastpaths.ENV, "1")
    path = tmp_path / "w.weights.h5"
    ks.save_weights(trained, path)
    expected = values(all_vars(trained))
    assert _fastpaths.on("keras_reader")
    state = _fastpaths._PATHS["keras_reader"]
    monkeypatch.setattr(state, "warned", False)
    monkeypatch.setattr(state, "state", True)
    monkeypatch.setattr(savinglib, "read_weights", _raise_any(ValueError("moved")))
    # Keras' reader fails as well: the file's fault, reported as such, nothing changed
    real = H5WeightsHandler._assign
    monkeypatch.setattr(H5WeightsHandler, "_assign", _raise_any(ValueError("no fit")))
    perturb(trained)
    before = values(all_vars(trained))
    with pytest.raises(ks.ArchitectureMismatchError, match="no fit"):
        ks.load_weights(trained, path)
    assert_bit_exact(before, all_vars(trained))
    assert state.state is True
    monkeypatch.setattr(H5WeightsHandler, "_assign", real)
    with pytest.warns(FastPathWarning, match="keras_reader.*ValueError: moved"):
        ks.load_weights(trained, path)
    assert_bit_exact(expected, all_vars(trained))
    assert state.state is False


def _raise_any(exc):
    def run(*args, **kwargs):
        raise exc
    return run


def test_a_savedmodel_check_whose_fast_path_raises_is_judged_by_tensorflow(
        trained, tmp_path, monkeypatch):
    from kerasave.formats import savedmodel

    monkeypatch.setenv(_fastpaths.ENV, "1")
    assert _fastpaths.on("savedmodel_pages")
    state = _fastpaths._PATHS["savedmodel_pages"]
    monkeypatch.setattr(state, "warned", False)
    monkeypatch.setattr(state, "state", True)
    used = []
    real = savedmodel._restored
    monkeypatch.setattr(savedmodel, "_restored", lambda path: used.append(path) or real(path))
    assert ks.save_model(trained, tmp_path / "a").ok and len(used) == 1  # (the fast path)
    monkeypatch.setattr(savedmodel, "_restored", _raise_any(AttributeError("moved")))
    with warnings.catch_warnings(record=True) as caught:  # (TensorFlow's own noise too)
        warnings.simplefilter("always")
        report = ks.save_model(trained, tmp_path / "b")
    said = [str(w.message) for w in caught if issubclass(w.category, FastPathWarning)]
    assert len(said) == 1 and re.search("savedmodel_pages.*AttributeError: moved", said[0])
    assert report.ok and state.state is False
