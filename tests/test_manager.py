"""CheckpointManager and the fit callback: exact resume, retention, damage, locking."""

import fcntl
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks

from .conftest import all_vars, assert_bit_exact, perturb, values

SCRIPTS = Path(__file__).parent / "scripts"


def _run(script, *args, expect_kill=False, **env_vars):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env_vars)
    result = subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=300)
    if expect_kill:
        assert result.returncode == -9, result.stderr[-2000:]
    else:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def _same_npz(a, b, keys=None):
    a, b = np.load(a), np.load(b)
    keys = keys or a.files
    assert set(keys) <= set(b.files)
    for k in keys:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def test_guide_loop_killed_and_resumed_equals_uninterrupted(tmp_path):
    _run("guide_loop.py", tmp_path / "full", tmp_path / "full.npz", 30)
    _run("guide_loop.py", tmp_path / "ckpts", tmp_path / "first.npz", 30, 17, expect_kill=True)
    out = _run("guide_loop.py", tmp_path / "ckpts", tmp_path / "resumed.npz", 30)
    assert "ckpt-3" in out.stdout  # step counter hit 15: the newest intact save
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    weights = [k for k in full.files if k.startswith("w")]
    _same_npz(tmp_path / "full.npz", tmp_path / "resumed.npz", weights + ["iterations", "step"])
    # Every loss the resumed run computed is the uninterrupted run's for that step.
    losses = dict(zip(full["steps"].tolist(), full["losses"].tolist()))
    assert resumed["steps"][0] == 15
    for step, loss in zip(resumed["steps"].tolist(), resumed["losses"].tolist()):
        assert loss == losses[step], step


def test_fit_killed_mid_epoch_and_rerun_equals_uninterrupted(tmp_path):
    _run("fit_resume.py", "-", tmp_path / "plain.npz")
    _run("fit_resume.py", tmp_path / "ckpts", tmp_path / "first.npz", 13, expect_kill=True)
    manager = ks.CheckpointManager(tmp_path / "ckpts", model=ks.reference_model())
    assert manager.metadata()["progress"] == {"epoch": 1, "batch": 3, "calls": 4,
                                                  "global_step": 12}
    _run("fit_resume.py", tmp_path / "ckpts", tmp_path / "resumed.npz")
    _same_npz(tmp_path / "plain.npz", tmp_path / "resumed.npz")


@pytest.mark.slow
def test_mirrored_strategy_both_ways(tmp_path):
    assert "OK" in _run("mirrored.py", tmp_path).stdout


# -- in process ---------------------------------------------------------------------

def _net():
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _train(model, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        model.train_on_batch(rng.random((4, 5), np.float32), rng.random((4, 3), np.float32))


def test_save_restore_into_fresh_unbuilt_model(tmp_path):
    model = _net()
    _train(model)
    step = tf.Variable(7)
    path = ks.CheckpointManager(tmp_path, model=model, step=step).save()
    assert path == str(tmp_path / "ckpt-1")

    fresh, fresh_step = _net(), tf.Variable(0)
    assert not fresh.built
    manager = ks.CheckpointManager(tmp_path, model=fresh, step=fresh_step)
    assert manager.restore_or_initialize() == path
    assert_bit_exact(values(all_vars(model)), all_vars(fresh))
    assert int(fresh_step) == 7
    _train(model, 1, seed=5)
    _train(fresh, 1, seed=5)
    assert_bit_exact(values(all_vars(model)), all_vars(fresh))


def test_numbering_latest_and_max_to_keep(tmp_path):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model, max_to_keep=2)
    assert manager.latest is None and manager.checkpoints == []
    assert manager.restore_or_initialize() is None
    paths = [manager.save() for _ in range(4)]
    assert [Path(p).name for p in paths] == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]
    assert manager.checkpoints == paths[2:] and manager.latest == paths[3]
    assert manager.save(step=tf.Variable(10)) == str(tmp_path / "ckpt-10")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "checkpoint"] + [f"ckpt-{n}.{ext}" for n in (10, 4) for ext in
                         ("data-00000-of-00001", "index", "kerasave.json")]
    # TensorFlow's state file names what the manager keeps (tests/test_remote.py reads it
    # with TensorFlow's own calls).
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-10")


