"""``CheckpointManager`` on several workers: the chief writes, everyone takes part.

Under ``tf.distribute.MultiWorkerMirroredStrategy`` every worker creates the
same manager and calls ``save``. What a save needs from the others is the
collectives that reading the variables makes (a variable synchronized on read,
such as a metric's, is all-reduced across the workers whenever it is read), so
every worker reads every variable in the same order, and every worker runs
TensorFlow's own ``Checkpoint.write``: the chief into the manager's transaction,
the others into a private temporary folder removed at once (the pattern of
TensorFlow's multi-worker guide). The chief verifies against the values read
collectively, commits and keeps the retention; a last all-reduce tells every
worker whether the checkpoint was committed, so ``save`` returns on all of them
only once it is on disk (or raises on all of them).

Restores need no collective: every worker reads the shared directory itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from kerasave._errors import KerasaveError, first_line
from kerasave._runtime.lazy import keras, tf

__all__ = ["Cluster", "cluster_of"]


class Cluster:
    """The strategy of a multi-worker model, and whether this worker is the chief."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy
        self.chief = bool(strategy.extended.should_checkpoint)
        self._agree: Any = None

    def values(self, checkpoint: Any) -> Any:
        """Every variable ``checkpoint`` saves, read on every worker in one order:
        ``{variable: its value}`` (the collectives of variables synchronized on read
        are matched across the workers)."""
        copies = _ByIdentity()
        for obj in tf.train.TrackableView(checkpoint).descendants():
            if isinstance(obj, (keras.Variable, tf.Variable)):
                copies[obj] = obj.numpy()
        return copies

    def save(self, write: Callable[[Any, Any], None], roots: dict[str, Any], where: Any) -> None:
        """Write one checkpoint: ``write(checkpoint, values)`` on the chief."""
        checkpoint = tf.train.Checkpoint(**roots)
        values = self.values(checkpoint)
        if self.chief:
            error: BaseException | None = None
            try:
                write(checkpoint, values)
            except BaseException as exc:  # the others wait for the verdict: give it
                error = exc
            self.agree(error is None)
            if error is not None:
                try:
                    raise error
                finally:  # (no cycle through this frame: the values go with the error)
                    del error
            return
        failed: BaseException | None = None
        try:  # the same collectives as the chief's write, into nowhere that stays
            _scratch_write(checkpoint)
        except BaseException as exc:  # the chief waits for the verdict: take part
            failed = exc
        committed = self.agree(False)
        if failed is not None:
            raise failed
        if not committed:
            raise KerasaveError("the chief could not write, verify or commit this "
                                "checkpoint (its error says why)", path=where)

    def abort(self, roots: dict[str, Any], where: Any) -> None:
        """This worker failed before its save began: take part in the collectives the
        others' saves make, and say no."""
        checkpoint = tf.train.Checkpoint(**roots)
        self.values(checkpoint)
        try:
            _scratch_write(checkpoint)
        finally:
            self.agree(False)

    def agree(self, ok: bool) -> bool:
        """An all-reduce over the workers: whether any said ``ok``."""
        if self._agree is None:
            strategy = self.strategy

            @tf.function  # (traced once; eagerly, TensorFlow warns at every call)
            def agree(flag: Any) -> Any:
                flags = strategy.run(lambda: tf.identity(flag))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)

            self._agree = agree
        return float(self._agree(tf.constant(1.0 if ok else 0.0))) > 0.0


def _scratch_write(checkpoint: Any) -> None:
    """TensorFlow's write, for its collectives, into a folder removed at once."""
    scratch = tempfile.mkdtemp(prefix="kerasave-worker-")
    try:
        checkpoint.write(os.path.join(scratch, "ckpt"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _ByIdentity:
    """Values by the identity of their variables (variables do not hash by it)."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[Any, Any]] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self._held[id(key)] = (key, value)  # (the key is held: its id stays its own)

    def get(self, key: Any, default: Any = None) -> Any:
        found = self._held.get(id(key))
        return default if found is None else found[1]


def cluster_of(model: Any, where: Any = None) -> Cluster | None:
    """The model's multi-worker cluster, when it was built under one of more than
    one worker; None otherwise (one process: nothing changes).

    Raises:
        KerasaveError: the strategy's cluster cannot be read (its resolver's
            ``cluster_spec()`` fails): which worker is the chief is unknown, and
            guessing would let every worker write as the chief. ``where``: the
            directory the message names.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = getattr(strategy, "cluster_resolver", None)
    try:
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    except Exception as exc:
        raise KerasaveError(
            "cannot tell which worker writes the checkpoints: the model's "
            "MultiWorkerMirroredStrategy cannot read its cluster (cluster_resolver."
            f"cluster_spec() raised {first_line(exc, typed=True)}); fix the cluster's "
            "configuration (TF_CONFIG or the resolver) so that one chief is known",
            path=where) from exc
    tasks = sum(len(spec.get(kind, ())) for kind in ("chief", "worker"))
    return Cluster(strategy) if tasks > 1 else None
