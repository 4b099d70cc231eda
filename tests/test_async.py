"""Background checkpoint saves: ``CheckpointManager.save(blocking=False)``."""

import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks

from .conftest import all_vars, assert_bit_exact, values
from .test_manager import _run as run_script
from .test_manager import _same_npz


def _net():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _train(model, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((8, 4)).astype("float32")
        model.train_on_batch(x, x[:, :3])


def _held(manager):
    """Make the manager's next background write wait until the returned event is set."""
    release = threading.Event()
    write = manager._write

    def held_write(*args, **kwargs):
        assert release.wait(60)
        return write(*args, **kwargs)

    manager._write = held_write
    return release


def test_background_save_holds_the_state_of_the_moment_it_was_called(tmp_path):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model, step=tf.Variable(7))
    release = _held(manager)
    at_save = values(all_vars(model))
    path = manager.save(blocking=False)
    _train(model, steps=3, seed=1)  # training goes on while the save waits to be written
    manager.trackables["step"].assign(99)
    assert not Path(path + ".index").exists()
    release.set()
    manager.wait()
    assert manager.latest == path
    fresh, step = _net(), tf.Variable(0)
    restorer = ks.CheckpointManager(tmp_path, model=fresh, step=step)
    assert restorer.restore_or_initialize() == path
    assert_bit_exact(at_save, all_vars(fresh))
    assert int(step) == 7
    report = ks.verify(model, path)  # the live model has moved on since
    assert not report.ok
    manager.close()


def test_background_and_blocking_saves_write_the_same_checkpoint(tmp_path):
    model = _net()
    _train(model)
    with ks.CheckpointManager(tmp_path / "a", model=model) as a, \
            ks.CheckpointManager(tmp_path / "b", model=model) as b:
        blocking, background = a.save(), b.save(blocking=False)
        b.wait()
    assert ks.inspect(blocking).variables == ks.inspect(background).variables
    ra, rb = tf.train.load_checkpoint(blocking), tf.train.load_checkpoint(background)
    keys = ra.get_variable_to_shape_map()
    assert set(keys) == set(rb.get_variable_to_shape_map())
    for key in keys:
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH":
            x, y = ra.get_tensor(key), rb.get_tensor(key)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), key


def test_a_failed_background_save_surfaces_on_the_next_call_and_leaves_no_trace(
        tmp_path, monkeypatch):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model)
    first = manager.save()
    before = sorted(p.name for p in tmp_path.iterdir())
    from kerasave.store import local as _atomic

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic, "commit", full_disk)
    manager.save(blocking=False)  # returns: the failure happens in the background
    with pytest.raises(OSError, match="No space left"):
        manager.save()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert manager.latest == first
    assert manager.save() .endswith("ckpt-2")  # the failure was reported once, then cleared
    manager.close()


def test_verification_in_the_background_fails_loudly(tmp_path, monkeypatch):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model)
    from kerasave.formats import checkpoint

    original = checkpoint.compare_pairing

    def lying(pairing, reader, read=None):
        return [ks.Check("model variables", False, "injected")] + original(pairing, reader, read)

    monkeypatch.setattr(checkpoint, "compare_pairing", lying)
    manager.save(blocking=False)
    with pytest.raises(ks.RoundTripError, match="injected"):
        manager.wait()
    assert manager.checkpoints == []
    manager.close()


def _run(script, *args, expect_kill=False):
    return run_script(script, *args, expect_kill=expect_kill, KERASAVE_BLOCKING="0")


def test_guide_loop_with_background_saves_killed_and_resumed_equals_uninterrupted(tmp_path):
    _run("guide_loop.py", tmp_path / "full", tmp_path / "full.npz", 30)
    _run("guide_loop.py", tmp_path / "ckpts", tmp_path / "first.npz", 30, 17, expect_kill=True)
    out = _run("guide_loop.py", tmp_path / "ckpts", tmp_path / "resumed.npz", 30)
    assert "restored from" in out.stdout and "ckpt-" in out.stdout
    full = np.load(tmp_path / "full.npz")
    weights = [k for k in full.files if k.startswith("w")]
    _same_npz(tmp_path / "full.npz", tmp_path / "resumed.npz", weights + ["iterations", "step"])


def test_fit_with_background_saves_killed_and_rerun_equals_uninterrupted(tmp_path):
    _run("fit_resume.py", "-", tmp_path / "plain.npz")
    _run("fit_resume.py", tmp_path / "ckpts", tmp_path / "first.npz", 13, expect_kill=True)
    _run("fit_resume.py", tmp_path / "ckpts", tmp_path / "resumed.npz")
    _same_npz(tmp_path / "plain.npz", tmp_path / "resumed.npz")