def test_keep_every_n_hours(tmp_path):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model, max_to_keep=1, keep_every_n_hours=1)
    clock = [0.0]
    manager._now = lambda: clock[0]
    for minutes in (0, 20, 40, 70, 80, 130, 140):
        clock[0] = minutes * 60.0
        manager.save()
    # Kept: the first, one per hour after it (70 min, 130 min), and the newest.
    assert [Path(p).name for p in manager.checkpoints] == ["ckpt-1", "ckpt-4", "ckpt-6", "ckpt-7"]


@pytest.mark.parametrize("mode,best", [("min", ["ckpt-2", "ckpt-4"]),
                                       ("max", ["ckpt-3", "ckpt-5"])])
def test_best_k_by_metric(tmp_path, mode, best):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model, max_to_keep=1, best_k=2,
                                   metric="val_loss", mode=mode)
    for loss in (0.5, 0.1, 0.9, 0.2, 0.8, 0.6):
        manager.save(metrics={"val_loss": loss})
    kept = [Path(p).name for p in manager.checkpoints]
    assert kept == sorted(set(best) | {"ckpt-6"}, key=lambda n: int(n.split("-")[1]))


def test_damaged_newest_falls_back_with_a_warning(tmp_path):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model)
    manager.save()
    good = values(all_vars(model))
    _train(model, 1, seed=3)
    newest = manager.save()
    data = Path(newest + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte: TF's per-tensor CRC catches it
    data.write_bytes(bytes(raw))

    fresh = _net()
    restorer = ks.CheckpointManager(tmp_path, model=fresh)
    with pytest.warns(UserWarning, match="ckpt-2"):
        assert restorer.restore_or_initialize() == str(tmp_path / "ckpt-1")
    assert_bit_exact(good, all_vars(fresh))


def test_every_checkpoint_damaged_is_an_error(tmp_path):
    model = _net()
    _train(model)
    path = ks.CheckpointManager(tmp_path, model=model).save()
    Path(path + ".index").write_bytes(b"garbage")
    fresh = _net()
    with pytest.raises(ks.CorruptArtifactError):
        ks.CheckpointManager(tmp_path, model=fresh).restore_or_initialize()


def test_a_new_manager_in_the_same_process_takes_over(tmp_path):
    """A notebook cell run again: the new manager writes, the old one is told why it
    may not, and the checkpoints form one series."""
    model = _net()
    _train(model)
    first = ks.CheckpointManager(tmp_path, model=model)
    first.save()
    second = ks.CheckpointManager(tmp_path, model=model)  # the cell, run again
    assert second.restore_or_initialize() == str(tmp_path / "ckpt-1")
    assert second.save() == str(tmp_path / "ckpt-2")
    with pytest.raises(ks.KerasaveError, match="superseded by a newer one"):
        first.save()
    del first
    gc.collect()  # the old object's end releases nothing the new one holds
    assert second.save() == str(tmp_path / "ckpt-3")
    assert [Path(p).name for p in second.checkpoints] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    second.close()
    third = ks.CheckpointManager(tmp_path, model=model)  # after a close: a fresh lease
    assert third.save() == str(tmp_path / "ckpt-4")
    third.close()


def test_an_older_manager_that_never_wrote_does_not_take_back_the_directory(tmp_path):
    model = _net()
    _train(model)
    older = ks.CheckpointManager(tmp_path, model=model)
    newer = ks.CheckpointManager(tmp_path, model=model)
    newer.save()
    with pytest.raises(ks.KerasaveError, match="superseded"):
        older.save()
    newer.close()


def test_managers_in_two_processes_exclude_each_other(tmp_path):
    model = ks.reference_model(seed=1)
    code = ("import os, sys, time; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3';"
            "import kerasave as ks;"
            "m = ks.reference_model(seed=0); mgr = ks.CheckpointManager(sys.argv[1], model=m);"
            "mgr.save(); print('saved', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    try:
        assert child.stdout.readline().startswith("saved")
        here = ks.CheckpointManager(tmp_path, model=model)
        with pytest.raises(ks.KerasaveError, match=rf"another CheckpointManager \(process "
                                                   rf"{child.pid}\)"):
            here.save()
        assert here.restore_or_initialize() is not None  # reading needs no lock
    finally:
        child.stdin.close()
        child.wait(timeout=120)
        child.stdout.close()
    assert here.save() == str(tmp_path / "ckpt-2")  # its lock died with it
    here.close()


def test_two_managers_of_one_process_never_interleave_writes(tmp_path, monkeypatch):
    """A background save of the old manager is finished before the new one writes."""
    from kerasave.store import local

    model = _net()
    _train(model)
    first = ks.CheckpointManager(tmp_path, model=model)
    first.save()
    events = []
    real_commit = local.commit

    def slow_commit(handler, tmp, path, *rest, **options):
        events.append(("start", path.name))
        time.sleep(0.3)
        real_commit(handler, tmp, path, *rest, **options)
        events.append(("end", path.name))

    monkeypatch.setattr(local, "commit", slow_commit)
    first.save(blocking=False)  # ckpt-2, in a thread
    second = ks.CheckpointManager(tmp_path, model=model)
    assert second.save() == str(tmp_path / "ckpt-3")  # numbered after the one in flight
    assert events == [("start", "ckpt-2"), ("end", "ckpt-2"), ("start", "ckpt-3"),
                      ("end", "ckpt-3")]
    first.wait()
    second.close()


def test_a_save_into_the_managers_directory_during_its_save_both_succeed(tmp_path,
                                                                         monkeypatch):
    """The manager cleans only temporaries whose writer is gone: not the in-flight
    save_weights of another writer in its directory."""
    from kerasave.formats.checkpoint import CheckpointHandler

    model = _net()
    _train(model)
    other = ks.reference_model(seed=3)
    writing, go_on = threading.Event(), threading.Event()
    real_write = CheckpointHandler.write

    def slow_write(self, m, path):
        real_write(self, m, path)
        writing.set()
        assert go_on.wait(60)

    monkeypatch.setattr(CheckpointHandler, "write", slow_write)
    results = {}
    saver = threading.Thread(
        target=lambda: results.setdefault("x", ks.save_weights(other, tmp_path / "x")))
    saver.start()
    assert writing.wait(60)
    monkeypatch.setattr(CheckpointHandler, "write", real_write)
    in_flight = sorted(p.name for p in tmp_path.iterdir() if "kerasave-tmp" in p.name)
    assert in_flight
    manager = ks.CheckpointManager(tmp_path, model=model)
    assert manager.save() == str(tmp_path / "ckpt-1")  # cleans dead temporaries only
    assert set(in_flight) <= {p.name for p in tmp_path.iterdir()}
    go_on.set()
    saver.join(60)
    assert results["x"].ok
    fresh = ks.reference_model(seed=4)
    ks.load_weights(fresh, tmp_path / "x")
    assert_bit_exact(values(other.weights), fresh.weights)
    assert [Path(p).name for p in manager.checkpoints] == ["ckpt-1"]
    assert not [p for p in tmp_path.iterdir() if "kerasave-tmp" in p.name]
    manager.close()


def test_the_lock_dies_with_its_process(tmp_path):
    code = ("import fcntl, os, signal, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True);"
            "os.kill(os.getpid(), signal.SIGKILL)")
    lock = tmp_path / ".kerasave-writer.lock"
    result = subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True,
                            text=True, timeout=60)
    assert "locked" in result.stdout and result.returncode == -9
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model)
    assert manager.save()
    fd = os.open(lock, os.O_RDWR)
    try:  # held by the manager above until it is closed or collected
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
        manager.close()


