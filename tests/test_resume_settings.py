"""The resume corpus, part 2: fit's settings and callbacks, and the checkpoint guide's
custom loop (see tests/test_resume.py); then the callback's state hook in process."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks
from kerasave.callbacks import Checkpoint, ResumeWarning
from kerasave.checkpoints import fitstate as _fitstate

from .conftest import all_vars, assert_bit_exact, values
from .test_resume import PUBLIC, exact_or_refused_as_documented, run_corpus

fast = pytest.mark.skipif(PUBLIC, reason="needs kerasave's fast paths (KERASAVE_FAST_PATHS=0)")

EXACT = ["validation", "weights", "class_weight", "steps_per_execution", "mixed_precision",
         "callbacks"]
CASES = EXACT + ["public_api_mid_epoch", "guide"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return run_corpus(tmp_path_factory.mktemp("corpus"), CASES)


@pytest.mark.parametrize("name", EXACT)
def test_killed_and_rerun_equals_uninterrupted(corpus, name):
    exact_or_refused_as_documented(corpus, name)


def test_without_fast_paths_a_first_epoch_resumes_exactly_and_says_what_it_cannot(corpus):
    assert corpus.same("public_api_mid_epoch") == []
    said = corpus.warnings["public_api_mid_epoch"]
    assert len(said) == 2  # (once each)
    assert "'fit_callbacks' is off" in said[0] and "their state is not restored" in said[0]
    assert "could not inspect fit's input pipeline (the fast path 'fit_dataset' is off)" \
        in said[1]


def test_the_guide_loop_with_an_iterator_and_a_generator_resumes_exactly(corpus):
    straight = np.load(corpus.straight / "guide.npz")
    weights = [k for k in straight.files if k.startswith("w")]
    assert corpus.same("guide", weights + ["x:step", "x:rng"]) == []
    resumed = np.load(corpus.resumed / "guide.npz")
    assert resumed["x:steps"][0] == 15  # (the kill came at step 17; saved at 15)
    losses = dict(zip(straight["x:steps"].tolist(), straight["x:losses"].tolist()))
    assert [losses[s] for s in resumed["x:steps"].tolist()] == resumed["x:losses"].tolist()


# -- in process -------------------------------------------------------------------------

def _fit(directory, callbacks, crash_after_epoch=None, epochs=3):
    keras.utils.set_random_seed(0)
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(48)

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == crash_after_epoch:
                raise RuntimeError("crash")

    extra = [Crash()] if crash_after_epoch is not None else []
    history = model.fit(data, labels, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[Checkpoint(directory), *callbacks, *extra])
    return model, history


class Tally(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.scale = [], np.float32(1.0)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.scale = np.float32(self.scale * 0.5)

    def get_state(self):
        return {"epochs": list(self.epochs), "scale": self.scale}

    def set_state(self, state):
        self.epochs, self.scale = state["epochs"], state["scale"]


@fast
def test_a_users_callback_takes_part_and_an_unknown_one_is_named(tmp_path):
    straight = Tally()
    plain, _ = _fit(tmp_path / "plain", [straight])
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path / "ckpts", [Tally(), keras.callbacks.LambdaCallback()],
             crash_after_epoch=1)
    tally = Tally()
    with pytest.warns(ResumeWarning, match=r"state of LambdaCallback \("):
        again, history = _fit(tmp_path / "ckpts", [tally, keras.callbacks.LambdaCallback()])
    assert tally.epochs == straight.epochs == [0, 1, 2]
    assert tally.scale == straight.scale and type(tally.scale) is np.float32
    assert_bit_exact(values(all_vars(plain)), all_vars(again))
    assert history.epoch == [0, 1, 2]


@fast
def test_a_get_state_that_is_not_a_dict_is_refused_at_the_first_save(tmp_path):
    class Bad(keras.callbacks.Callback):
        def get_state(self):
            return [1]

        def set_state(self, state):
            pass

    with pytest.raises(ks.KerasaveError, match=r"Bad.get_state\(\) must return a dict"):
        _fit(tmp_path, [Bad()], epochs=1)


def test_state_values_round_trip_exactly():
    state = {"n": 3, "f": 0.1, "nan": math.nan, "inf": -math.inf, "s": "x", "none": None,
             "t": (1, 2), "f32": np.float32(0.3), "a": np.arange(6, dtype="int16").reshape(2, 3),
             "b": b"\x00\x01" * 700, "nested": [{"w": [np.ones(2, "float64")]}],
             "tensor": tf.constant([1.5], tf.bfloat16)}
    arrays = []
    encoded = _fitstate.encode(state, arrays, "state")
    holders = _fitstate.Holders()
    specs = holders.put(arrays)
    reader = _fitstate.Holders()
    reader.expect(specs)
    for v, a in zip(reader.root.arrays, holders.values()):
        v.assign(a)
    back = _fitstate.decode(encoded, reader.values())
    assert back["t"] == [1, 2] and back["s"] == "x" and back["none"] is None
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf and back["f"] == 0.1
    assert type(back["f32"]) is np.float32 and back["f32"] == np.float32(0.3)
    assert back["b"] == state["b"]
    assert_bit_exact([state["a"], np.ones(2), np.asarray(state["tensor"])],
                     [back["a"], back["nested"][0]["w"][0], back["tensor"]])
    with pytest.raises(ks.KerasaveError, match=r"state\['o'\].*type object"):
        _fitstate.encode({"o": object()}, [], "state")
    with pytest.raises(ks.KerasaveError, match=r"state\['u'\].*<U1 cannot"):
        _fitstate.encode({"u": np.array(["a"])}, [], "state")


@fast
def test_tensorboards_step_counters_are_its_state(tmp_path):
    from kerasave._fastpaths.fit import builtin_state, set_builtin_state

    board = keras.callbacks.TensorBoard(str(tmp_path))
    board._global_train_batch, board._global_test_batch = 7, 3
    fresh = keras.callbacks.TensorBoard(str(tmp_path))
    set_builtin_state(fresh, builtin_state(board))
    assert (fresh._global_train_batch, fresh._global_test_batch) == (7, 3)


@fast
@pytest.mark.skipif(not hasattr(keras.callbacks, "OrbaxCheckpoint"),
                    reason="Keras 3.13 added OrbaxCheckpoint")
def test_orbax_checkpoints_counters_are_its_state():
    # (orbax is not installed here, and OrbaxCheckpoint's constructor needs it: its
    # state is set on a bare instance, as set_model and its batches leave it)
    from kerasave._fastpaths.fit import builtin_state, set_builtin_state

    def bare():
        return object.__new__(keras.callbacks.OrbaxCheckpoint)

    saved = bare()
    saved.best, saved._batches_seen_since_last_saving = np.float64(0.25), 3
    saved._last_batch_seen, saved._total_batches_seen = 4, 17
    fresh = bare()
    set_builtin_state(fresh, builtin_state(saved))
    assert (fresh.best, fresh._batches_seen_since_last_saving, fresh._last_batch_seen,
            fresh._total_batches_seen) == (0.25, 3, 4, 17)


@pytest.mark.parametrize(("name", "said"), [
    ("seeded", None),
    ("global_seed", None),
    ("unseeded", "an unseeded ShuffleDataset"),
    ("random_map", "an unseeded random operation (RandomUniform)"),
    ("generator_map", "a tf.random.Generator"),
    ("sloppy_map", "deterministic=False"),
    ("sloppy_options", "tf.data.Options.deterministic = False"),
    ("python", "Python code"),
])
def test_what_keeps_a_pipeline_from_resuming_exactly_is_named(name, said):
    tf.random.set_seed(None)
    base = tf.data.Dataset.range(16)
    if name == "seeded":
        ds = base.shuffle(16, seed=3).map(lambda x: x + tf.random.stateless_uniform(
            [], seed=[1, 2], maxval=3, dtype=tf.int64), num_parallel_calls=2,
            deterministic=True).batch(4)
    elif name == "global_seed":
        tf.random.set_seed(5)  # (keras.utils.set_random_seed's way: ops get seeds)
        ds = base.shuffle(16).batch(4)
    elif name == "unseeded":
        ds = base.shuffle(16).batch(4)
    elif name == "random_map":
        ds = base.map(lambda x: tf.cast(x, tf.float32) + tf.random.uniform([]))
    elif name == "generator_map":
        rng = tf.random.Generator.from_seed(1)
        ds = base.map(lambda x: tf.cast(x, tf.float32) + rng.uniform([]))
    elif name == "sloppy_map":
        ds = base.map(lambda x: x * 2, num_parallel_calls=2, deterministic=False)
    elif name == "sloppy_options":
        options = tf.data.Options()
        options.deterministic = False
        ds = base.map(lambda x: x * 2, num_parallel_calls=2).with_options(options)
    else:
        ds = tf.data.Dataset.from_generator(lambda: iter(range(4)), output_signature=(
            tf.TensorSpec([], tf.int64)))
    try:
        concerns = _fitstate.pipeline_concerns(ds)
    finally:
        tf.random.set_seed(None)
    if said is None:
        assert concerns == []
    else:
        assert len(concerns) == 1 and said in concerns[0], concerns


@pytest.mark.parametrize("case", ["arrays", "reshuffled_mid_epoch", "reshuffled_epoch"])
def test_without_fast_paths_a_later_epoch_resumes_with_initial_epoch(tmp_path, monkeypatch,
                                                                     case):
    """The public twin of fit_initial_epoch: fit(initial_epoch=N), as the refusal asks.
    A tf.data pipeline resumes from a mid-epoch checkpoint (its iterator's state, which
    also sets where its reshuffling stands); from an epoch's end it is refused."""
    monkeypatch.setenv("KERASAVE_FAST_PATHS", "0")
    data, labels = ks.reference_data(48)
    mid = case == "reshuffled_mid_epoch"

    def inputs():  # (made for each fit, as a new script would: a dataset's reshuffling
        if case == "arrays":  # goes on from one iteration to the next, whoever iterates)
            return dict(x=data, y=labels, batch_size=16)  # (fit's own shuffling)
        return dict(x=tf.data.Dataset.from_tensor_slices((data, labels))
                    .shuffle(48, seed=2).batch(8), shuffle=False)

    def fit(directory, crash=False, **kwargs):
        keras.utils.set_random_seed(0)
        model = ks.reference_model(seed=0)

        class Crash(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if crash and mid and int(self.model.optimizer.iterations) == 15:
                    raise RuntimeError("crash")  # (saved at 14: epoch 2's second batch)

            def on_epoch_end(self, epoch, logs=None):
                if crash and not mid and epoch == 1:
                    raise RuntimeError("crash")

        callbacks = [Crash()] if directory is None else [
            Checkpoint(directory, save_freq=2 if mid else "epoch"), Crash()]
        model.fit(epochs=4, verbose=0, callbacks=callbacks, **inputs(), **kwargs)
        return model

    straight = fit(None)
    with pytest.raises(RuntimeError, match="crash"):
        fit(tmp_path, crash=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)  # (other callbacks: said below)
        with pytest.raises(ks.KerasaveError, match=r"'fit_initial_epoch' is off\): pass "
                                                   r"initial_epoch=2 to fit"):
            fit(tmp_path)
        with pytest.raises(ks.KerasaveError, match="pass initial_epoch=2"):
            fit(tmp_path, initial_epoch=3)
        if case == "reshuffled_epoch":
            with pytest.raises(ks.KerasaveError, match="'fit_dataset' was off"):
                fit(tmp_path, initial_epoch=2)
            return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResumeWarning)
        resumed = fit(tmp_path, initial_epoch=2)
    said = [str(w.message) for w in caught if w.category is ResumeWarning]
    assert len(said) == 2 and "'fit_callbacks' is off" in said[0], said
    assert_bit_exact(values(all_vars(straight)), all_vars(resumed))


