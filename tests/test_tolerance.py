"""The tolerance policy (kerasave/compare/tolerance.py): what it allows per dtype, what it reports,
and the one place besides the exports where it applies: a SavedModel whose serving graph
TensorFlow's optimizer rewrote, with every variable bit-exact."""

from __future__ import annotations

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks
from kerasave.compare.tolerance import closeness, compare_within, tolerance_for
from kerasave.compare.verify import probe_inputs


def test_tolerances_per_dtype():
    assert tolerance_for("float32").rtol == pytest.approx(128 * 2.0 ** -23)
    assert tolerance_for("float64").rtol == pytest.approx(128 * 2.0 ** -52)
    assert tolerance_for("float16").atol == pytest.approx(4 * 2.0 ** -10)
    assert tolerance_for(ml_dtypes.bfloat16).atol == pytest.approx(4 * 2.0 ** -7)
    for exact in ("int32", "int64", "uint8", "bool"):
        assert tolerance_for(exact) is None


def test_float32_within_and_beyond():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(1000).astype(np.float32)
    ulps = np.nextafter(y, np.float32(np.inf))  # one unit in the last place everywhere
    close = closeness(y, ulps)
    assert close.within and not close.exact and close.differing == 1000
    assert close.used < 0.05 and close.max_rel == pytest.approx(2.0 ** -23, rel=1)
    far = y.copy()
    far[17] += 1e-3  # a changed weight moves an output by far more
    assert not closeness(y, far).within
    # The absolute term follows the output's scale: near zero in an output of large values
    big = np.array([1000.0, 0.0], np.float32)
    assert closeness(big, np.array([1000.0, 1e-3], np.float32)).within
    assert not closeness(np.array([1.0, 0.0], np.float32),
                         np.array([1.0, 1e-3], np.float32)).within


def test_nan_inf_integers_and_layouts():
    nan = np.array([np.nan, 1.0], np.float32)
    assert closeness(nan, nan.copy()).exact
    other_nan = closeness(nan, np.array([1.0, 1.0], np.float32))
    assert not other_nan.within and "NaN or infinite" in other_nan.reason
    inf = np.array([np.inf], np.float32)
    assert not closeness(inf, -inf).within and closeness(inf, inf.copy()).within
    assert not closeness(np.array([1, 2]), np.array([1, 3])).within
    assert not closeness(np.zeros(2, np.float32), np.zeros(2, np.float64)).within
    assert not closeness(np.zeros(2, np.float32), np.zeros(3, np.float32)).within


def test_report_states_the_differences_and_the_tolerance():
    y = np.linspace(-1, 1, 50, dtype=np.float32)
    exact = compare_within("outputs", [("output 0", y, y.copy())], where="at batch sizes 4 and 1")
    assert exact.ok and exact.detail.startswith("1 output bit-exact at batch sizes 4 and 1")
    near = compare_within("outputs", [("output 0", y, np.nextafter(y, np.float32(2)))])
    assert near.ok and "within tolerance, not bit-exact: 50 of 50 values differ" in near.detail
    assert "max abs" in near.detail and "max rel" in near.detail
    assert "float32: |Δ| ≤ 1.5e-05·max(1, max|y|) + 1.5e-05·|y| met" in near.detail
    off = compare_within("outputs", [("output 0", y, y + np.float32(0.01))])
    assert not off.ok and "beyond the tolerance" in off.detail and "output 0" in off.detail


class Positions(keras.layers.Layer):
    """A learned position embedding broadcast over the batch, as BERT's is."""

    def build(self, shape):
        self.table = self.add_weight(shape=(16, shape[-1]), initializer="glorot_uniform")

    def call(self, x):
        shape = keras.ops.shape(x)
        return keras.ops.broadcast_to(self.table[: shape[1], :], shape)


def bert_like_embeddings():
    """Token + position + segment embeddings added in one Add, as keras-hub's BERT
    backbone adds them: TensorFlow's graph optimizer regroups the loaded serving
    function's additions, so its outputs differ from the model's in the last bit."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    segments = keras.Input((None,), dtype="int32", name="segment_ids")
    embedded = keras.layers.Embedding(100, 16)(tokens)
    summed = keras.layers.Add()([embedded, Positions()(embedded),
                                 keras.layers.Embedding(2, 16)(segments)])
    return keras.Model({"token_ids": tokens, "segment_ids": segments}, summed)


def test_savedmodel_outputs_within_tolerance_when_variables_are_bit_exact(tmp_path):
    model = bert_like_embeddings()
    path = tmp_path / "serving"
    report = ks.save_model(model, path)
    detail = {c.name: c.detail for c in report.checks}["serving outputs"]
    assert "within tolerance, not bit-exact" in detail, detail
    assert "tolerance float32" in detail and "variables are bit-exact" in detail
    # The native oracle: Keras' own export serves the same outputs, not bit-exact either.
    model.export(str(tmp_path / "native"), verbose=False)
    probe = probe_inputs(model)
    native = tf.saved_model.load(str(tmp_path / "native"))
    theirs = np.asarray(native.serve(probe))
    served = ks.load_model(path)
    ours = np.asarray(served.serve(probe))
    graph = np.asarray(tf.function(lambda p: model(p, training=False))(probe))
    assert theirs.tobytes() == ours.tobytes() and ours.tobytes() != graph.tobytes()
    np.testing.assert_allclose(ours, graph, rtol=1e-5, atol=1e-6)


def test_savedmodel_gets_no_tolerance_when_a_variable_differs(tmp_path):
    model = bert_like_embeddings()
    path = tmp_path / "serving"
    ks.save_model(model, path)
    table = model.layers[3].table if isinstance(model.layers[3], Positions) else next(
        layer for layer in model.layers if isinstance(layer, Positions)).table
    value = keras.ops.convert_to_numpy(table)
    value[0, 0] = np.nextafter(value[0, 0], np.float32(1))  # one unit in the last place
    table.assign(value)
    report = ks.verify(model, path)
    assert not report.ok
    detail = {c.name: c.detail for c in report.failed}["serving outputs"]
    assert "no tolerance: the export's variables differ" in detail


def test_checkpoint_and_keras_comparisons_stay_bit_exact(tmp_path):
    """The tolerance is for exports only: a .keras file whose variable is off by one
    unit in the last place fails verification."""
    model = ks.reference_model(seed=0)
    ks.save_model(model, tmp_path / "m.keras")
    ks.save_weights(model, tmp_path / "w" / "ckpt")
    kernel = model.layers[0].kernel
    value = keras.ops.convert_to_numpy(kernel)
    value[0, 0] = np.nextafter(value[0, 0], np.float32(1))
    kernel.assign(value)
    for path in (tmp_path / "m.keras", tmp_path / "w" / "ckpt"):
        report = ks.verify(model, path)
        assert not report.ok and "tolerance" not in str(report)