def test_stale_temporaries_are_cleaned_and_never_listed(tmp_path):
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model)
    stale = tmp_path / ".ckpt-9.kerasave-tmp-deadbeef.index"
    stale.write_bytes(b"half")
    assert manager.checkpoints == []
    manager.save()
    assert not stale.exists()


def test_restore_only_the_model(tmp_path):
    model = _net()
    _train(model)
    ks.CheckpointManager(tmp_path, model=model, step=tf.Variable(3)).save()
    other = _net()
    _train(other, seed=9)
    opt_before = values(other.optimizer.variables)
    step = tf.Variable(0)
    report = ks.CheckpointManager(tmp_path, model=other, step=step).restore(only=("model",))
    assert_bit_exact(values(model.weights), other.weights)
    assert_bit_exact(opt_before, other.optimizer.variables)
    assert int(step) == 0
    details = {c.name: c.detail for c in report.checks}
    assert "optimizer" in details["left in checkpoint"] and "step" in details["left in checkpoint"]


def test_non_strict_restore_reports_what_did_not_match(tmp_path):
    model = _net()
    _train(model)
    ks.CheckpointManager(tmp_path, model=model).save()
    bigger = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3),
                               keras.layers.Dense(2)])
    bigger.build((None, 5))
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.CheckpointManager(tmp_path, model=bigger).restore(only=("model",))
    report = ks.CheckpointManager(tmp_path, model=bigger).restore(only=("model",), strict=False)
    assert_bit_exact(values(model.weights), bigger.weights[:4])
    assert "dense" in {c.name: c.detail for c in report.checks}["not matched"]


