"""The scenarios of TensorFlow's own ``checkpoint_management_test.py`` (its
``CheckpointManagerTest``), re-expressed for ``kerasave.CheckpointManager``, each with
``tf.train.CheckpointManager`` run beside it on the same steps as the oracle.

Where the two differ on purpose, the test says so and checks kerasave's side:
- ``checkpoints`` lists every checkpoint kept (TensorFlow's lists only those it may
  still rotate out, not those ``keep_checkpoint_every_n_hours`` preserved);
- ``keep_every_n_hours`` keeps the first checkpoint as the first of its one-per-N-hours
  chain (TensorFlow counts the hours from when its first manager was created);
- numbering continues after the newest checkpoint in the directory (TensorFlow's
  from its restored ``save_counter``), and ``latest`` is the newest intact
  checkpoint on disk (TensorFlow's is what its state file names).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management as tf_management

import kerasave as ks


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _ks(directory, model=None, **kwargs):
    kwargs.setdefault("verify", False)  # (the scenarios are about names and retention)
    return ks.CheckpointManager(directory, model=model or _model(), **kwargs)


def _tf(directory, checkpoint=None, **kwargs):
    return tf.train.CheckpointManager(checkpoint or tf.train.Checkpoint(), str(directory),
                                      **kwargs)


def _on_disk(directory, name="ckpt"):
    """The checkpoints in ``directory`` (by their ``.index`` files), by number."""
    found = [Path(p).name[:-len(".index")]
             for p in glob.glob(os.path.join(glob.escape(str(directory)), f"{name}-*.index"))]
    return sorted(found, key=lambda n: int(n.rsplit("-", 1)[1]))


def _on_disk_order(names):
    return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]))


def _names(paths):
    return [None if p is None else os.path.basename(p) for p in paths]


def test_deletion_and_latest(tmp_path):
    """testDeletion: max_to_keep=3 keeps the newest three."""
    theirs, ours = _tf(tmp_path / "tf", max_to_keep=3), _ks(tmp_path / "ks", max_to_keep=3)
    tf_paths = [theirs.save() for _ in range(4)]
    ks_paths = [ours.save() for _ in range(4)]
    assert _names(ks_paths) == _names(tf_paths) == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]
    assert _on_disk(tmp_path / "ks") == _on_disk(tmp_path / "tf") == ["ckpt-2", "ckpt-3",
                                                                       "ckpt-4"]
    assert _names(ours.checkpoints) == _names(theirs.checkpoints)
    assert _names([ours.latest]) == _names([theirs.latest_checkpoint]) == ["ckpt-4"]


def test_keep_all_then_rotate_across_restarts(tmp_path):
    """testKeepAll: max_to_keep=None keeps everything; a later manager with
    max_to_keep=3 lists all four until its first save, then rotates."""
    model, checkpoint = _model(), tf.train.Checkpoint()  # (one, as TensorFlow's test: its
    names = {}                                          # save counter numbers the files)
    for side, make in (("tf", lambda d, **k: _tf(d, checkpoint, **k)),
                       ("ks", lambda d, **k: _ks(d, model, **k))):
        directory = tmp_path / side
        seen = []
        manager = make(directory, max_to_keep=None)
        paths = [manager.save() for _ in range(3)]
        seen.append(_names(manager.checkpoints))
        latest = getattr(manager, "latest_checkpoint", None) or getattr(manager, "latest", None)
        assert latest == paths[-1]
        if side == "ks":
            manager.close()
        manager = make(directory, max_to_keep=None)
        manager.save()
        seen.append(_names(manager.checkpoints))
        if side == "ks":
            manager.close()
        manager = make(directory, max_to_keep=3)
        seen.append(_names(manager.checkpoints))
        seen.append(_on_disk(directory))
        manager.save()
        seen.append(_names(manager.checkpoints))
        seen.append(_on_disk(directory))
        names[side] = seen
    assert names["ks"] == names["tf"]
    assert names["ks"][-1] == ["ckpt-3", "ckpt-4", "ckpt-5"]


def test_keep_every_n_hours_across_restarts(tmp_path):
    """testSaveRestoreState: the clock moves; a second and third manager with
    keep_checkpoint_every_n_hours=1.5 preserve ckpt-1 and ckpt-4 and rotate the rest."""
    clock = [3.0]
    seen = {"tf": [], "ks": []}
    with mock.patch.object(tf_management, "time") as tf_time:
        tf_time.time.side_effect = lambda: clock[0]

        def step(at, *managers):
            clock[0] = at
            for side, manager in managers:
                manager.save()
                seen[side].append(_on_disk(tmp_path / side))

        def pair(**kwargs):
            ours = _ks(tmp_path / "ks", model, **kwargs)
            ours._now = lambda: clock[0]
            return ("tf", _tf(tmp_path / "tf", checkpoint, **kwargs_tf(kwargs))), ("ks", ours)

        def kwargs_tf(kwargs):
            return {("keep_checkpoint_every_n_hours" if k == "keep_every_n_hours" else k): v
                    for k, v in kwargs.items()}

        model, checkpoint = _model(), tf.train.Checkpoint()
        first = pair(max_to_keep=2)
        step(10000.0, *first)
        step(10000.0 + 3610, *first)
        first[1][1].close()
        second = pair(max_to_keep=2, keep_every_n_hours=1.5)
        third_time = 13610 + 3600 * 0.2
        step(third_time, *second)
        step(third_time + 1800, *second)
        step(third_time + 3600, *second)
        second[1][1].close()
        third = pair(max_to_keep=2, keep_every_n_hours=1.5)
        step(third_time + 3610, *third)
        assert _names(third[0][1].checkpoints) == ["ckpt-5", "ckpt-6"]  # rotating only
        assert _names(third[1][1].checkpoints) == ["ckpt-1", "ckpt-4", "ckpt-5", "ckpt-6"]
    assert seen["ks"] == seen["tf"]
    assert seen["ks"][-1] == ["ckpt-1", "ckpt-4", "ckpt-5", "ckpt-6"]


def test_preserved_checkpoints_outlive_a_manager_without_the_setting(tmp_path):
    """testClockReset: what keep_checkpoint_every_n_hours preserved is never deleted by
    a later manager without it, even when the clock went back."""
    clock = [10000.0]
    seen = {"tf": [], "ks": []}
    model, checkpoint = _model(), tf.train.Checkpoint()
    with mock.patch.object(tf_management, "time") as tf_time:
        tf_time.time.side_effect = lambda: clock[0]
        managers = []
        for keep in (1.0, None):
            ours = _ks(tmp_path / "ks", model, max_to_keep=1, keep_every_n_hours=keep)
            ours._now = lambda: clock[0]
            managers.append((_tf(tmp_path / "tf", checkpoint, max_to_keep=1,
                                 keep_checkpoint_every_n_hours=keep), ours))
        for at, (theirs, ours) in zip([10000.0, 13600.0, 17200.0, 5010.0, 5020.0],
                                      [managers[0]] * 3 + [managers[1]] * 2):
            clock[0] = at
            theirs.save()
            ours.save()
            seen["tf"].append(_on_disk(tmp_path / "tf"))
            seen["ks"].append(_on_disk(tmp_path / "ks"))
    # kerasave also keeps ckpt-1, the first of its one-per-hour chain; TensorFlow
    # counted the hour from when its manager was created, and deleted it.
    assert seen["ks"] == [_on_disk_order(set(names) | {"ckpt-1"}) for names in seen["tf"]]
    assert seen["tf"][-1] == ["ckpt-2", "ckpt-3", "ckpt-5"]
    assert seen["ks"][-1] == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-5"]


def test_checkpoints_of_other_names_are_left_alone(tmp_path):
    """testContinueFromUnmanaged: checkpoints under another prefix in the directory
    are never deleted; the manager rotates only its own."""
    made = {}
    for side in ("tf", "ks"):
        checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
        made[side] = [checkpoint.save(str(tmp_path / side / "unusual_prefix"))
                      for _ in range(2)]
    theirs = _tf(tmp_path / "tf", tf.train.Checkpoint(v=tf.Variable(0.0)), max_to_keep=2)
    ours = _ks(tmp_path / "ks", max_to_keep=2)
    tf_paths = [theirs.save() for _ in range(3)]
    ks_paths = [ours.save() for _ in range(3)]
    for side, paths in (("tf", tf_paths), ("ks", ks_paths)):
        assert _on_disk(tmp_path / side, "unusual_prefix") == ["unusual_prefix-1",
                                                                 "unusual_prefix-2"]
        assert _on_disk(tmp_path / side) == _names(paths[1:])
    # TensorFlow numbered after its restored save counter (none here: 1, 2, 3);
    # kerasave after the newest ckpt-N in the directory.
    assert _names(ks_paths) == _names(tf_paths) == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert _names(ours.checkpoints) == _names(theirs.checkpoints)


def test_custom_numbering_by_a_step_variable(tmp_path):
    """testCustomNumbering: save(step=<variable>) numbers the checkpoint by its value."""
    step = tf.Variable(0, dtype=tf.int64)
    theirs = _tf(tmp_path / "tf", tf.train.Checkpoint(step=step), max_to_keep=2)
    ours = _ks(tmp_path / "ks", max_to_keep=2, step=step)
    tf_paths, ks_paths = [], []
    for _ in range(5):
        tf_paths.append(theirs.save(checkpoint_number=step))
        ks_paths.append(ours.save(step=step))
        step.assign_add(2)
    tf_paths.append(theirs.save(checkpoint_number=32))
    ks_paths.append(ours.save(step=32))
    assert _names(ks_paths) == _names(tf_paths) == [
        "ckpt-0", "ckpt-2", "ckpt-4", "ckpt-6", "ckpt-8", "ckpt-32"]
    assert _on_disk(tmp_path / "ks") == _on_disk(tmp_path / "tf") == ["ckpt-8", "ckpt-32"]
    assert _names([ours.latest]) == _names([theirs.latest_checkpoint]) == ["ckpt-32"]


def test_custom_checkpoint_name(tmp_path):
    """testCustomCheckpointPrefix, testCheckpointManagerFSpathDirectory: checkpoint_name
    names the files; a pathlib directory works; restore_or_initialize finds them."""
    for side in ("tf", "ks"):
        (tmp_path / side).mkdir()
    v = tf.Variable(0.0)
    theirs = _tf(tmp_path / "tf", tf.train.Checkpoint(v=v), max_to_keep=2,
                 checkpoint_name="ckpt_name")
    model = _model()
    ours = _ks(tmp_path / "ks", model, max_to_keep=2, checkpoint_name="ckpt_name")
    assert _names([theirs.save(checkpoint_number=5)]) == _names([ours.save(step=5)]) == [
        "ckpt_name-5"]
    assert ours.save() == str(tmp_path / "ks" / "ckpt_name-6")
    assert theirs.save() == str(tmp_path / "tf" / "ckpt_name-2")  # (its save counter)
    assert ours.restore_or_initialize() == str(tmp_path / "ks" / "ckpt_name-6")
    # A manager of the default name beside it neither lists nor deletes them.
    other = _ks(tmp_path / "ks", model, max_to_keep=1)
    assert other.checkpoints == [] and other.restore_or_initialize() is None
    assert [_names([other.save(step=5)]), _names([other.save(step=7)])] == [["ckpt-5"],
                                                                           ["ckpt-7"]]
    assert _on_disk(tmp_path / "ks", "ckpt_name") == ["ckpt_name-5", "ckpt_name-6"]
    assert _on_disk(tmp_path / "ks") == ["ckpt-7"]
    assert _names([_tf(tmp_path / "tf2", checkpoint_name="ckpt_name", max_to_keep=1).save(
        checkpoint_number=5)]) == ["ckpt_name-5"]


def test_restore_or_initialize_calls_init_fn(tmp_path):
    """testRestoreOrInitialize: with no checkpoint, init_fn initializes (here from
    pretrained weights); once there is one, it is restored instead."""
    pretrained = _model(seed=1)
    ks.save_weights(pretrained, tmp_path / "init" / "weights")
    init_v = tf.Variable(2.0)
    init_path = tf.train.Checkpoint(v=init_v).save(str(tmp_path / "init" / "tf"))

    v = tf.Variable(1.0)
    tf_checkpoint = tf.train.Checkpoint(v=v)
    theirs = _tf(tmp_path / "tf", tf_checkpoint, max_to_keep=None,
                 init_fn=lambda: tf_checkpoint.restore(init_path))
    model = _model(seed=2)
    calls = []

    def init():
        calls.append(1)
        ks.load_weights(model, tmp_path / "init" / "weights")

    ours = _ks(tmp_path / "ks", model, max_to_keep=None, init_fn=init)
    assert theirs.restore_or_initialize() is None and float(v.numpy()) == 2.0
    assert ours.restore_or_initialize() is None and calls == [1]
    for mine, source in zip(model.weights, pretrained.weights):
        assert np.array_equal(mine.numpy(), source.numpy())
    tf_path, ks_path = theirs.save(), ours.save()
    model.layers[0].kernel.assign(np.zeros((3, 2), np.float32))  # changed after saving
    assert theirs.restore_or_initialize() == tf_path
    assert ours.restore_or_initialize() == ks_path and calls == [1]
    for mine, source in zip(model.weights, pretrained.weights):
        assert np.array_equal(mine.numpy(), source.numpy())


def test_checkpoint_interval(tmp_path):
    """testCheckpointInterval: save() returns None until step_counter moved
    checkpoint_interval steps, and for the same step twice; check_interval=False
    saves at any new step."""
    step_counter = tf.Variable(0)
    theirs = _tf(tmp_path / "tf", tf.train.Checkpoint(v=tf.Variable(1.0)), max_to_keep=None,
                 step_counter=step_counter, checkpoint_interval=2)
    ours = _ks(tmp_path / "ks", max_to_keep=None, step_counter=step_counter,
               checkpoint_interval=2)
    results = {"tf": [], "ks": []}
    for add, check in [(0, True), (1, True), (1, True), (0, True), (1, True), (0, False),
                       (0, False), (3, True)]:
        step_counter.assign_add(add)
        results["tf"].append(theirs.save(check_interval=check))
        results["ks"].append(ours.save(check_interval=check))
    assert _names(results["ks"]) == _names(results["tf"]) == [
        "ckpt-1", None, "ckpt-2", None, None, "ckpt-3", None, "ckpt-4"]
    assert _on_disk(tmp_path / "ks") == _on_disk(tmp_path / "tf")


def test_checkpoint_interval_from_last_checkpoint_step(tmp_path):
    """testCheckpointIntervalWithLastCheckpointStep: the interval counts from
    last_checkpoint_step until the manager saves (TensorFlow >= 2.20 has it)."""
    step_counter = tf.Variable(1)
    ours = _ks(tmp_path / "ks", max_to_keep=None, step_counter=step_counter,
               checkpoint_interval=2, last_checkpoint_step=1)
    try:
        theirs = _tf(tmp_path / "tf", max_to_keep=None, step_counter=step_counter,
                     checkpoint_interval=2, last_checkpoint_step=1)
    except TypeError:  # (TensorFlow 2.18, 2.19)
        theirs = None
    results = {"tf": [], "ks": []}
    for add in (0, 1, 1):
        step_counter.assign_add(add)
        results["ks"].append(ours.save())
        if theirs is not None:
            results["tf"].append(theirs.save())
    assert _names(results["ks"]) == [None, None, "ckpt-1"]
    assert theirs is None or _names(results["tf"]) == _names(results["ks"])


def test_checkpoint_interval_counts_from_the_restored_step(tmp_path):
    """testCheckpointIntervalWithRestore: after restore_or_initialize, a save at the
    restored step writes nothing."""
    step_counter = tf.Variable(0)
    v = tf.Variable(1.0)
    tf.train.Checkpoint(v=v).save(str(tmp_path / "tf" / "ckpt"))
    model = _model()
    _ks(tmp_path / "ks", model, step=step_counter).save()
    theirs = _tf(tmp_path / "tf", tf.train.Checkpoint(v=v), max_to_keep=None,
                 step_counter=step_counter, checkpoint_interval=2)
    ours = _ks(tmp_path / "ks", model, max_to_keep=None, step=step_counter,
               step_counter=step_counter, checkpoint_interval=2)
    assert theirs.restore_or_initialize() is not None
    assert ours.restore_or_initialize() is not None
    assert theirs.save() is None and ours.save() is None
    step_counter.assign_add(2)
    assert _names([ours.save()]) == ["ckpt-2"] and theirs.save() is not None


def test_arguments_refused_at_construction(tmp_path):
    """What tf.train.Checkpoint cannot track is refused when the manager is made,
    naming the argument, not by a ValueError from TensorFlow at the first save; what
    it can track (lists and dicts of variables too) is accepted as it is by TF."""
    model = _model()
    for name, value in [("checkpoint_interval_typo", 5), ("keep_checkpoint_every_n_hours", 2),
                        ("lr", 0.1), ("callback", print)]:
        with pytest.raises(ValueError):
            tf.train.Checkpoint(**{name: value})  # TensorFlow's own verdict
        with pytest.raises(TypeError, match=re.escape(name)):
            ks.CheckpointManager(tmp_path, model=model, **{name: value})
    with pytest.raises(TypeError, match="keep_every_n_hours"):
        ks.CheckpointManager(tmp_path, model=model, keep_checkpoint_every_n_hours=2)
    with pytest.raises(ValueError, match="step_counter"):
        _tf(tmp_path / "tf", max_to_keep=1, checkpoint_interval=2)
    with pytest.raises(ValueError, match="step_counter"):
        ks.CheckpointManager(tmp_path, model=model, checkpoint_interval=2)
    with pytest.raises(TypeError, match="step_counter"):
        ks.CheckpointManager(tmp_path, model=model, checkpoint_interval=2,
                             step_counter=tf.Variable([1, 2]))
    with pytest.raises(TypeError, match="checkpoint_interval"):
        ks.CheckpointManager(tmp_path, model=model, checkpoint_interval="2",
                             step_counter=tf.Variable(0))
    for bad in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="checkpoint_name"):
            ks.CheckpointManager(tmp_path, model=model, checkpoint_name=bad)
    with pytest.raises(TypeError, match="init_fn"):
        ks.CheckpointManager(tmp_path, model=model, init_fn="restore")
    # Trackable containers are what TensorFlow accepts: saved and restored.
    extra = [tf.Variable(1.0), tf.Variable(2.0)]
    table = {"a": tf.Variable(3)}
    manager = ks.CheckpointManager(tmp_path, model=model, extra=extra, table=table)
    manager.save()
    extra[0].assign(9.0)
    table["a"].assign(0)
    manager.restore()
    assert float(extra[0].numpy()) == 1.0 and int(table["a"].numpy()) == 3
    assert not list(tmp_path.glob(".*kerasave-tmp*"))


def test_restore_of_nothing_is_not_found(tmp_path):
    """restore() with no checkpoint, or of one that is not there: ArtifactNotFoundError
    (also a FileNotFoundError), not CorruptArtifactError; restore_or_initialize: None."""
    model = _model()
    for directory in (tmp_path / "missing", tmp_path):
        manager = ks.CheckpointManager(directory, model=model)
        with pytest.raises(ks.ArtifactNotFoundError) as caught:
            manager.restore()
        assert isinstance(caught.value, FileNotFoundError)
        assert not isinstance(caught.value, ks.CorruptArtifactError)
        assert str(directory) in str(caught.value)
        assert manager.restore_or_initialize() is None
    manager = ks.CheckpointManager(tmp_path, model=model)
    manager.save()
    with pytest.raises(ks.ArtifactNotFoundError):
        manager.restore(tmp_path / "ckpt-7")
    with pytest.raises(ks.ArtifactNotFoundError):
        manager.metadata(tmp_path / "ckpt-7")


def test_latest_after_deletes(tmp_path):
    """Checkpoints deleted behind the manager's back: ``latest`` is the newest one
    left (TensorFlow's latest_checkpoint names none: its state file names the deleted
    one), and numbering goes on after it."""
    model = _model()
    theirs = _tf(tmp_path / "tf", tf.train.Checkpoint(v=tf.Variable(1.0)), max_to_keep=3)
    ours = _ks(tmp_path / "ks", model, max_to_keep=3)
    for _ in range(3):
        theirs.save()
        ours.save()
    for side in ("tf", "ks"):
        for f in (tmp_path / side).glob("ckpt-3.*"):
            f.unlink()
    assert tf.train.latest_checkpoint(str(tmp_path / "tf")) is None
    assert _names([ours.latest]) == ["ckpt-2"]
    model.layers[0].kernel.assign(np.ones((3, 2), np.float32))
    assert _names([ours.restore_or_initialize()]) == ["ckpt-2"]
    assert _names([ours.save()]) == ["ckpt-3"]
