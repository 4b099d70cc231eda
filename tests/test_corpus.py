"""Never worse than plain Keras: the native oracle corpus, weights and config formats.

Every model of ``tests/corpus/models.py`` (re-expressed from Keras' own tests) is
saved and read back by kerasave and by Keras' own calls for the same format
(``tests/corpus/oracle.py``): wherever Keras round-trips it exactly, kerasave
must too; elsewhere kerasave must be exact or refuse with a ``KerasaveError``,
leaving nothing at the path and the model as it was. Each pair's outcome must be
what ``docs/compatibility.md`` says. The whole-model formats are in
``tests/test_corpus_whole.py`` (two files: pytest-xdist's workers share them).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave.compare import verify as _verify
from kerasave.compare.probes import probe_inputs  # noqa: E402
from kerasave.formats import by_label  # noqa: E402
from tests.corpus import table  # noqa: E402
from tests.corpus.checking import check_pair, params  # noqa: E402
from tests.corpus.models import CASES  # noqa: E402
from tests.corpus.oracle import FORMATS, changes, state_of  # noqa: E402


# The corpus' formats that load into a model or as a config (the whole models:
# test_corpus_whole.py, the rest of the corpus' formats, in a file of their own for time).
@pytest.mark.parametrize(("name", "fmt"), params(
    tuple(f for f in FORMATS if by_label(f).kind != "model")))
def test_pair(name, fmt, tmp_path):
    check_pair(name, fmt, tmp_path)


def test_the_corpus_is_large_and_says_where_each_model_comes_from():
    assert len(CASES) >= 60
    for case in CASES.values():
        assert case.source.startswith("keras/src/"), case.name


def test_the_page_lists_every_pair():
    version, cells = table.documented()
    assert version, "docs/compatibility.md names no Keras version"
    assert set(cells) == {(name, fmt) for name in CASES for fmt in FORMATS}


# -- the root fixes, one by one (the corpus finds them; these say each plainly) ----------

def _build(name, seed=0):
    """A corpus model, as the corpus builds it (Keras' warnings while building aside)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CASES[name].build(seed)


def test_probes_follow_dtypes_and_vocabularies():
    strings = probe_inputs(_build("string_lookup_adapted", 0))
    assert strings.dtype.kind == "U" and set(strings.ravel()) <= {"one", "two", "three"}
    ints = probe_inputs(_build("integer_lookup_adapted", 0))
    assert ints.dtype == np.int64 and set(ints.ravel()) <= {12, 1138, 42}
    ids = probe_inputs(_build("embedding_trained", 0))
    assert ids.dtype == np.int32 and ids.max() < 10
    vectorize = _build("text_vectorization_int", 0)
    words = set(" ".join(vectorize.layers[-1].get_vocabulary()[2:]).split())
    sentences = probe_inputs(vectorize)
    assert all(len(s.split()) >= 2 and set(s.split()) <= words for s in sentences.ravel())


def test_a_check_that_raises_is_a_failed_check(tmp_path, monkeypatch):
    from kerasave.formats.keras import KerasHandler

    def broken(self, model, path, *, own=False):
        raise ValueError("something deep inside")

    monkeypatch.setattr(KerasHandler, "check", broken)
    with pytest.raises(ks.RoundTripError, match="ValueError: something deep inside"):
        ks.save_model(_build("basic_functional", 0), tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_stateful_states_are_kept_by_checkpoints_and_refused_elsewhere(tmp_path):
    model = _build("stateful_lstm", 0)
    before = state_of(model)
    with pytest.raises(ks.NotSerializableError, match="stateful LSTM .* holds RNN states"):
        ks.save_model(model, tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    ks.save_weights(model, tmp_path / "ckpt" / "m")
    assert changes(before, state_of(model)) == []  # (verification ran it: put back)
    fresh = _build("stateful_lstm", 1)
    x = CASES["stateful_lstm"].inputs()
    ks.load_weights(fresh, tmp_path / "ckpt" / "m")
    assert np.array_equal(fresh(x), model(x))  # continues from the same states
    model.layers[-1].reset_state()
    assert ks.save_model(model, tmp_path / "m.keras").ok  # nothing to lose now


def test_verify_leaves_random_generator_states_as_they_were(tmp_path):
    model = _build("gru_dropout", 0)
    ks.save_model(model, tmp_path / "m.keras")
    before = state_of(model)
    assert ks.verify(model, tmp_path / "m.keras").ok
    assert changes(before, state_of(model)) == []


def test_configs_are_compared_by_meaning():
    fn = {"module": "builtins", "class_name": "function", "config": "pkg>loss",
          "registered_name": "function"}
    assert _verify.compare_configs("c", {"loss": "pkg>loss"}, {"loss": fn}).ok
    quantized = {"module": "keras.dtype_policies", "class_name": "QuantizedDTypePolicy",
                 "config": {"mode": "int8", "source_name": None}, "registered_name": None}

    def policy_map(entry):
        return {"module": "keras.dtype_policies", "class_name": "DTypePolicyMap",
                "config": {"default_policy": None, "policy_map": {"a/b": entry}},
                "registered_name": None}

    assert _verify.compare_configs("c", policy_map(quantized), policy_map(policy_map(quantized))).ok
    other = dict(quantized, config={"mode": "int4", "source_name": None})
    assert not _verify.compare_configs("c", policy_map(quantized), policy_map(other)).ok


def test_config_files_of_adapted_lookups_are_refused_naming_the_layer(tmp_path):
    model = _build("string_lookup_adapted", 0)
    with pytest.raises(ks.NotSerializableError, match="StringLookup '.*string_lookup.*' keeps"):
        ks.save_config(model, tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []
    assert ks.save_model(model, tmp_path / "m.keras").ok  # (.keras holds the vocabulary)


def test_hdf5_weights_hold_what_keras_writes(tmp_path):
    model = _build("loss_scale_optimizer", 0)  # the inner optimizer's state too
    report = ks.save_weights(model, tmp_path / "m.weights.h5")
    assert any(c.name == "optimizer variables" and c.ok for c in report.checks)
    tfidf = _build("text_vectorization_tf_idf", 0)  # IDF weights: no variable
    report = ks.save_weights(tfidf, tmp_path / "t.weights.h5")
    assert any(c.name == "layer state" and c.ok for c in report.checks), report


def test_registered_subclassed_models_use_keras_automatic_config(tmp_path):
    model = _build("subclassed", 0)
    assert type(model).get_config is keras.Model.get_config
    ks.save_config(model, tmp_path / "m.json")
    assert type(ks.load_config(tmp_path / "m.json")) is type(model)
    unbuilt = _build("unbuilt_subclassed", 0)
    ks.save_model(unbuilt, tmp_path / "u.keras")
    assert not ks.load_model(tmp_path / "u.keras").built