def test_strict_restore_changes_nothing_on_mismatch(tmp_path):
    model = _net()
    _train(model)
    ks.CheckpointManager(tmp_path, model=model, step=tf.Variable(5)).save()
    wider = keras.Sequential([keras.layers.Dense(9, activation="relu"), keras.layers.Dense(3)])
    wider.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    wider.build((None, 5))
    wider.optimizer.build(wider.trainable_variables)
    perturb(wider)
    step = tf.Variable(1)
    before = values(all_vars(wider)) + [step.numpy()]
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.CheckpointManager(tmp_path, model=wider, step=step).restore_or_initialize()
    assert_bit_exact(before, all_vars(wider) + [step])


def test_inspect_a_training_checkpoint(tmp_path):
    model = _net()
    _train(model)
    path = ks.CheckpointManager(tmp_path, model=model, step=tf.Variable(4)).save()
    info = ks.inspect(path)
    names = {v.name for v in info.variables}
    assert info.format == "checkpoint" and info.has_optimizer
    assert model.layers[0].kernel.path in names
    assert "step" in names


def test_failed_verification_commits_nothing(tmp_path, monkeypatch):
    from kerasave.formats import checkpoint

    model = _net()
    _train(model)
    monkeypatch.setattr(checkpoint, "compare_pairing", lambda pairing, reader, *_: [
        ks.Check("model variables", False, "injected")])
    with pytest.raises(ks.RoundTripError):
        ks.CheckpointManager(tmp_path, model=model).save()
    assert [p.name for p in tmp_path.iterdir()] == [".kerasave-writer.lock"]


def test_fit_callback_epoch_resume_in_process(tmp_path):
    from kerasave.callbacks import Checkpoint

    plain, data, labels = fit_callback_resumes(tmp_path)
    # A finished run is marked complete: running it again trains no further.
    third = ks.reference_model(seed=5)
    third.fit(data, labels, epochs=3, batch_size=16, shuffle=False, verbose=0,
              callbacks=[Checkpoint(tmp_path)])
    assert_bit_exact(values(all_vars(plain)), all_vars(third))


def fit_callback_resumes(directory):
    """A fit with kerasave's callback into ``directory`` that crashes after its second
    epoch, run again, ends where an uninterrupted fit ends (also tests/test_remote.py)."""
    from kerasave.callbacks import Checkpoint

    data, labels = ks.reference_data(64)
    plain = ks.reference_model(seed=0)
    straight = plain.fit(data, labels, epochs=3, batch_size=16, shuffle=False, verbose=0)

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("crash")

    model = ks.reference_model(seed=0)
    with pytest.raises(RuntimeError):
        model.fit(data, labels, epochs=3, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[Checkpoint(directory), Boom()])
    again = ks.reference_model(seed=0)
    history = again.fit(data, labels, epochs=3, batch_size=16, shuffle=False, verbose=0,
                        callbacks=[Checkpoint(directory)])
    # The crash came while epoch 1's callbacks ran: epoch 0's checkpoint is the newest
    # after every callback saw its epoch; fit's History is the whole run's, restored.
    assert history.epoch == [0, 1, 2] and history.history == straight.history
    assert_bit_exact(values(all_vars(plain)), all_vars(again))
    return plain, data, labels
