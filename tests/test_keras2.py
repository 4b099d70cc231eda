"""Keras 2 TF-format artifacts (written by tf-keras 2.21, both optimizer generations)
load into Keras 3 through kerasave, bit for bit (fixtures: tests/fixtures/keras2/)."""

from __future__ import annotations

import numpy as np
import pytest

import kerasave as ks

from .conftest import FIXTURES, all_vars, assert_bit_exact, values
from .keras2_twins import (
    ARTIFACTS,
    assert_restored,
    differs,
    expected,
    subclassed,
    twin,
)

GENERATIONS = {"tf211": "TF 2.11+", "v2": "OptimizerV2"}
WEIGHTS = [(kind, gen, opt) for kind in ("sequential", "functional", "subclassed")
           for gen in GENERATIONS for opt in ("adam", "sgd", "rmsprop")]


@pytest.mark.parametrize("kind,gen,opt", WEIGHTS, ids=["-".join(w) for w in WEIGHTS])
def test_keras2_save_weights_checkpoint_loads_with_its_optimizer_state(kind, gen, opt):
    prefix = ARTIFACTS / "weights" / f"{kind}-{gen}-{opt}"
    want = expected(prefix)
    model = twin(kind, opt)
    assert differs(model, want) and not model.optimizer.built
    report = ks.load_weights(model, prefix)
    assert report.ok and report.format == "checkpoint"
    details = " ".join(c.detail for c in report.checks)
    assert "Keras 2 layout" in details and GENERATIONS[gen] in details
    assert_restored(model, want)
    # Training goes on from the saved step.
    before = int(model.optimizer.iterations.numpy())
    x = [want[k] for k in sorted(want) if k.startswith("probe_x")]
    y = model.predict(x if len(x) > 1 else x[0], verbose=0)
    model.train_on_batch(x if len(x) > 1 else x[0], y)
    assert int(model.optimizer.iterations.numpy()) == before + 1


@pytest.mark.parametrize("gen", GENERATIONS)
def test_modelcheckpoint_ckpt_prefix_loads(gen):
    prefix = ARTIFACTS / "modelcheckpoint" / gen / "weights.02.ckpt"
    model = twin("sequential", "adam")
    want = expected(prefix)
    assert differs(model, want)
    ks.load_weights(model, prefix)
    assert_restored(model, want)


@pytest.mark.parametrize("name", ["functional-tf211-sgd", "functional-v2-adam"])
def test_tf_train_checkpoint_of_model_and_optimizer_loads(name):
    prefix = ARTIFACTS / "tfcheckpoint" / name
    model = twin("functional", name.rsplit("-", 1)[1])
    want = expected(prefix)
    assert differs(model, want)
    ks.load_weights(model, prefix)
    assert_restored(model, want)


def test_the_first_issues_keras2_fixture_loads():
    """tests/fixtures/keras2/ckpt/reference: the seed's model.save_weights('...')."""
    from kerasave import reference_model

    model = reference_model()
    want = np.load(FIXTURES / "keras2" / "reference_weights.npz")
    ks.load_weights(model, FIXTURES / "keras2" / "ckpt" / "reference")
    for i, w in enumerate(model.get_weights()):
        assert w.dtype == want[f"w{i}"].dtype and np.array_equal(w, want[f"w{i}"])
    assert int(model.optimizer.iterations.numpy()) == 14  # 2 epochs of 7 batches
    np.testing.assert_allclose(model.predict(want["probe_x"], verbose=0), want["probe_y"],
                               rtol=1e-5, atol=1e-6)


def test_a_keras2_checkpoint_verifies_against_the_model_it_was_loaded_into():
    prefix = ARTIFACTS / "weights" / "subclassed-v2-adam"
    model = twin("subclassed", "adam")
    ks.load_weights(model, prefix)
    assert ks.verify(model, prefix).ok
    model.weights[0].assign(model.weights[0] + 1.0)
    report = ks.verify(model, prefix)
    assert not report.ok


def test_a_keras2_checkpoint_that_does_not_fit_names_both_sides_and_changes_nothing():
    model = twin("sequential", "adam")
    model.optimizer.build(model.trainable_variables)
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError) as info:
        ks.load_weights(model, ARTIFACTS / "weights" / "functional-tf211-adam")
    text = str(info.value)
    assert "functional-tf211-adam" in text
    assert "does not have" in text and "(8,)" in text  # a saved variable, with its shape
    assert "does not hold" in text  # and a live one
    assert_bit_exact(before, all_vars(model))


def test_a_keras2_optimizer_that_does_not_fit_the_keras3_one_changes_nothing():
    model = twin("sequential", "sgd")  # SGD with momentum: one slot per variable
    model.optimizer.build(model.trainable_variables)
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError, match="velocity") as info:
        ks.load_weights(model, ARTIFACTS / "weights" / "sequential-v2-adam")
    assert "SGD" in str(info.value)
    assert_bit_exact(before, all_vars(model))


def test_an_unbuilt_subclassed_model_is_refused_with_what_to_do():
    model, _ = subclassed(build=False)
    with pytest.raises(ks.ArchitectureMismatchError, match="not built"):
        ks.load_weights(model, ARTIFACTS / "weights" / "subclassed-tf211-adam")


@pytest.mark.parametrize("gen", GENERATIONS)
def test_inspect_says_keras2_and_the_optimizer_generation(gen):
    found = ks.inspect(ARTIFACTS / "weights" / f"functional-{gen}-rmsprop")
    assert found.format == "checkpoint" and found.has_optimizer
    assert found.versions["keras"].startswith("2")
    assert GENERATIONS[gen] in found.versions["optimizer"]
    assert "Keras 2" in str(found)
    assert any(v.shape == (8,) for v in found.variables)
