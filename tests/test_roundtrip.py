"""One round trip per format: save (verified), perturb, restore, compare bit for bit."""

import json

import numpy as np
import pytest

import kerasave as ks
from kerasave.formats import formats

from .conftest import all_vars, assert_bit_exact, perturb, values

HOLDS = {"weights": "weights+optimizer", "config": "config", "model": "model",
         "serving": "serving"}


def _cases():
    """(save call, format, relative path, what it holds): every format of the format
    table but the exports (``tests/test_exports.py``), at its canonical file and at
    each other suffix its handler answers to."""
    for f in formats(lambda f: not f.export):
        stem = f.file[:len(f.file) - len(f.suffix)]
        for suffix in dict.fromkeys((f.suffix, *f.handler.suffixes)):
            yield f.call, f.name, stem + suffix, HOLDS[f.loads]


CASES = list(_cases())


@pytest.mark.parametrize(("call", "fmt", "rel", "holds"), CASES,
                         ids=[f"{c[1]}:{c[2]}" for c in CASES])
def test_round_trip(trained, batch, tmp_path, call, fmt, rel, holds):
    path = tmp_path / rel
    saved_state = values(all_vars(trained))
    expected = np.asarray(trained(batch[0], training=False))

    report = getattr(ks, call)(trained, path)

    assert report.ok and report.format == fmt and report.path == str(path)
    assert report.bytes > 0 and report.seconds > 0 and report.checks
    assert all(c.ok for c in report.checks)
    assert not [p for p in tmp_path.rglob("*") if ".kerasave-tmp-" in p.name]

    if holds == "weights+optimizer":
        perturb(trained)
        assert values(trained.variables)[0].tobytes() != saved_state[0].tobytes()
        loaded = ks.load_weights(trained, path)
        assert loaded.ok and loaded.format == fmt
        assert_bit_exact(saved_state, all_vars(trained))
    elif holds == "config":
        fresh = ks.load_config(path)
        assert not fresh.compiled and getattr(fresh, "optimizer", None) is None
        assert [tuple(w.shape) for w in fresh.weights] == [tuple(w.shape) for w in trained.weights]
        assert json.loads(fresh.to_json())["config"] == json.loads(trained.to_json())["config"]
    elif holds == "model":
        loaded = ks.load_model(path)
        assert_bit_exact(saved_state, all_vars(loaded))
        assert np.asarray(loaded(batch[0], training=False)).tobytes() == expected.tobytes()
        # Training continues exactly as the original would: same next step.
        trained.train_on_batch(*batch)
        loaded.train_on_batch(*batch)
        assert_bit_exact(values(all_vars(trained)), all_vars(loaded))
    else:
        served = ks.load_model(path)
        assert np.asarray(served.serve(batch[0])).tobytes() == expected.tobytes()

    again = ks.verify(trained if holds != "weights+optimizer" else trained, path)
    assert again.format == fmt


@pytest.mark.parametrize("call,rel", [("save_weights", "w/ckpt"), ("save_weights", "w.h5"),
                                      ("save_weights", "w.weights.json"),
                                      ("save_config", "c.json"), ("save_model", "m.keras"),
                                      ("save_model", "m.h5"), ("save_model", "sm")])
def test_save_over_an_existing_artifact(trained, tmp_path, call, rel):
    path = tmp_path / rel
    getattr(ks, call)(ks.reference_model(seed=7), path)
    report = getattr(ks, call)(trained, path)
    assert report.ok
    assert ks.verify(trained, path).ok
    leftovers = [p.name for p in tmp_path.rglob("*") if ".kerasave-tmp-" in p.name]
    assert leftovers == []


def test_verify_detects_a_different_model(trained, tmp_path):
    for call, rel in [("save_weights", "w/ckpt"), ("save_weights", "w.h5"),
                      ("save_weights", "w.weights.json"),
                      ("save_model", "m.keras"), ("save_model", "m.h5"), ("save_model", "sm")]:
        getattr(ks, call)(trained, tmp_path / rel)
        other = ks.reference_model(seed=42)
        report = ks.verify(other, tmp_path / rel)
        assert not report.ok, rel
        assert any("differ" in c.detail for c in report.failed), (rel, str(report))


def test_verify_false_skips_the_round_trip(trained, tmp_path):
    report = ks.save_weights(trained, tmp_path / "w.h5", verify=False)
    assert report.ok and [c.name for c in report.checks] == ["verify"]
    assert ks.verify(trained, tmp_path / "w.h5").ok


def test_save_does_not_change_the_callers_model(trained, tmp_path):
    state = values(all_vars(trained))
    compile_config = trained.get_compile_config()
    config = trained.get_config()
    for call, rel in [("save_weights", "w/c"), ("save_weights", "w.h5"),
                      ("save_weights", "w.weights.json"), ("save_config", "c.json"),
                      ("save_config", "c.yaml"), ("save_model", "m.keras"),
                      ("save_model", "m.h5"), ("save_model", "sm")]:
        getattr(ks, call)(trained, tmp_path / rel)
        assert trained.get_compile_config() == compile_config, rel
        assert trained.get_config() == config, rel
        assert_bit_exact(state, all_vars(trained))