def test_a_metadata_that_lies_about_the_state_arrays_allocates_nothing(tmp_path):
    import json

    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path, [], crash_after_epoch=1)
    manifest = sorted(tmp_path.glob("ckpt-*.kerasave.json"))[-1]
    content = json.loads(manifest.read_text())
    content["metadata"]["fit"]["arrays"][0][0] = [10**6, 10**6]  # (8 TB of float64)
    manifest.write_text(json.dumps(content))
    with pytest.raises(ks.CorruptArtifactError, match="array 0 of the fit state"):
        _fit(tmp_path, [])


@fast
@pytest.mark.parametrize("damage", ["drawn", "fresh", "index", "calls", "csv"])
def test_a_damaged_pipeline_state_is_refused_without_hanging(tmp_path, damage):
    import json

    data, labels = ks.reference_data(48)
    dataset = tf.data.Dataset.from_tensor_slices((data, labels)).shuffle(48, seed=1) \
        .batch(16).repeat()

    def fit():
        keras.utils.set_random_seed(0)
        model = ks.reference_model(seed=0)

        class Crash(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations) == 5:
                    raise RuntimeError("crash")

            def get_state(self):
                return {}

            def set_state(self, state):
                pass

        logger = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
        try:
            model.fit(dataset, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False,
                      callbacks=[Checkpoint(tmp_path, save_freq=2), Crash(), logger])
        finally:  # (fit does not end its callbacks when it raises)
            if logger.csv_file is not None:
                logger.csv_file.close()

    with pytest.raises(RuntimeError, match="crash"):
        fit()
    manifest = sorted(tmp_path.glob("ckpt-*.kerasave.json"))[-1]
    content = json.loads(manifest.read_text())
    saved = content["metadata"]["fit"]["state"]["data"]
    assert saved["live"] is not None  # (an iterator across epochs: saved as it stands)
    if damage == "drawn":  # replayed, an endless pipeline would be drawn from forever
        saved["drawn"], saved["live"] = 10**12, None
    elif damage == "fresh":  # bytes that are no iterator state
        content["metadata"]["fit"]["state"]["data"] = dict(saved, fresh="garbage", live=None)
    elif damage == "index":
        saved["fresh"]["__kerasave_blob__"] = 99
    elif damage == "calls":  # every later batch would be passed over, training on nothing
        content["metadata"]["progress"]["calls"] = 10**9
    else:  # a CSVLogger's file content that is no bytes
        content["metadata"]["fit"]["state"]["callbacks"]["CSVLogger"]["content"] = 5
    manifest.write_text(json.dumps(content))
    with pytest.raises(ks.CorruptArtifactError):
        fit()
