"""What a CheckpointManager takes for damage, and what it raises as it is.

Only damage of a checkpoint (``CorruptArtifactError``: unreadable files, a value
that does not read, a manifest that does not match) lets ``restore_or_initialize``
skip to an older checkpoint; a model the checkpoint does not fit, a class that
cannot be found, an interrupt or a bug is raised as it is, and nothing older is
restored in its place. A multi-worker cluster that cannot be read is an error, never
a guess that would let every worker act as the chief.
"""

from __future__ import annotations

import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks

from .conftest import all_vars, assert_bit_exact, values


def _net(units: int = 3) -> keras.Model:
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(units)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _train(model: keras.Model, steps: int = 2, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    units = model.layers[-1].units
    for _ in range(steps):
        model.train_on_batch(rng.random((4, 5), np.float32),
                             rng.random((4, units), np.float32))


@pytest.fixture
def two_checkpoints(tmp_path):
    """ckpt-1 and ckpt-2 of one model, trained apart; the values of ckpt-1."""
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model)
    manager.save()
    first = values(all_vars(model))
    _train(model, seed=1)
    manager.save()
    manager.close()
    return tmp_path, first


def _fresh_built() -> keras.Model:
    model = _net()
    _train(model, seed=5)  # built, optimizer too: its values are neither checkpoint's
    return model


def _failing_on_newest(monkeypatch, raised: BaseException) -> None:
    """The pairing of ckpt-2 (only) raises ``raised``."""
    from kerasave.formats import checkpoint

    real = checkpoint.pair_checkpoint

    def pair(model, prefix, *args, **kwargs):
        if Path(prefix).name == "ckpt-2":
            raise raised
        return real(model, prefix, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "pair_checkpoint", pair)


@pytest.mark.parametrize("raised", [
    TypeError("Could not locate class 'Custom>Block'. Make sure custom classes are "
              "decorated with `@keras.saving.register_keras_serializable()`"),
    KeyboardInterrupt(),
    AttributeError("'NoneType' object has no attribute 'nodes'"),  # a bug of kerasave's
    OSError(5, "Input/output error"),  # the disk or the network, not the checkpoint
], ids=["missing-class", "interrupt", "bug", "io-error"])
def test_restore_or_initialize_raises_what_is_not_damage(two_checkpoints, monkeypatch,
                                                          raised):
    directory, _ = two_checkpoints
    model = _fresh_built()
    before = values(all_vars(model))
    _failing_on_newest(monkeypatch, raised)
    manager = ks.CheckpointManager(directory, model=model)
    with pytest.raises(type(raised)) as caught:  # (and no warning: warnings are errors)
        manager.restore_or_initialize()
    assert caught.value is raised
    assert_bit_exact(before, all_vars(model))  # ckpt-1 was not restored instead
    with pytest.raises(type(raised)):
        manager.restore()  # restore() itself: raised as it is too, not as damage


def test_restore_or_initialize_skips_damage_to_the_one_before(two_checkpoints,
                                                               monkeypatch):
    """The same place raising damage: ckpt-2 is skipped with a warning, ckpt-1 restored."""
    directory, first = two_checkpoints
    model = _fresh_built()
    _failing_on_newest(monkeypatch, ks.CorruptArtifactError("a graph that is not one",
                                                            path=directory / "ckpt-2"))
    manager = ks.CheckpointManager(directory, model=model)
    with pytest.warns(UserWarning, match="ckpt-2.*a graph that is not one"):
        assert manager.restore_or_initialize() == str(directory / "ckpt-1")
    assert_bit_exact(first, all_vars(model))


def test_a_tensor_that_does_not_read_is_damage(two_checkpoints, monkeypatch):
    """What TensorFlow's reader raises about a saved value becomes CorruptArtifactError
    (here the newest's), so the checkpoint before it is restored."""
    from kerasave.formats import checkpoint

    directory, first = two_checkpoints
    real = checkpoint.tensor_loader

    def loader(prefix, reader, **kwargs):
        if Path(prefix).name != "ckpt-2":
            return real(prefix, reader, **kwargs)

        def read(key):
            raise tf.errors.DataLossError(None, None, "Checksum does not match")
        return read

    monkeypatch.setattr(checkpoint, "tensor_loader", loader)
    model = _fresh_built()
    manager = ks.CheckpointManager(directory, model=model)
    with pytest.raises(ks.CorruptArtifactError, match="Checksum does not match"):
        manager.restore()
    with pytest.warns(UserWarning, match="ckpt-2"):
        assert manager.restore_or_initialize() == str(directory / "ckpt-1")
    assert_bit_exact(first, all_vars(model))


def test_a_model_the_checkpoints_do_not_fit_is_a_mismatch_not_damage(two_checkpoints):
    directory, _ = two_checkpoints
    other = _net(units=4)  # the last layer's kernel is (8, 4), not (8, 3)
    _train(other)
    before = values(all_vars(other))
    with pytest.raises(ks.ArchitectureMismatchError,
                       match=r"saved \(8, 3\) float32, live \(8, 4\).*ckpt-2"):
        ks.CheckpointManager(directory, model=other).restore_or_initialize()  # the newest
    assert_bit_exact(before, all_vars(other))


# -- the cluster of a multi-worker model --------------------------------------------------


class _Resolver:
    def __init__(self, spec=None, error=None):
        self.spec, self.error = spec, error

    def cluster_spec(self):
        if self.error is not None:
            raise self.error
        return tf.train.ClusterSpec(self.spec)


def _model_under(resolver):
    """A stand-in for a model built under a MultiWorkerMirroredStrategy whose cluster
    ``resolver`` reads (no cluster is started: only the resolver is asked)."""

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def __init__(self):  # (no collectives: only the cluster is read)
            pass

        cluster_resolver = property(lambda self: resolver)

    return types.SimpleNamespace(distribute_strategy=Strategy())


def test_a_cluster_that_cannot_be_read_is_an_error_not_a_chief(tmp_path):
    from kerasave.checkpoints.distributed import cluster_of

    one = {"worker": ["localhost:1"]}
    assert cluster_of(_model_under(_Resolver(one))) is None  # one worker: one process
    assert cluster_of(types.SimpleNamespace()) is None  # no strategy at all
    broken = _Resolver(error=ValueError("TF_CONFIG is not valid JSON"))
    with pytest.raises(ks.KerasaveError, match="TF_CONFIG is not valid JSON") as caught:
        cluster_of(_model_under(broken), tmp_path)
    assert "which worker writes" in str(caught.value) and str(tmp_path) in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    # Through the manager: its save refuses before it writes anything.
    manager = ks.CheckpointManager(tmp_path / "run", model=_model_under(broken))
    with pytest.raises(ks.KerasaveError, match="which worker writes"):
        manager.save()
    assert not (tmp_path / "run").exists() or not [
        p for p in (tmp_path / "run").iterdir() if p.name.startswith("ckpt")]
