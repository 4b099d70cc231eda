"""Private Keras/TensorFlow names: one seam, probed fast paths, one switch.

Every fast path is an optimisation with a public twin: these tests run the
formats both ways and compare, switch the fast paths off with
``KERASAVE_FAST_PATHS=0``, and break them on purpose (a failed probe, a fast
path that raises mid-operation) to see kerasave fall back, warn once, and still
give the same values, while a damaged file is still reported as damaged.
"""

from __future__ import annotations

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
from kerasave import _internals, _support
from kerasave._internals import FastPathWarning, savinglib
from tests.conftest import all_vars, assert_bit_exact, perturb, values

ROOT = Path(__file__).parents[1]
PRIVATE = re.compile(r"keras\.src|tensorflow\.python|tensorflow\.core|saving_lib\._"
                     r"|_trackable_children|_initial_epoch|_object_map")

SAVES = [("weights", "checkpoint", "w/ckpt"), ("weights", "h5", "w.weights.h5"),
         ("model", "keras", "m.keras"), ("model", "h5", "m.h5")]


NIGHTLY = any(d in _support.NIGHTLIES for d in _support.distributions().values())


def _doctor(env: dict[str, str]) -> dict:
    run = subprocess.run([sys.executable, "-m", "kerasave", "doctor", "--json"],
                         capture_output=True, text=True, timeout=300,
                         env=dict({k: v for k, v in os.environ.items() if k != _internals.ENV},
                                  TF_CPP_MIN_LOG_LEVEL="3", **env))
    assert run.returncode == (1 if NIGHTLY else 0), run.stderr  # (1: outside the range)
    return json.loads(run.stdout)


def test_private_names_appear_only_in_the_internals():
    found = []
    for path in sorted((ROOT / "kerasave").rglob("*.py")):
        if "_internals" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line.split("#")[0]):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
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
    names = set(_internals.fast_paths())
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


def _keras_strips_optimizer() -> bool:
    """Whether this Keras' own ``model.save("x.h5")`` drops the optimizer from the
    model's compile config (3.12 through 3.15 do)."""
    import tempfile

    model = ks.reference_model(seed=0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(str(Path(tmp) / "m.h5"))
    return "optimizer" not in model.get_compile_config()


@pytest.mark.parametrize(("kind", "fmt", "name"), SAVES)
def test_fast_paths_and_public_api_write_and_read_the_same_values(
        kind, fmt, name, trained, tmp_path, monkeypatch):
    save = ks.save_weights if kind == "weights" else ks.save_model
    expected = values(all_vars(trained))
    got = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(_internals.ENV, switch)
        path = tmp_path / switch / name
        if switch == "0" and (kind, fmt) == ("model", "h5") and _keras_strips_optimizer():
            # Keras' legacy writer (3.12-3.15) pops "optimizer" from the caller's compile
            # config; only the compile_config fast path puts it back. Without it the
            # save is refused by its own check, not written wrong.
            with pytest.raises(ks.RoundTripError, match="compile settings"):
                save(trained, path, format=fmt)
            continue
        assert save(trained, path, format=fmt).ok
        if kind == "weights":
            fresh = ks.reference_model(seed=3)
            ks.load_weights(fresh, path, format=fmt)
        else:
            fresh = ks.load_model(path)
        got[switch] = values(all_vars(fresh))
        assert_bit_exact(expected, got[switch])
        # each mode reads what the other wrote
        other = tmp_path / ("0" if switch == "1" else "1") / name
        if other.parent.exists():
            assert ks.verify(trained, other, format=fmt).ok


def test_a_fast_path_that_fails_its_probe_is_off_with_one_warning(trained, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv(_internals.ENV, "1")
    ks.save_model(trained, tmp_path / "m.keras")
    path = _internals._PATHS["keras_reader"]
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
    monkeypatch.setenv(_internals.ENV, "1")
    ks.save_model(trained, tmp_path / "m.keras")
    path = _internals._PATHS["keras_reader"]
    assert _internals.on("keras_reader")
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
    from kerasave._internals import legacy

    for name in ("reference.json", "functional.json"):
        config = json.loads((ROOT / "tests" / "fixtures" / "keras2" / name).read_text())
        from kerasave._config import upgrade_keras2

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
    monkeypatch.setenv(_internals.ENV, "0")
    with ks.CheckpointManager(tmp_path, model=model) as manager:
        path = manager.save(blocking=False)
        assert manager._pending is None  # written before save returned
    perturb(model)
    monkeypatch.setenv(_internals.ENV, "1")
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
